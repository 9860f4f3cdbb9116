"""retrievalkit.manifold against hand-worked examples and plain-loop implementations."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from retrievalkit.manifold import diffuse, knn_preservation, mutual_knn_graph, regional_diffusion_rerank


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------------------ kNN preservation
def knn_preservation_loops(X, Y, k):
    """Lee & Verleysen's Q_NX(K) with loops: for each point, its k nearest others in X and in Y as sets."""
    n = len(X)

    def nearest(Z, i):
        d = [(sum((Z[i][c] - Z[j][c]) ** 2 for c in range(len(Z[i]))), j) for j in range(n) if j != i]
        return {j for _, j in sorted(d)[:k]}

    return sum(len(nearest(X, i) & nearest(Y, i)) / k for i in range(n)) / n


def test_knn_preservation_of_a_hand_worked_example():
    # on a line: X at 0, 1, 3, 7; Y moves the points to 0, 5, 1.2, 2
    X = np.array([[0.0], [1.0], [3.0], [7.0]])
    Y = np.array([[0.0], [5.0], [1.2], [2.0]])
    # k = 1: nearest in X 1, 0, 1, 2; in Y 2, 3, 3, 2: only point 3 keeps its neighbour
    assert knn_preservation(X, Y, 1) == pytest.approx(0.25)
    # k = 2: X {1, 2}, {0, 2}, {0, 1}, {1, 2}; Y {2, 3}, {2, 3}, {0, 3}, {0, 2}: one of two kept each
    assert knn_preservation(X, Y, 2) == pytest.approx(0.5)
    # k = n - 1: every other point is a neighbour, in any embedding
    assert knn_preservation(X, Y, 3) == 1.0


def test_a_point_is_not_its_own_neighbour_even_where_it_has_a_duplicate():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 1.0]])  # points 0 and 1 coincide
    Y = np.array([[0.0], [10.0], [1.0], [11.0]])
    # k = 1: X 1, 0, 3, 2; Y 2, 3, 0, 1: no point keeps its nearest other point
    assert knn_preservation(X, Y, 1) == 0.0


def test_a_similarity_transform_keeps_every_neighbour():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    R = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    assert knn_preservation(X, 3 * X @ R + 7, 5) == 1.0


@pytest.mark.parametrize("k", [1, 4, 9])
def test_knn_preservation_equals_the_loops(k):
    rng = np.random.default_rng(k)
    X = rng.standard_normal((40, 6))
    Y = X[:, :2] + 0.5 * rng.standard_normal((40, 2))
    expected = knn_preservation_loops(X.tolist(), Y.tolist(), k)
    assert 0 < expected < 1
    assert knn_preservation(X, Y, k) == pytest.approx(expected, abs=1e-12)
    assert knn_preservation(torch.from_numpy(X), torch.from_numpy(Y), k) == pytest.approx(expected, abs=1e-12)


def test_knn_preservation_rejects_bad_input():
    X = np.random.default_rng(0).standard_normal((6, 3))
    for k in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="k"):
            knn_preservation(X, X, k)
    with pytest.raises(ValueError, match="Y"):
        knn_preservation(X, X[:5], 2)
    with pytest.raises(ValueError, match="X"):
        knn_preservation(np.full((6, 3), np.nan), X, 2)
    with pytest.raises(ValueError, match="Y"):
        knn_preservation(X, X.tolist(), 2)


# ------------------------------------------------------------------------------ the mutual kNN graph
def mutual_knn_graph_loops(X, k, gamma):
    """Iscen et al.'s knngraph.m with loops and a dense matrix: k nearest by inner product (itself a
    candidate), a_ij = max(x_i . x_j, 0)^gamma where i and j are in each other's lists, i != j."""
    n = len(X)
    S = X @ X.T
    lists = [set(np.argsort(-S[i], kind="stable")[:k]) for i in range(n)]
    A = np.zeros((n, n))
    for i in range(n):
        for j in lists[i]:
            if j != i and i in lists[j]:
                A[i, j] = max(S[i, j], 0.0) ** gamma
    return A


def test_mutual_knn_graph_of_a_hand_worked_example():
    # unit vectors at 0, 30, 90 and 180 degrees; k = 2 lists (itself first): {a, b}, {b, a}, {c, b}, {d, c}
    deg = np.radians([0, 30, 90, 180])
    X = np.stack([np.cos(deg), np.sin(deg)], axis=1)
    G = mutual_knn_graph(X, 2)
    assert isinstance(G, sp.csr_matrix) and G.shape == (4, 4) and G.dtype == np.float64
    # only a and b are in each other's list: weight cos(30 deg)^3
    assert G.nnz == 2
    np.testing.assert_allclose(G.toarray(), [[0, math.cos(math.pi / 6) ** 3, 0, 0], [math.cos(math.pi / 6) ** 3, 0, 0, 0],
                                             [0, 0, 0, 0], [0, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(mutual_knn_graph(X, 2, gamma=1.0)[0, 1], math.sqrt(3) / 2, rtol=1e-6)


def test_mutual_neighbours_with_a_negative_similarity_get_no_edge():
    G = mutual_knn_graph(np.array([[1.0, 0.0], [-1.0, 0.0]]), 2)  # each in the other's list, similarity -1
    assert G.nnz == 0


@pytest.mark.parametrize("k, gamma", [(3, 3.0), (8, 1.0), (15, 2.5)])
def test_mutual_knn_graph_equals_the_loops(k, gamma):
    rng = np.random.default_rng(k)
    centres = rng.standard_normal((4, 8))
    X = unit(centres[rng.integers(0, 4, 60)] + 0.7 * rng.standard_normal((60, 8)))
    expected = mutual_knn_graph_loops(X, k, gamma)
    G = mutual_knn_graph(X, k, gamma)
    assert (expected > 0).sum() > 0
    np.testing.assert_array_equal(G.toarray() > 0, expected > 0)
    np.testing.assert_allclose(G.toarray(), expected, rtol=1e-5, atol=1e-7)  # faiss computes x_i . x_j in float32
    assert (G != G.T).nnz == 0 and not G.diagonal().any() and (G.data > 0).all()
    np.testing.assert_array_equal(mutual_knn_graph(torch.from_numpy(X).float(), k, gamma).toarray() > 0, expected > 0)


def test_mutual_knn_graph_rejects_bad_input():
    X = unit(np.random.default_rng(0).standard_normal((6, 3)))
    for k in (0, 7, 1.5):
        with pytest.raises(ValueError, match="k"):
            mutual_knn_graph(X, k)
    for gamma in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            mutual_knn_graph(X, 3, gamma)
    with pytest.raises(ValueError, match="X"):
        mutual_knn_graph(np.full((6, 3), np.inf), 3)
    with pytest.raises(ValueError, match="X"):
        mutual_knn_graph(X[None], 3)


# ------------------------------------------------------------------------------ diffusion
def test_diffusion_on_a_hand_worked_path_is_the_random_walk_series():
    # path 0 - 1 - 2 with unit edges: degrees 1, 2, 1, S = D^-1/2 A D^-1/2 has 1/sqrt(2) off the diagonal
    A = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    S = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / math.sqrt(2)
    y = np.array([1.0, 0.0, 0.0])
    series = sum(0.5 ** t * np.linalg.matrix_power(S, t) @ y for t in range(200))
    f = diffuse(A, y[None], alpha=0.5, tol=1e-12, maxiter=100)[0]
    np.testing.assert_allclose(f, series, atol=1e-9)
    # by hand: (I - S/2) f = y gives f1 = f0 / (2 sqrt 2 - 1/sqrt 2 ...): check the solution of the 3x3 system
    np.testing.assert_allclose((np.eye(3) - 0.5 * S) @ f, y, atol=1e-9)
    assert f[0] > f[1] > f[2] > 0  # the walk reaches the far end, less and less


def regional_diffusion_loops(QR, XR, k, alpha, kq, gamma, lam):
    """The authors' run_test.m (regional) with dense numpy and loops: knn lists, mutual graph, ymake, a
    direct solve of (I - alpha S) f = y, gmpweights per image, accumarray of f * coeff."""
    V = np.concatenate(XR).astype(np.float64)
    n = len(V)
    sim = V @ V.T
    knn = [list(np.argsort(-sim[i], kind="stable")[:k]) for i in range(n)]
    A = np.zeros((n, n))
    for i in range(n):
        for j in knn[i]:
            if i != j and i in knn[j]:
                A[i, j] = max(sim[i, j], 0) ** gamma
    d = np.array([1 / math.sqrt(s) if s > 0 else 0 for s in A.sum(1)])
    L = np.eye(n) - alpha * (d[:, None] * A * d[None, :])
    owner = [i for i, x in enumerate(XR) for _ in range(len(x))]
    coeff = np.concatenate([np.linalg.inv(x @ x.T + lam * np.eye(len(x))) @ np.ones(len(x)) for x in XR])
    scores = []
    for q in QR:
        summed = np.zeros(n)
        for r in q:
            s = V @ r
            for j in np.argsort(-s, kind="stable")[:kq]:
                summed[j] += s[j]
        y = np.zeros(n)
        for j in np.argsort(-summed, kind="stable")[:kq]:
            y[j] = max(summed[j], 0) ** gamma
        f = np.linalg.solve(L, y)
        score = np.zeros(len(XR))
        for j in range(n):
            score[owner[j]] += f[j] * coeff[j]
        scores.append(score)
    return np.array(scores)


def test_regional_diffusion_equals_the_authors_recipe_written_with_loops():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((3, 8)))
    XR = [unit(centres[i % 3] + 0.2 * rng.standard_normal((m, 8))) for i, m in enumerate([3, 4, 3, 2, 4, 3, 3])]
    QR = [unit(centres[0] + 0.2 * rng.standard_normal((2, 8))), unit(centres[2] + 0.2 * rng.standard_normal((3, 8)))]
    scores = regional_diffusion_loops(QR, XR, k=5, alpha=0.9, kq=4, gamma=3.0, lam=1.0)
    ranks = regional_diffusion_rerank([torch.from_numpy(q) for q in QR], XR, k=5, alpha=0.9, kq=4, tol=1e-14, maxiter=500)
    np.testing.assert_array_equal(ranks, np.argsort(-scores, axis=1, kind="stable"))
    # the clusters are apart: each query reaches exactly the images of its own centre, with distinct scores
    for scores_q, centre in zip(scores, (0, 2)):
        reached = np.flatnonzero(scores_q > 0)
        assert reached.tolist() == [i for i in range(len(XR)) if i % 3 == centre]
        assert len(set(np.round(scores_q[reached], 9))) == reached.size


def test_regional_diffusion_rejects_bad_input():
    XR = [np.eye(4)[:2], np.eye(4)[2:]]
    with pytest.raises(ValueError, match="database_regions"):
        regional_diffusion_rerank([np.eye(4)[:1]], np.eye(4))
    with pytest.raises(ValueError, match="same dimension"):
        regional_diffusion_rerank([np.eye(3)[:1]], XR)
    with pytest.raises(ValueError, match="alpha"):
        regional_diffusion_rerank([np.eye(4)[:1]], XR, k=2, alpha=1.0)
    with pytest.raises(ValueError, match="k must"):
        regional_diffusion_rerank([np.eye(4)[:1]], XR, k=5)
