"""The grading kernels: one sandboxed IPython kernel per submission, driven from asyncio.

A kernel runs :mod:`retrievalkit.teaching.sandbox` (resource limits, an audit hook, no network)
in a working folder of its own in a temporary directory, with a scrubbed environment. On Linux
the kernels are forked from a *zygote*, a process that imported torch once, and are ready in
about 0.4 s instead of the seconds a fresh interpreter takes: a kernel provisioner asks the
zygote for the fork (registered with jupyter_client when a batch starts, not on import);
elsewhere each kernel is a fresh interpreter.

The grader uses :func:`fork_server` (one per batch), :func:`kernel_spec` (one per submission) and
a :class:`Session`, which runs the cells of one submission in its kernel and says how each ended
(an :class:`Outcome`). A cell runs within ``Limits.cell_timeout`` and what is left of
``Limits.submission_timeout``; past either, or when the kernel dies (``os._exit``, a segfault,
memory) or its replies cannot be read (say, ``json.dumps`` patched), the kernel is killed and
:meth:`Session.start` begins a fresh one.
Each cell keeps at most its cap of output (a print flood cannot fill the grader's memory), and
the shared zmq context caps the size of a message read from a kernel.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path

import nbformat
import zmq.asyncio
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import Unicode

__all__ = ["Limits", "Outcome", "Session", "fork_server", "kernel_spec"]

_SANDBOX = Path(__file__).resolve().with_name("sandbox.py")
_KERNEL = "retrievalkit-grading"
_PROVISIONER = "retrievalkit-fork"
_FORK = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")  # Linux: kernels from the zygote


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
async def fork_server(limits: Limits) -> AsyncIterator[str | None]:
    """A started zygote for the kernels of one batch (its start is not charged to a submission);
    yields its key for :func:`kernel_spec`, or ``None`` where kernels are spawned afresh."""
    if not _FORK:
        yield None
        return
    _register_provisioner()
    key = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="rkz") as tmp:
        _ZYGOTES[key] = zygote = _Zygote(Path(tmp), limits.startup_timeout)
        try:
            await zygote.start()
            yield key
        finally:
            await _ZYGOTES.pop(key).close()


def kernel_spec(limits: Limits, workdir: Path, forbidden: list[Path], zygote: str | None) -> KernelSpec:
    """The sandbox kernel of one submission: its limits, working folder and the paths it may not
    read; forked from ``zygote`` (a key from :func:`fork_server`) unless that is ``None``."""
    config = {"memory": limits.memory, "file_size": limits.file_size,
              "cpu_seconds": math.ceil(limits.submission_timeout) + 10,
              "workdir": str(workdir), "forbidden": [str(p) for p in forbidden]}
    argv = [sys.executable, "-I", str(_SANDBOX), json.dumps(config), "-f", "{connection_file}",
            "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=False"]
    metadata = {"kernel_provisioner": {"provisioner_name": _PROVISIONER, "config": {"zygote": zygote}}}
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


def _register_provisioner() -> None:
    """Make :class:`_ForkProvisioner` known to jupyter_client (idempotent)."""
    KernelProvisionerFactory.instance().provisioners[_PROVISIONER] = EntryPoint(
        _PROVISIONER, f"{__name__}:_ForkProvisioner", KernelProvisionerFactory.GROUP_NAME)


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
class Outcome:
    """How one cell ended; ``ename`` and ``evalue`` name an error (or why replies were unreadable)."""

    kind: str  # "ok", "error", "timeout", "died", "broken" (its messages could not be read)
    ename: str = ""
    evalue: str = ""
    stdout: str = ""
    limit: float = 0.0  # the time it was given
    cut: bool = False  # stopped by the submission's time limit rather than the cell's


class Session:
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

    async def run(self, index: int) -> Outcome:
        """Run cell ``index`` within the cell's and the submission's time limits."""
        self.timeout = min(self.limits.cell_timeout, self.remaining())
        cut = self.timeout < self.limits.cell_timeout
        if self.timeout <= 0:  # nbclient reads a zero timeout as none
            await self.stop()
            return Outcome("timeout", limit=0.0, cut=True)
        cell = self.nb.cells[index]
        try:
            await self.client.async_execute_cell(cell, index)
        except CellTimeoutError:
            await self.stop()
            return Outcome("timeout", limit=self.timeout, cut=cut)
        except DeadKernelError:
            await self.stop()
            return Outcome("died")
        except Exception as exc:  # e.g. a notebook that patched json.dumps: the kernel's messages are garbage
            await self.stop()
            return Outcome("broken", type(exc).__name__)
        stdout = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        error = next((o for o in cell.outputs if o.output_type == "error"), None)
        if error is not None:
            return Outcome("error", error.ename, error.evalue, stdout)
        return Outcome("ok", stdout=stdout)

