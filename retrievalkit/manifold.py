"""Neighbourhoods in descriptor space: how well an embedding keeps them, and the graph diffusion walks on.

* :func:`knn_preservation`: the agreement of the k-nearest-neighbour sets of the data and of its
  embedding, Lee & Verleysen's ``Q_NX(K)`` (Neurocomputing 2009).
* :func:`mutual_knn_graph`: the mutual kNN affinity graph of Iscen et al. (CVPR 2017), the graph
  that :func:`retrievalkit.postprocess.diffusion_rerank` diffuses a query on.

Rows are points: ``X`` ``(n, D)``, ``numpy.ndarray`` or ``torch.Tensor``.
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial.distance import cdist

from ._validate import bounded_int, check_rows, positive_number

__all__ = ["knn_preservation", "mutual_knn_graph"]


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
