"""The check machinery: tasks, their cases and mistakes, probe / judge, and the input generators
that several notebooks share.

A :class:`Task` has a few *cases* (fresh random inputs, each testing one property), the reference
answer (this package) and a list of plausible *mistakes*, each a function computing a wrong answer
the way a student might. A case passes when the student's output matches the reference; otherwise
the message names the property and, when the output matches a known mistake, that mistake. When
several mistakes give the same output on a case, the one that explains the most failing cases of
the task is named (one bug usually shows on several cases).

:func:`probe` calls the function on the cases of a seed and returns only numbers; :func:`judge`
rebuilds the cases from the same seed and compares, so that grading can run the student's code in
a sandboxed kernel and judge outside it. :func:`run_check` does both (the notebooks' check cells).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

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


# ---------------------------------------------------------------- inputs shared by several notebooks
def random_maps(rng: np.random.Generator, *shape: int, negative: bool = False) -> torch.Tensor:
    """Feature maps: uniform in [0.05, 1.05), or standard normal with ``negative``."""
    x = rng.standard_normal(shape) if negative else rng.random(shape) + 0.05
    return torch.tensor(x, dtype=torch.float32)


def sparse_maps(rng: np.random.Generator, N: int, C: int, H: int, W: int) -> torch.Tensor:
    """Post-ReLU maps with exact zeros, each channel of each image with its own sparsity."""
    shift = rng.uniform(-0.5, 1.0, size=(N, C, 1, 1))
    return torch.tensor(np.maximum(rng.standard_normal((N, C, H, W)) - shift, 0), dtype=torch.float32)


# ---------------------------------------------------------------- probe and judge
def to_numpy(value: Any) -> np.ndarray:
    """``value`` (a tensor, an array, nested lists or a number) as a float64 NumPy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))


def _check_task(name: str) -> Task:
    """The task called ``name``; ValueError naming ``task`` if there is none."""
    from . import TASKS  # the union of the notebooks' tasks, built by the package once its modules are loaded

    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def probe(task: str, fn: Callable[..., Any], seed: int) -> list[Any]:
    """Call ``fn`` on every case of ``task`` for ``seed``; return plain numbers (nested lists) or
    ``{"error": "..."}`` per case. ``NotImplementedError`` propagates (the task is not done)."""
    out: list[Any] = []
    for case in _check_task(task).cases(np.random.default_rng(seed)):
        try:
            value = to_numpy(fn(*case.args, **case.kwargs))
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
        return _canonical(t, to_numpy(m.compute(*case.args, **case.kwargs)))
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
    t = _check_task(task)
    cases = t.cases(np.random.default_rng(seed))
    if not isinstance(outputs, list) or len(outputs) != len(cases):
        return [Result(c.label, False, "no answer came back for this case") for c in cases]
    results: list[Result | None] = []
    failing: list[tuple[int, np.ndarray, np.ndarray, list[int]]] = []  # case index, value, expected, matching mistakes
    with np.errstate(all="ignore"):
        for i, (case, got) in enumerate(zip(cases, outputs)):
            expected = _canonical(t, to_numpy(t.reference(*case.args, **case.kwargs)))
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
