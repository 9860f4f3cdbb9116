"""retrievalkit.search.rank against a float64 numpy reference."""
import numpy as np
import pytest
import torch

from retrievalkit.search import rank


def reference(Q, X):
    """Best first by score, then by lower index: a stable argsort of -Q X^T in float64."""
    S = np.asarray(Q, dtype=np.float64) @ np.asarray(X, dtype=np.float64).T
    return np.argsort(-S, axis=1, kind="stable")


def test_equals_the_float64_reference_on_random_data():
    rng = np.random.default_rng(0)
    Q, X = rng.standard_normal((7, 16)), rng.standard_normal((50, 16))
    out = rank(Q, X)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (7, 50)
    np.testing.assert_array_equal(out, reference(Q, X))


def test_torch_in_torch_out():
    g = torch.Generator().manual_seed(0)
    Q, X = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(30, 8, generator=g, dtype=torch.float64)
    out = rank(Q, X)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.shape == (5, 30)
    np.testing.assert_array_equal(out.numpy(), reference(Q.numpy(), X.numpy()))
    np.testing.assert_array_equal(rank(Q, X, k=4).numpy(), reference(Q.numpy(), X.numpy())[:, :4])


def test_k_is_the_first_k_columns_of_the_full_ranking():
    rng = np.random.default_rng(1)
    Q, X = rng.standard_normal((6, 10)).astype(np.float32), rng.standard_normal((40, 10)).astype(np.float32)
    full = rank(Q, X)
    for k in (1, 3, 39, 40):
        np.testing.assert_array_equal(rank(Q, X, k=k), full[:, :k])


def test_ties_go_to_the_lower_index():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(rank(np.array([[1.0, 0.0]]), X), [[0, 2, 3, 1, 4]])
    np.testing.assert_array_equal(rank(np.array([[1.0, 0.0]]), X, k=2), [[0, 2]])
    # many ties across the k boundary: the lowest indices, in order
    Xt = torch.ones(1000, 3)
    Xt[500] = 2.0
    np.testing.assert_array_equal(rank(torch.ones(2, 3), Xt, k=5).numpy(), [[500, 0, 1, 2, 3]] * 2)


def test_ties_on_quantised_data_match_the_stable_reference():
    rng = np.random.default_rng(2)
    Q, X = rng.integers(-1, 2, (20, 3)).astype(np.float32), rng.integers(-1, 2, (60, 3)).astype(np.float32)
    ref = reference(Q, X)
    for k in (1, 7, 60):
        np.testing.assert_array_equal(rank(Q, X, k=k), ref[:, :k])
        np.testing.assert_array_equal(rank(torch.from_numpy(Q), torch.from_numpy(X), k=k).numpy(), ref[:, :k])


def test_one_query_as_a_vector():
    rng = np.random.default_rng(3)
    q, X = rng.standard_normal(4), rng.standard_normal((9, 4))
    out = rank(q, X, k=3)
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, reference(q[None], X)[0, :3])


@pytest.mark.parametrize(
    "Q, X, k, name",
    [
        (np.ones((2, 3)), np.ones((4, 5)), None, "dimension"),
        (np.ones((2, 3)), torch.ones(4, 3), None, "same kind"),
        (np.ones((2, 3)), np.ones((0, 3)), None, "X"),
        (np.ones((0, 3)), np.ones((4, 3)), None, "Q"),
        (np.full((2, 3), np.nan), np.ones((4, 3)), None, "Q"),
        (np.ones((2, 3)), np.array([[1.0, np.nan, 0.0]]), None, "X"),
        (np.ones((2, 3, 1)), np.ones((4, 3)), None, "Q"),
        ([[1.0, 0.0]], np.ones((4, 2)), None, "Q"),
        (np.ones((2, 3)), np.ones((4, 3)), 0, "k"),
        (np.ones((2, 3)), np.ones((4, 3)), 5, "k"),
        (np.ones((2, 3)), np.ones((4, 3)), 2.0, "k"),
    ],
)
def test_rank_rejects(Q, X, k, name):
    with pytest.raises(ValueError, match=name):
        rank(Q, X, k=k)


def _unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_equals_exact_ranking():
    from retrievalkit.search import Index

    X, Q = _unit(2000, 32, 0), _unit(20, 32, 1)
    scores, ids = Index("flat").add(X).search(Q, 10)
    np.testing.assert_array_equal(ids, rank(Q, X, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(Q @ X.T, ids, axis=1), rtol=1e-5, atol=1e-6)
    assert Index("flat").add(X).recall(Q, 10) == 1.0


def test_ivf_and_pq_report_recall_against_exact():
    from retrievalkit.search import Index

    X, Q = _unit(4000, 32, 2), _unit(50, 32, 3)
    ivf_all = Index("ivf", nlist=16, nprobe=16).add(X)  # every cell visited: exact
    assert ivf_all.recall(Q, 10) == 1.0
    ivf = Index("ivf", nlist=64, nprobe=2).add(X)
    r = ivf.recall(Q, 10)
    assert 0.1 < r < 1.0  # approximate: visiting 2 of 64 cells misses neighbours
    pq = Index("ivfpq", nlist=16, nprobe=16, m=8, nbits=6).add(X)
    assert 0.05 < pq.recall(Q, 10) < 1.0  # compressed codes: approximate even with every cell visited
    # recall grows with nprobe
    assert Index("ivf", nlist=64, nprobe=16).add(X).recall(Q, 10) >= r


def test_index_rejects_bad_input():
    from retrievalkit.search import Index

    with pytest.raises(ValueError, match="kind"):
        Index("hnsw")
    with pytest.raises(ValueError, match="add"):
        Index().search(_unit(2, 8, 0), 1)
    with pytest.raises(ValueError, match="nlist"):
        Index("ivf", nlist=100).add(_unit(50, 8, 0))
    with pytest.raises(ValueError, match="m must divide"):
        Index("ivfpq", nlist=4, m=3).add(_unit(500, 8, 0))
    idx = Index().add(_unit(5, 8, 0))
    with pytest.raises(ValueError, match="k must"):
        idx.search(_unit(1, 8, 1), 6)
    with pytest.raises(ValueError, match="Q must have dimension"):
        idx.search(_unit(1, 4, 1), 1)


def test_unfitted_estimators_raise_sklearns_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    from retrievalkit.encoding import Codebook
    from retrievalkit.postprocess import LearnedWhitening, PCAWhitening
    from retrievalkit.salient import RegionalAggregation
    from retrievalkit.search import Index

    X = np.eye(4, dtype=np.float32)
    for call in (lambda: Codebook(2).assign(X), lambda: Codebook(2).centers, lambda: Index().search(X, 1),
                 lambda: PCAWhitening().transform(X), lambda: LearnedWhitening().transform(X),
                 lambda: RegionalAggregation().transform([torch.rand(4, 3, 3)])):
        with pytest.raises(NotFittedError, match="not fitted|is empty"):
            call()
