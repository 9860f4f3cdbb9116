"""Checks of notebook 4 (R-MAC): the region grid, R-MAC and the OS-RMAC of Seddati et al."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...normalization import l2n
from ...regions import os_rmac, rmac, rmac_regions
from .core import MAP_AXES, Case, Mistake, Task, random_maps, run_check


# ---------------------------------------------------------------- the region grid
def _region_cases(rng: np.random.Generator) -> list[Case]:
    square = int(rng.choice([8, 9, 12, 14]))
    tall = [(13, 10), (17, 11), (20, 14), (22, 15)][int(rng.integers(4))]
    pano = [(10, 30), (9, 26), (12, 34)][int(rng.integers(3))]
    return [
        Case("30x40 map", "a 30x40 map with L=3 has 2 + 6 + 12 = 20 regions of sides 30, 20 and 15 that touch all four borders",
             (30, 40), {"L": 3}),
        Case("square map", f"a square {square}x{square} map has an l x l grid at level l, regions of side floor(2 min(H, W)/(l+1))",
             (square, square)),
        Case("tall map", f"on a tall {tall[0]}x{tall[1]} map the extra regions go down the long side (H); regions are (y, x, h, w)",
             tall),
        Case("panorama", f"on a {pano[0]}x{pano[1]} panorama the long side gets l + d regions, d chosen for about 40% overlap (here d > 1)",
             pano, {"L": 3}),
        Case("L = 4", "L=4 adds a fourth level of regions of side floor(2 min(H, W)/5)", (24, 31), {"L": 4}),
    ]


def _sorted_rows(value: np.ndarray) -> np.ndarray:
    """Regions compared as a set: rows sorted lexicographically."""
    return value[np.lexsort(value.T[::-1])] if value.ndim == 2 else value


def _regions_variant(
    *, integer_steps: bool = False, one_based: bool = False, square: bool = False, fewer: bool = False,
    ceil: bool = False, swap: bool = False,
) -> Callable[..., list[tuple[int, int, int, int]]]:
    """The region grid with one step done wrong (float64, an independent implementation)."""
    def f(H: int, W: int, L: int = 3) -> list[tuple[int, int, int, int]]:
        w = min(H, W)
        b = (max(H, W) - w) / (np.arange(2, 8) - 1)
        d = int(np.argmin(np.abs((w * w - w * b) / (w * w) - 0.4))) + (0 if fewer else 1)
        d = 0 if square or H == W else d
        out = []
        for l in range(1, L + 1):
            wl = math.ceil(2 * w / (l + 1)) if ceil else 2 * w // (l + 1)

            def corners(size: int, n: int) -> list[int]:
                if n == 1:
                    return [0]
                if integer_steps:
                    return [i * ((size - wl) // (n - 1)) for i in range(n)]
                return [math.floor(i * (size - wl) / (n - 1)) for i in range(n)]

            for y in corners(H, l + (d if H > W else 0)):
                for x in corners(W, l + (d if W > H else 0)):
                    y0, x0 = (y + 1, x + 1) if one_based else (y, x)
                    out.append((x0, y0, wl, wl) if swap else (y0, x0, wl, wl))
        return out
    return f


# ---------------------------------------------------------------- R-MAC
def _rmac_cases(rng: np.random.Generator) -> list[Case]:
    def heavy_tailed_maps(*shape: int) -> torch.Tensor:  # region maxima (and their norms) differ from region to region
        return torch.tensor(rng.random(shape) * np.exp(2 * rng.standard_normal(shape)), dtype=torch.float32)

    return [
        Case("non-square batch", "rmac(x) sums the L2-normalised MAC of every region and L2-normalises the sum, shape (N, C)",
             (heavy_tailed_maps(2, 8, 7, 10),)),
        Case("square map", "on a square map too, each region's MAC is L2-normalised before the sum", (heavy_tailed_maps(1, 6, 12, 12),)),
        Case("tall map, L = 2", "rmac(x, L=2) uses the regions of levels 1 and 2 only", (heavy_tailed_maps(2, 5, 16, 11),), {"L": 2}),
        Case("30x40 map", "a 30x40 map has 20 regions (sides 30, 20, 15)", (heavy_tailed_maps(1, 4, 30, 40),)),
    ]


def _rmac_ref(x: torch.Tensor, L: int = 3) -> torch.Tensor:
    return rmac(x, L=L)


def _rmac_variant(
    *, region_l2: bool = True, l2: bool = True, global_term: bool = False, average: bool = False, shrink: int = 0,
) -> Callable[..., torch.Tensor]:
    """R-MAC with one step done wrong (float64) on the package's regions."""
    def f(x: torch.Tensor, L: int = 3) -> torch.Tensor:
        x = x.double()
        v = l2n(x.amax(dim=(-2, -1))) if global_term else x.new_zeros(x.shape[:2])
        for y, x0, h, w in rmac_regions(x.shape[-2], x.shape[-1], L):
            r = x[..., y : y + h - shrink, x0 : x0 + w - shrink]
            m = r.mean(dim=(-2, -1)) if average else r.amax(dim=(-2, -1))
            v = v + (l2n(m) if region_l2 else m)
        return l2n(v) if l2 else v
    return f


# ---------------------------------------------------------------- OS-RMAC (Seddati et al., ICCVW 2017)
def _os_rmac_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("12x16 batch", "per level l: max-pool with window kw = ceil(2 min(H, W)/(l + 1)) and stride floor(0.4 kw), "
             "the square root of the sum of squares per channel; the levels summed and L2-normalised, shape (N, C)",
             (random_maps(rng, 2, 5, 12, 16),)),
        Case("7x10 map", "on a 7x10 map 2 min(H, W)/(l + 1) is not an integer at level 2: kw = ceil(14/3) = 5",
             (random_maps(rng, 1, 4, 7, 10),)),
        Case("square map, L = 2", "os_rmac(x, L=2) sums levels 1 and 2 only", (random_maps(rng, 2, 3, 9, 9),), {"L": 2}),
        Case("small map", "on a 3x5 map level 3 has kw = 2 and floor(0.4 kw) = 0: the stride is at least 1",
             (random_maps(rng, 1, 6, 3, 5),)),
    ]


def _os_rmac_ref(x: torch.Tensor, L: int = 3) -> torch.Tensor:
    return os_rmac(x, L=L)


def _os_rmac_variant(
    *, kernel: str = "ceil", stride: str = "0.4 kw", pool: str = "root of squares", level_l2: bool = False, l2: bool = True,
) -> Callable[..., torch.Tensor]:
    """OS-RMAC with one step done wrong (float64): ``kernel`` "ceil" or "floor"; ``stride`` "0.4 kw" or
    "kw"; ``pool`` "root of squares", "sum" or "squares" (no root)."""
    def f(x: torch.Tensor, L: int = 3) -> torch.Tensor:
        x = x.double()
        v = x.new_zeros(x.shape[:2])
        for l in range(1, L + 1):
            side = 2 * min(x.shape[-2:]) / (l + 1)
            kw = max(1, math.ceil(side) if kernel == "ceil" else math.floor(side))
            ks = kw if stride == "kw" else max(1, math.floor(0.4 * kw))
            m = F.max_pool2d(x, kw, stride=ks)
            level = {"root of squares": m.pow(2).sum(dim=(-2, -1)).sqrt(), "sum": m.sum(dim=(-2, -1)),
                     "squares": m.pow(2).sum(dim=(-2, -1))}[pool]
            v = v + (l2n(level) if level_l2 else level)
        return l2n(v) if l2 else v
    return f


TASKS: dict[str, Task] = {
    "rmac_regions": Task(
        "rmac_regions", _region_cases, rmac_regions,
        [
            Mistake("do not reach the right or bottom border: the corners are floor(i (W - wl)/(n - 1)), "
                    "not i times an integer step (W - wl) // (n - 1)", _regions_variant(integer_steps=True)),
            Mistake("have 1-based corners: the first region starts at (0, 0)", _regions_variant(one_based=True)),
            Mistake("are an l x l grid even on a non-square map: the long side needs l + d regions", _regions_variant(square=True)),
            Mistake("have one region too few along the long side at every level: level l has l + d there, with d = 1 "
                    "when the best of the steps 2..7 is the first (index 0)", _regions_variant(fewer=True)),
            Mistake("round the region side up: it is floor(2 min(H, W)/(l + 1))", _regions_variant(ceil=True)),
            Mistake("are (x, y, w, h): give them as (y, x, h, w), row first", _regions_variant(swap=True)),
        ],
        canonical=_sorted_rows,
    ),
    "rmac": Task(
        "rmac", _rmac_cases, _rmac_ref,
        [
            Mistake("does not L2-normalise each region's MAC before the sum", _rmac_variant(region_l2=False)),
            Mistake("is not L2-normalised at the end", _rmac_variant(l2=False)),
            Mistake("adds a global MAC term (as cirtorch,"
                    " the PyTorch retrieval code of Radenović, Tolias & Chum, does): "
                    "R-MAC sums the regions only", _rmac_variant(global_term=True)),
            Mistake("averages each region instead of taking its maximum", _rmac_variant(average=True)),
            Mistake("pools regions one cell too small (x[y:y+h-1, x:x+w-1], as PyRetri,"
                    " the retrieval toolbox of Hu et al., ACM MM 2020, does): a region covers h x w cells",
                    _rmac_variant(shrink=1)),
        ],
        axes=MAP_AXES,
    ),
    "os_rmac": Task(
        "os_rmac", _os_rmac_cases, _os_rmac_ref,
        [
            Mistake("rounds the window down: kw = ceil(2 min(H, W)/(l + 1))", _os_rmac_variant(kernel="floor")),
            Mistake("moves the window by kw (no overlap): the stride is floor(0.4 kw)", _os_rmac_variant(stride="kw")),
            Mistake("sums the pooled values: square sum-pooling is the square root of the sum of their squares",
                    _os_rmac_variant(pool="sum")),
            Mistake("forgets the square root of the sum of squares", _os_rmac_variant(pool="squares")),
            Mistake("L2-normalises each level before the sum (R-MAC's habit): OS-RMAC sums the levels as they are",
                    _os_rmac_variant(level_l2=True)),
            Mistake("is not L2-normalised at the end", _os_rmac_variant(l2=False)),
        ],
        axes=MAP_AXES,
    ),
}


def check_rmac_regions(rmac_regions: Callable) -> None:
    """Check a student's ``rmac_regions`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("rmac_regions", rmac_regions)


def check_rmac(rmac: Callable) -> None:
    """Check a student's ``rmac`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("rmac", rmac)


def check_os_rmac(os_rmac: Callable) -> None:
    """Check a student's ``os_rmac`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("os_rmac", os_rmac)
