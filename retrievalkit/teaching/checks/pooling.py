"""Checks of notebook 1 (pooling): 2x2 window pooling, MAC, SPoC and GeM."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ...pooling import avg_pool, gem, mac, spoc, window_pool
from .core import MAP_AXES, Case, Mistake, Task, random_maps, run_check

SLIDES = [[5, 3, 1, 2], [1, 2, 3, 2], [4, 2, 2, 5], [3, 6, 1, 1]]


# ---------------------------------------------------------------- window pooling
def _window_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("slides, avg", "2x2 average pooling of the slides' map gives 2.75 2 / 3.75 2.25",
             (torch.tensor(SLIDES, dtype=torch.float32), "avg")),
        Case("slides, max", "2x2 max pooling of the slides' map gives 5 3 / 6 5",
             (torch.tensor(SLIDES, dtype=torch.float32), "max")),
        Case("sum", "sum pooling adds the four values of each window", (random_maps(rng, 6, 8), "sum")),
        Case("non-square avg", "a 6x10 map pools to 3x5", (random_maps(rng, 6, 10), "avg")),
        Case("non-square max", "a 4x6 map pools to 2x3", (random_maps(rng, 4, 6), "max")),
    ]


def _window_ref(x: torch.Tensor, kind: str) -> torch.Tensor:
    return window_pool(x, kind)


def _window_always(reduce: str) -> Callable[..., torch.Tensor]:
    """Pools with ``reduce`` whatever ``kind`` asks for."""
    def f(x: torch.Tensor, kind: str) -> torch.Tensor:
        return window_pool(x, reduce)
    return f


def _window_stride1(x: torch.Tensor, kind: str) -> torch.Tensor:
    return window_pool(x, kind, size=2, stride=1)


def _window_sum_for_avg(x: torch.Tensor, kind: str) -> torch.Tensor:
    return window_pool(x, "sum" if kind == "avg" else kind)


# ---------------------------------------------------------------- MAC
def _mac_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("batch", "mac(x) takes the maximum of each channel over all positions, shape (N, C)", (random_maps(rng, 3, 4, 5, 6),)),
        Case("negative values", "the maximum of an all-negative channel is negative", (random_maps(rng, 2, 3, 4, 4, negative=True) - 3,)),
    ]


# ---------------------------------------------------------------- SPoC
def _spoc_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("square map", "spoc(x) is the sum over positions of x weighted by the Gaussian centre prior",
             (random_maps(rng, 2, 3, 7, 7),)),
        Case("non-square map", "the prior is centred at ((H-1)/2, (W-1)/2) with sigma = min(H, W)/6",
             (random_maps(rng, 2, 3, 6, 10),)),
        Case("even size", "on an even-sized map the centre falls between pixels", (random_maps(rng, 1, 4, 8, 8),)),
    ]


def _spoc_ref(x: torch.Tensor) -> torch.Tensor:
    return spoc(x)


def _spoc_variant(
    *, centre_half: bool = False, sigma_divisor: float = 6.0, factor_two: bool = True, mean: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """SPoC with one step done wrong (float64, an independent implementation): the prior
    ``exp(-d^2 / (2 sigma^2))`` centred at ``((H-1)/2, (W-1)/2)``, ``sigma = min(H, W)/6``, summed."""
    def f(x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        cy, cx = (H / 2, W / 2) if centre_half else ((H - 1) / 2, (W - 1) / 2)
        sigma = min(H, W) / sigma_divisor
        ys = torch.arange(H, dtype=torch.float64)[:, None] - cy
        xs = torch.arange(W, dtype=torch.float64)[None, :] - cx
        prior = torch.exp(-(ys**2 + xs**2) / ((2 if factor_two else 1) * sigma**2))
        out = (x.double() * prior).sum(dim=(-2, -1))
        return out / (H * W) if mean else out
    return f


# ---------------------------------------------------------------- GeM
def _gem_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("p = 3", "gem(x, p=3) is (mean of x^3)^(1/3) per channel, shape (N, C)", (random_maps(rng, 2, 4, 5, 7),), {"p": 3.0}),
        Case("p = 1", "GeM with p=1 should equal average pooling", (random_maps(rng, 2, 3, 4, 6),), {"p": 1.0}),
        Case("large p", "GeM with a large p (p=30) should be close to, but not exactly, max pooling",
             (random_maps(rng, 1, 5, 6, 6),), {"p": 30.0}),
        Case("negative inputs", "values below eps are clamped to eps before the power (here eps=0.1)",
             (torch.cat([random_maps(rng, 2, 3, 4, 4, negative=True), -random_maps(rng, 2, 1, 4, 4)], dim=1),), {"p": 3.0, "eps": 0.1}),
    ]


def _gem_ref(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return gem(x, p=p, eps=eps)


def _gem_variant(
    *, root: str = "1/p", reduce: str = "mean", floor: str = "eps",
) -> Callable[..., torch.Tensor]:
    """GeM with one step done wrong: ``(mean of clamp(x, eps)^p)^(1/p)``; ``root`` "1/p", "p" or "none",
    ``reduce`` "mean" or "sum", ``floor`` "eps", "0" or "none"."""
    def f(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
        x = x.double()
        x = {"eps": x.clamp(min=eps), "0": x.clamp(min=0), "none": x}[floor]
        v = x.pow(p).mean(dim=(-2, -1)) if reduce == "mean" else x.pow(p).sum(dim=(-2, -1))
        return {"1/p": v.pow(1 / p), "p": v.pow(p), "none": v}[root]
    return f


TASKS: dict[str, Task] = {
    "window_pool": Task(
        "window_pool", _window_cases, _window_ref,
        [
            Mistake("computes max pooling whatever `kind` says", _window_always("max")),
            Mistake("computes average pooling whatever `kind` says", _window_always("avg")),
            Mistake("moves the window by 1 instead of 2 (stride 1: overlapping windows)", _window_stride1),
            Mistake("returns the window sums for 'avg' (divide by the 4 values of the window)", _window_sum_for_avg),
        ],
        axes=("row", "column"),
    ),
    "mac": Task(
        "mac", _mac_cases, mac,
        [
            Mistake("equals average pooling", avg_pool),
            Mistake("equals sum pooling", lambda x: x.sum(dim=(-2, -1))),
            Mistake("takes the max over rows only, then the mean over columns", lambda x: x.amax(dim=-2).mean(dim=-1)),
            Mistake("takes the max of the absolute values", lambda x: x.abs().amax(dim=(-2, -1))),
        ],
        axes=MAP_AXES,
    ),
    "spoc": Task(
        "spoc", _spoc_cases, _spoc_ref,
        [
            Mistake("equals plain sum pooling (no centre prior)", lambda x: x.sum(dim=(-2, -1))),
            Mistake("equals plain average pooling (what cirtorch,"
                    " the PyTorch retrieval code of Radenović, Tolias & Chum, calls 'SPoC')", avg_pool),
            Mistake("averages instead of summing the weighted values", _spoc_variant(mean=True)),
            Mistake("puts the centre at (H/2, W/2) instead of ((H-1)/2, (W-1)/2)", _spoc_variant(centre_half=True)),
            Mistake("uses sigma = min(H, W)/3 instead of min(H, W)/6", _spoc_variant(sigma_divisor=3.0)),
            Mistake("uses exp(-d^2 / sigma^2), without the factor 2", _spoc_variant(factor_two=False)),
        ],
        axes=MAP_AXES,
    ),
    "gem": Task(
        "gem", _gem_cases, _gem_ref,
        [
            Mistake("equals max pooling", lambda x, p=3.0, eps=1e-6: mac(x)),
            Mistake("equals average pooling (is p used?)", lambda x, p=3.0, eps=1e-6: avg_pool(x)),
            Mistake("forgets the final 1/p root", _gem_variant(root="none")),
            Mistake("sums x^p instead of averaging it", _gem_variant(reduce="sum")),
            Mistake("raises to the power p at the end instead of 1/p", _gem_variant(root="p")),
            Mistake("clamps at 0 instead of eps", _gem_variant(floor="0")),
            Mistake("does not clamp: negative values give NaN", _gem_variant(floor="none")),
        ],
        axes=MAP_AXES,
    ),
}


def check_window_pool(window_pool: Callable) -> None:
    """Check a student's ``window_pool`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("window_pool", window_pool)


def check_mac(mac: Callable) -> None:
    """Check a student's ``mac`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("mac", mac)


def check_spoc(spoc: Callable) -> None:
    """Check a student's ``spoc`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("spoc", spoc)


def check_gem(gem: Callable) -> None:
    """Check a student's ``gem`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("gem", gem)
