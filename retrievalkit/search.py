"""Search: rank a database of descriptors for each query.

Descriptors are rows ``(N, D)``, ``numpy.ndarray`` or ``torch.Tensor``; a ranking comes back of
the same kind, ``(n_queries, k)`` 0-based database indices, best first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._validate import paired_descriptors, positive_int

__all__ = ["rank"]


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
    Q2, X2 = paired_descriptors(Q, X, ("Q", "X"))
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
