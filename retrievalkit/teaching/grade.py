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

**One submission** runs in its own fresh kernel (:mod:`retrievalkit.teaching.sandbox`: resource
limits, an audit hook, no network; working folder in a temporary directory, environment
scrubbed): first the import-only code cells of the solution notebook (imports of
``retrievalkit`` dropped), then the student's solution cells, taken by grade id in the order
of the solution notebook (their position, other cells and the check cells of the submission
are ignored: reordering or deleting cells changes nothing, a deleted solution cell costs its
task), then one probe cell per task. The probe sends the task's cases for a secret seed into
the kernel (a pickle, base64 in the cell source), calls the student's function and prints one
line ``<nonce> <json>`` of plain numbers, exactly what :func:`retrievalkit.teaching.checks.probe`
returns; the grader reads only the probe cell's output, requires exactly one line with the
fresh nonce, never unpickles anything from the kernel, and scores outside it with
:func:`retrievalkit.teaching.checks.judge`, the logic of the students' check cells. Nothing a notebook
does inside its kernel can make a wrong answer pass: it can only break its own probes.

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
task), so no process pool is needed. On Linux the kernels are forked from a *zygote*, a process
that imported torch once, and are ready in about 0.4 s instead of the seconds a fresh
interpreter takes; elsewhere each is a fresh interpreter. Any failure of the grader on one
submission becomes "could not be graded" with 0 for that notebook; the batch always finishes.

**Results.** ``RESULTS/scores.csv``: one row per graded notebook (student, notebook, file, one
column per task of every notebook in the batch, total, max, note), and
``RESULTS/feedback/<student>.md``: per notebook and task the points, each property as ✓/✗ with
the teaching message of the checks, and what went wrong (timeouts, crashes, refused
operations); never the hidden inputs or the test code. Both are written atomically.
"""
from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import csv
import io
import json
import math
import os
import pickle
import random
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path

import nbformat
import numpy as np
import zmq
import zmq.asyncio
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import Unicode

from . import checks

__all__ = ["Limits", "Exercise", "TaskGrade", "Graded", "load_exercises", "find_submissions", "grade",
           "write_results", "summary"]

ROOT = Path(__file__).resolve().parents[2]
_SANDBOX = Path(__file__).resolve().with_name("sandbox.py")
_KERNEL = "retrievalkit-grading"
_FORK = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")  # Linux: kernels from the zygote
_REFERENCE = ("grading sandbox: importing retrievalkit", "(course material)")


@dataclass(frozen=True)
class Limits:
    """What one submission may use; seconds and bytes."""

    cell_timeout: float = 30.0  # one solution cell, or one task's probe
    submission_timeout: float = 300.0  # the whole notebook, kernel restarts included
    startup_timeout: float = 60.0  # a kernel to become ready
    memory: int = 4 << 30  # RLIMIT_DATA of the kernel
    file_size: int = 64 << 20  # RLIMIT_FSIZE of the kernel
    output_bytes: int = 64 << 10  # kept per student cell (the rest is dropped)
    probe_bytes: int = 256 << 20  # kept per probe cell, and the largest message read from a kernel
    notebook_bytes: int = 64 << 20  # a larger submission is not read


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


# ---------------------------------------------------------------- the kernel
def _kernel_env(workdir: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
            "IPYTHONDIR": str(workdir / ".ipython"), "MPLCONFIGDIR": str(workdir / ".matplotlib"),
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class _Zygote:
    """The sandbox's fork server: a process that imported torch once and forks each kernel
    (:func:`retrievalkit.teaching.sandbox._zygote`); restarted if it ever stops."""

    def __init__(self, workdir: Path, startup_timeout: float):
        self.workdir, self.startup_timeout = workdir, startup_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    async def _reply(self) -> dict:
        line = await asyncio.wait_for(self.proc.stdout.readline(), self.startup_timeout)
        if not line:
            raise RuntimeError("the grading kernels' fork server stopped")
        return json.loads(line)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(_SANDBOX), "--zygote", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=_kernel_env(self.workdir), cwd=str(self.workdir), start_new_session=True)
        await self._reply()

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        async with self.lock:
            if self.proc is None or self.proc.returncode is not None:
                await self.start()
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode() + b"\n")
            await self.proc.stdin.drain()
            return (await self._reply())["pid"]

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


_ZYGOTES: dict[str, _Zygote] = {}


@contextlib.asynccontextmanager
async def _fork_server(limits: Limits):
    """A started zygote for the kernels of one batch (its start is not charged to a submission);
    yields its key for :func:`_kernel_spec`, or ``None`` where kernels are spawned afresh."""
    if not _FORK:
        yield None
        return
    key = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="rkz") as tmp:
        _ZYGOTES[key] = zygote = _Zygote(Path(tmp), limits.startup_timeout)
        try:
            await zygote.start()
            yield key
        finally:
            await _ZYGOTES.pop(key).close()


def _kernel_spec(limits: Limits, workdir: Path, forbidden: list[Path], zygote: str | None) -> KernelSpec:
    config = {"memory": limits.memory, "file_size": limits.file_size,
              "cpu_seconds": math.ceil(limits.submission_timeout) + 10,
              "workdir": str(workdir), "forbidden": [str(p) for p in forbidden]}
    argv = [sys.executable, "-I", str(_SANDBOX), json.dumps(config), "-f", "{connection_file}",
            "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=False"]
    metadata = {"kernel_provisioner": {"provisioner_name": "retrievalkit-fork", "config": {"zygote": zygote}}}
    return KernelSpec(argv=argv, display_name="grading sandbox", language="python", env={},
                      metadata=metadata if zygote else {})


class _Forked:
    """The part of :class:`subprocess.Popen` that :class:`LocalProvisioner` uses, for a kernel the
    zygote forked: not our child, so it is watched and signalled through a pidfd."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.returncode = -1

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._fd], [], [], 0)[0]:
            self.returncode = -1  # it exited; its status went to the zygote
            os.close(self._fd)
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self._fd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class _ForkProvisioner(LocalProvisioner):
    """Launches the kernel by asking the zygote to fork it, instead of a fresh interpreter."""

    zygote = Unicode(config=True)

    async def launch_kernel(self, cmd: list[str], **kwargs):
        argv = cmd[cmd.index(str(_SANDBOX)) + 1:]
        pid = await _ZYGOTES[self.zygote].spawn(argv, kwargs["env"], str(kwargs["cwd"]))
        self.process, self.pid, self.pgid, self.cwd = _Forked(pid), pid, pid, kwargs["cwd"]
        return self.connection_info


KernelProvisionerFactory.instance().provisioners["retrievalkit-fork"] = EntryPoint(
    "retrievalkit-fork", f"{__name__}:_ForkProvisioner", KernelProvisionerFactory.GROUP_NAME)


class _Specs(KernelSpecManager):
    """Knows one kernel: the sandbox with this run's settings."""

    def __init__(self, spec: KernelSpec, **kwargs):
        super().__init__(**kwargs)
        self._spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec

    def find_kernel_specs(self) -> dict[str, str]:
        return {_KERNEL: ""}


class _Manager(AsyncKernelManager):
    """Kernel manager whose clients share the grader's zmq context (which caps message size)."""

    def client(self, **kwargs):
        return super().client(context=self.context, **kwargs)


class _Client(NotebookClient):
    """nbclient with per-cell output caps: a print flood cannot fill the grader's memory."""

    def __init__(self, nb, caps: list[int], **kwargs):
        super().__init__(nb, **kwargs)
        self._caps, self._used = caps, [0] * len(caps)

    def output(self, outs, msg, display_id, cell_index):
        content = msg["content"]
        if msg["msg_type"] == "error":  # kept, short: the feedback names the error
            content["evalue"] = str(content.get("evalue", ""))[:1000]
            content["traceback"] = []
            return super().output(outs, msg, display_id, cell_index)
        size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
        self._used[cell_index] += size
        if self._used[cell_index] > self._caps[cell_index]:
            return None
        return super().output(outs, msg, display_id, cell_index)


@dataclass
class _Outcome:
    kind: str  # "ok", "error", "timeout", "died", "broken" (its messages could not be read)
    ename: str = ""
    evalue: str = ""
    stdout: str = ""
    limit: float = 0.0  # the time it was given
    cut: bool = False  # stopped by the submission's time limit rather than the cell's


class _Session:
    """Runs cells of one submission; a timeout or a dead kernel leaves no kernel, and
    :meth:`start` begins a fresh one."""

    def __init__(self, cells: list[str], caps: list[int], limits: Limits, context: zmq.asyncio.Context,
                 spec: KernelSpec, workdir: Path, conn: Path):
        self.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
        self.caps, self.limits, self.context, self.spec = caps, limits, context, spec
        self.workdir, self.conn = workdir, conn
        self.deadline = time.monotonic() + limits.submission_timeout
        self.client: _Client | None = None
        self.timeout = limits.cell_timeout
        self.starts = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def start(self) -> None:
        self.starts += 1
        km = _Manager(kernel_name=_KERNEL, kernel_spec_manager=_Specs(self.spec), context=self.context,
                      transport="ipc", ip=str(self.conn / f"k{self.starts}"),
                      connection_file=str(self.conn / f"k{self.starts}.json"))
        startup = max(1, math.ceil(min(self.limits.startup_timeout, self.remaining())))
        self.client = _Client(self.nb, self.caps, km=km, allow_errors=True, record_timing=False,
                              shutdown_kernel="immediate", iopub_timeout=2, startup_timeout=startup,
                              timeout_func=lambda cell: self.timeout)
        try:
            await self.client.async_start_new_kernel(cwd=str(self.workdir), env=_kernel_env(self.workdir),
                                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await self.client.async_start_new_kernel_client()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.client is None:
            return
        client, self.client = self.client, None
        try:
            if client.km is not None and client.km.has_kernel:
                await client.km.shutdown_kernel(now=True)
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
            if client.km is not None:
                await client.km.cleanup_resources()

    async def run(self, index: int) -> _Outcome:
        """Run cell ``index`` within the cell's and the submission's time limits."""
        self.timeout = min(self.limits.cell_timeout, self.remaining())
        cut = self.timeout < self.limits.cell_timeout
        if self.timeout <= 0:  # nbclient reads a zero timeout as none
            await self.stop()
            return _Outcome("timeout", limit=0.0, cut=True)
        cell = self.nb.cells[index]
        try:
            await self.client.async_execute_cell(cell, index)
        except CellTimeoutError:
            await self.stop()
            return _Outcome("timeout", limit=self.timeout, cut=cut)
        except DeadKernelError:
            await self.stop()
            return _Outcome("died")
        except Exception as exc:  # e.g. a notebook that patched json.dumps: the kernel's messages are garbage
            await self.stop()
            return _Outcome("broken", type(exc).__name__)
        stdout = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        error = next((o for o in cell.outputs if o.output_type == "error"), None)
        if error is not None:
            return _Outcome("error", error.ename, error.evalue, stdout)
        return _Outcome("ok", stdout=stdout)


# ---------------------------------------------------------------- grading one submission
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


def _fault(outcome: _Outcome, what: str, limits: Limits) -> str:
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


async def _grade(graded: Graded, nb, limits: Limits, context, spec: KernelSpec, tmp: Path, seed: int) -> None:
    ex = graded.exercise
    sources: dict[str, str] = {}
    for cell in nb.cells:
        gid = _nbgrader(cell).get("grade_id")
        if cell.get("cell_type") == "code" and gid in ex.cells and gid not in sources:
            sources[gid] = cell.source
    present = [gid for gid in ex.cells if gid in sources]
    nonces = {t: secrets.token_hex(16) for t in ex.tasks}
    cells = [ex.preamble] + [sources[g] for g in present] + [_probe_cell(t, nonces[t], seed) for t in ex.tasks]
    caps = [limits.output_bytes] * (1 + len(present)) + [limits.probe_bytes] * len(ex.tasks)
    session = _Session(cells, caps, limits, context, spec, tmp / "work", tmp / "conn")
    notes: dict[str, str] = {}  # solution cell -> what went wrong with it
    done: list[int] = []  # solution cells that ran (raising or not): replayed in a fresh kernel

    async def ensure_kernel() -> str | None:
        """A live kernel that has run the imports and ``done``; else why there is none."""
        while session.client is None:
            if session.remaining() <= 0:
                return "not graded: the submission's time limit was used up"
            try:
                await session.start()
            except Exception as exc:
                if session.starts == 1:
                    raise
                return f"not graded: no fresh kernel could be started ({type(exc).__name__})"
            out = await session.run(0)
            if out.kind != "ok" and session.starts == 1:
                raise RuntimeError("the grader's import cell failed: " + _fault(out, "it", limits))
            if out.kind != "ok":
                return "not graded: " + _fault(out, "a fresh kernel's import cell", limits)
            for i in list(done):
                out = await session.run(i)
                if out.kind not in ("ok", "error"):  # it did not do that the first time
                    done.remove(i)
                    notes[present[i - 1]] = f"your cell `{present[i - 1]}`: " + _fault(out, "it", limits)
                    break
        return None

    grades = {t: TaskGrade(t, p) for t, p in ex.tasks.items()}
    graded.tasks = list(grades.values())
    try:
        for i, gid in enumerate(present, start=1):
            if why := await ensure_kernel():
                notes[gid] = f"your cell `{gid}` was {why}"
                continue
            out = await session.run(i)
            if out.kind in ("ok", "error"):
                done.append(i)
            if out.kind != "ok":
                notes[gid] = f"your cell `{gid}`: " + _fault(out, "it", limits)
                if note := _reference_note(out.evalue):
                    notes[gid] += f" ({note})"
        for k, (task, tg) in enumerate(grades.items(), start=1 + len(present)):
            name = checks.TASKS[task].name
            if why := await ensure_kernel():
                tg.faults.append(why)
                continue
            out = await session.run(k)
            answer = _answer(out.stdout, nonces[task]) if out.kind == "ok" else None
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
            cell_note = notes.get(task) or (None if task in sources else
                                            f"the cell with grade id `{task}` is missing from your notebook")
            if cell_note and tg.score < tg.points:
                tg.faults.insert(0, cell_note)
    finally:
        await session.stop()


async def _grade_submission(student: str, rel: Path, root: Path, exercises, limits: Limits, context,
                            spec_for, seed: int, gate: asyncio.Semaphore) -> Graded:
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
                await _grade(graded, nb, limits, context, spec_for(Path(tmp) / "work"), Path(tmp), seed)
            except Exception as exc:  # the grader's own trouble with this notebook: the batch goes on
                graded.problem = f"{type(exc).__name__}: {exc}"[:400]
                graded.tasks = []
        graded.seconds = time.monotonic() - start
    return graded


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
    forbidden = [solutions, Path(checks.__file__).resolve().parents[1], submissions]
    if (solutions.parent / "retrievalkit").is_dir():
        forbidden.append(solutions.parent)
    if out is not None:
        forbidden.append(Path(out).resolve())
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    seeds = [rng.getrandbits(32) for _ in found]

    async def main() -> list[Graded]:
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, limits.probe_bytes + (1 << 20))
        gate = asyncio.Semaphore(max(1, min(jobs, len(found))))
        try:
            async with _fork_server(limits) as zygote:
                return await asyncio.gather(*[
                    _grade_submission(student, rel, submissions, exercises, limits, context,
                                      lambda workdir: _kernel_spec(limits, workdir, forbidden, zygote), s, gate)
                    for (student, rel), s in zip(found, seeds)])
        finally:
            context.destroy(linger=0)

    return asyncio.run(main())


# ---------------------------------------------------------------- results
def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"


def _feedback(student: str, rows: list[Graded]) -> str:
    lines = [f"# Feedback for {student}", ""]
    for g in rows:
        title = g.exercise.name if g.exercise else "?"
        lines += [f"## {title} (`{g.path.as_posix()}`): {_fmt(g.total)} / {_fmt(g.max_points)}", ""]
        if g.problem:
            lines += [f"Could not be graded: {g.problem}. Score 0.", ""]
            continue
        for t in g.tasks:
            lines += [f"### `{checks.TASKS[t.task].name}`: {_fmt(t.score)} / {_fmt(t.points)}", ""]
            lines += [f"- ⚠ {f}" for f in t.faults]
            lines += [f"- {'✓' if r.passed else '✗'} {r.label}: {r.message}" for r in t.results]
            lines.append("")
    return "\n".join(lines)


def write_results(graded: list[Graded], out: Path) -> tuple[Path, list[Path]]:
    """``out/scores.csv`` and ``out/feedback/<student>.md``; returns their paths."""
    out = Path(out)
    tasks = list(dict.fromkeys(t.task for g in graded for t in g.tasks))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "notebook", "file", *tasks, "total", "max", "note"])
    for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix())):
        scores = {t.task: _fmt(t.score) for t in g.tasks}
        writer.writerow([g.student, g.exercise.name if g.exercise else "", g.path.as_posix(),
                         *[scores.get(t, "") for t in tasks], _fmt(g.total), _fmt(g.max_points),
                         f"could not be graded: {g.problem}" if g.problem else ""])
    scores = out / "scores.csv"
    _atomic_write(scores, buf.getvalue())
    by_student: dict[str, list[Graded]] = {}
    for g in graded:
        by_student.setdefault(g.student, []).append(g)
    feedback = []
    for student, rows in sorted(by_student.items()):
        path = out / "feedback" / f"{_safe(student)}.md"
        _atomic_write(path, _feedback(student, sorted(rows, key=lambda g: g.path.as_posix())))
        feedback.append(path)
    return scores, feedback


def summary(graded: list[Graded]) -> str:
    """A plain-text table: student, notebook, score."""
    rows = [(g.student, g.exercise.name if g.exercise else "?",
             f"{_fmt(g.total)} / {_fmt(g.max_points)}" + (" (could not be graded)" if g.problem else ""))
            for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix()))]
    head = ("student", "notebook", "score")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])
