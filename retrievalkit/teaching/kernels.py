"""The grading kernels: one IPython kernel per submission, forked in a sandbox, driven from asyncio.

A batch starts ``jobs`` *slots* (:func:`kernel_pool`). A slot is a warm server (:mod:`retrievalkit.teaching.sandbox`
run with ``--zygote``: it imported torch once, so a kernel is ready in a few tenths of a second) inside a bubblewrap
sandbox of its own (:mod:`retrievalkit.teaching.jail`: own user, PID, mount, network and IPC namespaces, read-only
view of the Python installation only, private size-limited ``/tmp``). A slot runs one kernel at a time; each spawn
first ends everything the previous kernel left and empties the slot's ``/tmp``, so one submission cannot touch
another: concurrent ones are in different sandboxes, successive ones never overlap. The grader reaches a kernel's
ipc sockets through ``/proc/<sandbox init>/root/tmp``; nothing of the sandbox is written on the host. A server that
stops (a kernel killed it) is started afresh, from ``sandbox.py`` in the package, which no kernel can write, when
its slot is next used. With ``sandboxed=False`` (``--unsafe-no-sandbox``) the same server runs as a plain process:
resource limits and the seccomp filter only.

The grader uses :func:`kernel_pool` (one per batch), :meth:`Pool.slot` (one per student) and a :class:`Session`,
which runs the cells of one submission in its kernel and says how each ended (an :class:`Outcome`). A cell runs
within ``Limits.cell_timeout`` and what is left of the student's time; past either, or when the kernel dies
(``os._exit``, a segfault, memory) or its replies cannot be read (say, ``json.dumps`` patched), or it makes more
than ``Limits.files`` files (:func:`jail.bounded`), the kernel is killed and :meth:`Session.start` begins a fresh
one. Each cell keeps at most its cap of output, the shared zmq context refuses a message over
``Limits.message_bytes`` before it is decoded and queues at most 16 messages a socket, so a flood cannot fill the
grader's memory.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from queue import Empty
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

from . import channels, jail

__all__ = ["Limits", "Outcome", "Pool", "Session", "kernel_pool"]

_KERNEL = "retrievalkit-grading"
_PROVISIONER = "retrievalkit-slot"
_TMP_PREFIX = "rk-grading-"


@dataclass(frozen=True)
class Limits:
    """What one submission may use; seconds and bytes."""

    cell_timeout: float = 30.0  # one solution cell, or one task's probe
    submission_timeout: float = 300.0  # all the notebooks of one student, kernel restarts included
    startup_timeout: float = 60.0  # a warm server or a kernel to become ready
    memory: int = 4 << 30  # address space a kernel may add to the warm server's (torch maps about 3 GB)
    file_size: int = 64 << 20  # the largest file a kernel may write; its /tmp holds twice that
    open_files: int = 256
    threads: int = 128  # sandboxed kernels only (processes are refused everywhere)
    output_bytes: int = 64 << 10  # kept per student cell (the rest is dropped)
    probe_bytes: int = 1 << 20  # kept per probe cell (an answer of the course's checks is under 10 kB)
    message_bytes: int = 32 << 20  # the largest message read from a kernel (a print flood comes in one)
    notebook_bytes: int = 8 << 20  # a larger submission is not read
    files: int = 20_000  # files and folders in a sandboxed kernel's /tmp (jail.bounded; tmpfs counts bytes only)


def _kernel_env(work: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
            "IPYTHONDIR": f"{work}/.ipython", "MPLCONFIGDIR": f"{work}/.matplotlib",
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class _Slot:
    """A warm server and the one kernel it runs at a time; started afresh when it has stopped."""

    def __init__(self, index: int, limits: Limits, sandboxed: bool, tmp: Path):
        self.index, self.limits, self.sandboxed, self.tmp = index, limits, sandboxed, tmp
        self.key = secrets.token_hex(8)
        self.proc: asyncio.subprocess.Process | None = None
        self.view = ""  # the server's folder as the grader reaches it
        self.alive: dict[int, asyncio.Event] = {}  # kernels that have not ended, set when they do
        self.replies: asyncio.Queue = asyncio.Queue()
        self.reader: asyncio.Task | None = None
        self.starts = 0

    @property
    def work(self) -> str:
        """The kernels' working folder, as they see it."""
        return "/tmp/work" if self.sandboxed else f"{self.view}/work"

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self.reader is not None \
            and not self.reader.done()

    async def ensure(self) -> None:
        """A running server: started (again) if needed."""
        if self.running():
            return
        await self.close()
        self.starts += 1
        options = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
        if self.sandboxed:
            info_r, info_w = os.pipe()
            try:
                argv, user = jail.command(2 * self.limits.file_size, info_w, self.index)
                self.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(info_w,), user=user, **options)
            except BaseException:
                os.close(info_r)
                raise
            finally:
                os.close(info_w)
        else:
            root = self.tmp / f"slot{self.index}-{self.starts}"
            root.mkdir(mode=0o700)
            self.view = str(root)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-B", str(jail.SANDBOX), "--zygote", str(root), "unsafe", **options)
        self.replies = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())
        try:
            ready = await asyncio.wait_for(self.replies.get(), self.limits.startup_timeout)
            if ready is None:
                raise RuntimeError("the warm kernel server did not start")
            if self.sandboxed:  # bwrap wrote the sandbox's init pid before the server started
                self.view = f"/proc/{_child_pid(info_r)}/root/tmp"
        finally:
            if self.sandboxed:
                os.close(info_r)

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if "exit" in message:
                self.alive.pop(message["exit"], asyncio.Event()).set()
            else:
                self.replies.put_nowait(message)
        for ended in self.alive.values():
            ended.set()
        self.alive.clear()
        self.replies.put_nowait(None)

    def _send(self, request: dict) -> None:
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")

    async def spawn(self, connection: dict) -> int:
        """Fork a kernel for ``connection`` (jupyter's connection info; its ip names the folder)."""
        if not self.running():
            raise RuntimeError("the warm kernel server stopped")
        token = Path(connection["ip"]).parent.name.removeprefix("c-")
        limits = {"memory": self.limits.memory, "file_size": self.limits.file_size,
                  "cpu_seconds": math.ceil(self.limits.submission_timeout) + 10,
                  "open_files": self.limits.open_files, "threads": self.limits.threads}
        info = {k: v.decode() if isinstance(v, bytes) else v for k, v in connection.items() if k != "ip"}
        self._send({"spawn": {"token": token, "connection": info, "env": _kernel_env(self.work), "limits": limits}})
        try:
            reply = await asyncio.wait_for(self.replies.get(), self.limits.startup_timeout)
        except asyncio.TimeoutError:
            await self.close()  # its late answer must not be read as the next one's: start afresh
            raise
        if reply is None:
            raise RuntimeError("the warm kernel server stopped")
        self.alive[reply["pid"]] = asyncio.Event()
        return reply["pid"]

    def kill(self, pid: int) -> None:
        """End kernel ``pid``; it counts as ended at once (the server ends it before anything else)."""
        if pid in self.alive and self.running():
            self._send({"kill": pid})
            self.alive.pop(pid).set()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.stdin.close()  # the server ends its kernel and exits
            try:
                await asyncio.wait_for(self.proc.wait(), 2)
            except asyncio.TimeoutError:
                self.proc.kill()  # bwrap's own death kills the whole sandbox (--die-with-parent)
                await self.proc.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


def _child_pid(fd: int) -> int:
    """The ``child-pid`` of bwrap's ``--info-fd`` JSON."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            data += chunk
    return int(json.loads(data)["child-pid"])


_SLOTS: dict[str, _Slot] = {}


class Pool:
    """The slots of a batch; :meth:`slot` lends a free one."""

    def __init__(self, slots: list[_Slot]):
        self.free: asyncio.Queue[_Slot] = asyncio.Queue()
        for s in slots:
            self.free.put_nowait(s)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[_Slot]:
        s = await self.free.get()
        try:
            yield s
        finally:
            self.free.put_nowait(s)


def _remove_stale(base: Path) -> None:
    """Remove the folders of graders that were killed (``rk-grading-<pid>-*`` of a pid that is gone)."""
    for folder in base.glob(f"{_TMP_PREFIX}*"):
        try:
            os.kill(int(folder.name.split("-")[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


@contextlib.asynccontextmanager
async def kernel_pool(limits: Limits, jobs: int, sandboxed: bool = True) -> AsyncIterator[Pool]:
    """``jobs`` started slots (their start is charged to no submission); ``sandboxed=False`` runs
    the kernels without the sandbox (trusted notebooks only)."""
    if sandboxed and (why := jail.unavailable()):
        raise jail.SandboxUnavailable(why)
    _register_provisioner()
    _remove_stale(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-") as tmp:
        slots = [_Slot(i, limits, sandboxed, Path(tmp)) for i in range(jobs)]
        _SLOTS.update((s.key, s) for s in slots)
        try:
            await asyncio.gather(*[s.ensure() for s in slots])
            yield Pool(slots)
        finally:
            await asyncio.gather(*[s.close() for s in slots], return_exceptions=True)
            for s in slots:
                _SLOTS.pop(s.key, None)


class _Process:
    """The part of :class:`subprocess.Popen` that :class:`LocalProvisioner` uses, for a kernel that a slot's server
    forked: watched and ended through the server (its pid is in the sandbox's PID namespace, meaningless outside)."""

    stdin = stdout = stderr = None

    def __init__(self, slot: _Slot, pid: int):
        self.slot, self.pid = slot, pid

    def poll(self) -> int | None:
        return None if self.pid in self.slot.alive else -1

    def wait(self) -> int:  # called once poll() said it ended
        return -1

    def send_signal(self, signum: int) -> None:  # kernels are never interrupted: any signal ends one
        self.slot.kill(self.pid)

    def kill(self) -> None:
        self.slot.kill(self.pid)

    terminate = kill


class _Provisioner(LocalProvisioner):
    """Launches a kernel by asking its slot's server to fork it."""

    slot = Unicode(config=True)

    async def launch_kernel(self, cmd: list[str], **kwargs):
        slot = _SLOTS[self.slot]
        pid = await slot.spawn(self.connection_info)
        self.process, self.pid, self.pgid = _Process(slot, pid), pid, None
        return self.connection_info

    async def wait(self) -> int | None:
        """Until the server reports the kernel's end (not polled every 0.1 s)."""
        if self.process is not None:
            if ended := self.process.slot.alive.get(self.process.pid):
                await ended.wait()
            self.process = None
        return -1


def _register_provisioner() -> None:
    """Make :class:`_Provisioner` known to jupyter_client (idempotent)."""
    KernelProvisionerFactory.instance().provisioners[_PROVISIONER] = EntryPoint(
        _PROVISIONER, f"{__name__}:_Provisioner", KernelProvisionerFactory.GROUP_NAME)


class _Specs(KernelSpecManager):
    """Knows one kernel: a fork of the given slot's server."""

    def __init__(self, slot: _Slot, **kwargs):
        super().__init__(**kwargs)
        self._spec = KernelSpec(argv=["sandbox", "{connection_file}"], display_name="grading sandbox",
                                language="python", env={},
                                metadata={"kernel_provisioner": {"provisioner_name": _PROVISIONER,
                                                                 "config": {"slot": slot.key}}})

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec

    def find_kernel_specs(self) -> dict[str, str]:
        return {_KERNEL: ""}


class _KernelClient(channels.SteppedKernelClient):
    """jupyter_client's client, stepped (:mod:`.channels`) and ready as soon as the kernel answers on shell and iopub
    (its own ``wait_for_ready`` waits a fixed 0.2 s more, a third of a submission's time)."""

    def start_channels(self, shell=True, iopub=True, stdin=True, hb=True, control=True) -> None:
        """No stdin or control channel: nothing reads them, so what a kernel sent there (up to 16 messages of
        ``message_bytes`` each) would sit in the grader's memory."""
        super().start_channels(shell=shell, iopub=iopub, stdin=False, hb=hb, control=False)

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:
                    await self.iopub_channel.get_msg(timeout=0.2)  # iopub is connected
                    self._handle_kernel_info_reply(reply)
                    break
                except Empty:
                    pass
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
        with contextlib.suppress(Empty):  # what kernel_info left on iopub (nbclient ignores strays anyway)
            while True:
                await self.iopub_channel.get_msg(timeout=0.01)


class _Manager(AsyncKernelManager):
    """Kernel manager whose clients share the grader's zmq context (which caps message size)."""

    def client(self, **kwargs):
        return super().client(context=self.context, **kwargs)

    def cleanup_ipc_files(self) -> None:
        """Nothing: the sockets are in the sandbox, emptied by its server (paths a kernel may replace: not touched)."""


def grading_context(limits: Limits) -> zmq.asyncio.Context:
    """The zmq context of a batch: messages over ``message_bytes`` refused undecoded, short queues."""
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, limits.message_bytes)
    context.setsockopt(zmq.RCVHWM, 16)
    context.setsockopt(zmq.RECONNECT_IVL, 10)  # ms: the client connects before the kernel binds
    return context


class _Client(NotebookClient):
    """nbclient keeping only what grading reads, rebuilt from the kernel's message: stream text (``caps`` per cell)
    and a cell's first error, short. Displays, results, widgets (comms) and display updates are dropped unread, and
    nothing else of a message (metadata, names, counts) is kept, so no kind of flood can fill the grader's memory."""

    def __init__(self, nb, caps: list[int], **kwargs):
        super().__init__(nb, store_widget_state=False, **kwargs)
        self._caps, self._used = caps, [0] * len(caps)

    def process_message(self, msg, cell, cell_index):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            content = {"name": "stdout" if content.get("name") == "stdout" else "stderr",
                       "text": str(content.get("text", ""))}
        elif kind == "error":  # the feedback names the error
            content = {"ename": str(content.get("ename", ""))[:200], "evalue": str(content.get("evalue", ""))[:1000],
                       "traceback": []}
        elif kind == "status":
            content = {"execution_state": content.get("execution_state")}
        elif kind == "clear_output":
            content = {"wait": bool(content.get("wait"))}
        else:
            return None
        return super().process_message({**msg, "content": content}, cell, cell_index)

    def output(self, outs, msg, display_id, cell_index):
        content = msg["content"]
        first_error = msg["msg_type"] == "error" and not any(o.output_type == "error" for o in outs)
        self._used[cell_index] += sum(len(content.get(k, "")) for k in ("text", "ename", "evalue"))
        if self._used[cell_index] > self._caps[cell_index] and not first_error:
            return None
        return super().output(outs, msg, None, cell_index)


@dataclass
class Outcome:
    """How one cell ended; ``ename`` and ``evalue`` name an error (or why replies were unreadable)."""

    kind: str  # "ok", "error", "timeout", "died", "broken" (its messages could not be read), "files"
    ename: str = ""
    evalue: str = ""
    stdout: str = ""
    limit: float = 0.0  # the time it was given; for "files", the files it was allowed
    cut: bool = False  # stopped by the submission's time limit rather than the cell's


class Session:
    """Runs cells of one submission in ``slot``, until ``deadline`` (``time.monotonic()``); a timeout, a dead kernel
    or too many files leaves no kernel, and :meth:`start` begins a fresh one."""

    def __init__(self, cells: list[str], caps: list[int], limits: Limits, context: zmq.asyncio.Context,
                 slot: _Slot, deadline: float):
        self.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
        self.caps, self.limits, self.context, self.slot, self.deadline = caps, limits, context, slot, deadline
        self.client: _Client | None = None
        self.timeout = limits.cell_timeout
        self.starts = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def start(self) -> None:
        """A fresh kernel. A server that stops before the kernel is up (it could not empty what the previous kernel
        left in its ``/tmp``: a folder without permissions, one nested too deep) is started afresh, once: no
        submission pays for another's leftovers."""
        self.starts += 1
        for retry in (False, True):
            await self.slot.ensure()
            token = secrets.token_hex(8)
            km = _Manager(kernel_name=_KERNEL, kernel_spec_manager=_Specs(self.slot), context=self.context,
                          client_class=f"{__name__}._KernelClient", transport="ipc",
                          ip=f"{self.slot.view}/c-{token}/k", connection_file=str(self.slot.tmp / f"{token}.json"))
            startup = max(1, math.ceil(min(self.limits.startup_timeout, self.remaining())))
            self.client = _Client(self.nb, self.caps, km=km, allow_errors=True, record_timing=False,
                                  shutdown_kernel="immediate", iopub_timeout=2, startup_timeout=startup,
                                  timeout_func=lambda cell: self.timeout)
            try:
                await self.client.async_start_new_kernel(env={})
                await self.client.async_start_new_kernel_client()
                return
            except BaseException as exc:
                await self.stop()
                if retry or not isinstance(exc, Exception) or self.slot.running():
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
            await jail.bounded(self.client.async_execute_cell(cell, index),
                               self.slot.view if self.slot.sandboxed else None, self.limits.files)
        except jail.TooManyFiles:
            await self.stop()
            return Outcome("files", limit=self.limits.files)
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
