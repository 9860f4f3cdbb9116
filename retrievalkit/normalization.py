"""L2 normalisation, the one step every descriptor of the course ends with.

``l2n(x) = x / max(||x||_2, eps)`` along the last axis: exactly ``x / ||x||`` for every vector
longer than ``eps`` and zero (not NaN) for a zero vector. This is ``torch.nn.functional.normalize``
and VLFeat's convention; cirtorch's ``l2n`` (Radenović et al., TPAMI 2018) writes
``x / (||x|| + 1e-6)`` instead, which is smaller by a relative ``1e-6 / ||x||``: the same
descriptors to float32 precision once ``||x|| >= 1``, but not a unit vector for short ones.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._validate import positive_number

__all__ = ["EPS", "l2n", "L2N"]

EPS = 1e-12
"""The floor under a norm before dividing by it."""

Array = TypeVar("Array", torch.Tensor, np.ndarray)


def l2n(x: Array, dim: int = -1, eps: float = EPS) -> Array:
    """``x / max(||x||_2, eps)`` along ``dim`` (default: the last axis, descriptors being rows).

    Takes a ``torch.Tensor`` (differentiable, on its device, in its dtype) or a ``numpy.ndarray``
    and returns the same kind.
    """
    eps = positive_number(eps, "eps")
    if isinstance(x, torch.Tensor):
        return F.normalize(x, p=2.0, dim=dim, eps=eps)
    if isinstance(x, np.ndarray):
        return x / np.maximum(np.linalg.norm(x, axis=dim, keepdims=True), eps)
    raise ValueError(f"x must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


class L2N(nn.Module):
    """:func:`l2n` as a layer (cirtorch's ``L2N``), over the descriptor axis ``dim``."""

    def __init__(self, dim: int = -1, eps: float = EPS) -> None:
        super().__init__()
        self.dim = dim
        self.eps = positive_number(eps, "eps")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(x, self.dim, self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps:g}"
