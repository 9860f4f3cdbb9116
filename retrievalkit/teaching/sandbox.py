"""The grading kernels' warm server: imports torch once, forks one IPython kernel per request.

Run by :mod:`retrievalkit.teaching.kernels` as ``python -I sandbox.py --zygote ROOT MODE``: MODE
``sandboxed`` inside a bubblewrap sandbox of its own (:mod:`retrievalkit.teaching.jail` builds it),
``unsafe`` as a plain process (``--unsafe-no-sandbox``). This file is the only code of the course
the sandbox sees (read-only, it holds no answer); the reference lives outside it.

Protocol, one JSON line each way: ``{"spawn": {"token", "connection", "env", "limits"}}`` ends
whatever ran before (in the sandbox ``kill(-1)``: every process of the sandbox but this one), empties
``ROOT``, writes the connection file into the fresh ``ROOT/c-<token>/``, forks the kernel and
answers ``{"pid"}``; ``{"kill": pid}`` ends it; ``{"exit": pid}`` reports a kernel's end. The
server is disposable: a kernel that kills it loses only its own session (the grader starts a
new server) and it cannot be changed by a kernel (not dumpable: no ``ptrace``, no
``/proc/<pid>/mem``; it reads nothing a kernel can write).

A forked kernel, before any submission code runs,

1. sets resource limits: ``RLIMIT_AS`` = what the server had mapped + ``memory`` (address
   space counts shared mappings too, unlike ``RLIMIT_DATA``), ``RLIMIT_CPU``, ``RLIMIT_FSIZE``
   (``SIGXFSZ`` ignored: an oversized write raises), ``RLIMIT_NOFILE``, no core files, no POSIX
   message queues and, in the sandbox (whose user namespace counts them apart), ``RLIMIT_NPROC``
   for its threads; it dies with the server (``PR_SET_PDEATHSIG``);
2. installs a seccomp filter (:func:`_seccomp`, Linux x86-64 and arm64; with ``no_new_privs``,
   inherited by every thread, irrevocable) that answers ``EPERM`` to: creating processes
   (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``, ``execve``), signalling any process
   but itself, ``ptrace`` and cross-process memory access, pidfds, memory that no limit counts
   (``memfd_create``, System V shared memory, semaphores and queues, POSIX queues), namespaces,
   mounts, keyrings, BPF, perf events, userfaultfd and io_uring;
3. starts ipykernel on ipc sockets in its connection folder, with ``__rk_probe__`` defined: it
   calls a student's function on the cases the grader sends and prints one line ``<nonce>
   <json>`` of plain numbers through the kernel's original stdout, whatever the submission later
   does to ``print``, ``json`` or ``sys.stdout``.
"""
import json
import os
import resource
import shutil
import signal
import struct
import sys

# imported once, in the server: the notebooks' libraries and what ipykernel's startup imports
_PRELOAD = ("numpy", "torch", "torchvision", "faulthandler", "pdb", "ipykernel.kernelapp", "ipykernel.ipkernel",
            "ipykernel.zmqshell", "ipykernel.debugger", "IPython.core.completerlib", "IPython.core.debugger",
            "IPython.extensions.storemagic", "tornado.platform.asyncio")

# seccomp: (audit arch, syscall numbers) from <asm/unistd_64.h> and <asm-generic/unistd.h>
_DENIED = ("vfork", "fork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
           "process_madvise", "tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "memfd_create",
           "memfd_secret", "shmget", "semget", "msgget", "mq_open", "unshare", "setns", "mount", "umount2",
           "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsmount", "keyctl", "add_key",
           "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
           "io_uring_register")
_OWN_PID_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # first argument: a pid
_TABLES = {
    "x86_64": (0xC000003E, dict(
        fork=57, vfork=58, clone=56, clone3=435, execve=59, execveat=322, ptrace=101, process_vm_readv=310,
        process_vm_writev=311, kcmp=312, process_madvise=440, kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129,
        rt_tgsigqueueinfo=297, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, memfd_create=319,
        memfd_secret=447, shmget=29, semget=64, msgget=68, mq_open=240, unshare=272, setns=308, mount=165,
        umount2=166, pivot_root=155, chroot=161, open_tree=428, move_mount=429, fsopen=430, fsmount=432,
        keyctl=250, add_key=248, request_key=249, bpf=321, perf_event_open=298, userfaultfd=323,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427)),
    "aarch64": (0xC00000B7, dict(
        clone=220, clone3=435, execve=221, execveat=281, ptrace=117, process_vm_readv=270, process_vm_writev=271,
        kcmp=272, process_madvise=440, kill=129, tkill=130, tgkill=131, rt_sigqueueinfo=138,
        rt_tgsigqueueinfo=240, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, memfd_create=279,
        memfd_secret=447, shmget=194, semget=190, msgget=186, mq_open=180, unshare=97, setns=268, mount=40,
        umount2=39, pivot_root=41, chroot=51, open_tree=428, move_mount=429, fsopen=430, fsmount=432,
        keyctl=219, add_key=217, request_key=218, bpf=280, perf_event_open=241, userfaultfd=282,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427)),
}
_CLONE_THREAD, _X32 = 0x00010000, 0x40000000
_EPERM, _ENOSYS = 1, 38


def _bpf(arch: str, own_pid: int) -> bytes:
    """The seccomp program (classic BPF over ``struct seccomp_data``: nr at 0, arch at 4, the low
    word of the first argument at 16) that the module doc describes."""
    audit, nr = _TABLES[arch]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, errno = 0x7FFF0000, 0x80000000, 0x00050000
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, audit), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if arch == "x86_64":  # the x32 ABI numbers the same calls differently: refused as a whole
        prog += [(jge, 0, 1, _X32), (ret, 0, 0, errno | _EPERM)]
    prog += [(jeq, 0, 1, nr["clone3"]), (ret, 0, 0, errno | _ENOSYS)]  # glibc falls back to clone
    prog += [(jeq, 0, 4, nr["clone"]), (ld, 0, 0, 16), (jset, 0, 1, _CLONE_THREAD), (ret, 0, 0, allow),
             (ret, 0, 0, errno | _EPERM)]
    for name in _OWN_PID_ONLY:
        prog += [(jeq, 0, 4, nr[name]), (ld, 0, 0, 16), (jeq, 0, 1, own_pid), (ret, 0, 0, allow),
                 (ret, 0, 0, errno | _EPERM)]
    for name in _DENIED:
        if name in nr:  # arm64 has no fork or vfork
            prog += [(jeq, 0, 1, nr[name]), (ret, 0, 0, errno | _EPERM)]
    prog.append((ret, 0, 0, allow))
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def _seccomp() -> None:
    """Install :func:`_bpf` for this process (one thread: just forked) and its future threads."""
    import ctypes

    program = _bpf(os.uname().machine, os.getpid())
    buffer = ctypes.create_string_buffer(program)

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):  # NO_NEW_PRIVS, SECCOMP
        raise OSError(ctypes.get_errno(), "seccomp filter refused")


def _limits(limits: dict, sandboxed: bool) -> None:
    with open("/proc/self/status") as status:  # what the server already mapped (torch: about 3 GB)
        mapped = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmSize:"))
    values = {resource.RLIMIT_AS: mapped + limits["memory"], resource.RLIMIT_CPU: limits["cpu_seconds"],
              resource.RLIMIT_FSIZE: limits["file_size"], resource.RLIMIT_NOFILE: limits["open_files"],
              resource.RLIMIT_CORE: 0, resource.RLIMIT_MSGQUEUE: 0}
    if sandboxed:  # counted per user namespace: outside one it would count all of the user's processes
        values[resource.RLIMIT_NPROC] = limits["threads"]
    for which, value in values.items():
        resource.setrlimit(which, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _to_numpy(value, np, torch):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _make_probe(namespace: dict, stdout, parent=None):
    """The in-kernel half of ``checks.probe``: same conversion, same per-case answers. A copy, not an
    import: the kernel cannot import ``retrievalkit`` (the reference answers live there);
    ``tests/teaching/test_grading.py`` checks that both give the same answers. ``parent`` (the
    shell's ``get_parent``) re-attaches ``stdout`` to the running cell: ipykernel attaches only
    the current ``sys.stdout``, so one a submission replaced would answer for an old cell."""
    import base64
    import pickle
    from contextlib import redirect_stderr, redirect_stdout

    import numpy as np
    import torch

    dumps, loads, b64decode, write, flush = json.dumps, pickle.loads, base64.b64decode, stdout.write, stdout.flush
    sink = open(os.devnull, "w")  # what the function prints while probed

    def probe(name: str, nonce: str, blob: str) -> None:
        fn = namespace.get(name)
        if not callable(fn):
            answer = {"missing": True}
        else:
            answer = {"outputs": []}
            for args, kwargs in loads(b64decode(blob)):
                try:
                    with redirect_stdout(sink), redirect_stderr(sink):
                        value = _to_numpy(fn(*args, **kwargs), np, torch)
                    answer["outputs"].append({"shape": list(value.shape), "values": value.ravel().tolist()})
                except NotImplementedError:
                    answer = {"not_attempted": True}
                    break
                except BaseException as exc:  # SystemExit too: the student's fault, reported per case
                    answer["outputs"].append({"error": f"{type(exc).__name__}: {exc}"[:300]})
        if parent is not None:
            stdout.set_parent(parent())
        write(f"{nonce} {dumps(answer)}\n")
        flush()

    return probe


def _kernel(root: str, request: dict, sandboxed: bool) -> None:
    """In the forked child: limits, seccomp, then ipykernel (never returns)."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 1 << 16)  # the server's pipes and pidfds
    work = os.path.join(root, "work")
    os.chdir(work)
    os.environ.clear()
    os.environ.update(request["env"])
    import tempfile

    tempfile.tempdir = None
    _limits(request["limits"], sandboxed)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: dies with the server
        _seccomp()
    import torch
    from ipykernel.kernelapp import IPKernelApp

    torch.set_num_threads(1)  # submissions run in parallel, one core each
    sys.path[:] = [p for p in sys.path if p]  # not the working folder
    app = IPKernelApp.instance()
    app.initialize(["-f", request["connection_file"], "--HistoryManager.enabled=False",
                    "--IPKernelApp.capture_fd_output=False"])
    app.shell.keepkernel_on_exit = True  # exit() and quit() end a cell, not the kernel
    app.shell.user_ns["__rk_probe__"] = _make_probe(app.shell.user_ns, sys.stdout, app.shell.get_parent)
    app.start()


class _Server:
    """The zygote's state: its folder, its mode and the kernel it forked (at most one)."""

    def __init__(self, root: str, sandboxed: bool):
        self.root, self.sandboxed, self.child, self.pidfd = root, sandboxed, None, None

    def report(self, message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def end(self) -> None:
        """End whatever a kernel left: in the sandbox every process but this one (and its init)."""
        if self.sandboxed:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.child is not None:
            try:
                os.killpg(self.child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.reap(block=True)

    def reap(self, block: bool = False) -> None:
        if self.child is None:
            return
        try:
            done = os.waitpid(self.child, 0 if block else os.WNOHANG)[0]
        except ChildProcessError:
            done = self.child
        if done:
            os.close(self.pidfd)
            self.report({"exit": self.child})
            self.child = self.pidfd = None

    def spawn(self, request: dict) -> None:
        self.end()
        for name in os.listdir(self.root):  # what the previous kernel left
            path = os.path.join(self.root, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        conn = os.path.join(self.root, f"c-{request['token']}")
        os.mkdir(conn, 0o700)
        os.mkdir(os.path.join(self.root, "work"), 0o700)
        info = {**request["connection"], "ip": os.path.join(conn, "k")}
        request["connection_file"] = os.path.join(conn, "kernel.json")
        with open(request["connection_file"], "w") as f:
            json.dump(info, f)
        pid = os.fork()
        if pid == 0:
            try:
                _kernel(self.root, request, self.sandboxed)
            finally:
                os._exit(1)
        self.child, self.pidfd = pid, os.pidfd_open(pid)
        self.report({"pid": pid})


def _zygote(root: str, sandboxed: bool) -> None:
    import ctypes
    import select

    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: kernels cannot trace or read this process
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:  # not installed, or another ipykernel version: nothing lost
            pass
    server = _Server(root, sandboxed)
    server.report({"ready": os.getpid()})
    buffered = b""
    while True:
        ready = select.select([0] + ([server.pidfd] if server.pidfd is not None else []), [], [])[0]
        if server.pidfd in ready:
            server.reap()
        if 0 not in ready:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:  # the grader is gone: end the kernel, skip the interpreter's slow teardown
            server.end()
            os._exit(0)
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            request = json.loads(line)
            if "spawn" in request:
                server.spawn(request["spawn"])
            elif request.get("kill") == server.child:
                server.end()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--zygote" and sys.argv[3] in ("sandboxed", "unsafe"):
        _zygote(sys.argv[2], sys.argv[3] == "sandboxed")
    else:
        sys.exit("usage: python -I sandbox.py --zygote ROOT sandboxed|unsafe")


if __name__ == "__main__":
    main()
