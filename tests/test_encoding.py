"""BoW, VLAD and Fisher vectors, tested against hand-worked examples and slow loop implementations."""
import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from retrievalkit import encoding as E

# Two centres in 2-D and four descriptors, for the hand-worked VLAD below.
C2 = np.array([[0.0, 0.0], [10.0, 0.0]])
X4 = np.array([[1.0, 4.0], [-1.0, 0.0], [14.0, -7.0], [15.0, -9.0]])
# squared distances to (c0, c1): (1,4): 17 vs 97; (-1,0): 1 vs 121 -> c0
#                                (14,-7): 245 vs 65; (15,-9): 306 vs 106 -> c1
# residual sums: v0 = (1,4) + (-1,0) = (0, 4); v1 = (4,-7) + (5,-9) = (9, -16)


def loop_vlad_sums(X, C):
    """Sum of residuals to the nearest centre, one descriptor at a time."""
    v = np.zeros_like(C)
    for x in X:
        d = [sum((x[j] - c[j]) ** 2 for j in range(len(x))) for c in C]
        k = d.index(min(d))
        v[k] += x - C[k]
    return v


def loop_fisher(X, gmm):
    """VLFeat's vl/fisher.c, one descriptor, component and dimension at a time (no normalisation)."""
    q = gmm.predict_proba(X)
    T, D = X.shape
    K = len(gmm.weights_)
    u, v = np.zeros((K, D)), np.zeros((K, D))
    for k in range(K):
        for t in range(T):
            for d in range(D):
                diff = (X[t, d] - gmm.means_[k, d]) / math.sqrt(gmm.covariances_[k, d])
                u[k, d] += q[t, k] * diff
                v[k, d] += q[t, k] * (diff * diff - 1)
        u[k] /= T * math.sqrt(gmm.weights_[k])
        v[k] /= T * math.sqrt(2 * gmm.weights_[k])
    return np.concatenate([u.ravel(), v.ravel()])


@pytest.fixture(scope="module")
def gmm():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(m, s, size=(100, 4)) for m, s in [(-2, 0.5), (0, 1.0), (3, 0.8)]])
    return GaussianMixture(3, covariance_type="diag", random_state=0).fit(train)


def test_local_descriptors_are_positions_in_row_major_order():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    rows = E.local_descriptors(x)
    assert isinstance(rows, list) and len(rows) == 2
    assert all(r.shape == (20, 3) and r.dtype == torch.float64 for r in rows)
    for n, h, w in [(0, 0, 0), (0, 0, 4), (1, 1, 0), (1, 3, 4), (0, 2, 3)]:
        torch.testing.assert_close(rows[n][h * 5 + w], x[n, :, h, w], rtol=0, atol=0)
    single = E.local_descriptors(x[1])
    assert isinstance(single, torch.Tensor) and single.shape == (20, 3)
    torch.testing.assert_close(single, rows[1], rtol=0, atol=0)


def test_codebook_is_deterministic_and_assigns_to_the_nearest_centre():
    rng = np.random.default_rng(1)
    X = rng.random((600, 8)).astype(np.float32)
    a = E.Codebook(6, seed=3, n_iter=5).fit(X)
    b = E.Codebook(6, seed=3, n_iter=5).fit([X[:250], X[250:]])  # a list is stacked
    assert a.centers_.shape == (6, 8) and a.centers_.dtype == np.float32
    assert a.centers is a.centers_
    np.testing.assert_array_equal(a.centers_, b.centers_)
    np.testing.assert_array_equal(E.Codebook(6, seed=3, n_iter=5).fit(torch.from_numpy(X)).centers_, a.centers_)
    assert not np.array_equal(a.centers_, E.Codebook(6, seed=4, n_iter=5).fit(X).centers_)
    Y = rng.random((300, 8))
    brute = ((Y[:, None, :] - a.centers_[None].astype(np.float64)) ** 2).sum(axis=2).argmin(axis=1)
    got = a.assign(Y)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, brute)
    got_t = a.assign(torch.from_numpy(Y))
    assert got_t.dtype == torch.long
    np.testing.assert_array_equal(got_t.numpy(), brute)
    assert repr(a) == "Codebook(k=6, seed=3, n_iter=5)"


def test_vlad_is_the_normalised_loop_sum_of_residuals():
    rng = np.random.default_rng(2)
    X, C = rng.normal(size=(60, 6)), rng.normal(size=(5, 6))
    v = loop_vlad_sums(X, C).ravel()
    np.testing.assert_allclose(E.vlad(X, C), v / np.linalg.norm(v), rtol=1e-12, atol=1e-15)
    out = E.vlad(torch.from_numpy(X), torch.from_numpy(C))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), v / np.linalg.norm(v), rtol=1e-12, atol=1e-15)
    # the slides' 1/T is a global scale: the direction is all VLAD keeps
    np.testing.assert_allclose(E.vlad(X, C), (v / 60) / np.linalg.norm(v / 60), rtol=1e-12)


def test_vlad_hand_example_power_then_intra_then_l2():
    # V = [[0, 4], [9, -16]]
    # signed sqrt: [[0, 2], [3, -4]]
    # intra: row 0 / 2 = (0, 1); row 1 / 5 = (0.6, -0.8)
    # global L2: the norm is sqrt(1 + 1) = sqrt 2 -> [0, 1/sqrt2, 0.6/sqrt2, -0.8/sqrt2]
    r2 = math.sqrt(2)
    np.testing.assert_allclose(E.vlad(X4, C2, power=0.5, intra=True), [0, 1 / r2, 0.6 / r2, -0.8 / r2], rtol=1e-12)
    # no power, no intra: [0, 4, 9, -16] / sqrt(16 + 81 + 256) = / sqrt(353)
    np.testing.assert_allclose(E.vlad(X4, C2), np.array([0, 4, 9, -16]) / math.sqrt(353), rtol=1e-12)
    # signed sqrt only: [0, 2, 3, -4] / sqrt(4 + 9 + 16) = / sqrt(29)
    np.testing.assert_allclose(E.vlad(X4, C2, power=0.5), np.array([0, 2, 3, -4]) / math.sqrt(29), rtol=1e-12)
    # intra only: [0, 1, 9/sqrt337, -16/sqrt337], norm sqrt 2
    s = math.sqrt(337)
    np.testing.assert_allclose(E.vlad(X4, C2, intra=True), np.array([0, 1, 9 / s, -16 / s]) / r2, rtol=1e-12)


def test_vlad_order_matters_intra_before_power_differs():
    # intra first: (0, 1) and (9, -16)/sqrt337; then signed sqrt: (0, 1) and (3, -4)/337^(1/4);
    # squared norm 1 + 25/sqrt337 -> [0, 0.651, 0.456, -0.607] vs VLFeat's [0, 0.707, 0.424, -0.566]
    b = 337**0.25
    swapped = np.array([0, 1, 3 / b, -4 / b]) / math.sqrt(1 + 25 / math.sqrt(337))
    vl = E.vlad(X4, C2, power=0.5, intra=True)
    assert np.abs(vl - swapped).max() > 0.05
    # and the swapped order is what the power of the intra-normalised sums gives
    intra_first = loop_vlad_sums(X4, C2) / np.linalg.norm(loop_vlad_sums(X4, C2), axis=1, keepdims=True)
    powered = (np.sign(intra_first) * np.sqrt(np.abs(intra_first))).ravel()
    np.testing.assert_allclose(powered / np.linalg.norm(powered), swapped, rtol=1e-12)


def test_vlad_empty_cluster_is_a_zero_block_without_nan():
    C = np.vstack([C2, [[100.0, 100.0]]])  # nothing is near the third centre
    for kwargs in [{}, {"power": 0.5}, {"intra": True}, {"power": 0.5, "intra": True}]:
        v = E.vlad(X4, C, **kwargs)
        assert v.shape == (6,) and np.isfinite(v).all()
        np.testing.assert_array_equal(v[4:], 0.0)
        np.testing.assert_allclose(v[:4], E.vlad(X4, C2, **kwargs), rtol=1e-12)
        assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-12)


def test_vlad_batch_equals_one_image_at_a_time_and_keeps_dtype():
    rng = np.random.default_rng(3)
    C = rng.normal(size=(4, 5)).astype(np.float32)
    images = [rng.normal(size=(T, 5)).astype(np.float32) for T in (7, 1, 12)]
    batch = E.vlad(images, C, power=0.5, intra=True)
    assert batch.shape == (3, 20) and batch.dtype == np.float32
    for i, X in enumerate(images):
        np.testing.assert_allclose(batch[i], E.vlad(X, C, power=0.5, intra=True), rtol=1e-5, atol=1e-6)
    tb = E.vlad([torch.from_numpy(X) for X in images], torch.from_numpy(C), power=0.5, intra=True)
    assert tb.dtype == torch.float32
    np.testing.assert_allclose(tb.numpy(), batch, rtol=1e-5, atol=1e-6)


def test_vlad_is_differentiable_in_the_descriptors():
    X = torch.from_numpy(X4).requires_grad_(True)
    E.vlad(X, C2, intra=True)[0].backward()
    assert X.grad is not None and X.grad.abs().sum() > 0
    batch = E.vlad([X, X[2:]], C2)  # a list that needs gradients is stacked by torch
    np.testing.assert_allclose(batch.detach().numpy(), E.vlad([X4, X4[2:]], C2), rtol=1e-12)
    assert batch.requires_grad


def test_bow_counts_ties_and_normalisation():
    C = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # nearest centres: 0, 0, 1, 0, and (5, 0) is equidistant from c0 and c1 -> the lower index 0
    X = np.array([[1.0, 1.0], [-2.0, 0.0], [9.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    counts = np.array([4.0, 1.0, 0.0])
    h = E.bow(X, C)
    np.testing.assert_allclose(h, counts / math.sqrt(17), rtol=1e-12)
    # the direction times (number of descriptors / its sum) gives back the counts
    np.testing.assert_allclose(h * len(X) / h.sum(), counts, rtol=1e-12)
    batch = E.bow([X, X[2:3]], C)
    np.testing.assert_allclose(batch, [counts / math.sqrt(17), [0.0, 1.0, 0.0]], rtol=1e-12)


def test_tf_idf_by_hand():
    # three images' word counts over four words; nobody uses word 3
    H = np.array([[2, 1, 1, 0], [1, 0, 0, 0], [3, 1, 0, 0]])
    # df = (3, 2, 1, 0) -> idf = (log 3/3, log 3/2, log 3/1, 0)
    idf = E.idf_weights(H)
    np.testing.assert_allclose(idf, [0.0, math.log(1.5), math.log(3.0), 0.0], rtol=1e-12, atol=0)
    # presence is all that counts: normalised histograms give the same weights
    np.testing.assert_allclose(E.idf_weights(H / np.linalg.norm(H, axis=1, keepdims=True)), idf, rtol=1e-12)
    C = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    X = np.array([[0.5, 0.0], [10.0, 1.0], [9.0, 0.0], [0.0, 9.5]])  # counts (1, 2, 1, 0)
    tfidf = np.array([0.0, 2 * math.log(1.5), math.log(3.0), 0.0])
    np.testing.assert_allclose(E.bow(X, C, idf=idf), tfidf / np.linalg.norm(tfidf), rtol=1e-12)
    t = E.idf_weights(torch.from_numpy(H.astype(np.float32)))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    # a histogram whose words all weigh 0 stays zero, without NaN
    np.testing.assert_array_equal(E.bow(X[:1], C, idf=idf), np.zeros(4))


def test_fisher_vector_matches_the_vlfeat_formulas(gmm):
    X = np.random.default_rng(4).normal(0.5, 1.5, size=(40, 4))
    raw = E.fisher_vector(X, gmm, improved=False)
    assert raw.shape == (2 * 3 * 4,)
    np.testing.assert_allclose(raw, loop_fisher(X, gmm), rtol=1e-10, atol=1e-12)
    fv = E.fisher_vector(X, gmm)
    ref = np.sign(raw) * np.sqrt(np.abs(raw))
    np.testing.assert_allclose(fv, ref / np.linalg.norm(ref), rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(fv) == pytest.approx(1.0, rel=1e-12)
    ft = E.fisher_vector(torch.from_numpy(X).float(), gmm)
    assert isinstance(ft, torch.Tensor) and ft.dtype == torch.float32
    np.testing.assert_allclose(ft.numpy(), fv, rtol=1e-4, atol=1e-6)


def test_fisher_vector_against_scikit_image(gmm):
    skfv = pytest.importorskip("skimage.feature").fisher_vector
    X = np.random.default_rng(5).normal(0.0, 2.0, size=(30, 4))
    K, KD = 3, 3 * 4
    theirs = skfv(X, gmm)
    assert theirs.shape == (2 * KD + K,)
    ours = E.fisher_vector(X, gmm, improved=False)
    # [d_pi, u, -v]: the same means block, the variance block with the opposite sign ...
    np.testing.assert_allclose(theirs[K : K + KD], ours[:KD], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(theirs[K + KD :], -ours[KD:], rtol=1e-10, atol=1e-12)
    # ... and K mixture-weight gradients first: (mean_t q_tk - pi_k) / sqrt(pi_k)
    q = gmm.predict_proba(X)
    np.testing.assert_allclose(theirs[:K], (q.mean(axis=0) - gmm.weights_) / np.sqrt(gmm.weights_), rtol=1e-10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: E.vlad(np.zeros((3, 2)), np.zeros((2, 3))), "centers must have"),
        (lambda: E.vlad(np.array([[0.0, np.nan]]), C2), "X must not contain NaN"),
        (lambda: E.vlad(np.zeros((0, 2)), C2), "X must hold at least one"),
        (lambda: E.vlad([], C2), "X must be"),
        (lambda: E.vlad([X4, torch.from_numpy(X4)], C2), r"X\[1\] must be the same kind"),
        (lambda: E.vlad([X4, np.zeros((2, 3))], C2), r"X\[1\] must have the same dimension"),
        (lambda: E.vlad(X4.astype(int), C2), "X must hold floating-point"),
        (lambda: E.vlad(X4, np.zeros((0, 2))), "centers must hold"),
        (lambda: E.vlad(X4, C2, power=0), "power"),
        (lambda: E.vlad(X4, C2, power=-0.5), "power"),
        (lambda: E.bow(X4, C2, idf=np.ones(3)), "idf must be an array of shape"),
        (lambda: E.bow(X4, C2, idf=np.array([1.0, -1.0])), "idf must be non-negative"),
        (lambda: E.bow(X4, C2, idf=np.array([1.0, np.nan])), "idf must not contain NaN"),
        (lambda: E.idf_weights(np.array([[1, -1]])), "histograms must be non-negative"),
        (lambda: E.idf_weights(np.zeros((0, 3))), "histograms must hold"),
        (lambda: E.Codebook(0), "k must"),
        (lambda: E.Codebook(2, n_iter=0), "n_iter must"),
        (lambda: E.Codebook(2, seed=1.5), "seed must"),
        (lambda: E.Codebook(5).fit(X4), "k must be at most the number of descriptors 4"),
        (lambda: E.Codebook(2).fit([X4, np.zeros((2, 3))]), r"descriptors\[1\] must have the same dimension"),
        (lambda: E.Codebook(2).assign(X4), "not fitted"),
        (lambda: E.local_descriptors(np.zeros((1, 2, 3, 3))), "x must be a torch.Tensor"),
        (lambda: E.fisher_vector(X4, GaussianMixture(2, covariance_type="diag")), "gmm must be fitted"),
        (lambda: E.fisher_vector(X4, GaussianMixture(1, covariance_type="full").fit(X4)), "gmm must be"),
        (lambda: E.fisher_vector(X4, object()), "gmm must be"),
        (lambda: E.fisher_vector([X4], GaussianMixture(1, covariance_type="diag").fit(X4)), "X must be"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fisher_vector_rejects_a_dimension_mismatch(gmm):
    with pytest.raises(ValueError, match="X must have the mixture's dimension D=4"):
        E.fisher_vector(np.zeros((3, 5)), gmm)
    with pytest.raises(ValueError, match="X must not contain NaN"):
        E.fisher_vector(np.full((3, 4), np.nan), gmm)
