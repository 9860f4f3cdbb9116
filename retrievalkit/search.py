"""Search: rank a database of descriptors for each query.

Descriptors are rows ``(N, D)``, ``numpy.ndarray`` or ``torch.Tensor``; a ranking comes back of
the same kind, ``(n_queries, k)`` 0-based database indices, best first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._validate import check_row_pair, check_rows, positive_int

__all__ = ["rank", "Index"]


def _top(S: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores per row, best first, ties by the lower index."""
    if k == S.shape[1]:
        return torch.sort(S, dim=1, descending=True, stable=True).indices
    t = torch.topk(S, k, dim=1).values[:, -1:]
    above, tied = S > t, S == t
    # all scores above the k-th one, then the lowest-indexed ties with it, exactly k per row
    take = above | (tied & (tied.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
    idx = take.nonzero()[:, 1].view(S.shape[0], k)
    order = torch.sort(S.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def rank(Q: Any, X: Any, k: int | None = None) -> np.ndarray | torch.Tensor:
    """Exact inner-product ranking: row i orders the database by ``Q[i] . X[j]``, best first.

    ``Q`` ``(nq, D)`` (a 1-D ``Q`` is one query and gives a 1-D ranking) and ``X`` ``(n, D)``,
    both numpy or both torch. Unit vectors make this cosine similarity, but nothing is
    normalised here. Ties go to the lower database index. Returns the first ``k`` (default
    all ``n``) indices: ``int64`` numpy for numpy input, ``torch.long`` on the input's device
    for torch input.
    """
    single = isinstance(Q, (np.ndarray, torch.Tensor)) and Q.ndim == 1
    Q2, X2 = check_row_pair(Q, X, ("Q", "X"))
    n = X2.shape[0]
    k = n if k is None else positive_int(k, "k")
    if k > n:
        raise ValueError(f"k must be at most the database size {n}, got {k}")
    if isinstance(Q2, torch.Tensor):
        if Q2.device != X2.device:
            raise ValueError(f"Q and X must be on the same device, got {Q2.device} and {X2.device}")
        dtype = torch.promote_types(Q2.dtype, X2.dtype)
        dtype = dtype if dtype.is_floating_point else torch.float64
        S = (Q2.detach().to(dtype) @ X2.detach().to(dtype).T)
    else:
        dtype = np.result_type(Q2, X2)
        dtype = dtype if dtype.kind == "f" else np.float64
        S = torch.from_numpy(np.ascontiguousarray(Q2.astype(dtype, copy=False) @ X2.astype(dtype, copy=False).T))
    if not bool(torch.isfinite(S).all()):
        raise ValueError("Q and X give non-finite scores Q @ X.T (overflow): scale the descriptors")
    out = _top(S, k)
    out = out[0] if single else out
    return out if isinstance(Q2, torch.Tensor) else out.numpy()


class Index:
    """A thin faiss index over unit descriptors (inner product): ``"flat"`` (exact), ``"ivf"``
    (inverted file, ``nlist`` k-means cells, ``nprobe`` visited) or ``"ivfpq"`` (the same with
    product-quantised vectors, ``m`` sub-vectors of ``nbits`` bits) — Jégou et al., TPAMI 2011.

    ``add(X)`` trains the IVF / PQ quantisers on ``X`` the first time (seeded), then stores it;
    ``search(Q, k)`` returns ``(scores, ids)`` as numpy arrays; ``recall(Q, k)`` is recall@k
    against the exact ranking of :func:`rank`.
    """

    KINDS = ("flat", "ivf", "ivfpq")

    def __init__(self, kind: str = "flat", nlist: int = 64, nprobe: int = 8, m: int = 8, nbits: int = 8, seed: int = 0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.nlist, self.nprobe = positive_int(nlist, "nlist"), positive_int(nprobe, "nprobe")
        self.m, self.nbits, self.seed = positive_int(m, "m"), positive_int(nbits, "nbits"), int(seed)
        self.index_ = None
        self.X_: np.ndarray | None = None

    def __repr__(self) -> str:
        n = 0 if self.index_ is None else self.index_.ntotal
        return f"Index(kind={self.kind!r}, nlist={self.nlist}, nprobe={self.nprobe}, m={self.m}, nbits={self.nbits}, ntotal={n})"

    def _build(self, d: int, train: np.ndarray) -> Any:
        import faiss

        if self.kind == "flat":
            return faiss.IndexFlatIP(d)
        if train.shape[0] < self.nlist:
            raise ValueError(f"nlist must be at most the number of training vectors ({train.shape[0]}), got {self.nlist}")
        quantizer = faiss.IndexFlatIP(d)
        if self.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if d % self.m:
                raise ValueError(f"m must divide the dimension {d}, got {self.m}")
            index = faiss.IndexIVFPQ(quantizer, d, self.nlist, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        if hasattr(index, "pq"):
            index.pq.cp.seed = self.seed
        index.train(train)
        index.nprobe = min(self.nprobe, self.nlist)
        return index

    def add(self, X: Any) -> "Index":
        rows = check_rows(X, "X")
        arr = np.ascontiguousarray((rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else rows), dtype=np.float32)
        if self.index_ is None:
            self.index_ = self._build(arr.shape[1], arr)
        elif arr.shape[1] != self.index_.d:
            raise ValueError(f"X must have dimension {self.index_.d}, got {arr.shape[1]}")
        self.index_.add(arr)
        self.X_ = arr if self.X_ is None else np.concatenate([self.X_, arr])
        return self

    def search(self, Q: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        if self.index_ is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This Index is empty: call add(X) first")
        rows = check_rows(Q, "Q")
        q = np.ascontiguousarray((rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else rows), dtype=np.float32)
        if q.shape[1] != self.index_.d:
            raise ValueError(f"Q must have dimension {self.index_.d}, got {q.shape[1]}")
        k = positive_int(k, "k")
        if k > self.index_.ntotal:
            raise ValueError(f"k must be at most the number of stored vectors {self.index_.ntotal}, got {k}")
        return self.index_.search(q, k)

    def recall(self, Q: Any, k: int = 10) -> float:
        """Recall@k: the fraction of the exact top-k (:func:`rank`) that the index returns."""
        _, ids = self.search(Q, k)
        rows = check_rows(Q, "Q")
        q = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        exact = rank(q.astype(np.float32), self.X_, k)
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact)]))
