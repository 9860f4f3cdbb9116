"""Batch grading: ``python -m retrievalkit grade SUBMISSIONS --out RESULTS``.

**Submissions.** ``SUBMISSIONS/<student>/<any path>.ipynb`` (a folder per student, nbgrader's
``submitted/<student>/<assignment>/`` works as is), ``SUBMISSIONS/<student>__<name>.ipynb`` or
``SUBMISSIONS/<student>.ipynb``; ``.ipynb_checkpoints`` and hidden folders are skipped. Which
exercise a notebook is comes from its nbgrader grade ids, matched against every
``solutions/*.ipynb`` (the most ids in common wins), so a renamed file still grades; only a
notebook without any known grade id falls back to its file name.

**Exercises** are discovered from ``solutions/*.ipynb``: a solution cell (nbgrader
``"solution": true``) whose ``grade_id`` names a task of :data:`retrievalkit.teaching.checks.TASKS` is
that task; it is worth the ``points`` of the check cell ``check_<task>`` (``Task.points`` when
there is none). Other solution cells are helpers: they run, and are not scored.

**One submission** runs in its own fresh kernel (:mod:`retrievalkit.teaching.kernels`, each a
:mod:`retrievalkit.teaching.sandbox`: resource limits, an audit hook, no network; working folder
in a temporary directory, environment scrubbed): first the import-only code cells of the
solution notebook (imports of ``retrievalkit`` dropped), then the student's solution cells,
taken by grade id in the order of the solution notebook (their position, other cells and the
check cells of the submission are ignored: reordering or deleting cells changes nothing, a
deleted solution cell costs its task), then one probe cell per task. The probe sends the task's
cases for a secret seed into the kernel (a pickle, base64 in the cell source), calls the
student's function and prints one line ``<nonce> <json>`` of plain numbers, exactly what
:func:`retrievalkit.teaching.checks.probe` returns; the grader reads only the probe cell's
output, requires exactly one line with the fresh nonce, never unpickles anything from the
kernel, and scores outside it with :func:`retrievalkit.teaching.checks.judge`, the logic of the
students' check cells. Nothing a notebook does inside its kernel can make a wrong answer pass:
it can only break its own probes.

**Scores.** A task earns ``points * passed cases / cases``; ``NotImplementedError`` means not
attempted (0). A cell or probe that runs past ``cell_timeout``, kills the kernel (``os._exit``,
a segfault) or leaves it unreadable (say, ``json.dumps`` patched) costs the task it belongs to:
the kernel is killed, a fresh one re-runs the imports and the other solution cells, and grading
goes on (a death is charged to whatever runs when it happens). The whole submission stops at
``submission_timeout``; whatever is left earns nothing. ``sys.exit`` is an ordinary error, and
``exit()`` ends a cell, not the kernel. Memory beyond ``Limits.memory`` (which includes the
kernel's own 0.8 GB of torch) raises ``MemoryError`` in the student's code. Refused operations
(importing ``retrievalkit``, reading ``solutions/``, starting processes, network) raise
``PermissionError`` there, so the function they guard fails; the feedback then says the
reference may not be used. Warnings and anything else on stdout/stderr cost nothing; a cell's
output beyond ``output_bytes`` is dropped. The error messages of the student's own code reach
the feedback (cut at 300 characters), as they would in the notebook.

**Parallel.** One asyncio loop drives up to ``jobs`` kernels at once (default: the usable
cores): the kernels are the processes doing the work, the grader only judges (milliseconds a
task), so no process pool is needed. On Linux the kernels are forked from a zygote that imported
torch once (:mod:`retrievalkit.teaching.kernels`). Any failure of the grader on one submission
becomes "could not be graded" with 0 for that notebook; the batch always finishes.

**Results** (scores and per-student feedback) are written by :mod:`retrievalkit.teaching.report`.
"""
from __future__ import annotations

import ast
import asyncio
import base64
import functools
import json
import os
import pickle
import random
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec

import retrievalkit

from . import checks
from .kernels import Limits, Outcome, Session, fork_server, kernel_spec

__all__ = ["Limits", "Exercise", "TaskGrade", "Graded", "load_exercises", "find_submissions", "grade"]

_PACKAGE = Path(retrievalkit.__file__).resolve().parent  # hidden from the kernels, like solutions/
ROOT = _PACKAGE.parent
_REFERENCE = ("grading sandbox: importing retrievalkit", "(course material)")


@dataclass(frozen=True)
class Exercise:
    """A solution notebook, as the grader needs it."""

    name: str  # file stem, e.g. "01_pooling"
    preamble: str  # the notebook's import-only code, without retrievalkit
    cells: tuple[str, ...]  # grade ids of the solution cells, in order
    tasks: dict[str, float]  # task -> points, in order
    grade_ids: frozenset[str]  # every nbgrader grade id of the notebook

    @property
    def max_points(self) -> float:
        return sum(self.tasks.values())


@dataclass
class TaskGrade:
    task: str
    points: float
    score: float = 0.0
    results: list[checks.Result] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # what went wrong, for the feedback


@dataclass
class Graded:
    student: str
    path: Path  # relative to the submissions folder
    exercise: Exercise | None = None
    tasks: list[TaskGrade] = field(default_factory=list)
    problem: str | None = None  # set when the notebook could not be graded at all
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(t.score for t in self.tasks)

    @property
    def max_points(self) -> float:
        return self.exercise.max_points if self.exercise else 0


# ---------------------------------------------------------------- exercises and submissions
def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _imports_only(source: str) -> list[str]:
    """The import statements of a cell made only of imports (else none), without retrievalkit."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    if not tree.body or not all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body):
        return []

    def reference(s: ast.stmt) -> bool:
        names = [a.name for a in s.names] if isinstance(s, ast.Import) else [s.module or ""]
        return any(n == "retrievalkit" or n.startswith("retrievalkit.") for n in names)

    return [ast.get_source_segment(source, s) for s in tree.body if not reference(s)]


def load_exercises(solutions: Path) -> list[Exercise]:
    """Every ``solutions/*.ipynb`` with at least one task of :data:`checks.TASKS`."""
    exercises = []
    for path in sorted(Path(solutions).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        meta = [_nbgrader(c) for c in nb.cells]
        cells = tuple(m["grade_id"] for m in meta if m.get("solution") and m.get("grade_id"))
        points = {m["grade_id"]: float(m.get("points", 0)) for m in meta if m.get("grade") and m.get("grade_id")}
        tasks = {t: points.get(f"check_{t}", checks.TASKS[t].points) for t in cells if t in checks.TASKS}
        if not tasks:
            continue
        preamble = [line for c, m in zip(nb.cells, meta) if c.cell_type == "code" and not m
                    for line in _imports_only(c.source)]
        exercises.append(Exercise(path.stem, "\n".join(preamble), cells, tasks,
                                  frozenset(m["grade_id"] for m in meta if m.get("grade_id"))))
    return exercises


def find_submissions(root: Path) -> list[tuple[str, Path]]:
    """``(student, path)`` for every notebook under ``root``, by the layouts of the module doc."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob("*.ipynb")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints, hidden folders
            continue
        student = rel.parts[0] if len(rel.parts) > 1 else path.stem.split("__")[0]
        found.append((student, rel))
    return found


def _match(ids: set[str], path: Path, exercises: list[Exercise]) -> Exercise | None:
    """The exercise with the most grade ids in common (the file name breaks ties), else by name."""
    stem = path.stem.split("__")[-1]
    best = max(exercises, key=lambda e: (len(ids & e.grade_ids), e.name == stem), default=None)
    if best is not None and ids & best.grade_ids:
        return best
    return next((e for e in exercises if e.name == stem), None)

# ---------------------------------------------------------------- probes and judging
_PROBE = "__rk_probe__({name!r}, {nonce!r}, {blob!r})"


def _probe_cell(task: str, nonce: str, seed: int) -> str:
    cases = checks.TASKS[task].cases(np.random.default_rng(seed))
    blob = base64.b64encode(pickle.dumps([(c.args, c.kwargs) for c in cases], protocol=4)).decode()
    return _PROBE.format(name=checks.TASKS[task].name, nonce=nonce, blob=blob)


def _answer(stdout: str, nonce: str):
    """The probe's answer: the one line that starts with the nonce, else ``None``."""
    lines = [line[len(nonce) + 1:] for line in stdout.splitlines() if line.startswith(nonce + " ")]
    if len(lines) != 1:
        return None
    try:
        answer = json.loads(lines[0])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _fault(outcome: Outcome, what: str, limits: Limits) -> str:
    if outcome.kind == "timeout" and outcome.cut:
        return f"{what} was stopped: the submission's time limit ({limits.submission_timeout:g} s) was used up"
    if outcome.kind == "timeout":
        return f"{what} took longer than {outcome.limit:g} s and was stopped"
    if outcome.kind == "died":
        return (f"the kernel died while running {what} (os._exit, a crash, or more memory than the "
                "limit); a fresh kernel graded the rest")
    if outcome.kind == "broken":
        return (f"the kernel's replies became unreadable while running {what} ({outcome.ename}: was "
                "something it relies on patched?); a fresh kernel graded the rest")
    return f"{what} raised {outcome.ename}: {outcome.evalue}"[:400]


def _reference_note(text: str) -> str | None:
    if any(marker in text for marker in _REFERENCE):
        return "it tried to use the reference implementation or other course files, which earns nothing"
    return None



def _judged(task: str, points: float, out: Outcome, nonce: str, seed: int, limits: Limits) -> TaskGrade:
    """The grade of ``task`` from its probe cell's outcome, scored by :func:`checks.judge`."""
    tg = TaskGrade(task, points)
    name = checks.TASKS[task].name
    answer = _answer(out.stdout, nonce) if out.kind == "ok" else None
    if out.kind != "ok":
        tg.faults.append(_fault(out, f"your `{name}`", limits))
    elif answer is None:
        tg.faults.append("no valid answer came back from the probe (was its output tampered with?)")
    elif answer.get("not_attempted"):
        tg.faults.append("not attempted (NotImplementedError)")
    elif answer.get("missing"):
        tg.faults.append(f"`{name}` is not defined")
    else:
        try:
            tg.results = checks.judge(task, seed, answer.get("outputs"))
        except Exception as exc:  # an answer the checks cannot read
            tg.faults.append(f"the answer could not be read ({type(exc).__name__})")
        else:
            tg.score = tg.points * sum(r.passed for r in tg.results) / len(tg.results)
            if note := _reference_note(" ".join(r.message for r in tg.results)):
                tg.faults.append(note)
    return tg


# ---------------------------------------------------------------- grading one submission
class _Kernel:
    """The kernel of one submission's session, brought back after a crash: a fresh kernel re-runs
    the imports (cell 0) and the solution cells that ran (raising or not)."""

    def __init__(self, session: Session, present: list[str], limits: Limits):
        self.session, self.present, self.limits = session, present, limits  # present: grade ids of cells 1, 2, ...
        self.ran: list[int] = []  # solution cells to replay in a fresh kernel

    async def ready(self) -> tuple[str | None, dict[str, str]]:
        """Start a kernel where there is none: returns why there is none (``None`` when there is
        one) and, by grade id, the solution cells that failed when replayed (no longer replayed).
        A first kernel that cannot start or import is the grader's own trouble: it raises."""
        notes: dict[str, str] = {}
        while self.session.client is None:
            if self.session.remaining() <= 0:
                return "not graded: the submission's time limit was used up", notes
            try:
                await self.session.start()
            except Exception as exc:
                if self.session.starts == 1:
                    raise
                return f"not graded: no fresh kernel could be started ({type(exc).__name__})", notes
            out = await self.session.run(0)
            if out.kind != "ok" and self.session.starts == 1:
                raise RuntimeError("the grader's import cell failed: " + _fault(out, "it", self.limits))
            if out.kind != "ok":
                return "not graded: " + _fault(out, "a fresh kernel's import cell", self.limits), notes
            for i in list(self.ran):
                out = await self.session.run(i)
                if out.kind not in ("ok", "error"):  # it did not do that the first time
                    self.ran.remove(i)
                    notes[self.present[i - 1]] = f"your cell `{self.present[i - 1]}`: " + _fault(out, "it", self.limits)
                    break
        return None, notes

    async def run(self, index: int, replay: bool = False) -> Outcome:
        """Run cell ``index``; with ``replay``, a fresh kernel re-runs it if it ran (raising or not)."""
        out = await self.session.run(index)
        if replay and out.kind in ("ok", "error"):
            self.ran.append(index)
        return out


async def _run_solutions(kernel: _Kernel) -> dict[str, str]:
    """Run the student's solution cells; returns what went wrong, by grade id."""
    notes: dict[str, str] = {}
    for i, gid in enumerate(kernel.present, start=1):
        why, replayed = await kernel.ready()
        notes.update(replayed)
        if why:
            notes[gid] = f"your cell `{gid}` was {why}"
            continue
        out = await kernel.run(i, replay=True)
        if out.kind != "ok":
            notes[gid] = f"your cell `{gid}`: " + _fault(out, "it", kernel.limits)
            if note := _reference_note(out.evalue):
                notes[gid] += f" ({note})"
    return notes


def _sources(nb, ex: Exercise) -> dict[str, str]:
    """The submission's solution cells by grade id (the first of each), whatever their position."""
    sources: dict[str, str] = {}
    for cell in nb.cells:
        gid = _nbgrader(cell).get("grade_id")
        if cell.get("cell_type") == "code" and gid in ex.cells and gid not in sources:
            sources[gid] = cell.source
    return sources


async def _grade(ex: Exercise, nb, limits: Limits, context, spec: KernelSpec, tmp: Path,
                 seed: int) -> list[TaskGrade]:
    """Run the submission ``nb`` of ``ex`` in its kernel and grade each task."""
    sources = _sources(nb, ex)
    present = [gid for gid in ex.cells if gid in sources]
    nonces = {t: secrets.token_hex(16) for t in ex.tasks}
    cells = [ex.preamble] + [sources[g] for g in present] + [_probe_cell(t, nonces[t], seed) for t in ex.tasks]
    caps = [limits.output_bytes] * (1 + len(present)) + [limits.probe_bytes] * len(ex.tasks)
    kernel = _Kernel(Session(cells, caps, limits, context, spec, tmp / "work", tmp / "conn"), present, limits)
    try:
        notes = await _run_solutions(kernel)
        grades = []
        for k, (task, points) in enumerate(ex.tasks.items(), start=1 + len(present)):
            why, replayed = await kernel.ready()
            notes.update(replayed)
            if why:
                grades.append(TaskGrade(task, points, faults=[why]))
                continue
            tg = _judged(task, points, await kernel.run(k), nonces[task], seed, limits)
            cell_note = notes.get(task) or (None if task in sources else
                                            f"the cell with grade id `{task}` is missing from your notebook")
            if cell_note and tg.score < tg.points:
                tg.faults.insert(0, cell_note)
            grades.append(tg)
        return grades
    finally:
        await kernel.session.stop()


async def _grade_submission(student: str, rel: Path, root: Path, exercises: list[Exercise], limits: Limits,
                            context: zmq.asyncio.Context, spec_for: Callable[[Path], KernelSpec], seed: int,
                            gate: asyncio.Semaphore) -> Graded:
    graded = Graded(student, rel)
    async with gate:
        start = time.monotonic()
        try:
            if (root / rel).stat().st_size > limits.notebook_bytes:
                raise ValueError(f"larger than {limits.notebook_bytes >> 20} MB")
            nb = nbformat.read(root / rel, as_version=4)
        except Exception as exc:
            graded.exercise = _match(set(), rel, exercises)
            graded.problem = f"not a readable notebook ({type(exc).__name__}: {exc})"[:200]
            return graded
        graded.exercise = _match({_nbgrader(c).get("grade_id") for c in nb.cells} - {None}, rel, exercises)
        if graded.exercise is None:
            graded.problem = "not one of the exercises (no known grade ids, no known file name)"
            return graded
        with tempfile.TemporaryDirectory(prefix="rkg") as tmp:
            (Path(tmp) / "work").mkdir()
            (Path(tmp) / "conn").mkdir()
            try:
                graded.tasks = await _grade(graded.exercise, nb, limits, context, spec_for(Path(tmp) / "work"),
                                            Path(tmp), seed)
            except Exception as exc:  # the grader's own trouble with this notebook: the batch goes on
                graded.problem = f"{type(exc).__name__}: {exc}"[:400]
        graded.seconds = time.monotonic() - start
    return graded


# ---------------------------------------------------------------- a batch
async def _grade_all(found: list[tuple[str, Path]], seeds: list[int], root: Path, exercises: list[Exercise],
                     limits: Limits, jobs: int, forbidden: list[Path]) -> list[Graded]:
    """Grade the submissions ``found`` under ``root``, at most ``jobs`` kernels at once."""
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, limits.probe_bytes + (1 << 20))
    gate = asyncio.Semaphore(max(1, min(jobs, len(found))))
    try:
        async with fork_server(limits) as zygote:
            spec_for = functools.partial(kernel_spec, limits, forbidden=forbidden, zygote=zygote)
            return await asyncio.gather(*[
                _grade_submission(student, rel, root, exercises, limits, context, spec_for, s, gate)
                for (student, rel), s in zip(found, seeds)])
    finally:
        context.destroy(linger=0)


def grade(submissions: Path, solutions: Path = ROOT / "solutions", limits: Limits = Limits(),
          jobs: int | None = None, seed: int | None = None, out: Path | None = None) -> list[Graded]:
    """Grade every notebook under ``submissions``; ``seed`` fixes the test inputs (else secret).

    ``out`` (the results folder, if any) is hidden from the kernels like the course itself.
    """
    submissions = Path(submissions).resolve()
    solutions = Path(solutions).resolve()
    exercises = load_exercises(solutions)
    found = find_submissions(submissions)
    jobs = jobs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    forbidden = [solutions, _PACKAGE, submissions]
    if (solutions.parent / "retrievalkit").is_dir():
        forbidden.append(solutions.parent)
    if out is not None:
        forbidden.append(Path(out).resolve())
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    seeds = [rng.getrandbits(32) for _ in found]
    return asyncio.run(_grade_all(found, seeds, submissions, exercises, limits, jobs, forbidden))
