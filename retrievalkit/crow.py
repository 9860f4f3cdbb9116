"""CroW: cross-dimensional weighting and sum pooling of convolutional features.

Kalantidis, Mellina and Osindero, "Cross-dimensional Weighting for Aggregated Deep
Convolutional Features", ECCV Workshops 2016; the peer is ``yahoo/crow`` ``crow.py``.

Feature maps are non-negative (post-ReLU) tensors ``(N, C, H, W)`` (or one ``(C, H, W)`` map,
whose batch axis is dropped again on output). Nothing here L2-normalises: in yahoo's pipeline
the CroW vector is then L2-normalised, PCA-whitened and L2-normalised again.
"""
from __future__ import annotations

import torch
from torch import nn

from ._validate import check_maps, nonnegative_number, positive_number, unbatch

__all__ = ["crow_spatial_weights", "crow_channel_weights", "crow", "CroW"]


def _flag(value: object, name: str) -> bool:
    """A real ``bool`` (so that ``channel="no"`` is not silently truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _spatial(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Spatial weights of a checked 4-D map (see :func:`crow_spatial_weights`)."""
    s = x.sum(dim=1)  # (N, H, W)
    # (S / z) is scale-invariant, so divide by max(S) first: same result, no overflow of S^a.
    peak = s.amax(dim=(-2, -1), keepdim=True)
    s = s / torch.where(peak > 0, peak, torch.ones_like(peak))
    z = s.pow(a).sum(dim=(-2, -1), keepdim=True).pow(1.0 / a)
    # An all-zero map has z = 0: S / 1 = 0 there, so its weights are all 0.
    return (s / torch.where(z > 0, z, torch.ones_like(z))).pow(1.0 / b)


def _channel(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Channel weights of a checked 4-D map (see :func:`crow_channel_weights`)."""
    h, w = x.shape[-2:]
    q = (x != 0).sum(dim=(-2, -1)).to(x.dtype) / (h * w)  # (N, C)
    if eps > 0:
        return torch.log((x.shape[1] * eps + q.sum(dim=1, keepdim=True)) / (eps + q))
    nonzero = q > 0
    ratio = q.sum(dim=1, keepdim=True) / torch.where(nonzero, q, torch.ones_like(q))
    return torch.where(nonzero, torch.log(ratio), torch.zeros_like(q))


def crow_spatial_weights(x: torch.Tensor, a: float = 2, b: float = 2) -> torch.Tensor:
    """CroW spatial weights ``S' = (S / ||S||_a)^(1/b)`` with ``S = sum_c x_c`` -> ``(N, H, W)``.

    ``||S||_a = (sum_ij S_ij^a)^(1/a)``; the paper's defaults are ``a = b = 2``. With ``b = 1``
    the weights have unit ``a``-norm. ``x`` must be non-negative (post-ReLU), ``a, b > 0``.
    An all-zero map (``S = 0``, where yahoo/crow divides 0 by 0) gets all-zero weights.
    """
    x4, squeezed = check_maps(x, "x", nonnegative=True)
    a = positive_number(a, "a")
    b = positive_number(b, "b")
    return unbatch(_spatial(x4, a, b), squeezed)


def crow_channel_weights(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """CroW channel (sparsity) weights ``w_k = log(sum_j Q_j / Q_k)`` -> ``(N, C)``.

    ``Q_k`` is the fraction of non-zero positions of channel ``k``. As in yahoo/crow, an
    all-zero channel (``Q_k = 0``) gets ``w_k = 0`` and no epsilon is added (``eps = 0``). With
    ``eps > 0``: ``w_k = log((K eps + sum_j Q_j) / (eps + Q_k))`` over the ``K`` channels, every
    ``Q_k`` replaced by ``Q_k + eps`` (in the sum too), as PyRetri's ``Crow`` (``eps = 1e-6``) and
    eq. 2 of Jeong et al. (ICASSP 2017) write it: about the same weights on other channels, but a
    large finite weight, ``log((K eps + sum_j Q_j) / eps)``, for an all-zero channel. A map with
    every channel zero gets all-zero weights (``eps = 0``). Counting is not differentiable: the
    result has no gradient. ``x`` must be non-negative (post-ReLU).
    """
    x4, squeezed = check_maps(x, "x", nonnegative=True)
    eps = nonnegative_number(eps, "eps")
    return unbatch(_channel(x4, eps), squeezed)


def crow(
    x: torch.Tensor, a: float = 2, b: float = 2, channel: bool = True, spatial: bool = True
) -> torch.Tensor:
    """CroW vector ``f_k = w_k * sum_ij S'_ij x_kij`` (Kalantidis et al. 2016) -> ``(N, C)``.

    ``S'`` are :func:`crow_spatial_weights` (``a``, ``b``) and ``w`` :func:`crow_channel_weights`.
    ``spatial=False`` uses ``S' = 1`` and ``channel=False`` uses ``w = 1``. The paper's and
    yahoo/crow's "uCroW" baseline is plain sum pooling, i.e. ``spatial=False, channel=False``;
    ``channel=False`` alone is the spatially weighted sum without channel weights.
    Unnormalised, differentiable in ``x`` (the channel weights are counts and carry no gradient).
    """
    x4, squeezed = check_maps(x, "x", nonnegative=True)
    a = positive_number(a, "a")
    b = positive_number(b, "b")
    if _flag(spatial, "spatial"):
        out = (x4 * _spatial(x4, a, b).unsqueeze(1)).sum(dim=(-2, -1))
    else:
        out = x4.sum(dim=(-2, -1))
    if _flag(channel, "channel"):
        out = out * _channel(x4)
    return unbatch(out, squeezed)


class CroW(nn.Module):
    """:func:`crow` as a layer: ``(N, C, H, W)`` -> ``(N, C)``, unnormalised, no parameters."""

    def __init__(self, a: float = 2, b: float = 2, channel: bool = True, spatial: bool = True) -> None:
        super().__init__()
        self.a = positive_number(a, "a")
        self.b = positive_number(b, "b")
        self.channel = _flag(channel, "channel")
        self.spatial = _flag(spatial, "spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crow(x, self.a, self.b, channel=self.channel, spatial=self.spatial)

    def extra_repr(self) -> str:
        return f"a={self.a:g}, b={self.b:g}, channel={self.channel}, spatial={self.spatial}"
