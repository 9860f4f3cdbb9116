"""The check machinery: tasks, their cases and mistakes, probe / judge, and the input generators
that several notebooks share.

A :class:`Task` has a few *cases* (fresh random inputs, each testing one property), the reference
answer (this package) and a list of plausible *mistakes*, each a function computing a wrong answer
the way a student might. A case passes when the student's output matches the reference; otherwise
the message names the property and, when the output matches a known mistake, that mistake (an
output equal to one of ``Task.accepted``, the paper's form where the reference code differs, passes). When
several mistakes give the same output on a case, the one that explains the most failing cases of
the task is named (one bug usually shows on several cases).

:func:`probe` calls the function on the cases of a seed and returns only numbers; :func:`judge`
rebuilds the cases from the same seed and compares, so that grading can run the student's code in
a sandboxed kernel and judge outside it. :func:`run_check` does both (the notebooks' check cells)
and warns when the student's function calls this package: it passes there, but the grader's kernel
cannot import ``retrievalkit``, so the same answer scores 0 when graded.
"""
from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

RTOL, ATOL = 1e-4, 1e-5
MAP_AXES = ("image", "channel", "row", "column")  # of (N, K, H, W) feature maps
_PACKAGE = str(Path(__file__).resolve().parents[2]) + "/"  # retrievalkit/


class CheckFailed(AssertionError):
    """A check found a mistake; the message says which."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the feedback alone, not the check's own frames."""
        return [f"{type(self).__name__}: {self}"]


class NotWritten(CheckFailed, NotImplementedError):
    """The student's function still raises ``NotImplementedError``: one line says so, no traceback."""


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
    mistake: str | None = None  # the named mistake that explains a failure (``Mistake.description``)


@dataclass
class Task:
    name: str  # the function students write
    cases: Callable[[np.random.Generator], list[Case]]
    reference: Callable[..., Any]
    mistakes: list[Mistake]
    points: int = 1
    # maps an output (as numbers) to the form compared, e.g. a list of regions sorted
    canonical: Callable[[np.ndarray], np.ndarray] | None = None
    # a name per axis of the first argument, for feedback on a wrong shape ("channels", "rows" ...)
    axes: tuple[str, ...] | None = None
    # other answers graded as right: the paper's form where the reference code (which the package follows) differs
    accepted: list[Callable[..., Any]] = field(default_factory=list)


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


def _output(t: Task, fn: Callable[..., Any], case: Case) -> np.ndarray | None:
    """``fn``'s output on the case (a mistake's or an accepted form's), compared form; None where ``fn``
    cannot apply to these inputs (it raises, e.g. a weight column of the wrong length)."""
    try:
        return _canonical(t, to_numpy(fn(*case.args, **case.kwargs)))
    except Exception:
        return None


def _axes(t: Task, case: Case) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """The shape of the case's first argument and a name for each of its axes (``Task.axes``, else
    "axis i"); None when the first argument is not an array."""
    if not case.args or not isinstance(case.args[0], (torch.Tensor, np.ndarray)):
        return None
    shape = tuple(case.args[0].shape)
    names = t.axes if t.axes is not None and len(t.axes) == len(shape) else tuple(f"axis {i}" for i in range(len(shape)))
    return shape, names


def _kept(shape: tuple[int, ...], out: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every way to keep axes of ``shape`` (in order) that gives ``out``: the kept axes' indices."""
    from itertools import combinations

    return [keep for keep in combinations(range(len(shape)), len(out)) if tuple(shape[i] for i in keep) == out]


def _listed(names: list[str], plural: bool = False) -> str:
    """``["row", "column"]`` -> "row and column" (or "rows and columns")."""
    if plural:
        names = [n[:-1] + "ies" if n.endswith("y") else n + "s" for n in names]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _wrong_shape(value: np.ndarray, expected: np.ndarray, axes: tuple[tuple[int, ...], tuple[str, ...]] | None) -> str:
    """A wrong shape explained by the axes it kept or lost, where it can be."""
    got, want = value.shape, expected.shape
    if len(want) == 2 and got == want[::-1]:
        same = _same(value.T, expected)
        return f"has shape {got}, expected {want}: {'the right values, ' if same else ''}transposed (rows and columns swapped)"
    if tuple(d for d in got if d != 1) == tuple(d for d in want if d != 1) and len(got) != len(want):
        same = _same(value.reshape(want), expected)
        return (f"has shape {got}, expected {want}: {'the right values, but ' if same else ''}"
                f"{'with extra' if len(got) > len(want) else 'without the'} axes of size 1 (keepdim?)")
    if axes is not None:
        shape, names = axes
        if got != want and len(got) < len(shape):
            kept, expect = _kept(shape, got), _kept(shape, want)
            if len(kept) == 1 and len(expect) == 1:
                lost = [names[i] for i in range(len(shape)) if i not in kept[0]]
                should = [names[i] for i in range(len(shape)) if i not in expect[0]]
                return (f"has shape {got}, expected {want}: it reduces over the {_listed(lost, plural=True)} "
                        f"(one value per {_listed([names[i] for i in kept[0]]) or 'input'}); reduce over the "
                        f"{_listed(should, plural=True)} instead")
    if value.size == expected.size:
        same = _same(value.reshape(want), expected)
        return f"has shape {got}, expected {want}{': the right values in the wrong shape' if same else ''}"
    return f"has shape {got}, expected {want}"


def _zero_rows(case: Case, n: int) -> set[int]:
    """The indices ``i < n`` where the case's first argument is all zero along its first axis."""
    if not case.args or not isinstance(case.args[0], (torch.Tensor, np.ndarray)):
        return set()
    x = to_numpy(case.args[0])
    if x.ndim == 0 or x.shape[0] != n:
        return set()
    return {i for i in range(n) if not np.any(x[i])}


def _difference(value: np.ndarray, expected: np.ndarray, case: Case) -> str:
    """How an unexplained wrong answer (of the expected shape) differs, in terms a student can act on:
    what it equals (the sign flipped, a constant factor or offset, each row scaled, the transpose,
    the right values in the wrong order), where NaN appears, else which rows differ and by how much."""
    if not np.isfinite(value).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(value))[:, 0]}) if value.ndim else [0]
        zero = _zero_rows(case, value.shape[0]) if value.ndim else set()
        where = "" if not value.ndim else f" in row {', '.join(map(str, bad[:4]))}"
        if bad and set(bad) <= zero:
            return f"gives NaN or infinity{where}, where the input is all zero (a division by zero there?)"
        return f"gives NaN or infinity{where} (expected finite numbers)"
    if value.size == 1:
        return f"gives {value.item():.4g}, expected {expected.item():.4g}"
    if np.array_equal(expected, np.round(expected)) and np.array_equal(value, np.round(value)):
        rows, ref = value.reshape(value.shape[0], -1), expected.reshape(expected.shape[0], -1)
        if np.array_equal(np.sort(rows, axis=1), np.sort(ref, axis=1)):
            return "has the right values in each row, in the wrong order"
        r = int(np.flatnonzero((rows != ref).any(axis=1))[0])
        return f"differs: row {r} is {rows[r].astype(np.int64).tolist()}, expected {ref[r].astype(np.int64).tolist()}"
    e, v = expected.ravel(), value.ravel()
    if _same(-value, expected):
        return "has the opposite sign (every value negated)"
    if value.ndim == 2 and value.shape[0] == value.shape[1] and _same(value.T, expected):
        return "is the transpose of the expected matrix"
    scale = float(e @ v / (e @ e)) if e @ e > 0 else 0.0
    if scale not in (0.0, 1.0) and _same(value, scale * expected):
        return f"is off by a constant factor: {scale:.4g} times the expected values"
    offset = float(np.mean(v - e))
    if _same(value, expected + offset):
        return f"is off by a constant {offset:+.4g} everywhere"
    if value.ndim >= 2:
        rows, ref = value.reshape(value.shape[0], -1), expected.reshape(expected.shape[0], -1)
        norms = np.einsum("ij,ij->i", rows, ref) / np.maximum(np.einsum("ij,ij->i", ref, ref), 1e-300)
        if not np.allclose(norms, 1.0, rtol=RTOL) and _same(rows, norms[:, None] * ref):
            return "is off by a different factor in each row (a normalisation missing or extra?)"
    if np.allclose(np.sort(v), np.sort(e), rtol=RTOL, atol=ATOL):
        return "has the right values in the wrong order (an axis swapped or a wrong sort?)"
    diff = np.abs(value - expected)
    if value.ndim >= 2:
        bad = np.flatnonzero(diff.reshape(diff.shape[0], -1).max(axis=1) > ATOL + RTOL * np.abs(expected).reshape(diff.shape[0], -1).max(axis=1))
        if 0 < len(bad) < value.shape[0]:
            return (f"differs only in row {', '.join(map(str, bad[:4].tolist()))}{' ...' if len(bad) > 4 else ''} of "
                    f"{value.shape[0]} (largest difference {float(diff.max()):.3g})")
    i = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return (f"differs (largest difference {float(diff.max()):.3g}, at index {tuple(int(j) for j in i)}: "
            f"{value[i]:.4g} instead of {expected[i]:.4g})")


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
            if _same(value, expected) or any(
                    (alt := _output(t, fn, case)) is not None and _same(value, alt) for fn in t.accepted):
                results.append(Result(case.label, True, case.expectation))
                continue
            outs = [_output(t, m.compute, case) for m in t.mistakes]
            matches = [j for j, out in enumerate(outs) if out is not None and _same(value, out)]
            failing.append((i, value, expected, matches))
            results.append(None)
    count = [sum(j in m for *_, m in failing) for j in range(len(t.mistakes))]
    for i, value, expected, matches in failing:
        named = why = t.mistakes[max(matches, key=lambda j: (count[j], -j))].description if matches else None
        if why is None and value.shape != expected.shape:
            why = _wrong_shape(value, expected, _axes(t, cases[i]))
        if why is None:
            why = _difference(value, expected, cases[i])
        results[i] = Result(cases[i].label, False, f"{cases[i].expectation}; yours {why}", named)
    return [r for r in results if r is not None]


class _Watched:
    """Calls ``fn`` and notes the first function of this package it runs, directly or not
    (a profile hook, on only while ``fn`` runs)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.called = fn, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        previous = sys.getprofile()
        sys.setprofile(self._event)
        try:
            return self.fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)

    def _event(self, frame, event: str, arg: Any) -> None:
        if self.called is None and event == "call" and frame.f_code.co_filename.startswith(_PACKAGE):
            self.called = f"{frame.f_globals.get('__name__', 'retrievalkit')}.{frame.f_code.co_name}"


def _reference_warning(name: str, called: str) -> str:
    return (f"⚠ your `{name}` calls retrievalkit ({called}): it passes here, but scores 0 when graded, "
            "where retrievalkit cannot be imported. Write it with torch / numpy alone.")


def run_check(task: str, fn: Callable[..., Any], seed: int | None = None, quiet: bool = False) -> list[Result]:
    """Probe and judge in one go (the notebooks' check cells); raise :class:`CheckFailed` on a mistake.

    When ``fn`` calls this package, a warning says so (printed, or added to the failure)."""
    seed = secrets.randbits(32) if seed is None else seed
    watched = _Watched(fn)
    name = _check_task(task).name
    try:
        outputs = probe(task, watched, seed)
    except NotImplementedError:
        raise NotWritten(f"{name} is not written yet: replace `raise NotImplementedError()` in its cell with "
                         "your code, run that cell, then this one") from None
    results = judge(task, seed, outputs)
    warning = watched.called and _reference_warning(name, watched.called)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "\n".join(f"  ✗ {r.label}: {r.message}" for r in failed)
        raise CheckFailed(f"{task}: {len(failed)} of {len(results)} checks failed\n{lines}"
                          + (f"\n{warning}" if warning else ""))
    if not quiet:
        print(f"✓ {task}: all {len(results)} checks passed")
    if warning:
        print(warning)
    return results
