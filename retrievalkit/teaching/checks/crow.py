"""Checks of notebook 5 (CroW): the spatial and the channel weights."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ...crow import crow_channel_weights, crow_spatial_weights
from .core import MAP_AXES, Case, Mistake, Task, run_check, sparse_maps


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
            Mistake("adds an epsilon to Q (PyRetri): an all-zero channel gets weight 0, not log(sum Q / eps)",
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
}


def check_crow_spatial_weights(crow_spatial_weights: Callable) -> None:
    """Check a student's ``crow_spatial_weights`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("crow_spatial_weights", crow_spatial_weights)


def check_crow_channel_weights(crow_channel_weights: Callable) -> None:
    """Check a student's ``crow_channel_weights`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("crow_channel_weights", crow_channel_weights)
