"""Checks of notebook 5 (CroW): the spatial and the channel weights, and the 2nd-order region descriptor of Jeong et al."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ...crow import crow_channel_weights, crow_spatial_weights
from ...normalization import l2n
from .core import MAP_AXES, Case, Mistake, Task, run_check, sparse_maps, to_numpy


# ---------------------------------------------------------------- spatial weights
def _spatial_cases(rng: np.random.Generator) -> list[Case]:
    zero = sparse_maps(rng, 2, 3, 4, 6)
    zero[1] = 0
    return [
        Case("a = b = 2", "S = sum of the channels, S' = (S / ||S||_a)^(1/b) per image, shape (N, H, W)",
             (sparse_maps(rng, 2, 5, 6, 8),)),
        Case("a = 3, b = 0.5", "||S||_a = (sum_ij S_ij^a)^(1/a); the root 1/b comes last", (sparse_maps(rng, 1, 4, 5, 9),),
             {"a": 3.0, "b": 0.5}),
        Case("b = 1", "with b = 1 the weights of each image have unit a-norm", (sparse_maps(rng, 3, 4, 7, 5),), {"a": 2.0, "b": 1.0}),
        Case("all-zero map", "an all-zero map (S = 0) gets all-zero weights, the other image its usual ones", (zero,)),
    ]


def _spatial_variant(
    *, norm: str = "a", root: bool = True, batch: bool = False, nan_zero: bool = False
) -> Callable[..., torch.Tensor]:
    """CroW's spatial weights with one step done wrong (float64)."""
    def f(x: torch.Tensor, a: float = 2, b: float = 2) -> torch.Tensor:
        S = x.double().sum(dim=1)
        dims = (0, 1, 2) if batch else (1, 2)
        z = {
            "a": lambda: S.pow(a).sum(dim=dims, keepdim=True).pow(1 / a),
            "a no root": lambda: S.pow(a).sum(dim=dims, keepdim=True),
            "sum": lambda: S.sum(dim=dims, keepdim=True),
            "max": lambda: S.amax(dim=dims, keepdim=True),
        }[norm]()
        out = S / (z if nan_zero else torch.where(z > 0, z, torch.ones_like(z)))
        return out.pow(1 / b) if root else out
    return f


# ---------------------------------------------------------------- channel weights
def _channel_cases(rng: np.random.Generator) -> list[Case]:
    dead = sparse_maps(rng, 2, 6, 5, 6)
    dead[0, 2] = 0
    return [
        Case("batch", "w_k = log(sum_j Q_j / Q_k), Q_k the fraction of non-zero positions of channel k, per image, shape (N, C)",
             (sparse_maps(rng, 3, 6, 5, 7),)),
        Case("single image", "sparser channels (smaller Q_k) get larger weights", (sparse_maps(rng, 1, 8, 6, 4),)),
        Case("all-zero channel", "an all-zero channel (Q_k = 0) gets weight 0, with no epsilon", (dead,)),
    ]


def _channel_variant(
    *, zeros: bool = False, eps: float = 0.0, batch: bool = False, flipped: bool = False, log10: bool = False,
    infinite: bool = False, activation: bool = False, inverse: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """CroW's channel weights with one step done wrong (float64)."""
    def f(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        Q = x.mean(dim=(-2, -1)) if activation else (x != 0).double().mean(dim=(-2, -1))
        Q = 1 - Q if zeros else Q
        Q = Q.mean(dim=0, keepdim=True).expand_as(Q) if batch else Q
        Q = Q + eps
        w = torch.log((1 if inverse else Q.sum(dim=1, keepdim=True)) / Q) / (math.log(10) if log10 else 1)
        if not infinite and eps == 0:
            w = torch.where(Q > 0, w, torch.zeros_like(w))
        return -w if flipped else w
    return f


# ---------------------------------------------------------------- 2nd-order region descriptor (Jeong et al., ICASSP 2017)
def _region_map(rng: np.random.Generator, C: int, H: int, W: int, cells: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One float64 map ``(C, H, W)``, active at every cell (channel 0 raised), and a region of ``cells``
    random cells (``None``: the whole map)."""
    x = sparse_maps(rng, 1, C, H, W)[0].double()
    x[0] += 0.2
    region = torch.ones(H * W, dtype=torch.bool)
    if cells is not None:
        region[:] = False
        region[torch.as_tensor(rng.choice(H * W, size=cells, replace=False))] = True
    return x, region.view(H, W)


def _second_order_cases(rng: np.random.Generator) -> list[Case]:
    dead = _region_map(rng, 4, 6, 6, cells=14)
    dead[0][2] = 0
    return [
        Case("a region", "vec(log G) of G = sum_p alpha_p f~_p f~_p^T / sum_p alpha_p over the region's cells, f~_p = beta o f_p, "
             "upper triangle row by row, L2-normalised, shape (C(C+1)/2,)", _region_map(rng, 4, 6, 7, cells=12)),
        Case("the whole map", "a region of every cell", _region_map(rng, 5, 5, 5)),
        Case("fewer cells than channels", "a region of 3 cells and 6 channels: G has zero eigenvalues, log(0 + 1e-6) keeps them finite",
             _region_map(rng, 6, 4, 5, cells=3)),
        Case("an all-zero channel", "a channel that is zero everywhere: beta is large but f~ is 0 there", dead),
    ]


def _second_order_ref(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    from ...salient import second_order  # here: the module loads faiss, which importing the checks must not

    return second_order(x, region[None])[0]


def _second_order_variant(
    *, log: str = "matrix", weighted: bool = True, centred: bool = False, beta: bool = True, full: bool = False,
    sqrt2: bool = False, log_eps: bool = True, l2: bool = True,
) -> Callable[..., np.ndarray]:
    """The 2nd-order descriptor with one step done wrong (float64 numpy, an independent implementation);
    ``log`` "matrix" (right) or "elementwise"."""
    def f(x: torch.Tensor, region: torch.Tensor) -> np.ndarray:
        X, R = to_numpy(x), to_numpy(region).astype(bool)
        C = X.shape[0]
        S = X.sum(axis=0)
        alpha = S / np.sqrt((S**2).sum())  # eq. 1
        Q = (X != 0).mean(axis=(1, 2))
        b = np.log((C * 1e-6 + Q.sum()) / (1e-6 + Q)) if beta else np.ones(C)  # eq. 2
        g = (b[:, None, None] * X)[:, R]  # (C, P): f~_p of the region's cells
        a = alpha[R] if weighted else np.ones(int(R.sum()))
        if centred:
            g = g - (g * a).sum(axis=1, keepdims=True) / a.sum()
        G = (g * a) @ g.T / a.sum()
        if log == "matrix":
            lam, V = np.linalg.eigh(G)
            logG = V @ np.diag(np.log(np.maximum(lam, 0) + (1e-6 if log_eps else 0.0))) @ V.T
        else:
            logG = np.log(G)
        i, j = np.triu_indices(C)
        v = logG.ravel() if full else logG[i, j] * np.where(i == j, 1.0, np.sqrt(2) if sqrt2 else 1.0)
        return l2n(v) if l2 else v
    return f


TASKS: dict[str, Task] = {
    "crow_spatial_weights": Task(
        "crow_spatial_weights", _spatial_cases, crow_spatial_weights,
        [
            Mistake("forgets the final root 1/b", _spatial_variant(root=False)),
            Mistake("divides by the sum of S (its 1-norm) instead of its a-norm", _spatial_variant(norm="sum")),
            Mistake("divides by the maximum of S instead of its a-norm", _spatial_variant(norm="max")),
            Mistake("divides by sum S^a without the root 1/a: ||S||_a = (sum S^a)^(1/a)", _spatial_variant(norm="a no root")),
            Mistake("normalises over the whole batch: each image by its own norm", _spatial_variant(batch=True)),
            Mistake("divides 0 by 0 on an all-zero map (NaN): its weights are 0", _spatial_variant(nan_zero=True)),
        ],
        axes=MAP_AXES,
    ),
    "crow_channel_weights": Task(
        "crow_channel_weights", _channel_cases, crow_channel_weights,
        [
            Mistake("has the sign flipped: log(sum_j Q_j / Q_k), so sparse channels weigh more", _channel_variant(flipped=True)),
            Mistake("adds an epsilon to Q (as PyRetri,"
                    " the retrieval toolbox of Hu et al., ACM MM 2020, does): "
                    "an all-zero channel gets weight 0, not log(sum Q / eps)",
                    _channel_variant(eps=1e-6)),
            Mistake("gives an all-zero channel an infinite weight (log of x/0): it gets 0", _channel_variant(infinite=True)),
            Mistake("uses the fraction of zero positions: Q_k is the fraction of non-zero positions", _channel_variant(zeros=True)),
            Mistake("counts over the whole batch: each image has its own weights", _channel_variant(batch=True)),
            Mistake("uses log10: the natural log", _channel_variant(log10=True)),
            Mistake("uses log(1 / Q_k), a plain inverse document frequency: the numerator is sum_j Q_j, "
                    "the sum over all channels", _channel_variant(inverse=True)),
            Mistake("uses the mean activation: Q_k counts the non-zero positions", _channel_variant(activation=True)),
        ],
        axes=MAP_AXES,
    ),
    "second_order": Task(
        "second_order", _second_order_cases, _second_order_ref,
        [
            Mistake("takes the logarithm of each entry of G: log G is the matrix logarithm, V diag(log(lambda + 1e-6)) V^T",
                    _second_order_variant(log="elementwise")),
            Mistake("averages the outer products without the spatial weights alpha_p", _second_order_variant(weighted=False)),
            Mistake("subtracts the region's mean (a covariance): G is the second moment, nothing is centred",
                    _second_order_variant(centred=True)),
            Mistake("has no channel weights: f~_p = beta o f_p", _second_order_variant(beta=False)),
            Mistake("keeps the whole C x C matrix: vec takes the upper triangle with the diagonal", _second_order_variant(full=True)),
            Mistake("multiplies the off-diagonal entries by sqrt(2): the paper's vec keeps them as they are",
                    _second_order_variant(sqrt2=True)),
            Mistake("takes log(lambda) of zero eigenvalues (-infinity): add 1e-6 first", _second_order_variant(log_eps=False)),
            Mistake("is not L2-normalised", _second_order_variant(l2=False)),
        ],
        axes=("channel", "row", "column"),
    ),
}


def check_crow_spatial_weights(crow_spatial_weights: Callable) -> None:
    """Check a student's ``crow_spatial_weights`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("crow_spatial_weights", crow_spatial_weights)


def check_crow_channel_weights(crow_channel_weights: Callable) -> None:
    """Check a student's ``crow_channel_weights`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("crow_channel_weights", crow_channel_weights)


def check_second_order(second_order: Callable) -> None:
    """Check a student's ``second_order`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("second_order", second_order)
