"""Post-processing against closed forms, hand-worked examples and slow independent implementations."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from retrievalkit import postprocess as pp
from retrievalkit.search import rank


def unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def correlated(n, d, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)


def population_cov(X):
    Xc = X - X.mean(axis=0)
    return Xc.T @ Xc / len(X)


# ------------------------------------------------------------------------------------- whitening


def test_pca_whitening_gives_identity_covariance_on_the_kept_dims():
    X = correlated(400, 8, 0)
    w = pp.PCAWhitening().fit(X)
    np.testing.assert_allclose(w.mean_, X.mean(axis=0), atol=1e-12)
    Z = (X - w.mean_) @ w.P_.T  # before the final L2
    np.testing.assert_allclose(population_cov(Z), np.eye(8), atol=1e-9)
    w5 = pp.PCAWhitening(dim=5).fit(X)
    assert w5.P_.shape == (5, 8)
    np.testing.assert_allclose(w5.P_ @ population_cov(X) @ w5.P_.T, np.eye(5), atol=1e-9)
    # the kept dims are the 5 largest-variance directions: the eigenvalues, from numpy, descending
    np.testing.assert_allclose(w5.eigvals_, np.sort(np.linalg.eigvalsh(population_cov(X)))[::-1][:5], rtol=1e-9)


@pytest.mark.parametrize("power", [0.25, 0.0])
def test_pca_power_shrinks_the_covariance_to_eigval_power(power):
    # P = diag(l^-p) E^T  =>  P C P^T = diag(l^(1 - 2p)): l^0.5 for naver's 0.25, l for plain PCA
    X = correlated(300, 6, 1)
    C = population_cov(X)
    lam = np.sort(np.linalg.eigvalsh(C))[::-1]
    P = pp.PCAWhitening(power=power).fit(X).P_
    np.testing.assert_allclose(P @ C @ P.T, np.diag(lam ** (1 - 2 * power)), atol=1e-9 * lam[0])


def test_pca_transform_uses_the_training_mean():
    X = correlated(200, 5, 2)
    Y = correlated(30, 5, 3) + 4.0  # another set, with another mean
    w = pp.PCAWhitening().fit(X)
    Z = (Y - X.mean(axis=0)) @ w.P_.T
    np.testing.assert_allclose(w.transform(Y), Z / np.linalg.norm(Z, axis=1, keepdims=True), atol=1e-12)
    # one row at a time gives the same: centring on Y's own mean would map a single row to 0
    np.testing.assert_allclose(w.transform(Y[3]), w.transform(Y)[3], atol=1e-12)
    assert np.linalg.norm(w.transform(Y[3])) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("dim", [None, 4])
def test_pca_whitening_equals_sklearn_after_l2_up_to_sign(dim):
    # sklearn divides by the (N-1) variance: one scalar for every dimension, removed by L2
    X, Y = correlated(150, 7, 4), correlated(20, 7, 5)
    ours = pp.PCAWhitening(dim=dim).fit(X).transform(Y)
    sk = PCA(n_components=dim, whiten=True).fit(X).transform(Y)
    sk = sk / np.linalg.norm(sk, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(ours), np.abs(sk), atol=1e-5)  # l2n's eps 1e-6 over norms ~1


def test_eigenvector_signs_are_deterministic():
    # rule: the largest-magnitude component of every eigenvector (row of P_ up to a positive scale) is positive
    for seed in range(4):
        for power in (0.5, 0.0):
            rows = pp.PCAWhitening(power=power).fit(correlated(100, 6, seed)).P_
            assert (rows[np.arange(len(rows)), np.abs(rows).argmax(axis=1)] > 0).all()


def test_pca_keeps_only_the_rank_and_rejects_more():
    X = correlated(5, 10, 7)  # 5 rows: the centred data span 4 dimensions
    w = pp.PCAWhitening().fit(X)
    assert w.P_.shape == (4, 10)
    np.testing.assert_allclose(population_cov((X - X.mean(axis=0)) @ w.P_.T), np.eye(4), atol=1e-8)
    with pytest.raises(ValueError, match="dim"):
        pp.PCAWhitening(dim=5).fit(X)


def test_fewer_rows_than_dimensions_give_the_same_whitening_as_the_full_eigendecomposition():
    # N < D takes the thin SVD of the data; compare with numpy's eigh of the D x D covariance
    X = correlated(30, 80, 11)
    w = pp.PCAWhitening(dim=12).fit(X)
    lam, E = np.linalg.eigh(population_cov(X))
    lam, E = lam[::-1][:12], E[:, ::-1][:, :12]
    np.testing.assert_allclose(w.eigvals_, lam, rtol=1e-9)
    np.testing.assert_allclose(np.abs(w.P_), np.abs((E / np.sqrt(lam)).T), atol=1e-8)
    Xq, qi, pi = lw_data(2, n=120, d=150)  # 50 pairs: S gets a ridge
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        full, short = pp.LearnedWhitening().fit(Xq, qi, pi), pp.LearnedWhitening(dim=20).fit(Xq, qi, pi)
    np.testing.assert_allclose(short.P_, full.P_[:20], atol=1e-6 * np.abs(full.P_[:20]).max())


def cirtorch_whitenlearn(X, qidxs, pidxs):
    """cirtorch utils/whiten.py::whitenlearn, columns convention, written out step by step."""
    X = X.T
    m = X[:, qidxs].mean(axis=1, keepdims=True)
    df = X[:, qidxs] - X[:, pidxs]
    S = df @ df.T / df.shape[1]
    P = np.linalg.inv(np.linalg.cholesky(S))
    df = P @ (X - m)
    eigval, eigvec = np.linalg.eig(df @ df.T)
    order = eigval.argsort()[::-1]
    return m.ravel(), eigvec[:, order].T @ P


def lw_data(seed, n=300, d=6):
    rng = np.random.default_rng(seed)
    X = correlated(n, d, seed)
    q = rng.choice(n, 100, replace=False)
    X[q[50:]] = X[q[:50]] + 0.3 * rng.standard_normal((50, d)) @ np.diag(np.arange(1, d + 1))  # positives
    return X, q[:50], q[50:]


def test_learned_whitening_whitens_the_pair_differences():
    X, qi, pi = lw_data(0)
    diff = X[qi] - X[pi]
    S = diff.T @ diff / len(qi)
    w = pp.LearnedWhitening().fit(X, qi, pi)
    np.testing.assert_allclose(w.P_ @ S @ w.P_.T, np.eye(6), atol=1e-9)
    np.testing.assert_allclose(w.mean_, X[qi].mean(axis=0), atol=1e-12)
    w3 = pp.LearnedWhitening(dim=3).fit(X, list(qi), torch.from_numpy(pi))
    np.testing.assert_allclose(w3.P_ @ S @ w3.P_.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(w3.P_, w.P_[:3])


def test_learned_whitening_equals_cirtorch_up_to_sign():
    X, qi, pi = lw_data(1)
    m, P = cirtorch_whitenlearn(X, qi, pi)
    w = pp.LearnedWhitening().fit(X, qi, pi)
    np.testing.assert_allclose(w.mean_, m, atol=1e-12)
    np.testing.assert_allclose(np.abs(w.P_), np.abs(P), atol=1e-8)
    Y = correlated(10, 6, 9)
    Z = (Y - m) @ P.T
    np.testing.assert_allclose(np.abs(w.transform(Y)), np.abs(Z / np.linalg.norm(Z, axis=1, keepdims=True)), atol=1e-8)


def test_learned_whitening_regularises_a_singular_pair_covariance():
    X = correlated(50, 6, 2)
    with pytest.warns(RuntimeWarning, match="diagonal"):
        w = pp.LearnedWhitening().fit(X, [0, 1, 2], [3, 4, 5])  # 3 pairs: S has rank 3 < 6
    assert np.isfinite(w.P_).all()


def test_whitening_keeps_kind_dtype_and_a_single_row():
    X = correlated(100, 5, 3)
    w = pp.PCAWhitening(dim=3).fit(torch.from_numpy(X))
    Yt = torch.from_numpy(X[:4]).float()
    out = w.transform(Yt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (4, 3)
    torch.testing.assert_close(out, torch.from_numpy(w.transform(X[:4])).float(), atol=1e-5, rtol=1e-5)
    out = w.transform(X[0].astype(np.float32))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3,)


# ------------------------------------------------------------------------ query expansion and DBA

Xh = unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
qh = np.array([0.8, 0.6])


def test_aqe_by_hand():
    # sims 0.8, 0.96, 0.6: the top-2 are x1, x0; q + x0 + x1 = (2.4, 1.4)
    out = pp.average_query_expansion(qh, Xh, 2)
    np.testing.assert_allclose(out, np.array([2.4, 1.4]) / np.sqrt(2.4**2 + 1.4**2), atol=1e-6)
    assert out.shape == (2,)
    # alpha = 1: q + 0.96 x1 + 0.8 x0 = (2.176, 1.368)
    out = pp.alpha_query_expansion(qh[None], Xh, 2, 1.0)
    np.testing.assert_allclose(out, unit([[2.176, 1.368]]), atol=1e-6)


def alpha_qe_slow(Q, X, k, alpha, exclude_self=False):
    out = []
    for i, q in enumerate(Q):
        s = X @ q
        if exclude_self:
            s[i] = -np.inf
        top = np.argsort(-s)[:k]
        out.append(q + sum(max(s[j], 0.0) ** alpha * X[j] for j in top))
    return unit(out)


def test_alpha_qe_equals_the_slow_formula_and_alpha0_is_aqe():
    rng = np.random.default_rng(0)
    Q, X = unit(rng.standard_normal((6, 16))), unit(rng.standard_normal((40, 16)))
    for alpha in (0.0, 0.5, 3.0):
        out = pp.alpha_query_expansion(Q, X, 5, alpha)
        np.testing.assert_allclose(out, alpha_qe_slow(Q, X, 5, alpha), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pp.alpha_query_expansion(Q, X, 5, 0), pp.average_query_expansion(Q, X, 5), atol=1e-15)
    out = pp.alpha_query_expansion(torch.from_numpy(Q).float(), torch.from_numpy(X).float(), 5, 3.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), alpha_qe_slow(Q, X, 5, 3.0), atol=1e-5)


def test_alpha_qe_clamps_negative_similarities():
    # k = 3 reaches x = (-1, 0) with s = -0.8: weight 0 for alpha = 0.5 (not NaN), 1 for alpha = 0
    X = unit([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = np.array([[0.8, 0.6]])
    np.testing.assert_allclose(pp.alpha_query_expansion(q, X, 3, 0.5), unit([[0.8 + 0.8**0.5, 0.6 + 0.6**0.5]]), atol=1e-6)
    np.testing.assert_allclose(pp.alpha_query_expansion(q, X, 3, 0.0), unit([[0.8, 1.6]]), atol=1e-6)


def test_dba_moves_each_vector_toward_its_nearest_other_vector():
    # two far-apart pairs; with itself included, k=1 would return every vector unchanged
    X = unit([[1, 0.1, 0], [1, -0.1, 0], [0, 1, 0.2], [0, 1, -0.2]])
    out = pp.database_augmentation(X, 1)
    np.testing.assert_allclose(out, [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], atol=1e-6)
    rng = np.random.default_rng(1)
    X = unit(rng.standard_normal((30, 8)))
    for alpha in (0.0, 3.0):
        np.testing.assert_allclose(pp.database_augmentation(X, 4, alpha), alpha_qe_slow(X, X, 4, alpha, True), atol=1e-6)
    assert pp.database_augmentation(X, 29).shape == (30, 8)


# ------------------------------------------------------------------------------------- diffusion


def two_moons():
    """Two half-circles (sklearn's make_moons without noise) on the unit sphere: (x, y, 3) / norm."""
    t = np.linspace(0, np.pi, 100)
    P = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)])
    return unit(np.concatenate([P, np.full((200, 1), 3.0)], 1))


def test_diffusion_follows_the_manifold():
    X = two_moons()  # rows 0..99 moon A, 100..199 moon B
    q = X[:1]  # the tip of moon A
    far_same, near_other = 50, 150  # top of A, bottom of B
    assert X[near_other] @ q[0] > X[far_same] @ q[0]  # B's point is the nearer one
    pos_plain = np.argsort(rank(q, X)[0])
    assert pos_plain[near_other] < pos_plain[far_same]
    pos = np.argsort(pp.diffusion_rerank(q, X, k=10)[0])
    assert pos[far_same] < pos[near_other]
    assert pos[: far_same + 1].max() < pos[100:].min()  # all of A up to that point before any of B
    # solved to convergence, the whole of moon A comes first
    pos = np.argsort(pp.diffusion_rerank(q, X, k=10, tol=1e-12, maxiter=500)[0])
    assert pos[:100].max() < pos[100:].min()


def diffusion_slow(Q, X, k, kq, alpha, gamma):
    """Iscen et al.'s knngraph.m / transition_matrix.m / ymake.m with loops, dense, solved exactly."""
    n = len(X)
    S = X @ X.T
    knn = np.argsort(-S, axis=1, kind="stable")[:, :k]
    A = np.zeros((n, n))
    for i in range(n):
        for j in knn[i]:
            if j != i and i in knn[j]:
                A[i, j] = max(S[i, j], 0.0) ** gamma
    d = A.sum(axis=1)
    Dh = np.diag([x**-0.5 if x > 0 else 0.0 for x in d])
    L = np.eye(n) - alpha * Dh @ A @ Dh
    F = []
    for q in Q:
        s = X @ q
        y = np.zeros(n)
        top = np.argsort(-s)[:kq]
        y[top] = np.maximum(s[top], 0) ** gamma
        F.append(np.linalg.solve(L, y))
    return np.array(F)


def test_diffusion_orders_by_the_exact_solution():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 8))
    X = unit(centres[rng.integers(0, 4, 80)] + 0.6 * rng.standard_normal((80, 8)))
    Q = unit(X[:5] + 0.1 * rng.standard_normal((5, 8)))
    F = diffusion_slow(Q, X, k=8, kq=4, alpha=0.9, gamma=3)
    ranks = pp.diffusion_rerank(Q, X, k=8, alpha=0.9, kq=4, tol=1e-12, maxiter=1000)
    assert ranks.dtype == np.int64 and ranks.shape == (5, 80)
    for f, r, q in zip(F, ranks, Q):
        reached = int((f > 1e-12).sum())
        assert (f[r[:reached]] > 1e-12).all()  # everything reached first ...
        assert (np.diff(f[r[:reached]]) <= 1e-7 * f.max()).all()  # ... by decreasing f
        assert (np.diff(X[r[reached:]] @ q) <= 1e-12).all()  # the rest by plain similarity
        assert sorted(r) == list(range(80))


def test_diffusion_torch_and_single_query():
    X = two_moons()
    out = pp.diffusion_rerank(torch.from_numpy(X[:3]).float(), torch.from_numpy(X).float(), k=10)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.shape == (3, 200)
    single = pp.diffusion_rerank(X[0], X, k=10)
    assert single.shape == (200,)
    np.testing.assert_array_equal(single, pp.diffusion_rerank(X[:2], X, k=10)[0])


# ------------------------------------------------------------------------------ fusion and PFA


def test_fuse_by_hand():
    a = np.array([[3.0, 4.0], [0.0, 2.0]])
    b = np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    out = pp.fuse(a, b)
    expected = np.array([[0.6, 0.8, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0]]) / np.sqrt(2)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    t = pp.fuse(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0, 5.0]), torch.tensor([2.0]))
    torch.testing.assert_close(t, torch.tensor([0.6, 0.8, 0.0, 0.0, 1.0, 1.0]) / 3**0.5, atol=1e-6, rtol=1e-6)


def grouped_features(seed):
    """3 independent signals, each copied 4 times with tiny noise: features 4g..4g+3 form group g."""
    rng = np.random.default_rng(seed)
    return np.repeat(rng.standard_normal((200, 3)) * [1.0, 2.0, 0.5], 4, axis=1) + 1e-3 * rng.standard_normal((200, 12))


def test_pfa_picks_one_feature_per_group_deterministically():
    X = grouped_features(0)
    for seed in range(5):
        idx = pp.principal_feature_analysis(X, 3, seed=seed)
        assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
        assert sorted(idx // 4) == [0, 1, 2]
        np.testing.assert_array_equal(idx, pp.principal_feature_analysis(X, 3, seed=seed))
    # a shuffled feature order picks the same (relabelled) groups
    perm = np.random.default_rng(1).permutation(12)
    idx = pp.principal_feature_analysis(X[:, perm], 3)
    assert sorted(perm[idx] // 4) == [0, 1, 2]
    out = pp.principal_feature_analysis(torch.from_numpy(X), 6, q=3)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.shape == (6,)


# --------------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected():
    X = correlated(20, 4, 0)
    with pytest.raises(ValueError, match="dim"):
        pp.PCAWhitening(dim=5).fit(X)
    with pytest.raises(ValueError, match="dim"):
        pp.PCAWhitening(dim=0)
    with pytest.raises(ValueError, match="power"):
        pp.PCAWhitening(power=-0.5)
    with pytest.raises(ValueError, match="fit"):  # sklearn's NotFittedError, a ValueError
        pp.PCAWhitening().transform(X)
    with pytest.raises(ValueError, match="fit"):
        pp.LearnedWhitening().transform(X)
    with pytest.raises(ValueError, match="Y"):
        pp.PCAWhitening().fit(X).transform(X[:, :3])
    with pytest.raises(ValueError, match="X"):
        pp.PCAWhitening().fit(np.where(X > 1, np.nan, X))
    with pytest.raises(ValueError, match="X"):
        pp.PCAWhitening().fit(X[:1])
    with pytest.raises(ValueError, match="query_idx"):
        pp.LearnedWhitening().fit(X, [0, 20], [1, 2])
    with pytest.raises(ValueError, match="positive_idx"):
        pp.LearnedWhitening().fit(X, [0, 1], [2])
    with pytest.raises(ValueError, match="positive_idx"):
        pp.LearnedWhitening().fit(X, [0, 1], [2.0, 3.0])

    Q, D = unit(X[:3]), unit(X)
    for k in (0, 21, 2.5):
        with pytest.raises(ValueError, match="k"):
            pp.alpha_query_expansion(Q, D, k, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        pp.alpha_query_expansion(Q, D, 3, -1.0)
    with pytest.raises(ValueError, match="X"):
        pp.average_query_expansion(Q, D[:, :3], 3)
    with pytest.raises(ValueError, match="Q"):
        pp.average_query_expansion(np.full((1, 4), np.nan), D, 3)
    with pytest.raises(ValueError, match="Q"):
        pp.average_query_expansion(torch.from_numpy(Q), D, 3)
    with pytest.raises(ValueError, match="k"):
        pp.database_augmentation(D, 20)  # itself excluded: at most 19 others
    with pytest.raises(ValueError, match="X"):
        pp.database_augmentation(D[:0], 1)

    with pytest.raises(ValueError, match="k"):
        pp.diffusion_rerank(Q, D)  # default k = 50 > 20 database vectors
    with pytest.raises(ValueError, match="kq"):
        pp.diffusion_rerank(Q, D, k=5, kq=21)
    with pytest.raises(ValueError, match="alpha"):
        pp.diffusion_rerank(Q, D, k=5, alpha=1.0)
    with pytest.raises(ValueError, match="gamma"):
        pp.diffusion_rerank(Q, D, k=5, gamma=0)

    with pytest.raises(ValueError, match="descriptors"):
        pp.fuse()
    with pytest.raises(ValueError, match="descriptors"):
        pp.fuse(X, X[:5])
    with pytest.raises(ValueError, match="descriptors"):
        pp.fuse(X, torch.from_numpy(X))

    with pytest.raises(ValueError, match="n"):
        pp.principal_feature_analysis(X, 5)
    with pytest.raises(ValueError, match="seed"):
        pp.principal_feature_analysis(X, 2, seed=-1)
    with pytest.raises(ValueError, match="q"):
        pp.principal_feature_analysis(X, 2, q=5)


def test_pfa_rejects_fewer_clusters_than_n(monkeypatch):
    # sklearn's k-means leaves clusters empty (with a ConvergenceWarning) when features are exact
    # duplicates; whether SVD makes their loadings bit-identical is up to LAPACK, so simulate it
    class OneCluster:
        def __init__(self, n_clusters, **kwargs):
            self.n_clusters = n_clusters

        def fit(self, A):
            self.labels_ = np.zeros(len(A), dtype=np.int32)
            self.cluster_centers_ = np.repeat(A.mean(axis=0, keepdims=True), self.n_clusters, axis=0)
            return self

    monkeypatch.setattr(pp, "KMeans", OneCluster)
    with pytest.raises(ValueError, match="n must be at most the number of distinct"):
        pp.principal_feature_analysis(correlated(20, 4, 0), 3)


# ------------------------------------------------------------------------------- region re-ranking


def test_region_rerank_by_hand():
    # query regions e0 and e1; image 0 matches only e0 perfectly, image 1 half-matches both,
    # image 2 has nothing in common
    e = np.eye(3)
    q = [np.stack([e[0], e[1]])]
    half = (e[0] + e[1]) / np.sqrt(2)
    db = [np.stack([e[0], e[2]]), half[None], e[2][None]]
    ranks = np.array([[0, 1, 2]])
    # chamfer: image 0 (1 + 0)/2 = 0.5, image 1 (0.707 + 0.707)/2 = 0.707 -> 1 before 0
    assert pp.region_rerank(ranks, q, db, k=3).tolist() == [[1, 0, 2]]
    # max: image 0 has the best single pair (1.0) -> order kept
    assert pp.region_rerank(ranks, q, db, k=3, similarity="max").tolist() == [[0, 1, 2]]
    # only the top k move: with k = 1 nothing changes; torch in, torch out
    out = pp.region_rerank(torch.tensor([[0, 1, 2]]), q, db, k=1)
    assert isinstance(out, torch.Tensor) and out.tolist() == [[0, 1, 2]]


def test_region_rerank_by_plain_loops_best_pair_and_chamfer():
    rng = np.random.default_rng(3)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    db = [unit(rng.standard_normal((int(rng.integers(1, 6)), 8))) for _ in range(30)]
    qs = [unit(rng.standard_normal((int(rng.integers(1, 5)), 8))) for _ in range(4)]
    ranks = np.tile(np.arange(30), (4, 1))
    ours = pp.region_rerank(ranks, qs, db, k=30, similarity="max")
    for q, row in zip(qs, ours):  # the best region pair (eq. 7 of Jeong et al., ICASSP 2017) by a plain loop
        scores = [max(r @ s for s in x for r in q) for x in db]
        assert row.tolist() == np.argsort(-np.array(scores), kind="stable").tolist()
    # chamfer by a plain loop
    ours = pp.region_rerank(ranks, qs, db, k=30)
    for q, row in zip(qs, ours):
        scores = [np.mean([max(r @ s for s in x) for r in q]) for x in db]
        assert row.tolist() == np.argsort(-np.array(scores), kind="stable").tolist()


def test_region_rerank_rejects_bad_input():
    q, db = [np.eye(2)], [np.eye(2), np.eye(2)]
    with pytest.raises(ValueError, match="similarity"):
        pp.region_rerank(np.array([[0, 1]]), q, db, similarity="mean")
    with pytest.raises(ValueError, match="ranks"):
        pp.region_rerank(np.array([[0, 1, 2]]), q, db)
    with pytest.raises(ValueError, match="database_regions"):
        pp.region_rerank(np.array([[0, 1]]), q, [np.eye(2), np.ones((1, 3))])
    with pytest.raises(ValueError, match="k"):
        pp.region_rerank(np.array([[0, 1]]), q, db, k=3)


def test_best_per_image_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.9, 0.3, 0.5, 0.2], [1.0, 0.0, 0.0, 0.7, 0.1, 0.8]])
    values, index = pp.best_per_image(scores, torch.tensor([3, 1, 2]))  # images own regions 0-2, 3, 4-5
    torch.testing.assert_close(values, torch.tensor([[0.9, 0.3, 0.5], [1.0, 0.7, 0.8]]))
    assert index.tolist() == [[1, 0, 0], [0, 0, 1]]  # position within the image; the first on ties
    with pytest.raises(ValueError, match="sizes must be positive region counts summing to the 6"):
        pp.best_per_image(scores, torch.tensor([3, 2]))
