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
there is none). Other solution cells are helpers: they run, and are not scored. A Markdown
solution cell with ``"grade": true`` is a written answer: it is not run or scored here; its text
goes to the instructor to grade by hand (:mod:`retrievalkit.teaching.report`).

**Submissions** are read without following symbolic links (a link to the solutions or to another
student's notebook is "not a readable notebook"), at most ``Limits.notebook_bytes``, in a thread.

**One submission** runs in its own fresh kernel (:mod:`retrievalkit.teaching.kernels`), forked
in a bubblewrap sandbox that sees only the Python installation
(:mod:`retrievalkit.teaching.jail`), under resource limits and a seccomp filter
(:mod:`retrievalkit.teaching.sandbox`): first the import-only code cells of the solution
notebook (imports of ``retrievalkit`` dropped), then the student's solution cells, taken by
grade id in the order of the solution notebook (their position, other cells and the check cells
of the submission are ignored: reordering or deleting cells changes nothing, a deleted solution
cell costs its task), then one probe cell per task. The probe sends the task's cases for a
secret seed into the kernel (a pickle, base64 in the cell source), calls the student's function
and prints one line ``<nonce> <json>`` of plain numbers, exactly what
:func:`retrievalkit.teaching.checks.probe` returns; the grader reads only the probe cell's
output, requires exactly one line with the fresh nonce, never unpickles anything from the
kernel, and scores outside it with :func:`retrievalkit.teaching.checks.judge`, the logic of the
students' check cells. Nothing a notebook does inside its kernel can make a wrong answer pass:
it can only break its own probes.

**Scores.** A task earns ``points * passed cases / cases``; ``NotImplementedError`` means not
attempted (0). A cell or probe that runs past ``cell_timeout``, kills the kernel (``os._exit``,
a segfault), leaves it unreadable (say, ``json.dumps`` patched) or makes more than ``files``
files and folders in its ``/tmp`` costs the task it belongs to:
the kernel is killed, a fresh one re-runs the imports and the other solution cells, and grading
goes on (a death is charged to whatever runs when it happens). A student's notebooks are graded
one after the other in one slot and share ``submission_timeout``; whatever is left then earns
nothing. ``sys.exit`` is an ordinary error, and ``exit()`` ends a cell, not the kernel. Memory
beyond ``Limits.memory`` raises ``MemoryError`` in the student's code. What the sandbox does not
hold cannot be used: importing ``retrievalkit`` raises ``ModuleNotFoundError`` (the feedback
then says the reference may not be used), the course, other submissions and the network are
simply not there; starting a process or signalling one raises ``PermissionError``. Warnings and
anything else on stdout/stderr cost nothing; a cell's output beyond ``output_bytes`` is dropped.
The error messages of the student's own code reach the feedback (cut at 300 characters), as they
would in the notebook.

**Parallel.** One asyncio loop drives up to ``jobs`` kernels at once (default: the usable
cores): the kernels are the processes doing the work, the grader only judges (milliseconds a
task), so no process pool is needed. Each job is a slot: a sandbox whose warm server imported
torch once and forks the kernels (:mod:`retrievalkit.teaching.kernels`). Without bubblewrap the
grader refuses to run unless told ``unsafe_no_sandbox`` (``--unsafe-no-sandbox``: for notebooks
you trust; limits and the seccomp filter only). Any failure of the grader on one submission
becomes "could not be graded" with 0 for that notebook; the batch always finishes.

**Results** (scores and per-student feedback) are written by :mod:`retrievalkit.teaching.report`.
"""
from __future__ import annotations

import ast
import asyncio
import base64
import errno
import json
import os
import pickle
import random
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import zmq
import zmq.asyncio
from tqdm.asyncio import tqdm_asyncio

import retrievalkit

from . import checks
from .jail import SandboxUnavailable
from .kernels import Limits, Outcome, Pool, Session, grading_context, kernel_pool

__all__ = ["Limits", "Exercise", "TaskGrade", "Graded", "SandboxUnavailable", "load_exercises", "find_submissions",
           "grade"]

_PACKAGE = Path(retrievalkit.__file__).resolve().parent  # never in the kernels' sandbox
ROOT = _PACKAGE.parent
_REFERENCE = ("No module named 'retrievalkit",)  # the sandbox does not hold the package


@dataclass(frozen=True)
class Exercise:
    """A solution notebook, as the grader needs it."""

    name: str  # file stem, e.g. "01_pooling"
    preamble: str  # the notebook's import-only code, without retrievalkit
    cells: tuple[str, ...]  # grade ids of the solution cells, in order
    tasks: dict[str, float]  # task -> points, in order
    grade_ids: frozenset[str]  # every nbgrader grade id of the notebook
    written: dict[str, float] = field(default_factory=dict)  # written answers (graded by hand): grade id -> points

    @property
    def max_points(self) -> float:
        """The points the grader awards (the written answers' points come on top, by hand)."""
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
    sources: dict[str, str] = field(default_factory=dict)  # solution cells by grade id (similarity)
    written: dict[str, str] = field(default_factory=dict)  # the written answers by grade id, to grade by hand

    @property
    def total(self) -> float:
        return sum(t.score for t in self.tasks)

    @property
    def max_points(self) -> float:
        return self.exercise.max_points if self.exercise else 0


# ---------------------------------------------------------------- exercises and submissions
def _nbgrader(cell) -> dict:
    """A cell's nbgrader metadata; ``{}`` where a submission holds anything else there."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


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
        cells = tuple(m["grade_id"] for c, m in zip(nb.cells, meta)
                      if m.get("solution") and m.get("grade_id") and c.cell_type == "code")
        points = {m["grade_id"]: float(m.get("points", 0)) for m in meta if m.get("grade") and m.get("grade_id")}
        written = {m["grade_id"]: points[m["grade_id"]] for c, m in zip(nb.cells, meta)
                   if c.cell_type == "markdown" and m.get("solution") and m.get("grade") and m.get("grade_id")}
        tasks = {t: points.get(f"check_{t}", checks.TASKS[t].points) for t in cells if t in checks.TASKS}
        if not tasks:
            continue
        preamble = [line for c, m in zip(nb.cells, meta) if c.cell_type == "code" and not m
                    for line in _imports_only(c.source)]
        exercises.append(Exercise(path.stem, "\n".join(preamble), cells, tasks,
                                  frozenset(m["grade_id"] for m in meta if m.get("grade_id")), written))
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
        found.append((_printable(student), rel))
    return found


def _printable(name: str) -> str:
    """``name`` with the bytes of a file name that are not UTF-8 as U+FFFD (else no report can be written)."""
    return os.fsencode(name).decode("utf-8", "replace")


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
    if outcome.kind == "files":
        return f"{what} created more than {outcome.limit:g} files and folders in /tmp and was stopped"
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


def _cells_by_id(nb, ids, cell_type: str) -> dict[str, str]:
    """The submission's first ``cell_type`` cell of each grade id in ``ids``, whatever its position: the
    solution cells (code) or the written answers (markdown). A cell whose grade id or source is not
    text (nbformat reads a number or a list as is) counts as missing."""
    found: dict[str, str] = {}
    for cell in nb.cells:
        gid, source = _nbgrader(cell).get("grade_id"), cell.get("source")
        if (cell.get("cell_type") == cell_type and isinstance(gid, str) and gid in ids and gid not in found
                and isinstance(source, str)):
            found[gid] = source
    return found


async def _grade(ex: Exercise, sources: dict[str, str], limits: Limits, context, slot, deadline: float,
                 seed: int) -> list[TaskGrade]:
    """Run a submission's solution cells ``sources`` (by grade id) of ``ex`` in its kernel and grade each task."""
    present = [gid for gid in ex.cells if gid in sources]
    nonces = {t: secrets.token_hex(16) for t in ex.tasks}
    cells = [ex.preamble] + [sources[g] for g in present] + [_probe_cell(t, nonces[t], seed) for t in ex.tasks]
    caps = [limits.output_bytes] * (1 + len(present)) + [limits.probe_bytes] * len(ex.tasks)
    kernel = _Kernel(Session(cells, caps, limits, context, slot, deadline), present, limits)
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


def _read(root: Path, rel: Path, limits: Limits):
    """The notebook ``root / rel``: a regular file reached without following any symbolic link
    below ``root`` (not the solutions, nor another student's notebook), at most ``notebook_bytes``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # NONBLOCK: a named pipe does not hang the grader
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in rel.parts[:-1]:
            fd, parent = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        file = os.open(rel.parts[-1], flags, dir_fd=fd)
    except OSError as exc:
        raise ValueError("a symbolic link, not a notebook") if exc.errno == errno.ELOOP else exc
    finally:
        os.close(fd)
    with open(file, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        text = f.read(limits.notebook_bytes + 1)
    if len(text) > limits.notebook_bytes:
        raise ValueError(f"larger than {limits.notebook_bytes >> 20} MB")
    return nbformat.reads(text.decode("utf-8"), as_version=4)


async def _grade_submission(student: str, rel: Path, root: Path, exercises: list[Exercise], limits: Limits,
                            context: zmq.asyncio.Context, slot, deadline: float, seed: int) -> Graded:
    graded = Graded(student, Path(_printable(str(rel))))
    start = time.monotonic()
    try:  # in a thread: a large notebook does not hold up the other kernels
        nb = await asyncio.to_thread(_read, root, rel, limits)
    except Exception as exc:
        graded.exercise = _match(set(), rel, exercises)
        graded.problem = f"not a readable notebook ({type(exc).__name__}: {exc})"[:200]
        return graded
    try:  # the grader's own trouble with this notebook (odd metadata, say): the batch goes on
        graded.exercise = _match({g for c in nb.cells if isinstance(g := _nbgrader(c).get("grade_id"), str)},
                                 rel, exercises)
        if graded.exercise is None:
            graded.problem = "not one of the exercises (no known grade ids, no known file name)"
            return graded
        graded.sources = _cells_by_id(nb, graded.exercise.cells, "code")
        graded.written = _cells_by_id(nb, graded.exercise.written, "markdown")
        graded.tasks = await _grade(graded.exercise, graded.sources, limits, context, slot, deadline, seed)
    except Exception as exc:
        graded.problem = f"{type(exc).__name__}: {exc}"[:400]
    graded.seconds = time.monotonic() - start
    return graded


async def _grade_student(items: list[tuple[int, str, Path, int]], root: Path, exercises: list[Exercise],
                         limits: Limits, context: zmq.asyncio.Context, pool: Pool) -> list[tuple[int, Graded]]:
    """One student's notebooks ``(index, student, path, seed)``, one after the other in one slot,
    sharing ``submission_timeout`` (six spinning notebooks cost one time limit, not six)."""
    async with pool.slot() as slot:
        deadline = time.monotonic() + limits.submission_timeout
        return [(i, await _grade_submission(student, rel, root, exercises, limits, context, slot, deadline, seed))
                for i, student, rel, seed in items]


# ---------------------------------------------------------------- a batch
async def _grade_all(found: list[tuple[str, Path]], seeds: list[int], root: Path, exercises: list[Exercise],
                     limits: Limits, jobs: int, sandboxed: bool, progress: bool = False) -> list[Graded]:
    """Grade the submissions ``found`` under ``root``, at most ``jobs`` kernels at once (with
    ``progress``, a tqdm bar counts the students done)."""
    students: dict[str, list[tuple[int, str, Path, int]]] = {}
    for i, ((student, rel), seed) in enumerate(zip(found, seeds)):
        students.setdefault(student, []).append((i, student, rel, seed))
    context = grading_context(limits)
    try:
        async with kernel_pool(limits, max(1, min(jobs, len(students))), sandboxed) as pool:
            done = await tqdm_asyncio.gather(*[
                _grade_student(items, root, exercises, limits, context, pool) for items in students.values()],
                desc="grading", unit="student", disable=not progress)
    finally:
        context.destroy(linger=0)
    return [g for _, g in sorted((pair for pairs in done for pair in pairs), key=lambda pair: pair[0])]


def grade(submissions: Path, solutions: Path = ROOT / "solutions", limits: Limits = Limits(),
          jobs: int | None = None, seed: int | None = None, out: Path | None = None,
          hide: tuple[Path, ...] = (), progress: bool = False, unsafe_no_sandbox: bool = False) -> list[Graded]:
    """Grade every notebook under ``submissions``; ``seed`` fixes the test inputs (else secret).

    The kernels see only the Python installation (:mod:`retrievalkit.teaching.jail`), so ``out``
    and ``hide`` (say, the LMS export the submissions came from) are out of their reach like
    everything else; ``progress`` shows a bar. Raises :class:`SandboxUnavailable` where the sandbox
    cannot run, unless ``unsafe_no_sandbox`` (trusted notebooks only) runs them without it.
    """
    submissions = Path(submissions).resolve()
    solutions = Path(solutions).resolve()
    exercises = load_exercises(solutions)
    found = find_submissions(submissions)
    jobs = jobs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if not found:
        return []
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    seeds = [rng.getrandbits(32) for _ in found]
    return asyncio.run(_grade_all(found, seeds, submissions, exercises, limits, jobs, not unsafe_no_sandbox, progress))
