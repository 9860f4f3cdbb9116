"""Regional deep feature aggregation (Jeong et al., ICASSP 2017), tested by hand and against slow references."""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import logm
from scipy.optimize import linprog

from retrievalkit import salient as S

EPS = 1e-6  # eq. 2's epsilon, the module's default


def beta(q, eps=EPS):
    """Eq. 2 from the fractions of active cells q."""
    q = np.asarray(q, dtype=float)
    return np.log((len(q) * eps + q.sum()) / (eps + q))


def l2n(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rect(H, W, y1, x1, y2, x2):
    """Boolean mask of the cells y1..y2, x1..x2 (inclusive)."""
    m = np.zeros((H, W), dtype=bool)
    m[y1 : y2 + 1, x1 : x2 + 1] = True
    return m


def as_set(masks):
    return {m.tobytes() for m in np.asarray(masks)}


# ----------------------------------------------------------------------------- eqs. 1 and 2

def test_spatial_weights_eq1_by_hand():
    x = torch.zeros(2, 2, 2, dtype=torch.float64)
    x[0] = torch.tensor([[1.0, 4.0], [0.0, 0.0]])
    x[1] = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    # channel sums [[3, 4], [0, 0]], norm 5
    expected = torch.tensor([[0.6, 0.8], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(S.spatial_weights(x), expected)
    torch.testing.assert_close(S.spatial_weights(torch.stack([x, 2 * x])), torch.stack([expected, expected]))


def test_channel_weights_eq2_by_hand():
    x = torch.zeros(3, 2, 2, dtype=torch.float64)
    x[0] = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # Q = 3/4
    x[1] = torch.tensor([[0.0, 4.0], [0.0, 0.0]])  # Q = 1/4
    # channel 2 all zero: Q = 0, beta = log((3 eps + 1) / eps), finite thanks to eps
    out = S.channel_weights(x).numpy()
    np.testing.assert_allclose(out, beta([0.75, 0.25, 0.0]), rtol=1e-12)
    assert out[0] == pytest.approx(math.log(4 / 3), abs=1e-5) and out[1] == pytest.approx(math.log(4), abs=1e-5)
    # a large eps shows where it enters: log((3*0.5 + 1) / (0.5 + 0.75)) = log 2
    assert S.channel_weights(x, eps=0.5)[0].item() == pytest.approx(math.log(2.0))


# ----------------------------------------------------------------------------- salient points

VALUES = torch.tensor([[[0.0, 5.0, 1.0], [3.0, 0.0, 2.0], [5.0, 0.0, 0.0]]], dtype=torch.float64)


def test_salient_points_are_the_most_active_cells():
    # alpha is proportional to the values: 5 at (0,1) and (2,0) (tie: row-major order), then 3, 2, 1
    np.testing.assert_array_equal(S.salient_points(VALUES, n_min=4).numpy(), [[0, 1], [2, 0], [1, 0], [1, 2]])
    # cells with alpha = 0 are never salient: only 5 of the 9 cells can be
    np.testing.assert_array_equal(S.salient_points(VALUES, n_min=9).numpy(), [[0, 1], [2, 0], [1, 0], [1, 2], [0, 2]])


def test_salient_points_from_keypoints():
    kp = np.array([[1, 1], [0, 2], [1, 0], [0, 2]])  # (1,1) is inactive; (0,2) detected twice
    # 3 active detections >= n_min = 2: sorted by alpha (3 > 1 = 1), the best n_max = 2 kept
    np.testing.assert_array_equal(S.salient_points(VALUES, n_min=2, n_max=2, keypoints=kp).numpy(), [[1, 0], [0, 2]])
    np.testing.assert_array_equal(S.salient_points(VALUES, n_min=2, n_max=5, keypoints=kp).numpy(),
                                  [[1, 0], [0, 2], [0, 2]])
    # fewer than n_min = 4 active detections: the paper's fallback, the 4 most active cells
    np.testing.assert_array_equal(S.salient_points(VALUES, n_min=4, keypoints=kp).numpy(),
                                  [[0, 1], [2, 0], [1, 0], [1, 2]])


# ----------------------------------------------------------------------------- global k-means

def slow_global_kmeans(points, L):
    """Fast global k-means written with loops: weighted unique points, b_n per candidate, own Lloyd."""
    cells, inverse, counts = np.unique(points, axis=0, return_inverse=True, return_counts=True)
    X, w = cells.astype(float), counts.astype(float)
    centres = [sum(w[j] * X[j] for j in range(len(X))) / w.sum()]
    labels = np.zeros(len(X), dtype=int)
    for k in range(2, L + 1):
        d = [min(((X[j] - c) ** 2).sum() for c in centres) for j in range(len(X))]
        b = [sum(w[j] * max(d[j] - ((X[n] - X[j]) ** 2).sum(), 0.0) for j in range(len(X))) for n in range(len(X))]
        centres = [*centres, X[int(np.argmax(b))]]
        while True:
            new = np.array([np.argmin([((X[j] - c) ** 2).sum() for c in centres]) for j in range(len(X))])
            centres = [(w[new == c, None] * X[new == c]).sum(0) / w[new == c].sum() for c in range(k)]
            if (new == labels).all():
                break
            labels = new
    return labels[inverse.ravel()]


def same_partition(a, b):
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_global_kmeans_by_hand():
    # points on one row at x = 0, 1, 2, 10; one centre at 3.25, squared distances d = 10.5625, 5.0625,
    # 1.5625, 45.5625; b_n = sum_j max(d_j - |x_n - x_j|^2, 0) = 14.625, 15.1875, 12.1875, 45.5625:
    # the new centre starts at 10, and Lloyd keeps {0, 1, 2} | {10}
    pts = np.array([[0, 0], [0, 1], [0, 2], [0, 10]])
    labels = S.global_kmeans(pts, L=2)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 0, 0, 1])
    t = S.global_kmeans(torch.from_numpy(pts), L=2)
    assert isinstance(t, torch.Tensor) and t.tolist() == [0, 0, 0, 1]
    np.testing.assert_array_equal(S.global_kmeans(pts, L=1), [0, 0, 0, 0])


@pytest.mark.parametrize("seed", range(6))
def test_global_kmeans_equals_slow_reference(seed):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 12, size=(40, 2))  # repeated cells are likely: they count with multiplicity
    for L in (2, 3):
        assert same_partition(S.global_kmeans(pts, L), slow_global_kmeans(pts, L))


# ----------------------------------------------------------------------------- candidate regions

def two_blobs():
    x = torch.zeros(2, 6, 10, dtype=torch.float64)
    x[0, 1:3, 1:3] = 1.0  # blob A: rows 1-2, cols 1-2
    x[1, 1:3, 6:9] = 2.0  # blob B: rows 1-2, cols 6-8
    return x


def test_two_hot_blobs_give_two_regions_and_a_power_set_of_four():
    x = two_blobs()
    points = S.salient_points(x, n_min=10)  # the 10 active cells
    assert as_set(np.array([rect(6, 10, *p, *p) for p in points.tolist()])) == as_set(
        [rect(6, 10, y, x_, y, x_) for y in (1, 2) for x_ in (1, 2, 6, 7, 8)])
    regions = S.candidate_regions(points, (6, 10), L=2)
    assert regions.dtype == torch.bool and regions.shape == (2, 6, 10)
    A, B = rect(6, 10, 1, 1, 2, 2), rect(6, 10, 1, 6, 2, 8)
    assert as_set(regions.numpy()) == as_set([A, B])
    R = S.region_power_set(regions).numpy()
    # 2^2 = 4: the two clusters, the hull of both (rows 1-2, cols 1-8), the whole map last
    assert R.shape == (4, 6, 10)
    assert as_set(R[:2]) == as_set([A, B])
    np.testing.assert_array_equal(R[2], rect(6, 10, 1, 1, 2, 8))
    assert R[3].all()


def test_power_set_of_three_points_by_hand():
    pts = np.array([[0, 0], [0, 4], [4, 0]])
    regions = S.candidate_regions(pts, (5, 5), L=3)  # one cluster per point: three single cells
    assert as_set(regions.numpy()) == as_set([rect(5, 5, 0, 0, 0, 0), rect(5, 5, 0, 4, 0, 4), rect(5, 5, 4, 0, 4, 0)])
    R = S.region_power_set(regions).numpy()
    assert R.shape == (8, 5, 5)  # 2^3: 3 singles, 3 pairs, the triangle, the whole map
    y, x = np.mgrid[:5, :5]
    pairs = [rect(5, 5, 0, 0, 0, 4), rect(5, 5, 0, 0, 4, 0), (y + x == 4)]  # top row, left column, anti-diagonal
    assert as_set(R[3:6]) == as_set(pairs)
    np.testing.assert_array_equal(R[6], y + x <= 4)  # closed triangle: its edges count
    assert R[7].all()


def test_power_set_drops_duplicates_of_the_whole_map():
    # clusters at the top and bottom corners of a 3x3 map: their union's hull is the whole map
    regions = torch.from_numpy(np.stack([rect(3, 3, 0, 0, 0, 2), rect(3, 3, 2, 0, 2, 2)]))
    R = S.region_power_set(regions).numpy()
    assert R.shape == (3, 3, 3)
    np.testing.assert_array_equal(R[:2], regions.numpy())
    assert R[2].all()


def in_hull_lp(points, cell):
    """Is cell a convex combination of the points? (a feasibility linear programme)"""
    P = np.asarray(points, dtype=float)
    A_eq = np.vstack([P.T, np.ones(len(P))])
    b_eq = np.array([cell[0], cell[1], 1.0])
    return linprog(np.zeros(len(P)), A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs").status == 0


@pytest.mark.parametrize("seed", range(3))
def test_hull_masks_equal_a_linear_programme(seed):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 7, size=(6, 2))
    mask = S.region_power_set(torch.from_numpy(np.stack([rect(7, 7, *p, *p) for p in pts])[:2]))[2].numpy()
    expected = np.array([[in_hull_lp(pts[:2], (y, x)) for x in range(7)] for y in range(7)])
    np.testing.assert_array_equal(mask, expected)  # the segment between two points
    regions = S.candidate_regions(pts, (7, 7), L=1)
    expected = np.array([[in_hull_lp(pts, (y, x)) for x in range(7)] for y in range(7)])
    np.testing.assert_array_equal(regions[0].numpy(), expected)


# ----------------------------------------------------------------------------- region descriptors

def small_map():
    x = torch.zeros(2, 2, 2, dtype=torch.float64)
    x[0] = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # Q = 3/4
    x[1] = torch.tensor([[0.0, 4.0], [0.0, 0.0]])  # Q = 1/4
    return x


def test_first_order_by_hand():
    x = small_map()
    b = beta([0.75, 0.25])
    top, whole = rect(2, 2, 0, 0, 0, 1), np.ones((2, 2), dtype=bool)
    out = S.first_order(x, torch.from_numpy(np.stack([top, whole]))).numpy()
    # eq. 3: beta o sum_p f_p; top row sums to (1 + 2, 0 + 4) = (3, 4), whole map (6, 4)
    np.testing.assert_allclose(out, l2n([b * [3, 4], b * [6, 4]]), rtol=1e-12)
    # eq. 9: channel sums [[1, 6], [3, 0]], alpha = sums / sqrt(46); top row:
    # sum_p alpha_p f_p = (1*1 + 6*2, 1*0 + 6*4) / sqrt(46) = (13, 24) / sqrt(46)
    out9 = S.first_order(x, torch.from_numpy(top[None]), weighted=True).numpy()
    np.testing.assert_allclose(out9, l2n([b * [13, 24]]), rtol=1e-12)


def diagonal_map():
    """1x3 map, channel k active only at cell k with value a_k = 1, 2, 3."""
    x = torch.zeros(3, 1, 3, dtype=torch.float64)
    for k, a in enumerate((1.0, 2.0, 3.0)):
        x[k, 0, k] = a
    return x


def test_second_order_of_a_known_diagonal_second_moment():
    # every Q_k = 1/3, so every beta_k = b; alpha_p = a_p / sqrt(14); eq. 5 gives
    # G = sum_p alpha_p b^2 a_p^2 e_p e_p^T / sum_p alpha_p = b^2 diag(1, 8, 27) / 6
    b = beta([1 / 3] * 3)[0]
    g = b**2 * np.array([1.0, 8.0, 27.0]) / 6
    whole = torch.ones(1, 1, 3, dtype=torch.bool)
    out = S.second_order(diagonal_map(), whole).numpy()
    assert out.shape == (1, 6)  # K'(K'+1)/2 = 3*4/2
    # upper triangle, row by row: (0,0) (0,1) (0,2) (1,1) (1,2) (2,2): log g on the diagonal, 0 off it
    lg = np.log(g + 1e-6)
    np.testing.assert_allclose(out[0], l2n([lg[0], 0, 0, lg[1], 0, lg[2]]), rtol=1e-10, atol=1e-12)


def test_second_order_regularises_zero_eigenvalues():
    # one cell, (0,0): G = diag(b^2, 0, 0); with log_eps = 1e-4: log diag = (log(b^2 + 1e-4), log 1e-4, log 1e-4)
    b = beta([1 / 3] * 3)[0]
    cell = torch.tensor([[[True, False, False]]])
    out = S.second_order(diagonal_map(), cell, log_eps=1e-4).numpy()
    l0, lz = math.log(b**2 + 1e-4), math.log(1e-4)
    np.testing.assert_allclose(out[0], l2n([l0, 0, 0, lz, 0, lz]), rtol=1e-10, atol=1e-12)


def test_second_order_with_a_basis_rotates_the_logarithm():
    # eq. 4 with an orthogonal U: G' = U^T G U, so log G' = U^T log(G) U
    U, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    b = beta([1 / 3] * 3)[0]
    L = np.diag(np.log(b**2 * np.array([1.0, 8.0, 27.0]) / 6 + 1e-6))
    M = U.T @ L @ U
    i, j = np.triu_indices(3)
    out = S.second_order(diagonal_map(), torch.ones(1, 1, 3, dtype=torch.bool), basis=U).numpy()
    np.testing.assert_allclose(out[0], l2n(M[i, j]), rtol=1e-9, atol=1e-12)
    # a basis of two columns: K' = 2, 3 entries
    assert S.second_order(diagonal_map(), torch.ones(1, 1, 3, dtype=torch.bool), basis=U[:, :2]).shape == (1, 3)


def test_second_order_equals_a_slow_reference_with_scipy_logm():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(4, 5, 6, generator=g, dtype=torch.float64))
    regions = torch.from_numpy(np.stack([rect(5, 6, 0, 0, 4, 5), rect(5, 6, 1, 1, 3, 4), rect(5, 6, 0, 2, 2, 5)]))
    U = np.random.default_rng(1).standard_normal((4, 3))
    out = S.second_order(x, regions, basis=U).numpy()
    xn = x.numpy()
    b = beta((xn > 0).mean(axis=(1, 2)))
    s = xn.sum(axis=0)
    alpha = s / np.sqrt((s**2).sum())
    for r, m in enumerate(regions.numpy()):
        G, total = np.zeros((3, 3)), 0.0
        for y in range(5):
            for xx in range(6):
                if m[y, xx]:
                    f = U.T @ (b * xn[:, y, xx])
                    G += alpha[y, xx] * np.outer(f, f)
                    total += alpha[y, xx]
        Lg = logm(G / total + 1e-6 * np.eye(3)).real
        np.testing.assert_allclose(out[r], l2n(Lg[np.triu_indices(3)]), rtol=1e-8, atol=1e-10)


def test_region_descriptors_are_differentiable():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(3, 3, 3, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    regions = torch.from_numpy(np.stack([rect(3, 3, 0, 0, 2, 2), rect(3, 3, 0, 0, 1, 2)]))
    assert torch.autograd.gradcheck(lambda x: S.first_order(x, regions, weighted=True), (x,))
    assert torch.autograd.gradcheck(lambda x: S.second_order(x, regions), (x,))


# ----------------------------------------------------------------------------- similarity and QE

Q2 = np.array([[1.0, 0.0], [0.0, 1.0]])
T3 = np.array([[0.6, 0.8], [-1.0, 0.0], [0.28, -0.96]])


def test_image_similarity_by_hand():
    # q . t: [[0.6, -1, 0.28], [0.8, 0, -0.96]]: the best pair is (q2, t1) at 0.8
    assert S.image_similarity(Q2, T3) == pytest.approx(0.8)
    assert S.image_similarity(torch.from_numpy(Q2), torch.from_numpy(T3)) == pytest.approx(0.8)
    assert S.image_similarity(Q2, T3[1:]) == pytest.approx(0.28)  # (q1, t3)


def test_region_search_batched_over_a_database():
    db = [T3, T3[1:], T3[2:], T3[[1, 1]]]
    scores, best = S.region_search(Q2, db)
    # image 0: 0.8 at its region 0; image 1 (t2, t3): 0.28 at region 1; image 2 (t3): 0.28 at 0;
    # image 3 (t2, t2): 0 (q2 . t2) at region 0, the first of a tie
    np.testing.assert_allclose(scores, [0.8, 0.28, 0.28, 0.0])
    np.testing.assert_array_equal(best, [0, 1, 0, 0])
    assert scores.dtype == np.float64 and best.dtype == np.int64
    for i, t in enumerate(db):
        assert scores[i] == pytest.approx(S.image_similarity(Q2, t))
    ts, tb = S.region_search(torch.from_numpy(Q2).float(), [torch.from_numpy(t).float() for t in db])
    assert isinstance(ts, torch.Tensor) and ts.dtype == torch.float32 and tb.tolist() == [0, 1, 0, 0]


def test_query_expansion_by_hand():
    q = np.array([[1.0, 0.0, 0.0]])
    db = [
        np.array([[0.0, 1.0, 0.0], [0.8, 0.6, 0.0]]),  # best region 1, score 0.8
        np.array([[0.6, 0.0, 0.8]]),  # 0.6
        np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.96, 0.0, 0.28]]),  # best region 2, score 0.96
    ]
    # top 2: image 2 then image 0; mean of (0.96, 0, 0.28) and (0.8, 0.6, 0) = (0.88, 0.3, 0.14)
    qe = S.query_expansion(q, db, n=2)
    expected = np.array([0.88, 0.3, 0.14]) / math.sqrt(0.88**2 + 0.3**2 + 0.14**2)
    np.testing.assert_allclose(qe, expected[None])
    # the query itself is not averaged in: with n = 1 the new query is image 2's best region
    np.testing.assert_allclose(S.query_expansion(q, db, n=1), [[0.96, 0.0, 0.28]])
    # eq. 8, the second search: image 0 now scores (0.88*0.8 + 0.3*0.6) / |.| = 0.884 / sqrt(0.884)
    scores, best = S.region_search(qe, db)
    assert scores[0] == pytest.approx(math.sqrt(0.884)) and best[0] == 1
    tq = S.query_expansion(torch.from_numpy(q), [torch.from_numpy(t) for t in db], n=2)
    assert isinstance(tq, torch.Tensor)
    np.testing.assert_allclose(tq.numpy(), expected[None])


# ----------------------------------------------------------------------------- the whole method

def random_maps(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.relu(torch.randn(6, 7, 8, generator=g, dtype=torch.float64)) for _ in range(n)]


def test_regional_aggregation_learns_eqs_4_and_6():
    maps = random_maps(10, 0)
    model = S.RegionalAggregation(L=2, n_min=12, reduced_dim=3, dim=4)
    assert model.fit(maps) is model
    assert model.U1_.shape == (6, 3) and model.U2_.shape == (6, 4) and model.s_.shape == (4,)
    regions = [model.regions(x) for x in maps]
    assert all(r.shape[0] <= 4 and r[-1].all() for r in regions)  # at most 2^L, the whole map last
    # eq. 4's bases: the principal directions of the database's 1st-order descriptors (signs aside)
    f1 = np.concatenate([S.first_order(x, r).numpy() for x, r in zip(maps, regions)])
    _, _, Vt = np.linalg.svd(f1 - f1.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(model.U1_), np.abs(Vt[:3].T), atol=1e-8)
    # eq. 6: whitening by the singular values of the (centred) 2nd-order descriptors
    f2 = np.concatenate([S.second_order(x, r, basis=model.U1_).numpy() for x, r in zip(maps, regions)])
    _, s, Vt2 = np.linalg.svd(f2 - f2.mean(0), full_matrices=False)
    np.testing.assert_allclose(model.s_, s[:4], rtol=1e-8)
    out = model.transform(maps)
    assert [o.shape for o in out] == [(r.shape[0], 4) for r in regions]
    Z = np.concatenate([o.numpy() for o in out])
    expected = l2n(f2 @ Vt2[:4].T / s[:4])  # diag(s)^-1 U2^T f2, no mean subtracted, then L2
    np.testing.assert_allclose(Z @ Z.T, expected @ expected.T, atol=1e-8)  # Gram: free of the signs
    whole = model.transform(maps[:2], whole_image=True)
    assert [w.shape for w in whole] == [(1, 4), (1, 4)]
    np.testing.assert_allclose(whole[0].numpy(), out[0][-1:].numpy(), atol=1e-10)  # R_M is the whole map


# ----------------------------------------------------------------------------- bad input

def test_bad_input_is_rejected():
    x = two_blobs()
    with pytest.raises(ValueError, match="x must be one feature map"):
        S.salient_points(x[None])
    with pytest.raises(ValueError, match="x must be non-negative"):
        S.salient_points(-x)
    with pytest.raises(ValueError, match="x must not be all zero"):
        S.salient_points(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="x must not contain NaN"):
        S.spatial_weights(torch.full((2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="eps"):
        S.channel_weights(x, eps=0)
    with pytest.raises(ValueError, match="n_max must be at least n_min"):
        S.salient_points(x, n_min=10, n_max=5)
    with pytest.raises(ValueError, match="n_min"):
        S.salient_points(x, n_min=0)
    with pytest.raises(ValueError, match="keypoints must be cells"):
        S.salient_points(x, keypoints=[[6, 0]])
    with pytest.raises(ValueError, match="keypoints must hold integer"):
        S.salient_points(x, keypoints=[[1.5, 0.0]])
    with pytest.raises(ValueError, match="L must be at most the number of distinct points"):
        S.global_kmeans([[0, 0], [0, 0], [1, 1]], L=3)
    with pytest.raises(ValueError, match="points must have shape"):
        S.global_kmeans(np.zeros((4, 3), dtype=int))
    with pytest.raises(ValueError, match="points must be cells"):
        S.candidate_regions([[0, 0], [6, 1]], (6, 10), L=1)
    with pytest.raises(ValueError, match="shape"):
        S.candidate_regions([[0, 0]], (6,), L=1)
    with pytest.raises(ValueError, match="regions must not be empty"):
        S.region_power_set(torch.zeros(2, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="regions must be a boolean"):
        S.region_power_set(torch.ones(2, 3, 3))
    whole = torch.ones(1, 6, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="regions must have the map's size"):
        S.first_order(x, torch.ones(1, 6, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="regions must cover an active cell"):
        S.second_order(x, torch.from_numpy(rect(6, 10, 4, 0, 5, 0)[None]))
    with pytest.raises(ValueError, match="basis"):
        S.second_order(x, whole, basis=np.eye(3))
    with pytest.raises(ValueError, match="log_eps"):
        S.second_order(x, whole, log_eps=-1.0)
    with pytest.raises(ValueError, match="weighted"):
        S.first_order(x, whole, weighted="yes")
    with pytest.raises(ValueError, match=r"database\[1\] must be"):
        S.region_search(Q2, [T3, np.ones((2, 3))])
    with pytest.raises(ValueError, match="database must be a non-empty list"):
        S.region_search(Q2, T3)
    with pytest.raises(ValueError, match="query must not contain NaN"):
        S.image_similarity(np.full((1, 2), np.nan), T3)
    with pytest.raises(ValueError, match="n must be at most the number of database images"):
        S.query_expansion(Q2, [T3, T3], n=3)
    model = S.RegionalAggregation(L=2, n_min=12, reduced_dim=3, dim=4)
    with pytest.raises(ValueError, match="not fitted"):
        model.transform(random_maps(1, 0))
    with pytest.raises(ValueError, match="reduced_dim must be at most"):
        S.RegionalAggregation(L=2, n_min=12, reduced_dim=7, dim=4).fit(random_maps(3, 0))
    with pytest.raises(ValueError, match="dim must be at most"):
        S.RegionalAggregation(L=2, n_min=12, reduced_dim=2, dim=4).fit(random_maps(3, 0))
    with pytest.raises(ValueError, match="maps must all have the same number of channels"):
        model.fit([x, random_maps(1, 0)[0]])
    with pytest.raises(ValueError, match="L"):
        S.RegionalAggregation(L=0)
