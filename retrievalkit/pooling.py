"""Pooling: from a convolutional feature map to one vector per image.

Functions take feature maps ``(N, C, H, W)`` (or one ``(C, H, W)`` map) and return ``(N, C)``
(or ``(C,)``). They are differentiable, run on the input's device and keep its dtype.
The ``nn.Module`` wrappers at the bottom follow cirtorch's ``layers/pooling.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_finite, check_maps, positive_int, positive_number, unbatch

__all__ = ["window_pool", "mac", "avg_pool", "spoc", "spoc_weights", "gem", "GeM", "MAC", "SPoC"]

_WINDOW_KINDS = ("max", "avg", "sum")


def window_pool(x: torch.Tensor, kind: str, size: int = 2, stride: int = 2) -> torch.Tensor:
    """Local pooling of ``size x size`` windows moved by ``stride`` over the last two axes.

    ``kind`` is ``"max"`` (largest value in the window), ``"avg"`` (mean) or ``"sum"``.
    On the slides' 4x4 map ``5 3 1 2 / 1 2 3 2 / 4 2 2 5 / 3 6 1 1`` with 2x2 windows,
    average gives ``2.75 2 / 3.75 2.25`` and max ``5 3 / 6 5`` (the lecture slides of Wei ("Deep Image Retrieval", PolyU COMP4423)).
    Accepts ``(H, W)`` or ``(..., H, W)``; windows that do not fit are dropped (floor mode).
    """
    if kind not in _WINDOW_KINDS:
        raise ValueError(f"kind must be one of {_WINDOW_KINDS}, got {kind!r}")
    size = positive_int(size, "size")
    stride = positive_int(stride, "stride")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a torch.Tensor of shape (H, W) or (..., H, W), got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    check_finite(x, "x")
    H, W = x.shape[-2:]
    if size > H or size > W:
        raise ValueError(f"size must be at most the map's height and width ({H}x{W}), got {size}")
    flat = x.reshape(-1, 1, H, W)
    if kind == "max":
        out = F.max_pool2d(flat, size, stride)
    else:
        out = F.avg_pool2d(flat, size, stride)
        if kind == "sum":
            out = out * (size * size)
    return out.reshape(*x.shape[:-2], *out.shape[-2:])


def mac(x: torch.Tensor) -> torch.Tensor:
    """Maximum activations of convolutions (Tolias et al., ICLR 2016): ``f_c = max_ij x_cij``."""
    x4, squeezed = check_maps(x)
    return unbatch(x4.amax(dim=(-2, -1)), squeezed)


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling ``f_c = 1/(HW) sum_ij x_cij`` (what cirtorch calls "SPoC")."""
    x4, squeezed = check_maps(x)
    return unbatch(x4.mean(dim=(-2, -1)), squeezed)


def spoc_weights(
    H: int, W: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The Gaussian centre prior of SPoC (Babenko & Lempitsky, ICCV 2015) -> ``(H, W)``.

    ``w(y, x) = exp(-((y - (H-1)/2)^2 + (x - (W-1)/2)^2) / (2 sigma^2))`` with
    ``sigma = min(H, W) / 6``: one third of the distance from the centre to the nearest border
    (PyRetri's ``SPoC``; the survey writes the centre as ``(H/2, W/2)``). Not normalised.
    """
    H = positive_int(H, "H")
    W = positive_int(W, "W")
    sigma = min(H, W) / 6.0
    ys = torch.arange(H, dtype=torch.float64, device=device) - (H - 1) / 2.0
    xs = torch.arange(W, dtype=torch.float64, device=device) - (W - 1) / 2.0
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return torch.exp(-d2 / (2.0 * sigma**2)).to(dtype)


def spoc(x: torch.Tensor, center_prior: bool = True) -> torch.Tensor:
    """Sum-pooled convolutional features (Babenko & Lempitsky, ICCV 2015).

    ``f_c = sum_ij w_ij x_cij`` with the centre prior ``w`` of :func:`spoc_weights`
    (``w = 1``, plain sum pooling, with ``center_prior=False``). This is the paper's SPoC, as
    PyRetri implements it; cirtorch's ``spoc`` is plain *average* pooling (:func:`avg_pool`).
    """
    x4, squeezed = check_maps(x)
    if center_prior:
        w = spoc_weights(x4.shape[-2], x4.shape[-1], dtype=x4.dtype, device=x4.device)
        out = torch.einsum("nchw,hw->nc", x4, w)
    else:
        out = x4.sum(dim=(-2, -1))
    return unbatch(out, squeezed)


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling (Radenović et al., TPAMI 2018): ``f_c = (mean_ij max(x_cij, eps)^p)^(1/p)``.

    ``p = 1`` is average pooling and ``p -> inf`` tends to MAC. ``p`` is a float, a scalar
    tensor or one value per channel ``(C,)``; a tensor ``p`` receives gradients. Values below
    ``eps`` (negative activations included) are clamped to ``eps`` first, as cirtorch does.
    Computed as ``m (mean (x/m)^p)^(1/p)`` with ``m`` the channel maximum, which equals the
    formula but does not overflow for large ``p`` (cirtorch's direct form gives ``inf``).
    """
    x4, squeezed = check_maps(x)
    eps = positive_number(eps, "eps")
    if isinstance(p, torch.Tensor):
        if p.dim() > 1 or (p.dim() == 1 and p.numel() not in (1, x4.shape[1])):
            raise ValueError(f"p must be a number, a scalar tensor or one value per channel ({x4.shape[1]},), got shape {tuple(p.shape)}")
        check_finite(p, "p")
        if bool((p <= 0).any()):
            raise ValueError(f"p must be > 0, got {p.detach().cpu().tolist()}")
        pv = p.to(x4.dtype).reshape(1, -1, 1, 1) if p.dim() == 1 else p.to(x4.dtype)
    else:
        pv = positive_number(p, "p")
    # m (mean (x/m)^p)^(1/p) with m the channel maximum: the same value, but x^p cannot overflow
    # (float32 overflows at 6^50 already), so large p really tends to MAC.
    xc = x4.clamp(min=eps)
    m = xc.amax(dim=(-2, -1), keepdim=True).detach()
    out = m * (xc / m).pow(pv).mean(dim=(-2, -1), keepdim=True).pow(1.0 / pv)
    return unbatch(out.flatten(1), squeezed)


class GeM(nn.Module):
    """GeM pooling layer; ``p`` is a learnable parameter unless ``learnable=False``."""

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        p = positive_number(p, "p")
        self.eps = positive_number(eps, "eps")
        if learnable:
            self.p = nn.Parameter(torch.ones(1) * p)
        else:
            self.register_buffer("p", torch.ones(1) * p)

    @property
    def learnable(self) -> bool:
        return isinstance(self.p, nn.Parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, learnable={self.learnable}, eps={self.eps:g}"


class MAC(nn.Module):
    """Global max pooling layer (:func:`mac`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mac(x)


class SPoC(nn.Module):
    """Sum pooling with the Gaussian centre prior (:func:`spoc`)."""

    def __init__(self, center_prior: bool = True) -> None:
        super().__init__()
        self.center_prior = center_prior

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spoc(x, self.center_prior)

    def extra_repr(self) -> str:
        return f"center_prior={self.center_prior}"
