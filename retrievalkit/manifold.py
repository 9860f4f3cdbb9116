"""Neighbourhoods in descriptor space: how well an embedding keeps them, and the graph diffusion walks on.

* :func:`knn_preservation`: the agreement of the k-nearest-neighbour sets of the data and of its
  embedding, Lee & Verleysen's ``Q_NX(K)`` (Neurocomputing 2009).
* :func:`mutual_knn_graph`: the mutual kNN affinity graph of Iscen et al. (CVPR 2017), the graph
  that :func:`retrievalkit.postprocess.diffusion_rerank` diffuses a query on; :func:`diffuse`, the
  diffusion itself; :func:`regional_diffusion_rerank`, the same on a graph of image regions (the
  paper's small-object setting).

Rows are points: ``X`` ``(n, D)``, ``numpy.ndarray`` or ``torch.Tensor``.
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import cg
from scipy.spatial.distance import cdist

from ._validate import bounded_int, check_region_sets, check_rows, positive_int, positive_number

__all__ = ["knn_preservation", "mutual_knn_graph", "diffuse", "regional_diffusion_rerank"]


def _check_points(x: Any, name: str) -> np.ndarray:
    """Rows ``(n, D)`` of finite floats (:func:`check_rows`) as float64 numpy."""
    x = check_rows(x, name)
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _nearest_others(Z: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows by Euclidean distance ``(n, k)``; ties to the lower index."""
    d2 = cdist(Z, Z, "sqeuclidean")
    np.fill_diagonal(d2, np.inf)  # a point is not its own neighbour
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def knn_preservation(X: Any, Y: Any, k: int) -> float:
    """The fraction of each point's ``k`` nearest neighbours that its embedding keeps, averaged.

    ``(1/n) sum_i |N_k^X(i) ∩ N_k^Y(i)| / k``, with ``N_k^Z(i)`` the set of the ``k`` rows of ``Z``
    nearest to row ``i`` by Euclidean distance, ``i`` itself left out (ties go to the lower index).
    This is ``Q_NX(K)`` of J. A. Lee and M. Verleysen, "Quality assessment of dimensionality
    reduction: Rank-based criteria", Neurocomputing 72(7-9), 2009. ``X`` ``(n, D)`` is the data,
    ``Y`` ``(n, d)`` its embedding (row ``i`` is the same point in both), ``1 <= k <= n - 1``.
    1 means every point keeps all its ``k`` nearest neighbours.
    """
    Xa, Ya = _check_points(X, "X"), _check_points(Y, "Y")
    if Ya.shape[0] != Xa.shape[0]:
        raise ValueError(f"Y must have one row per row of X ({Xa.shape[0]}), got {Ya.shape[0]}")
    k = bounded_int(k, Xa.shape[0] - 1, "k", "the number of points minus one")
    n = Xa.shape[0]
    in_x = np.zeros((n, n), dtype=bool)
    np.put_along_axis(in_x, _nearest_others(Xa, k), True, axis=1)
    shared = np.take_along_axis(in_x, _nearest_others(Ya, k), axis=1).sum(axis=1)
    return float(shared.mean() / k)


def mutual_knn_graph(X: Any, k: int, gamma: float = 3.0) -> sp.csr_matrix:
    """The mutual kNN affinity graph of Iscen et al. (CVPR 2017), sparse ``(n, n)`` CSR, float64.

    For each row ``x_i`` its ``k`` nearest rows by inner product, itself a candidate (as the
    authors' ``knn_wrap``); ``a_ij = max(x_i . x_j, 0)^gamma`` for ``j`` in the list of ``i``.
    The edge ``(i, j)`` is kept only where ``i`` and ``j`` are in each other's lists (*mutual*
    neighbours), with weight ``min(a_ij, a_ji)``; zero diagonal, no stored zeros. A. Iscen,
    G. Tolias, Y. Avrithis, T. Furon and O. Chum, "Efficient Diffusion on Region Manifolds:
    Recovering Small Objects with Compact CNN Representations", CVPR 2017,
    https://arxiv.org/abs/1611.05113 (``knngraph.m``, global descriptors). The neighbours come
    from an exact faiss search in float32; ``1 <= k <= n``, ``gamma > 0`` (theirs: 3).
    """
    Xf = np.ascontiguousarray(_check_points(X, "X"), dtype=np.float32)
    n = Xf.shape[0]
    k = bounded_int(k, n, "k", "the number of rows of X")
    gamma = positive_number(gamma, "gamma")
    index = faiss.IndexFlatIP(Xf.shape[1])
    index.add(Xf)
    s, nn = index.search(Xf, k)
    W = sp.csr_matrix((np.maximum(s, 0).astype(np.float64).ravel() ** gamma, (np.repeat(np.arange(n), k), nn.ravel())),
                      shape=(n, n))
    A = W.minimum(W.T)  # non-zero only where i and j are in each other's lists
    A = (A - sp.diags(A.diagonal())).tocsr()
    A.eliminate_zeros()
    return A


def diffuse(A: sp.spmatrix, Y: np.ndarray, alpha: float, tol: float = 1e-6, maxiter: int = 20) -> np.ndarray:
    """Diffusion of each row ``y`` of ``Y`` ``(nq, n)`` on the affinity graph ``A`` ``(n, n)`` -> ``(nq, n)``.

    ``f`` solves ``(I - alpha S) f = y`` with ``S = D^-1/2 A D^-1/2`` (``D`` the degrees; an isolated
    vertex gets 0), by conjugate gradient (``scipy.sparse.linalg.cg``, relative residual ``tol``, at
    most ``maxiter`` iterations: the authors' ``transition_matrix`` and ``pcg(A, y, 1e-6, 20)``).
    The exact solution is the random walk ``f = sum_t alpha^t S^t y``, ``0 < alpha < 1``.
    """
    degree = np.asarray(A.sum(axis=1)).ravel()
    d = np.zeros(A.shape[0])
    np.power(degree, -0.5, out=d, where=degree > 0)
    L = (sp.identity(A.shape[0], format="csr") - alpha * (sp.diags(d) @ A @ sp.diags(d))).tocsr()
    return np.stack([cg(L, y, rtol=tol, maxiter=maxiter)[0] for y in np.atleast_2d(Y)])


def _gmp_weights(sets: list[np.ndarray], lam: float) -> np.ndarray:
    """Generalised max-pooling weights of each image's regions, ``(V_i V_i^T + lam I)^-1 1`` (the
    authors' ``gmpweights.m``; Murray & Perronnin, CVPR 2014), concatenated; images with the same
    number of regions are solved in one batch."""
    out = [np.empty(0)] * len(sets)
    by_size: dict[int, list[int]] = {}
    for i, v in enumerate(sets):
        by_size.setdefault(len(v), []).append(i)
    for m, members in by_size.items():
        V = np.stack([sets[i] for i in members])  # (b, m, D)
        b = np.linalg.solve(V @ V.transpose(0, 2, 1) + lam * np.eye(m), np.ones((len(members), m, 1)))[..., 0]
        for i, w in zip(members, b):
            out[i] = w
    return np.concatenate(out)


def regional_diffusion_rerank(
    query_regions: Any, database_regions: Any, k: int = 200, alpha: float = 0.99, *, kq: int | None = None,
    gamma: float = 3.0, lam: float = 1.0, tol: float = 1e-6, maxiter: int = 20,
) -> np.ndarray:
    """Regional diffusion of Iscen et al. (CVPR 2017, https://arxiv.org/abs/1611.05113), the authors'
    ``run_test.m`` with ``feature_type = 'regional'``: the nodes are the regions of every database
    image (e.g. :func:`retrievalkit.regions.regional_vectors`), not the images.

    ``A`` = :func:`mutual_knn_graph` of all database regions (``k`` nearest, ``gamma``); for each
    query, each of its regions finds its ``kq`` nearest database regions, their similarities are
    summed per database region, and ``y`` keeps the ``kq`` largest sums ``s`` as ``max(s, 0)^gamma``
    (``ymake.m``); ``f`` = :func:`diffuse`; an image scores ``sum_r c_r f_r`` over its regions, with
    ``c`` its generalised max-pooling weights (:func:`_gmp_weights`, ``lam``). Their defaults:
    ``k = kq = 200``, ``alpha = 0.99``, ``gamma = 3``, ``lam = 1``. Images are ranked by score, best
    first (ties, e.g. images the diffusion does not reach, in database order) -> ``(nq, n)`` int64.
    """
    Qr = [r.detach().cpu().numpy().astype(np.float32) for r in check_region_sets(query_regions, "query_regions")]
    Xr = [r.detach().cpu().numpy().astype(np.float32) for r in check_region_sets(database_regions, "database_regions")]
    if Qr[0].shape[1] != Xr[0].shape[1]:
        raise ValueError(f"query_regions and database_regions must have the same dimension, got {Qr[0].shape[1]} and {Xr[0].shape[1]}")
    V = np.ascontiguousarray(np.concatenate(Xr))
    n = len(V)
    k = bounded_int(k, n, "k", "the number of database regions")
    kq = k if kq is None else bounded_int(kq, n, "kq", "the number of database regions")
    alpha = positive_number(alpha, "alpha")
    if alpha >= 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    A = mutual_knn_graph(V, k, positive_number(gamma, "gamma"))
    index = faiss.IndexFlatIP(V.shape[1])
    index.add(V)
    Y = np.zeros((len(Qr), n))
    for i, q in enumerate(Qr):  # one small search per query: its regions' kq nearest regions
        s, nn = index.search(np.ascontiguousarray(q), kq)
        summed = np.bincount(nn.ravel(), weights=s.ravel().astype(np.float64), minlength=n)
        top = np.argsort(-summed, kind="stable")[:kq]
        Y[i, top] = np.maximum(summed[top], 0) ** gamma
    f = diffuse(A, Y, alpha, positive_number(tol, "tol"), positive_int(maxiter, "maxiter"))
    owner = np.repeat(np.arange(len(Xr)), [len(x) for x in Xr])
    c = _gmp_weights([x.astype(np.float64) for x in Xr], positive_number(lam, "lam"))
    scores = np.stack([np.bincount(owner, weights=row * c, minlength=len(Xr)) for row in f])
    return np.argsort(-scores, axis=1, kind="stable").astype(np.int64)
