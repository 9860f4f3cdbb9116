"""Losses for fine-tuning a retrieval network, and the hard-negative miner that feeds them.

Descriptors are rows ``(N, D)`` ``torch.Tensor`` (the losses need gradients, so only torch).
Two forms of the contrastive loss are given because the lecture slides of Wei ("Deep Image
Retrieval", PolyU COMP4423) and cirtorch (Radenović et al., TPAMI 2018,
https://arxiv.org/abs/1711.02512; ``cirtorch/layers/functional.py``) differ; the triplet loss is
the same in both. cirtorch *sums* the loss over all pairs of a batch (``reduction="sum"``);
the default here is the mean.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ._validate import check_finite, check_row_pair, nonnegative_number, positive_int

__all__ = ["contrastive_loss", "triplet_loss", "hard_negatives"]

_REDUCTIONS = ("mean", "sum", "none")
_FORMS = ("slides", "cirtorch")
_CIRTORCH_EPS = 1e-6  # cirtorch's contrastive_loss(eps=1e-6), added to a - b before the norm


def _check_torch_rows(x: Any, name: str) -> torch.Tensor:
    """A non-empty, finite, floating-point ``(N, D)`` torch tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_finite(x, name)
    return x


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(reduction: Any) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, y: Any, margin: float, reduction: str = "mean", form: str = "slides"
) -> torch.Tensor:
    """Contrastive (Siamese) loss of the pairs ``(a_i, b_i)``; ``y_i = 1`` matching, ``0`` not.

    ``form="slides"`` (Wei's slides): ``L = 1/2 S D + 1/2 (1 - S) max(0, m - D)`` with
    ``D = ||a - b||^2`` the *squared* distance and a plain hinge.
    ``form="cirtorch"`` (``cirtorch.layers.functional.contrastive_loss``):
    ``L = 1/2 y d^2 + 1/2 (1 - y) max(0, m - d)^2`` with ``d = ||a - b + 1e-6||`` (not squared,
    the epsilon added to every coordinate of the difference, as cirtorch writes it) and a
    squared hinge. The matching terms agree up to the epsilon; the non-matching ones differ.
    ``reduction``: ``"mean"`` over pairs, ``"sum"`` (what cirtorch returns) or ``"none"`` ``(N,)``.
    ``a, b`` ``(N, D)`` torch, ``y`` ``(N,)`` of 0/1 (bool, int or float), ``margin >= 0``.
    """
    a, b = _check_torch_rows(a, "a"), _check_torch_rows(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    yt = torch.as_tensor(y, device=a.device)
    if yt.shape != (a.shape[0],):
        raise ValueError(f"y must have shape ({a.shape[0]},), one label per pair, got {tuple(yt.shape)}")
    if not bool(((yt == 0) | (yt == 1)).all()):
        raise ValueError("y must hold only 0 (non-matching) and 1 (matching)")
    yt = yt.to(a.dtype)
    m = nonnegative_number(margin, "margin")
    reduction = _check_reduction(reduction)
    if form == "slides":
        D = (a - b).pow(2).sum(dim=1)
        loss = 0.5 * yt * D + 0.5 * (1 - yt) * torch.clamp(m - D, min=0)
    elif form == "cirtorch":
        d = (a - b + _CIRTORCH_EPS).pow(2).sum(dim=1).sqrt()
        loss = 0.5 * yt * d.pow(2) + 0.5 * (1 - yt) * torch.clamp(m - d, min=0).pow(2)
    else:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
    return _reduce(loss, reduction)


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float, reduction: str = "mean"
) -> torch.Tensor:
    """Triplet loss ``max(0, m + D(a, p) - D(a, n))`` with ``D`` the squared L2 distance.

    Wei's slides and cirtorch agree. ``anchor`` and ``positive`` are ``(N, D)``;
    ``negative`` is ``(N, D)`` (one triplet per anchor) or ``(N, k, D)`` (k negatives per anchor,
    each its own term, as cirtorch's tuples of one query, one positive and k negatives).
    ``reduction``: ``"mean"`` over all terms, ``"sum"`` (cirtorch) or ``"none"`` (``(N,)`` or
    ``(N, k)``, the shape of the negatives without ``D``). ``margin >= 0``.
    """
    anchor, positive = _check_torch_rows(anchor, "anchor"), _check_torch_rows(positive, "positive")
    if positive.shape != anchor.shape:
        raise ValueError(f"positive must have the anchor's shape {tuple(anchor.shape)}, got {tuple(positive.shape)}")
    if not isinstance(negative, torch.Tensor) or negative.dim() not in (2, 3):
        raise ValueError(f"negative must be a torch.Tensor of shape (N, D) or (N, k, D), got {getattr(negative, 'shape', type(negative))}")
    if not negative.is_floating_point():
        raise ValueError(f"negative must be a floating-point tensor, got dtype {negative.dtype}")
    N, D = anchor.shape
    if negative.shape[0] != N or negative.shape[-1] != D or negative.numel() == 0:
        raise ValueError(f"negative must have shape ({N}, {D}) or ({N}, k, {D}) with k >= 1, got {tuple(negative.shape)}")
    check_finite(negative, "negative")
    m = nonnegative_number(margin, "margin")
    reduction = _check_reduction(reduction)
    d_pos = (anchor - positive).pow(2).sum(dim=-1)  # (N,)
    if negative.dim() == 3:
        d_neg = (anchor.unsqueeze(1) - negative).pow(2).sum(dim=-1)  # (N, k)
        d_pos = d_pos.unsqueeze(1)
    else:
        d_neg = (anchor - negative).pow(2).sum(dim=-1)
    return _reduce(torch.clamp(m + d_pos - d_neg, min=0), reduction)


def hard_negatives(anchors: Any, pool: Any, positives_of: Sequence[Iterable[int]], n: int) -> np.ndarray | torch.Tensor:
    """The ``n`` hardest negatives of each anchor: its nearest pool items that are not its positives.

    ``anchors`` ``(Na, D)`` and ``pool`` ``(Np, D)`` are unit vectors (both numpy or both
    torch), so nearest means highest inner product. ``positives_of[i]`` lists the pool indices
    that must never be returned for anchor ``i`` (images of the same object or landmark).
    One matrix product, the positives masked to ``-inf``, then a sort per row: returns
    ``(Na, n)`` pool indices, nearest first, ties to the lower index; ``int64`` numpy for
    numpy input, ``torch.long`` on the input's device for torch input. This is how cirtorch
    mines the negatives of its training tuples (there among images of other clusters).
    """
    A, P = check_row_pair(anchors, pool, ("anchors", "pool"))
    Na, Np = A.shape[0], P.shape[0]
    length = None if isinstance(positives_of, (str, bytes)) else getattr(positives_of, "__len__", lambda: None)()
    if length != Na:
        raise ValueError(f"positives_of must be a list with one iterable of pool indices per anchor ({Na} anchors), "
                         f"got {type(positives_of).__name__} of length {length}")
    lists = [np.asarray(list(p)) for p in positives_of]
    for i, p in enumerate(lists):
        if p.size and (p.dtype.kind not in "iu" or p.ndim != 1 or p.min() < 0 or p.max() >= Np):
            raise ValueError(f"positives_of[{i}] must hold integer pool indices in [0, {Np}), got {p.tolist()}")
    n = positive_int(n, "n")
    n_pos = np.array([np.unique(p).size for p in lists])
    if n > Np - n_pos.max():
        worst = int(n_pos.argmax())
        raise ValueError(f"n must be at most the number of non-positives of every anchor: anchor {worst} has only "
                         f"{Np - n_pos[worst]} of {Np} pool items left, got n={n}")
    rows = np.repeat(np.arange(Na), [p.size for p in lists])
    cols = np.concatenate([p.astype(np.int64) for p in lists]) if rows.size else np.zeros(0, np.int64)
    if isinstance(A, torch.Tensor):
        if A.device != P.device:
            raise ValueError(f"anchors and pool must be on the same device, got {A.device} and {P.device}")
        dtype = torch.promote_types(A.dtype, P.dtype)
        dtype = dtype if dtype.is_floating_point else torch.float64
        S = A.detach().to(dtype) @ P.detach().to(dtype).T
        S[torch.from_numpy(rows).to(S.device), torch.from_numpy(cols).to(S.device)] = -torch.inf
        return torch.sort(S, dim=1, descending=True, stable=True).indices[:, :n]
    S = np.asarray(A, dtype=np.result_type(A, P, np.float32)) @ np.asarray(P, dtype=np.result_type(A, P, np.float32)).T
    S[rows, cols] = -np.inf
    return np.argsort(-S, axis=1, kind="stable")[:, :n].astype(np.int64)
