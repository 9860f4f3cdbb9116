"""Checks that teach: run a student's function on fresh inputs and name the mistake.

Every exercise task is a :class:`Task`: a few *cases* (fresh random inputs, each testing one
property), the reference answer (this package) and a list of plausible *mistakes*, each a
function computing a wrong answer the way a student might. A case passes when the student's
output matches the reference; otherwise the message names the property and, when the output
matches a known mistake, that mistake ("GeM with p=1 should equal average pooling; yours
equals max pooling"). When several mistakes give the same output on a case, the one that
explains the most failing cases of the task is named (one bug usually shows on several cases).

The work is split in two so that grading can run the student's code in a sandboxed kernel
and judge outside it: :func:`probe` calls the function on the cases of a seed and returns only
numbers; :func:`judge` rebuilds the cases from the same seed and compares. The check cells of
the notebooks call ``check_<task>(fn)``, which does both and prints the verdict.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import encoding, evaluate, losses, pooling, regions
from ..cam import class_activation_maps, class_weighted
from ..crow import crow_channel_weights, crow_spatial_weights

__all__ = ["Task", "Case", "Result", "TASKS", "probe", "judge", "run_check", "CheckFailed"]

RTOL, ATOL = 1e-4, 1e-5


class CheckFailed(AssertionError):
    """A check found a mistake; the message says which."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the feedback alone, not the check's own frames."""
        return [f"{type(self).__name__}: {self}"]


@dataclass
class Case:
    """One property: the inputs to call the function with and what a correct answer satisfies."""

    label: str  # what is being tested, e.g. "p = 1"
    expectation: str  # what a correct answer does, e.g. "GeM with p=1 should equal average pooling"
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass
class Mistake:
    description: str  # completes "yours ...", e.g. "equals max pooling"
    compute: Callable[..., Any]


@dataclass
class Result:
    label: str
    passed: bool
    message: str


@dataclass
class Task:
    name: str  # the function students write
    cases: Callable[[np.random.Generator], list[Case]]
    reference: Callable[..., Any]
    mistakes: list[Mistake]
    points: int = 1
    # maps an output (as numbers) to the form compared, e.g. a list of regions sorted
    canonical: Callable[[np.ndarray], np.ndarray] | None = None


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))


# ---------------------------------------------------------------- notebook 1: pooling
SLIDES = [[5, 3, 1, 2], [1, 2, 3, 2], [4, 2, 2, 5], [3, 6, 1, 1]]


def _maps(rng: np.random.Generator, *shape: int, negative: bool = False) -> torch.Tensor:
    x = rng.standard_normal(shape) if negative else rng.random(shape) + 0.05
    return torch.tensor(x, dtype=torch.float32)


def _window_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("slides, avg", "2x2 average pooling of the slides' map gives 2.75 2 / 3.75 2.25",
             (torch.tensor(SLIDES, dtype=torch.float32), "avg")),
        Case("slides, max", "2x2 max pooling of the slides' map gives 5 3 / 6 5",
             (torch.tensor(SLIDES, dtype=torch.float32), "max")),
        Case("sum", "sum pooling adds the four values of each window", (_maps(rng, 6, 8), "sum")),
        Case("non-square avg", "a 6x10 map pools to 3x5", (_maps(rng, 6, 10), "avg")),
        Case("non-square max", "a 4x6 map pools to 2x3", (_maps(rng, 4, 6), "max")),
    ]


def _window_ref(x: torch.Tensor, kind: str) -> torch.Tensor:
    return pooling.window_pool(x, kind)


def _window_by(reduce: str) -> Callable[..., torch.Tensor]:
    def f(x: torch.Tensor, kind: str) -> torch.Tensor:
        return pooling.window_pool(x, reduce)
    return f


def _window_stride1(x: torch.Tensor, kind: str) -> torch.Tensor:
    return pooling.window_pool(x, kind, size=2, stride=1)


def _window_sum_for_avg(x: torch.Tensor, kind: str) -> torch.Tensor:
    return pooling.window_pool(x, "sum" if kind == "avg" else kind)


# GeM and friends
def _gem_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("p = 3", "gem(x, p=3) is (mean of x^3)^(1/3) per channel, shape (N, C)", (_maps(rng, 2, 4, 5, 7),), {"p": 3.0}),
        Case("p = 1", "GeM with p=1 should equal average pooling", (_maps(rng, 2, 3, 4, 6),), {"p": 1.0}),
        Case("large p", "GeM with a large p (p=30) should be close to, but not exactly, max pooling",
             (_maps(rng, 1, 5, 6, 6),), {"p": 30.0}),
        Case("negative inputs", "values below eps are clamped to eps before the power (here eps=0.1)",
             (torch.cat([_maps(rng, 2, 3, 4, 4, negative=True), -_maps(rng, 2, 1, 4, 4)], dim=1),), {"p": 3.0, "eps": 0.1}),
    ]


def _gem_ref(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return pooling.gem(x, p=p, eps=eps)


def _gem_no_root(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1))


def _gem_sum(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return x.clamp(min=eps).pow(p).sum(dim=(-2, -1)).pow(1 / p)


def _gem_root_p(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(p)


def _gem_no_clamp(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return x.pow(p).mean(dim=(-2, -1)).pow(1 / p)


def _gem_relu(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    return x.clamp(min=0).pow(p).mean(dim=(-2, -1)).pow(1 / p)


# SPoC
def _spoc_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("square map", "spoc(x) is the sum over positions of x weighted by the Gaussian centre prior",
             (_maps(rng, 2, 3, 7, 7),)),
        Case("non-square map", "the prior is centred at ((H-1)/2, (W-1)/2) with sigma = min(H, W)/6",
             (_maps(rng, 2, 3, 6, 10),)),
        Case("even size", "on an even-sized map the centre falls between pixels", (_maps(rng, 1, 4, 8, 8),)),
    ]


def _spoc_ref(x: torch.Tensor) -> torch.Tensor:
    return pooling.spoc(x)


def _spoc_weighted(weights: Callable[[int, int], torch.Tensor], mean: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        w = weights(x.shape[-2], x.shape[-1]).to(x.dtype)
        out = (x * w).sum(dim=(-2, -1))
        return out / (x.shape[-2] * x.shape[-1]) if mean else out
    return f


def _prior(H: int, W: int, cy: float, cx: float, sigma: float) -> torch.Tensor:
    ys = torch.arange(H, dtype=torch.float64)[:, None] - cy
    xs = torch.arange(W, dtype=torch.float64)[None, :] - cx
    return torch.exp(-(ys**2 + xs**2) / (2 * sigma**2))


def _mac_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("batch", "mac(x) takes the maximum of each channel over all positions, shape (N, C)", (_maps(rng, 3, 4, 5, 6),)),
        Case("negative values", "the maximum of an all-negative channel is negative", (_maps(rng, 2, 3, 4, 4, negative=True) - 3,)),
    ]


# ---------------------------------------------------------------- notebook 2: AP and mAP
def _ap_cases(rng: np.random.Generator) -> list[Case]:
    n = int(rng.integers(5, 9))
    ranks = np.sort(rng.choice(40, size=n - 2, replace=False))
    return [
        Case("one positive at rank 1", "one positive at (0-based) rank 1 of 1 gives AP 0.25 (trapezoid rule)", ([1], 1)),
        Case("first place", "a positive at rank 0 contributes precision 1 on both sides", ([0, 3], 2)),
        Case("missed positives", "positives never retrieved still count in n_positives", (ranks.tolist(), n)),
        Case("unsorted input", "the ranks may come in any order", (ranks[::-1].tolist(), n)),
    ]


def _ap_ref(positive_ranks: Any, n_positives: int) -> float:
    return evaluate.average_precision(positive_ranks, n_positives)


def _ap_finite_sum(positive_ranks: Any, n_positives: int) -> float:
    r = np.sort(np.asarray(positive_ranks))
    return float(((np.arange(r.size) + 1) / (r + 1)).sum() / n_positives)


def _ap_found(positive_ranks: Any, n_positives: int) -> float:
    return evaluate.average_precision(positive_ranks, len(positive_ranks))


def _ap_unsorted(positive_ranks: Any, n_positives: int) -> float:
    r = np.asarray(positive_ranks, dtype=float)
    j = np.arange(r.size)
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1))
    return float(((p0 + (j + 1) / (r + 1)) / (2 * n_positives)).sum())


def _ap_one_based(positive_ranks: Any, n_positives: int) -> float:
    r = np.sort(np.asarray(positive_ranks, dtype=float)) + 1
    j = np.arange(r.size)
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1))
    return float(((p0 + (j + 1) / (r + 1)) / (2 * n_positives)).sum())


def _map_cases(rng: np.random.Generator) -> list[Case]:
    n_db = 30
    ranks = np.stack([rng.permutation(n_db) for _ in range(4)])
    gnd = []
    for q in range(4):
        ok = rng.choice(n_db, size=4, replace=False)
        rest = np.setdiff1d(np.arange(n_db), ok)
        gnd.append({"ok": sorted(ok.tolist()), "junk": sorted(rng.choice(rest, size=3, replace=False).tolist())})
    # junk placed ahead of the positives so that counting it changes the positions
    for q in range(4):
        order = [j for j in ranks[q] if j in gnd[q]["junk"]] + [j for j in ranks[q] if j not in gnd[q]["junk"]]
        ranks[q] = order
    no_pos = [dict(g) for g in gnd]
    no_pos[2] = {"ok": [], "junk": []}
    no_junk = [{"ok": g["ok"], "junk": []} for g in gnd]
    return [
        Case("no junk", "mAP is the mean over queries of their AP", (ranks, no_junk)),
        Case("junk", "junk images are removed from the ranking before AP: they neither help nor hurt", (ranks, gnd)),
        Case("query without positives", "a query without positives is left out of the mean", (ranks, no_pos)),
    ]


def _map_ref(ranks: Any, gnd: list[dict]) -> float:
    return evaluate.mean_average_precision(ranks, gnd)[0]


def _map_counts_junk(ranks: Any, gnd: list[dict]) -> float:
    return evaluate.mean_average_precision(ranks, [{"ok": g["ok"], "junk": []} for g in gnd])[0]


def _map_zero_for_empty(ranks: Any, gnd: list[dict]) -> float:
    _, aps, _, _ = evaluate.mean_average_precision(ranks, gnd)
    return float(np.nan_to_num(aps, nan=0.0).mean())


def _map_junk_as_positive(ranks: Any, gnd: list[dict]) -> float:
    return evaluate.mean_average_precision(ranks, [{"ok": sorted(set(g["ok"]) | set(g.get("junk", []))), "junk": []} for g in gnd])[0]


def _map_finite_sum(ranks: Any, gnd: list[dict]) -> float:
    R = np.asarray(ranks)
    aps = []
    for row, g in zip(R, gnd):
        if not g["ok"]:
            continue
        kept = row[~np.isin(row, g.get("junk", []))]
        pos = np.flatnonzero(np.isin(kept, g["ok"]))
        aps.append(_ap_finite_sum(pos, len(g["ok"])))
    return float(np.mean(aps))


# ---------------------------------------------------------------- shared helpers (notebooks 3-9)
def _unit(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-12)


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _sparse_maps(rng: np.random.Generator, N: int, C: int, H: int, W: int) -> torch.Tensor:
    """Post-ReLU maps with exact zeros, each channel of each image with its own sparsity."""
    shift = rng.uniform(-0.5, 1.0, size=(N, C, 1, 1))
    return torch.tensor(np.maximum(rng.standard_normal((N, C, H, W)) - shift, 0), dtype=torch.float32)


# ---------------------------------------------------------------- notebook 3: VLAD
def _clusters(rng: np.random.Generator, counts: list[int], D: int, peaked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``K <= D`` centres far apart (the last one far from everything when its count is 0) and ``counts[k]``
    descriptors around centre k, shuffled. Each cluster is offset from its centre by +-(0.8..4)
    per dimension, so that no residual sum is near 0 (where float32 rounding would be magnified
    by a square root); ``peaked`` stretches cluster 0's offset along the first axis."""
    centers = 25 * np.linalg.qr(rng.standard_normal((D, len(counts))))[0].T  # K <= D orthogonal directions
    if counts[-1] == 0:
        centers[-1] = 80 + rng.random(D)
    size = rng.uniform(0.8, 4.0, size=(len(counts), D))
    if peaked:  # cluster 0's offset along one axis, the others' diagonal: |v|^p scales their norms differently
        size = np.full((len(counts), D), 2.5) + 0.5 * rng.random((len(counts), D))
        size[0] = [6.0] + [0.8] * (D - 1)
    offsets = rng.choice([-1, 1], size=(len(counts), D)) * size
    X = np.concatenate([centers[k] + offsets[k] + 0.3 * rng.standard_normal((n, D)) for k, n in enumerate(counts) if n])
    X = X[rng.permutation(len(X))]
    return torch.tensor(X, dtype=torch.float32), torch.tensor(centers, dtype=torch.float32)


def _vlad_cases(rng: np.random.Generator) -> list[Case]:
    counts = rng.permutation([2, 5, 9, 14]).tolist()
    return [
        Case("plain VLAD", "vlad(X, centers) sums the residuals x_t - c_k of the descriptors nearest to c_k, "
             "stacks the K x D sums row by row into K*D values and L2-normalises", _clusters(rng, counts, 6)),
        Case("signed square root", "power=0.5 applies sign(v) |v|^0.5 to every value, then the L2",
             _clusters(rng, rng.permutation([3, 6, 8, 12]).tolist(), 5), {"power": 0.5}),
        Case("intra-normalisation", "intra=True L2-normalises each centre's sum v_k (an empty centre stays 0), then the global L2",
             _clusters(rng, rng.permutation([4, 7, 10]).tolist() + [0], 6), {"intra": True}),
        Case("power, then intra", "with power and intra, the power comes first, then intra-normalisation, then the global L2",
             _clusters(rng, rng.permutation([2, 6, 11]).tolist(), 6, peaked=True), {"power": 0.5, "intra": True}),
    ]


def _vlad_ref(X: Any, centers: Any, power: float | None = None, intra: bool = False) -> Any:
    return encoding.vlad(X, centers, power=power, intra=intra)


def _vlad_variant(
    *, every_centre: bool = False, sign: float = 1.0, mean: bool = False, unit_residuals: bool = False,
    intra_first: bool = False, signed: bool = True, nan_empty: bool = False, l2: bool = True, dim_major: bool = False,
) -> Callable[..., np.ndarray]:
    """VLAD with one step done wrong (float64 numpy, an independent implementation)."""
    def f(X: Any, centers: Any, power: float | None = None, intra: bool = False) -> np.ndarray:
        X, C = _to_numpy(X), _to_numpy(centers)
        K = len(C)
        A = np.ones((len(X), K)) if every_centre else np.eye(K)[((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)]
        R = sign * (X[:, None, :] - C[None])  # (T, K, D)
        if unit_residuals and intra:  # each residual normalised instead of each centre's sum
            R = _unit(R)
        V = np.einsum("tk,tkd->kd", A, R)
        if mean:
            V = V / np.maximum(A.sum(0), 1)[:, None]

        def normalise(V: np.ndarray) -> np.ndarray:
            return V / np.linalg.norm(V, axis=1, keepdims=True) if nan_empty else _unit(V)

        if intra and intra_first:
            V = normalise(V)
        if power is not None:
            V = np.sign(V) * np.abs(V) ** power if signed else np.abs(V) ** power
        if intra and not intra_first and not unit_residuals:
            V = normalise(V)
        v = (V.T if dim_major else V).ravel()
        return _unit(v) if l2 else v
    return f


# ---------------------------------------------------------------- notebook 4: R-MAC
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


def _rmac_cases(rng: np.random.Generator) -> list[Case]:
    def maps(*shape: int) -> torch.Tensor:  # heavy-tailed: region maxima (and their norms) differ from region to region
        return torch.tensor(rng.random(shape) * np.exp(2 * rng.standard_normal(shape)), dtype=torch.float32)

    return [
        Case("non-square batch", "rmac(x) sums the L2-normalised MAC of every region and L2-normalises the sum, shape (N, C)",
             (maps(2, 8, 7, 10),)),
        Case("square map", "on a square map too, each region's MAC is L2-normalised before the sum", (maps(1, 6, 12, 12),)),
        Case("tall map, L = 2", "rmac(x, L=2) uses the regions of levels 1 and 2 only", (maps(2, 5, 16, 11),), {"L": 2}),
        Case("30x40 map", "a 30x40 map has 20 regions (sides 30, 20, 15)", (maps(1, 4, 30, 40),)),
    ]


def _rmac_ref(x: torch.Tensor, L: int = 3) -> torch.Tensor:
    return regions.rmac(x, L=L)


def _rmac_variant(
    *, region_l2: bool = True, l2: bool = True, global_term: bool = False, average: bool = False, shrink: int = 0,
) -> Callable[..., torch.Tensor]:
    def f(x: torch.Tensor, L: int = 3) -> torch.Tensor:
        x = x.double()
        v = _l2(x.amax(dim=(-2, -1))) if global_term else x.new_zeros(x.shape[:2])
        for y, x0, h, w in regions.rmac_regions(x.shape[-2], x.shape[-1], L):
            r = x[..., y : y + h - shrink, x0 : x0 + w - shrink]
            m = r.mean(dim=(-2, -1)) if average else r.amax(dim=(-2, -1))
            v = v + (_l2(m) if region_l2 else m)
        return _l2(v) if l2 else v
    return f


# ---------------------------------------------------------------- notebook 5: CroW
def _spatial_cases(rng: np.random.Generator) -> list[Case]:
    zero = _sparse_maps(rng, 2, 3, 4, 6)
    zero[1] = 0
    return [
        Case("a = b = 2", "S = sum of the channels, S' = (S / ||S||_a)^(1/b) per image, shape (N, H, W)",
             (_sparse_maps(rng, 2, 5, 6, 8),)),
        Case("a = 3, b = 0.5", "||S||_a = (sum_ij S_ij^a)^(1/a); the root 1/b comes last", (_sparse_maps(rng, 1, 4, 5, 9),),
             {"a": 3.0, "b": 0.5}),
        Case("b = 1", "with b = 1 the weights of each image have unit a-norm", (_sparse_maps(rng, 3, 4, 7, 5),), {"a": 2.0, "b": 1.0}),
        Case("all-zero map", "an all-zero map (S = 0) gets all-zero weights, the other image its usual ones", (zero,)),
    ]


def _spatial_variant(
    *, norm: str = "a", root: bool = True, batch: bool = False, nan_zero: bool = False
) -> Callable[..., torch.Tensor]:
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


def _channel_cases(rng: np.random.Generator) -> list[Case]:
    dead = _sparse_maps(rng, 2, 6, 5, 6)
    dead[0, 2] = 0
    return [
        Case("batch", "w_k = log(sum_j Q_j / Q_k), Q_k the fraction of non-zero positions of channel k, per image, shape (N, C)",
             (_sparse_maps(rng, 3, 6, 5, 7),)),
        Case("single image", "sparser channels (smaller Q_k) get larger weights", (_sparse_maps(rng, 1, 8, 6, 4),)),
        Case("all-zero channel", "an all-zero channel (Q_k = 0) gets weight 0, with no epsilon", (dead,)),
    ]


def _channel_variant(
    *, zeros: bool = False, eps: float = 0.0, batch: bool = False, sign: float = 1.0, log10: bool = False,
    infinite: bool = False, activation: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        Q = x.mean(dim=(-2, -1)) if activation else (x != 0).double().mean(dim=(-2, -1))
        Q = 1 - Q if zeros else Q
        Q = Q.mean(dim=0, keepdim=True).expand_as(Q) if batch else Q
        Q = Q + eps
        w = torch.log(Q.sum(dim=1, keepdim=True) / Q) / (math.log(10) if log10 else 1)
        if not infinite and eps == 0:
            w = torch.where(Q > 0, w, torch.zeros_like(w))
        return sign * w
    return f


# ---------------------------------------------------------------- notebook 6: CAM
def _cam_cases(rng: np.random.Generator) -> list[Case]:
    def weights(n: int, K: int) -> torch.Tensor:
        return torch.tensor(rng.standard_normal((n, K)), dtype=torch.float32)

    def maps(*shape: int) -> torch.Tensor:  # > 0: no CAM has a maximum of exactly 0 (0/0 in the peer)
        return _sparse_maps(rng, *shape) + 0.05

    negative = weights(10, 6)
    negative[4] = -negative[4].abs()  # class 4: every value of its CAM is negative (the maps are > 0)
    return [
        Case("one image", "cam = sum_k W[c, k] A_k, divided by its maximum, negative values then set to 0, shape (N, H, W)",
             (maps(1, 8, 6, 9), weights(12, 8), int(rng.integers(12)))),
        Case("batch", "each image's CAM is divided by its own maximum", (maps(3, 6, 5, 7), weights(10, 6), 3)),
        Case("negative maximum", "the peer divides by the maximum before clipping: a CAM whose maximum is negative flips sign "
             "(its most negative position becomes the largest value)", (maps(2, 6, 4, 6), negative, 4)),
        Case("as many classes as channels", "the weights of class c are the row W[c], one per channel",
             (maps(2, 7, 5, 5), weights(7, 7), int(rng.integers(7)))),
    ]


def _cam_ref(features: torch.Tensor, fc_weight: torch.Tensor, c: int) -> torch.Tensor:
    return class_activation_maps(features, fc_weight, [c])[:, 0]


def _cam_variant(
    *, column: bool = False, all_classes: bool = False, normalise: bool = True, clip: str = "after", batch_max: bool = False,
) -> Callable[..., torch.Tensor]:
    """``clip``: "after" (right), "before" (clip, then divide: 0/0 is NaN), "before, guarded" (0/0 gives 0), "never"."""
    def f(features: torch.Tensor, fc_weight: torch.Tensor, c: int) -> torch.Tensor:
        W = fc_weight.double()
        w = W.sum(dim=0) if all_classes else (W[:, c] if column else W[c])
        cam = torch.einsum("k,nkhw->nhw", w, features.double())
        if clip.startswith("before"):
            cam = cam.clamp(min=0)
        if normalise:
            peak = cam.amax() if batch_max else cam.amax(dim=(-2, -1), keepdim=True)
            cam = cam / (torch.where(peak == 0, torch.ones_like(peak), peak) if clip == "before, guarded" else peak)
        return cam.clamp(min=0) if clip == "after" else cam
    return f


def _weighted_cases(rng: np.random.Generator) -> list[Case]:
    def cams(x: torch.Tensor) -> torch.Tensor:  # like a CAM: >= 0, peak 1, zero where the class is absent
        c = np.maximum(rng.standard_normal((x.shape[0], *x.shape[2:])) + 0.3, 0)
        return torch.tensor(c / c.max(axis=(1, 2), keepdims=True), dtype=torch.float32)

    batch, dead = _sparse_maps(rng, 2, 6, 5, 7), _sparse_maps(rng, 1, 5, 6, 6)
    dead[0, 1] = 0
    one = _sparse_maps(rng, 1, 7, 4, 8)
    return [
        Case("batch", "d_k = w_k sum_ij x_kij cam_ij with w the CroW channel weights of x, then d / ||d||, shape (N, C)",
             (batch, cams(batch))),
        Case("all-zero channel", "an all-zero channel has CroW weight 0, so its value is 0", (dead, cams(dead))),
        Case("uniform CAM", "with a CAM of ones the vector is CroW's channel-weighted sum pooling, L2-normalised",
             (one, torch.ones(1, 4, 8))),
    ]


def _weighted_ref(features: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    return class_weighted(features, cam[:, None])[:, 0]


def _weighted_variant(
    *, channel: bool = True, l2: bool = True, maximum: bool = False, weights_of_weighted: bool = False, weights_after_l2: bool = False,
) -> Callable[..., torch.Tensor]:
    def f(features: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        x = features.double()
        xw = x * cam.double()[:, None]
        d = xw.amax(dim=(-2, -1)) if maximum else xw.sum(dim=(-2, -1))
        w = crow_channel_weights(xw if weights_of_weighted else x)
        if weights_after_l2:
            return _l2(d) * w
        d = d * w if channel else d
        return _l2(d) if l2 else d
    return f


# ---------------------------------------------------------------- notebook 7: alpha-QE
def _positive_unit(rng: np.random.Generator, n: int, D: int) -> torch.Tensor:
    """Unit rows with non-negative entries: every similarity is >= 0 (as with post-ReLU descriptors)."""
    return torch.tensor(_unit(np.abs(rng.standard_normal((n, D)))), dtype=torch.float32)


def _aqe_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("alpha = 3, k = 5", "q' = l2n(q + sum_j s_j^alpha x_j) over the k database vectors most similar to q (s_j = q . x_j)",
             (_positive_unit(rng, 3, 8), _positive_unit(rng, 30, 8), 5, 3.0)),
        Case("alpha = 0", "alpha = 0 is average query expansion: l2n(q + sum of the top-k)",
             (_positive_unit(rng, 2, 6), _positive_unit(rng, 25, 6), 4, 0.0)),
        Case("k = 1", "k = 1 adds only the nearest vector, weighted by s^alpha", (_positive_unit(rng, 4, 5), _positive_unit(rng, 20, 5), 1, 2.0)),
        Case("one query", "one query (1, D) gives one expanded query (1, D)", (_positive_unit(rng, 1, 10), _positive_unit(rng, 40, 10), 6, 5.0)),
    ]


def _aqe_ref(Q: Any, X: Any, k: int, alpha: float) -> Any:
    from .. import postprocess  # faiss and scikit-learn load only when needed

    return postprocess.alpha_query_expansion(Q, X, k, alpha)


def _aqe_variant(
    *, query: bool = True, weights: str = "alpha", skip: int = 0, farthest: bool = False, l2: bool = True, mean: bool = False
) -> Callable[..., np.ndarray]:
    def f(Q: Any, X: Any, k: int, alpha: float) -> np.ndarray:
        Q, X = _to_numpy(Q), _to_numpy(X)
        S = Q @ X.T
        idx = np.argsort(S if farthest else -S, axis=1, kind="stable")[:, skip : skip + k]
        s = np.take_along_axis(S, idx, axis=1)
        w = {"alpha": s**alpha, "s": s, "none": np.ones_like(s)}[weights]
        v = (w[..., None] * X[idx]).sum(axis=1) / (k if mean else 1) + (Q if query else 0)
        return _unit(v) if l2 else v
    return f


# ---------------------------------------------------------------- notebook 8: losses and mining
def _pairs(rng: np.random.Generator, n: int, D: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit pairs: "near" (squared distance about 0.05..0.6), "far" (about 2.5..4) or "any" (independent)."""
    a = _unit(rng.standard_normal((n, D)))
    noise = rng.uniform(0.1, 0.25, size=(n, 1)) * rng.standard_normal((n, D))
    b = {"near": a + noise, "far": -a + noise, "any": rng.standard_normal((n, D))}[kind]
    return torch.tensor(a, dtype=torch.float32), torch.tensor(_unit(b), dtype=torch.float32)


def _contrastive_cases(rng: np.random.Generator) -> list[Case]:
    a3, b3 = (torch.cat(p) for p in zip(_pairs(rng, 3, 6, "near"), _pairs(rng, 5, 6, "any")))
    y3 = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    D3 = ((a3 - b3) ** 2).sum(dim=1)
    m3 = float(D3[y3 == 0].sort().values[2])  # two non-matching pairs lie beyond the margin, two inside
    return [
        Case("matching pairs", "a matching pair (y = 1) costs D/2 with D = ||a - b||^2 the squared distance; the mean over pairs",
             (*_pairs(rng, 5, 8, "near"), torch.ones(5, dtype=torch.long), 1.0)),
        Case("non-matching pairs inside the margin", "a non-matching pair (y = 0) costs max(0, m - D)/2, a plain hinge on the squared distance",
             (*_pairs(rng, 4, 6, "far"), torch.zeros(4, dtype=torch.long), 5.0)),
        Case("mixed pairs", "non-matching pairs beyond the margin (D > m) cost nothing", (a3, b3, y3, m3)),
        Case("one pair", "one non-matching pair inside the margin", (*_pairs(rng, 1, 5, "far"), torch.zeros(1, dtype=torch.long), 4.5)),
    ]


def _contrastive_ref(a: torch.Tensor, b: torch.Tensor, y: Any, margin: float) -> torch.Tensor:
    return losses.contrastive_loss(a, b, y, margin)


def _contrastive_variant(
    *, cirtorch: bool = False, root: bool = False, swap: bool = False, total: bool = False, half: float = 0.5, hinge: bool = True,
) -> Callable[..., torch.Tensor]:
    def f(a: torch.Tensor, b: torch.Tensor, y: Any, margin: float) -> torch.Tensor:
        y = torch.as_tensor(y).double()
        y = 1 - y if swap else y
        D = (a.double() - b.double()).pow(2).sum(dim=1)
        if cirtorch:
            d = D.sqrt()
            loss = half * y * D + half * (1 - y) * (margin - d).clamp(min=0) ** 2
        else:
            D = D.sqrt() if root else D
            loss = half * y * D + half * (1 - y) * ((margin - D).clamp(min=0) if hinge else margin - D)
        return loss.sum() if total else loss.mean()
    return f


def _triplet_cases(rng: np.random.Generator) -> list[Case]:
    def triplets(n: int, D: int, hard: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = _unit(rng.standard_normal((n, D)))
        near, far = _unit(a + 0.3 * rng.standard_normal((n, D))), _unit(0.4 * rng.standard_normal((n, D)) - a)
        p, q = (far, near) if hard else (near, far)
        return tuple(torch.tensor(v, dtype=torch.float32) for v in (a, p, q))

    a, p, q = triplets(6, 8, hard=False)
    mixed = [torch.cat(pair) for pair in zip(triplets(3, 8, hard=True), triplets(4, 8, hard=False))]
    return [
        Case("hard triplets", "max(0, m + D(a, p) - D(a, n)) with D the squared L2 distance, the mean over triplets",
             (*triplets(5, 8, hard=True), 0.5)),
        Case("easy triplets", "a triplet with D(a, n) > D(a, p) + m costs nothing", (a, p, q, 0.2)),
        Case("mixed triplets", "only the triplets that violate the margin count, averaged over all", (*mixed, 0.7)),
    ]


def _triplet_ref(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    return losses.triplet_loss(anchor, positive, negative, margin)


def _triplet_variant(
    *, root: bool = False, hinge: bool = True, swap: bool = False, total: bool = False, minus_margin: bool = False,
    violating: bool = False,
) -> Callable[..., torch.Tensor]:
    def f(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
        a, p, n = anchor.double(), positive.double(), negative.double()
        p, n = (n, p) if swap else (p, n)
        dp, dn = (a - p).pow(2).sum(dim=1), (a - n).pow(2).sum(dim=1)
        dp, dn = (dp.sqrt(), dn.sqrt()) if root else (dp, dn)
        t = dp - dn + (-margin if minus_margin else margin)
        t = t.clamp(min=0) if hinge else t
        if violating:
            return t[t > 0].mean()
        return t.sum() if total else t.mean()
    return f


def _mining_cases(rng: np.random.Generator) -> list[Case]:
    # 6 objects seen 4 times each; the first 6 pool items are one view of each object
    objects = _unit(rng.standard_normal((6, 10)))
    views = _unit(np.repeat(objects, 4, axis=0) + 0.5 * rng.standard_normal((24, 10)))
    order = np.concatenate([np.arange(0, 24, 4), rng.permutation(np.setdiff1d(np.arange(24), np.arange(0, 24, 4)))])
    pool, label = views[order], np.repeat(np.arange(6), 4)[order]
    positives = [np.flatnonzero(label == i).tolist() for i in range(6)]
    queries = _unit(objects[:4] + 0.5 * rng.standard_normal((4, 10)))
    q_pos = positives[:3] + [[]]  # the last query has no positive in the pool
    P = torch.tensor(pool, dtype=torch.float32)
    return [
        Case("anchors from the pool", "the n pool items with the highest inner product that are not the anchor's positives, "
             "nearest first, shape (Na, n)", (P[:6], P, positives, 3)),
        Case("n = 1", "n = 1: the hardest negative of each anchor", (P[:6], P, positives, 1)),
        Case("queries outside the pool", "anchors need not be pool items; an anchor without positives may get any pool item",
             (torch.tensor(queries, dtype=torch.float32), P, q_pos, 4)),
        Case("every negative, most of them dissimilar", "with n = every non-positive, all of them come back, nearest first, "
             "even those with a negative inner product; never a positive", (-P[:6], P, positives, 20)),
    ]


def _mining_ref(anchors: Any, pool: Any, positives_of: Any, n: int) -> Any:
    return losses.hard_negatives(anchors, pool, positives_of, n)


def _mining_variant(*, mask: str = "positives", farthest: bool = False, index_order: bool = False, skip: int = 0) -> Callable[..., np.ndarray]:
    def f(anchors: Any, pool: Any, positives_of: Any, n: int) -> np.ndarray:
        S = _to_numpy(anchors) @ _to_numpy(pool).T
        excluded = np.zeros(S.shape, dtype=bool)
        for i, p in enumerate(positives_of):
            if mask in ("positives", "zero"):
                excluded[i, list(p)] = True
            elif mask == "self" and i < S.shape[1]:
                excluded[i, i] = True
        if mask == "zero":
            S, excluded = np.where(excluded, 0.0, S), np.zeros_like(excluded)
        key = np.where(excluded, np.inf, S if farthest else -S)
        top = np.argsort(key, axis=1, kind="stable")[:, skip : skip + n]
        return np.sort(top, axis=1) if index_order else top
    return f


# ---------------------------------------------------------------- notebook 9: embeddings
def _neighbours_of(Z: np.ndarray, k: int, *, metric: str = "euclidean", with_self: bool = False, farthest: bool = False,
                   fewer: bool = False) -> np.ndarray:
    """Each row's k nearest other rows, nearest first ``(n, k)``."""
    if metric == "cosine":
        U = _unit(Z)
        key = -(U @ U.T)
    else:
        key = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
    key = -key if farthest else key
    order = np.argsort(key, axis=1, kind="stable")
    if not with_self:
        order = order[order != np.arange(len(Z))[:, None]].reshape(len(Z), -1)
    return order[:, : k - 1 if fewer else k]


def _knn_preservation(X: Any, Y: Any, k: int, *, score: str = "fraction", **neighbours: Any) -> float:
    """kNN preservation: the mean over points i of ``|N_k^X(i) ∩ N_k^Y(i)| / k``.

    ``N_k^Z(i)`` is the set of the k points nearest to point i in ``Z`` by Euclidean distance,
    i itself left out; ``X`` ``(n, D)`` is the original data and ``Y`` ``(n, d)`` its embedding
    (rows are the same points). 1 means every point keeps all its k nearest neighbours.
    ``score`` and ``neighbours`` make the wrong variants of the check.
    """
    A, B = _neighbours_of(_to_numpy(X), k, **neighbours), _neighbours_of(_to_numpy(Y), k, **neighbours)
    if score == "same rank":
        return float((A == B).sum(1).mean() / k)
    shared = (A[:, :, None] == B[:, None, :]).any(-1).sum(1)
    per_point = {"fraction": shared / k, "count": shared, "jaccard": shared / (2 * k - shared)}[score]
    return float(per_point.mean())


def _knn_cases(rng: np.random.Generator) -> list[Case]:
    X = rng.standard_normal((40, 5)) + 1.0
    P = rng.standard_normal((5, 2))
    X2 = rng.standard_normal((30, 6)) + 0.5
    return [
        Case("a 2-D projection", "the mean over points of |kNN in X ∩ kNN in Y| / k, neighbours by Euclidean distance, "
             "each point left out of its own neighbours", (X, X @ P + 0.3 * rng.standard_normal((40, 2)), 5)),
        Case("a scaled, shifted copy", "Y = 2 X + 3 keeps every neighbour: the score is 1", (X2, 2 * X2 + 3, 4)),
        Case("k = 1", "k = 1: the fraction of points whose nearest neighbour stays their nearest",
             (X2, X2 @ rng.standard_normal((6, 3)), 1)),
        Case("an unrelated embedding", "a random Y keeps few neighbours", (X2, rng.standard_normal((30, 2)), 6)),
    ]


TASKS: dict[str, Task] = {
    "window_pool": Task(
        "window_pool", _window_cases, _window_ref,
        [
            Mistake("computes max pooling whatever `kind` says", _window_by("max")),
            Mistake("computes average pooling whatever `kind` says", _window_by("avg")),
            Mistake("moves the window by 1 instead of 2 (stride 1: overlapping windows)", _window_stride1),
            Mistake("returns the window sums for 'avg' (divide by the 4 values of the window)", _window_sum_for_avg),
        ],
    ),
    "mac": Task(
        "mac", _mac_cases, pooling.mac,
        [
            Mistake("equals average pooling", pooling.avg_pool),
            Mistake("equals sum pooling", lambda x: x.sum(dim=(-2, -1))),
            Mistake("takes the max over rows only, then the mean over columns", lambda x: x.amax(dim=-2).mean(dim=-1)),
            Mistake("takes the max of the absolute values", lambda x: x.abs().amax(dim=(-2, -1))),
        ],
    ),
    "spoc": Task(
        "spoc", _spoc_cases, _spoc_ref,
        [
            Mistake("equals plain sum pooling (no centre prior)", lambda x: x.sum(dim=(-2, -1))),
            Mistake("equals plain average pooling (cirtorch's 'SPoC')", pooling.avg_pool),
            Mistake("averages instead of summing the weighted values",
                    _spoc_weighted(lambda H, W: pooling.spoc_weights(H, W, torch.float64), mean=True)),
            Mistake("puts the centre at (H/2, W/2) instead of ((H-1)/2, (W-1)/2)",
                    _spoc_weighted(lambda H, W: _prior(H, W, H / 2, W / 2, min(H, W) / 6))),
            Mistake("uses sigma = min(H, W)/3 instead of min(H, W)/6",
                    _spoc_weighted(lambda H, W: _prior(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 3))),
            Mistake("uses exp(-d^2 / sigma^2), without the factor 2",
                    _spoc_weighted(lambda H, W: _prior(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 6 / math.sqrt(2)))),
        ],
    ),
    "gem": Task(
        "gem", _gem_cases, _gem_ref,
        [
            Mistake("equals max pooling", lambda x, p=3.0, eps=1e-6: pooling.mac(x)),
            Mistake("equals average pooling (is p used?)", lambda x, p=3.0, eps=1e-6: pooling.avg_pool(x)),
            Mistake("forgets the final 1/p root", _gem_no_root),
            Mistake("sums x^p instead of averaging it", _gem_sum),
            Mistake("raises to the power p at the end instead of 1/p", _gem_root_p),
            Mistake("clamps at 0 instead of eps", _gem_relu),
            Mistake("does not clamp: negative values give NaN", _gem_no_clamp),
        ],
    ),
    "average_precision": Task(
        "average_precision", _ap_cases, _ap_ref,
        [
            Mistake("is the finite-sum AP (mean precision at each positive) instead of the trapezoid rule", _ap_finite_sum),
            Mistake("divides by the number of positives found instead of n_positives", _ap_found),
            Mistake("assumes the ranks are sorted: sort them first", _ap_unsorted),
            Mistake("treats the ranks as 1-based: they are 0-based (rank 0 is the first result)", _ap_one_based),
        ],
    ),
    "mean_ap": Task(
        "mean_ap", _map_cases, _map_ref,
        [
            Mistake("counts junk images: remove them from the ranking first", _map_counts_junk),
            Mistake("gives queries without positives AP 0 instead of leaving them out", _map_zero_for_empty),
            Mistake("treats junk images as positives", _map_junk_as_positive),
            Mistake("uses the finite-sum AP instead of the trapezoid rule", _map_finite_sum),
        ],
    ),
    "vlad": Task(
        "vlad", _vlad_cases, _vlad_ref,
        [
            Mistake("adds every descriptor's residual to every centre: each descriptor counts only for its nearest centre",
                    _vlad_variant(every_centre=True)),
            Mistake("uses c_k - x_t: the residuals are x_t - c_k", _vlad_variant(sign=-1.0)),
            Mistake("flattens dimension-major (the D x K stack): row k of the K x D stack, centre k's sum, comes k-th",
                    _vlad_variant(dim_major=True)),
            Mistake("is not L2-normalised at the end", _vlad_variant(l2=False)),
            Mistake("averages the residuals of each centre instead of summing them", _vlad_variant(mean=True)),
            Mistake("intra-normalises before the power: the power comes first", _vlad_variant(intra_first=True)),
            Mistake("normalises each residual x_t - c_k: intra-normalisation divides each centre's sum v_k by its norm",
                    _vlad_variant(unit_residuals=True)),
            Mistake("drops the sign in the power: use sign(v) |v|^power", _vlad_variant(signed=False)),
            Mistake("divides an empty centre's zero sum by its zero norm (NaN): leave it at 0", _vlad_variant(nan_empty=True)),
        ],
    ),
    "rmac_regions": Task(
        "rmac_regions", _region_cases, regions.rmac_regions,
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
            Mistake("adds a global MAC term (cirtorch's variant): R-MAC sums the regions only", _rmac_variant(global_term=True)),
            Mistake("averages each region instead of taking its maximum", _rmac_variant(average=True)),
            Mistake("pools regions one cell too small (x[y:y+h-1, x:x+w-1], PyRetri): a region covers h x w cells",
                    _rmac_variant(shrink=1)),
        ],
    ),
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
    ),
    "crow_channel_weights": Task(
        "crow_channel_weights", _channel_cases, crow_channel_weights,
        [
            Mistake("has the sign flipped: log(sum_j Q_j / Q_k), so sparse channels weigh more", _channel_variant(sign=-1.0)),
            Mistake("adds an epsilon to Q (PyRetri): an all-zero channel gets weight 0, not log(sum Q / eps)",
                    _channel_variant(eps=1e-6)),
            Mistake("gives an all-zero channel an infinite weight (log of x/0): it gets 0", _channel_variant(infinite=True)),
            Mistake("uses the fraction of zero positions: Q_k is the fraction of non-zero positions", _channel_variant(zeros=True)),
            Mistake("counts over the whole batch: each image has its own weights", _channel_variant(batch=True)),
            Mistake("uses log10: the natural log", _channel_variant(log10=True)),
            Mistake("uses the mean activation: Q_k counts the non-zero positions", _channel_variant(activation=True)),
        ],
    ),
    "class_activation_map": Task(
        "class_activation_map", _cam_cases, _cam_ref,
        [
            Mistake("clips negative values before dividing by the maximum (NaN here): the peer divides first, so a CAM "
                    "whose maximum is negative flips sign", _cam_variant(clip="before")),
            Mistake("clips negative values before dividing by the maximum (all zeros here): the peer divides first, so a CAM "
                    "whose maximum is negative flips sign", _cam_variant(clip="before, guarded")),
            Mistake("is not divided by its maximum", _cam_variant(normalise=False)),
            Mistake("keeps negative values: set them to 0 after dividing", _cam_variant(clip="never")),
            Mistake("uses the column W[:, c]: the weights of class c are the row W[c]", _cam_variant(column=True)),
            Mistake("sums the weights of all classes: use class c's row only", _cam_variant(all_classes=True)),
            Mistake("divides by the maximum over the whole batch: each image by its own maximum", _cam_variant(batch_max=True)),
        ],
    ),
    "class_weighted_vector": Task(
        "class_weighted_vector", _weighted_cases, _weighted_ref,
        [
            Mistake("has no channel weights: multiply by the CroW channel weights of the features", _weighted_variant(channel=False)),
            Mistake("is not L2-normalised", _weighted_variant(l2=False)),
            Mistake("takes the maximum of x * cam instead of the sum over positions", _weighted_variant(maximum=True)),
            Mistake("computes the channel weights on the CAM-weighted maps: they come from the features themselves",
                    _weighted_variant(weights_of_weighted=True)),
            Mistake("applies the channel weights after the L2 normalisation: weight, then normalise",
                    _weighted_variant(weights_after_l2=True)),
        ],
    ),
    "alpha_qe": Task(
        "alpha_qe", _aqe_cases, _aqe_ref,
        [
            Mistake("leaves out the query itself: add q to the weighted sum before normalising", _aqe_variant(query=False)),
            Mistake("weights the neighbours by s_j instead of s_j^alpha", _aqe_variant(weights="s")),
            Mistake("ignores the weights s_j^alpha (plain average query expansion)", _aqe_variant(weights="none")),
            Mistake("skips the nearest vector (as database-side augmentation skips the vector itself)", _aqe_variant(skip=1)),
            Mistake("takes the k least similar vectors: the top-k have the highest q . x", _aqe_variant(farthest=True)),
            Mistake("is not L2-normalised", _aqe_variant(l2=False)),
            Mistake("divides the neighbours' sum by k: the query then outweighs them; add the sum itself", _aqe_variant(mean=True)),
        ],
    ),
    "contrastive_loss": Task(
        "contrastive_loss", _contrastive_cases, _contrastive_ref,
        [
            Mistake("is cirtorch's form (distance not squared, hinge squared): the slides use D = ||a - b||^2 and a plain hinge",
                    _contrastive_variant(cirtorch=True)),
            Mistake("uses the distance ||a - b|| instead of its square D", _contrastive_variant(root=True)),
            Mistake("swaps the labels: y = 1 marks a matching pair", _contrastive_variant(swap=True)),
            Mistake("sums over the pairs instead of averaging", _contrastive_variant(total=True)),
            Mistake("forgets the factors 1/2", _contrastive_variant(half=1.0)),
            Mistake("forgets the max(0, .): a non-matching pair beyond the margin costs nothing", _contrastive_variant(hinge=False)),
        ],
    ),
    "triplet_loss": Task(
        "triplet_loss", _triplet_cases, _triplet_ref,
        [
            Mistake("uses distances ||a - p|| instead of squared distances", _triplet_variant(root=True)),
            Mistake("forgets the max(0, .): a triplet that satisfies the margin costs nothing", _triplet_variant(hinge=False)),
            Mistake("swaps the positive and the negative", _triplet_variant(swap=True)),
            Mistake("sums over the triplets instead of averaging", _triplet_variant(total=True)),
            Mistake("subtracts the margin: L = max(0, m + D(a, p) - D(a, n))", _triplet_variant(minus_margin=True)),
            Mistake("averages over the triplets that violate the margin only: average over all N", _triplet_variant(violating=True)),
        ],
    ),
    "hard_negatives": Task(
        "hard_negatives", _mining_cases, _mining_ref,
        [
            Mistake("returns the anchor's positives: they must never be returned", _mining_variant(mask="none")),
            Mistake("leaves out only the anchor's own index i: leave out all of positives_of[i]", _mining_variant(mask="self")),
            Mistake("gives the positives similarity 0 instead of leaving them out: below 0 they still come back (use -inf)",
                    _mining_variant(mask="zero")),
            Mistake("returns the farthest negatives: the hardest have the highest inner product", _mining_variant(farthest=True)),
            Mistake("returns the right negatives in index order: sort them nearest first", _mining_variant(index_order=True)),
            Mistake("skips the nearest negative", _mining_variant(skip=1)),
        ],
    ),
    "knn_preservation": Task(
        "knn_preservation", _knn_cases, _knn_preservation,
        [
            Mistake("counts each point as its own neighbour: leave i out of its k nearest",
                    lambda X, Y, k: _knn_preservation(X, Y, k, with_self=True)),
            Mistake("ranks by cosine similarity: the neighbours are by Euclidean distance",
                    lambda X, Y, k: _knn_preservation(X, Y, k, metric="cosine")),
            Mistake("takes the k farthest points instead of the k nearest", lambda X, Y, k: _knn_preservation(X, Y, k, farthest=True)),
            Mistake("is the number of kept neighbours, not the fraction (divide by k)",
                    lambda X, Y, k: _knn_preservation(X, Y, k, score="count")),
            Mistake("divides by the size of the union (Jaccard) instead of k", lambda X, Y, k: _knn_preservation(X, Y, k, score="jaccard")),
            Mistake("takes k - 1 neighbours (argsort[:, 1:k] after the point itself): take argsort[:, 1:k + 1]",
                    lambda X, Y, k: _knn_preservation(X, Y, k, fewer=True)),
            Mistake("counts a neighbour only at the same rank in both: compare the k nearest as sets",
                    lambda X, Y, k: _knn_preservation(X, Y, k, score="same rank")),
        ],
    ),
}


def _task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def probe(task: str, fn: Callable[..., Any], seed: int) -> list[Any]:
    """Call ``fn`` on every case of ``task`` for ``seed``; return plain numbers (nested lists) or
    ``{"error": "..."}`` per case. ``NotImplementedError`` propagates (the task is not done)."""
    out: list[Any] = []
    for case in _task(task).cases(np.random.default_rng(seed)):
        try:
            value = _to_numpy(fn(*case.args, **case.kwargs))
            out.append({"shape": list(value.shape), "values": value.ravel().tolist()})
        except NotImplementedError:
            raise
        except Exception as exc:  # the student's bug, reported as such
            out.append({"error": f"{type(exc).__name__}: {exc}"})
    return out


def _canonical(t: Task, value: np.ndarray) -> np.ndarray:
    return t.canonical(value) if t.canonical is not None else value


def _mistake_output(t: Task, m: Mistake, case: Case) -> np.ndarray | None:
    """A mistake's output on the case, compared form; None where the mistake cannot apply to
    these inputs (it raises, e.g. a weight column of the wrong length)."""
    try:
        return _canonical(t, _to_numpy(m.compute(*case.args, **case.kwargs)))
    except Exception:
        return None


def _difference(value: np.ndarray, expected: np.ndarray) -> str:
    """How an unexplained wrong answer differs, in the terms a student can act on: a number is shown
    beside the expected one, indices by the first wrong row, anything else by its largest difference."""
    if not np.isfinite(value).all():
        return "differs (it contains NaN or infinity)"
    if value.size == 1:
        return f"gives {value.item():.4g}, expected {expected.item():.4g}"
    if np.array_equal(expected, np.round(expected)) and np.array_equal(value, np.round(value)):
        rows, ref = value.reshape(value.shape[0], -1), expected.reshape(expected.shape[0], -1)
        r = int(np.flatnonzero((rows != ref).any(axis=1))[0])
        return f"differs: row {r} is {rows[r].astype(np.int64).tolist()}, expected {ref[r].astype(np.int64).tolist()}"
    return f"differs (largest difference {float(np.max(np.abs(value - expected))):.3g})"


def judge(task: str, seed: int, outputs: list[Any]) -> list[Result]:
    """Compare probed ``outputs`` with the reference on the cases of ``seed``; name the mistakes.

    A failing output that matches several mistakes is put down to the one that matches the most
    failing cases of the task (then the first listed)."""
    t = _task(task)
    cases = t.cases(np.random.default_rng(seed))
    if not isinstance(outputs, list) or len(outputs) != len(cases):
        return [Result(c.label, False, "no answer came back for this case") for c in cases]
    results: list[Result | None] = []
    failing: list[tuple[int, np.ndarray, np.ndarray, list[int]]] = []  # case index, value, expected, matching mistakes
    with np.errstate(all="ignore"):
        for i, (case, got) in enumerate(zip(cases, outputs)):
            expected = _canonical(t, _to_numpy(t.reference(*case.args, **case.kwargs)))
            if not isinstance(got, dict) or "error" in got or "values" not in got:
                err = got.get("error", "no answer") if isinstance(got, dict) else "no answer"
                results.append(Result(case.label, False, f"{case.expectation}; yours raised {err}"))
                continue
            try:
                value = np.asarray(got["values"], dtype=np.float64).reshape(got["shape"])
                value = _canonical(t, value)
            except (TypeError, ValueError, IndexError):
                results.append(Result(case.label, False, f"{case.expectation}; yours returned something unreadable"))
                continue
            if _same(value, expected):
                results.append(Result(case.label, True, case.expectation))
                continue
            outs = [_mistake_output(t, m, case) for m in t.mistakes]
            matches = [j for j, out in enumerate(outs) if out is not None and _same(value, out)]
            failing.append((i, value, expected, matches))
            results.append(None)
    count = [sum(j in m for *_, m in failing) for j in range(len(t.mistakes))]
    for i, value, expected, matches in failing:
        why = t.mistakes[max(matches, key=lambda j: (count[j], -j))].description if matches else None
        if why is None and value.shape != expected.shape:
            why = f"has shape {value.shape}, expected {expected.shape}"
        if why is None:
            why = _difference(value, expected)
        results[i] = Result(cases[i].label, False, f"{cases[i].expectation}; yours {why}")
    return [r for r in results if r is not None]


def run_check(task: str, fn: Callable[..., Any], seed: int | None = None, quiet: bool = False) -> list[Result]:
    """Probe and judge in one go (the notebooks' check cells); raise :class:`CheckFailed` on a mistake."""
    seed = secrets.randbits(32) if seed is None else seed
    results = judge(task, seed, probe(task, fn, seed))
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "\n".join(f"  ✗ {r.label}: {r.message}" for r in failed)
        raise CheckFailed(f"{task}: {len(failed)} of {len(results)} checks failed\n{lines}")
    if not quiet:
        print(f"✓ {task}: all {len(results)} checks passed")
    return results


def _make_check(task: str) -> Callable[..., None]:
    def check(fn: Callable[..., Any]) -> None:
        run_check(task, fn)  # prints what passed; returns nothing, so a check cell shows only that

    check.__name__ = f"check_{task}"
    check.__doc__ = (f"Check a student's ``{task}`` on fresh inputs: prints what passed, raises CheckFailed "
                     "naming the mistake (``run_check`` returns the per-case results).")
    return check


for _name in TASKS:
    globals()[f"check_{_name}"] = _make_check(_name)
    __all__.append(f"check_{_name}")
