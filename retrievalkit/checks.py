"""Checks that teach: run a student's function on fresh inputs and name the mistake.

Every exercise task is a :class:`Task`: a few *cases* (fresh random inputs, each testing one
property), the reference answer (this package) and a list of plausible *mistakes*, each a
function computing a wrong answer the way a student might. A case passes when the student's
output matches the reference; otherwise the message names the property and, when the output
matches a known mistake, that mistake ("GeM with p=1 should equal average pooling; yours
equals max pooling").

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

from . import evaluate, pooling

__all__ = ["Task", "Case", "Result", "TASKS", "probe", "judge", "run_check", "CheckFailed"]

RTOL, ATOL = 1e-4, 1e-5


class CheckFailed(AssertionError):
    """A check found a mistake; the message says which."""


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


def judge(task: str, seed: int, outputs: list[Any]) -> list[Result]:
    """Compare probed ``outputs`` with the reference on the cases of ``seed``; name the mistakes."""
    t = _task(task)
    cases = t.cases(np.random.default_rng(seed))
    if not isinstance(outputs, list) or len(outputs) != len(cases):
        return [Result(c.label, False, "no answer came back for this case") for c in cases]
    results = []
    for case, got in zip(cases, outputs):
        expected = _to_numpy(t.reference(*case.args, **case.kwargs))
        if not isinstance(got, dict) or "error" in got or "values" not in got:
            err = got.get("error", "no answer") if isinstance(got, dict) else "no answer"
            results.append(Result(case.label, False, f"{case.expectation}; yours raised {err}"))
            continue
        try:
            value = np.asarray(got["values"], dtype=np.float64).reshape(got["shape"])
        except (TypeError, ValueError):
            results.append(Result(case.label, False, f"{case.expectation}; yours returned something unreadable"))
            continue
        if _same(value, expected):
            results.append(Result(case.label, True, case.expectation))
            continue
        why = next((m.description for m in t.mistakes if _same(value, _to_numpy(m.compute(*case.args, **case.kwargs)))), None)
        if why is None and value.shape != expected.shape:
            why = f"has shape {value.shape}, expected {expected.shape}"
        if why is None:
            err = float(np.nanmax(np.abs(value - expected))) if np.isfinite(value).all() else float("nan")
            why = "differs" + (f" (largest difference {err:.3g})" if err == err else " (it contains NaN or infinity)")
        results.append(Result(case.label, False, f"{case.expectation}; yours {why}"))
    return results


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


def _make_check(task: str) -> Callable[..., list[Result]]:
    def check(fn: Callable[..., Any]) -> list[Result]:
        return run_check(task, fn)

    check.__name__ = f"check_{task}"
    check.__doc__ = f"Check a student's ``{task}`` on fresh inputs; raises CheckFailed naming the mistake."
    return check


for _name in TASKS:
    globals()[f"check_{_name}"] = _make_check(_name)
    __all__.append(f"check_{_name}")
