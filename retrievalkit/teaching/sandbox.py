"""The grading kernel: an IPython kernel under resource limits and an audit hook.

Run by :mod:`retrievalkit.teaching.kernels` as ``python -I sandbox.py CONFIG_JSON -f CONNECTION_FILE``
(a file path, not ``-m``: the kernel must not import :mod:`retrievalkit`), or forked from
``python -I sandbox.py --zygote``, a process that has imported torch once and forks a kernel per
request (a kernel is ready in about 0.4 s instead of the 2 to 6 s of a fresh interpreter
that imports torch). In order, a kernel

1. sets resource limits: ``RLIMIT_DATA`` (memory: private writable mappings, so torch's large
   shared-library mappings do not count, unlike ``RLIMIT_AS``), ``RLIMIT_FSIZE`` (with
   ``SIGXFSZ`` ignored, so an oversized write raises instead of killing), ``RLIMIT_CPU`` as a
   backstop and no core files (no ``RLIMIT_NPROC``: root ignores it and for other users it
   counts every thread they run; the hook below is the fork guard);
2. moves into a network namespace of its own where the OS allows it (root, or unprivileged
   user namespaces), imports what the notebooks need (numpy, torch) and starts ipykernel on its
   sockets (ipc: files, so they work across namespaces);
3. defines ``__rk_probe__`` in the user namespace, which calls a student's function on the
   cases the grader sends and prints one line ``<nonce> <json>`` of plain numbers through the
   kernel's original stdout, whatever the submission later does to ``print``, ``json`` or
   ``sys.stdout``;
4. installs an audit hook (:func:`sys.addaudithook`; Python code cannot remove it) that
   refuses, with ``PermissionError``: importing ``retrievalkit`` or a native module from outside
   the Python installation, re-importing ``_posixsubprocess``/``ctypes``;
   reading the course checkout, submissions or results, and other processes' ``/proc``
   entries; writing, creating, renaming or deleting anything outside the kernel's working
   folder; creating processes (``os.fork``, ``os.forkpty``, ``os.system``, ``os.exec*``,
   ``os.posix_spawn``, ``subprocess.Popen``) and, since ``_posixsubprocess.fork_exec`` has no
   audit event, that function is deleted beforehand; signalling other processes; network
   (connect, bind, name lookups, sendto/sendmsg); ctypes library loading, symbol lookup and raw
   memory access (torchvision, which loads its operators with ctypes, is imported before);
   ``sys.settrace``/``setprofile``, ``gc.get_objects``/``get_referrers``, subinterpreters, sqlite
   extensions and raising resource limits. (Another audit hook can be added, but cannot undo a
   refusal.)

Audit hooks are not a complete sandbox: a program that corrupts the interpreter's memory
(e.g. through ctypes objects that torch created before the hook) could in principle disable
it. They do stop every ordinary way a notebook can reach the reference, a process or the
network; for a hostile class, also run the grader where the solutions are not mounted.
"""
import json
import os
import resource
import signal
import sys

_PROCESS = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen"}
_NETWORK = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
            "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto", "socket.sendmsg",
            "socket.getservbyname", "socket.getservbyport", "socket.sethostname"}
_CTYPES = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.cdata/buffer",
           "ctypes.string_at", "ctypes.wstring_at", "ctypes.call_function", "ctypes.PyObj_FromPtr",
           "ctypes.addressof"}
_ESCAPES = {"sys.settrace", "sys.setprofile", "resource.setrlimit", "resource.prlimit",
            "cpython.PyInterpreterState_New", "sqlite3.enable_load_extension", "sqlite3.load_extension",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"}
_REFUSED = dict.fromkeys(_PROCESS, "starting a process") | dict.fromkeys(_NETWORK, "network access") \
    | dict.fromkeys(_CTYPES, "ctypes") | dict.fromkeys(_ESCAPES, "changing the sandbox")
# events whose first argument (and for rename/link/symlink the second) is a path being changed
_WRITES = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
           "os.symlink": (0, 1), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
           "os.chflags": (0,), "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
           "shutil.chown": (0,)}
_NO_REIMPORT = {"_posixsubprocess", "ctypes", "_ctypes"}
_CLONE_NEWNET, _CLONE_NEWUSER = 0x40000000, 0x10000000
# imported before the hook (once, in the zygote): the notebooks' libraries, torchvision (it loads its
# operators with ctypes, which the hook refuses) and what ipykernel's startup imports (0.1 s
# instead of 0.4 s a kernel)
_PRELOAD = ("numpy", "torch", "torchvision", "faulthandler", "pdb", "ipykernel.kernelapp", "ipykernel.ipkernel",
            "ipykernel.zmqshell", "ipykernel.debugger", "IPython.core.completerlib", "IPython.core.debugger",
            "IPython.extensions.storemagic", "tornado.platform.asyncio")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _limit(which: int, value: int) -> None:
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):  # not supported or above the inherited hard limit
        pass


def _limits(config: dict) -> None:
    _limit(resource.RLIMIT_DATA, config["memory"])
    _limit(resource.RLIMIT_FSIZE, config["file_size"])
    _limit(resource.RLIMIT_CPU, config["cpu_seconds"])
    _limit(resource.RLIMIT_CORE, 0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _to_numpy(value, np, torch):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _make_probe(namespace: dict, stdout):
    """The in-kernel half of ``checks.probe``: same conversion, same per-case answers. A copy, not an
    import: the kernel may not import ``retrievalkit`` (the reference answers live there);
    ``tests/teaching/test_grading.py`` checks that both give the same answers."""
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
        write(f"{nonce} {dumps(answer)}\n")
        flush()

    return probe


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _roots(config: dict) -> tuple[tuple[str, str], ...]:
    """``(root, kind)``, most specific first: ``"library"`` (the Python installation,
    site-packages) or ``"course"`` (what the grader hides). The most specific root decides: the
    libraries are readable even inside the checkout (a ``.venv`` there), the package itself is
    hidden even inside site-packages."""
    import site

    library = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    roots = {os.path.realpath(p): "library" for p in library}
    roots |= {os.path.realpath(p): "course" for p in config["forbidden"]}
    # this file is the hook itself, no secret: IPython reads it to format a refusal's traceback
    roots[os.path.realpath(__file__)] = "library"
    return tuple(sorted(roots.items(), key=lambda r: -len(r[0])))


def _install_hook(config: dict, roots: tuple[tuple[str, str], ...]) -> None:
    """Install the audit hook. It is one function whose state is immutable (str, tuples,
    frozensets, read-only mappings) or built in, captured now: whatever a notebook later does to
    modules, globals or builtins (``os.sep``, ``os.path``, ``builtins.isinstance``, this module's
    globals through ``__rk_probe__.__globals__``), and whatever it reads from the hook's frame in a
    traceback, cannot change what it refuses. Paths are resolved by hand from C functions."""
    from pathlib import PosixPath
    from stat import S_ISLNK
    from types import MappingProxyType

    lstat, readlink, getcwd, fspath, getpid = os.lstat, os.readlink, os.getcwd, os.fspath, os.getpid
    str_, bytes_, int_, type_, isinstance_, len_ = str, bytes, int, type, isinstance, len
    as_str, decode = str.__str__, bytes.decode  # exact copies: a subclass cannot fool the comparisons
    refused_error, os_error, write_flags = PermissionError, OSError, _WRITE_FLAGS
    refusal = "grading sandbox: {} is not allowed while grading"
    refused = MappingProxyType(dict(_REFUSED))
    writes = MappingProxyType(dict(_WRITES))
    no_reimport = frozenset(_NO_REIMPORT)
    workdir = os.path.realpath(config["workdir"]).rstrip("/")
    own = str(getpid())

    def hook(event: str, args: tuple) -> None:
        if event == "open" or event in writes or event == "import":
            if event == "import":
                name = as_str(args[0])
                if name == "retrievalkit" or name.startswith("retrievalkit."):
                    raise refused_error(refusal.format("importing retrievalkit (the reference answers)"))
                if name in no_reimport:
                    raise refused_error(refusal.format(f"importing {name}"))
                paths = (args[1],) if args[1] is not None else ()  # a native module loaded from a file
            elif event in writes:
                paths = []
                for i in writes[event]:
                    if i < len_(args) and args[i] is not None:
                        paths.append(args[i])
            else:
                paths = (args[0],)
            for path in paths:
                kind = type_(path)
                if kind is int_:  # a file descriptor
                    continue
                if kind is PosixPath:
                    path = fspath(path)
                    kind = type_(path)
                if isinstance_(path, bytes_):
                    path = decode(path, "utf-8", "replace")
                elif isinstance_(path, str_):
                    path = as_str(path)
                else:
                    raise refused_error(refusal.format(f"a {kind.__name__} as a path"))
                # the real path: absolute, without ".", ".." or symbolic links
                if not path.startswith("/"):
                    path = getcwd() + "/" + path
                done, todo, links = [], path.split("/")[::-1], 0
                while todo:
                    part = todo.pop()
                    if part == "" or part == ".":
                        continue
                    if part == "..":
                        if done:
                            done.pop()
                        continue
                    here = "/" + "/".join(done) + ("/" if done else "") + part
                    try:
                        link = S_ISLNK(lstat(here).st_mode)
                    except os_error:
                        link = False
                    if link and links < 40:
                        links += 1
                        target = readlink(here)
                        if target.startswith("/"):
                            done = []
                        todo.extend(target.split("/")[::-1])
                    else:
                        done.append(part)
                real = "/" + "/".join(done)
                place = None
                for root, where in roots:
                    if real == root or real.startswith(root.rstrip("/") + "/"):
                        place = where
                        break
                mode, flags = (args[1], args[2]) if event == "open" else ("", 0)
                changing = (event in writes or (type_(flags) is int_ and flags & write_flags)
                            or (type_(mode) is str_ and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)))
                if changing and not (real == workdir or real.startswith(workdir + "/") or real == "/dev/null"):
                    raise refused_error(refusal.format(f"changing {real} (outside the working folder)"))
                if place == "course":
                    raise refused_error(refusal.format(f"reading {real} (course material)"))
                if real.startswith("/proc/"):
                    part = real.split("/")[2]
                    if (part.isdigit() and part != own) or real.endswith("/mem"):
                        raise refused_error(refusal.format(f"reading {real}"))
                if event == "import" and place != "library":  # a native module from elsewhere
                    raise refused_error(refusal.format(f"loading {real}"))
        elif event in refused:
            raise refused_error(refusal.format(f"{refused[event]} ({event})"))
        elif (event == "os.kill" or event == "os.killpg") and args[0] != getpid() and args[0] != 0:  # 0: own group
            raise refused_error(refusal.format(f"signalling another process ({event})"))

    sys.addaudithook(hook)


def _isolate_network() -> None:
    """A network namespace of its own (no interfaces but a down loopback) where the OS allows:
    the hook cannot see what native code such as pyzmq does. The kernel talks over ipc sockets."""
    import ctypes

    try:
        unshare = ctypes.CDLL(None, use_errno=True).unshare
    except AttributeError:  # not Linux
        return
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
        if unshare(flags) == 0:
            return


def _kernel(argv: list[str]) -> None:
    """``argv``: the config (JSON), then ipykernel's arguments."""
    config = json.loads(argv[0])
    _limits(config)
    _isolate_network()
    _preload()  # a no-op in a kernel forked from the zygote
    import torch
    from ipykernel.kernelapp import IPKernelApp

    torch.set_num_threads(1)  # submissions run in parallel, one core each
    app = IPKernelApp.instance()
    app.initialize(argv[1:])
    app.shell.keepkernel_on_exit = True  # exit() and quit() end a cell, not the kernel
    app.shell.user_ns["__rk_probe__"] = _make_probe(app.shell.user_ns, sys.stdout)
    roots = _roots(config)
    workdir = os.path.realpath(config["workdir"])

    def hidden(path: str) -> bool:  # the most specific root decides (a .venv inside the checkout stays)
        real = os.path.realpath(path)
        kind = next((k for r, k in roots if _under(real, r)), None)
        return kind == "course" or _under(real, workdir)

    sys.path[:] = [p for p in sys.path if p and not hidden(p)]
    import _posixsubprocess
    import subprocess

    del _posixsubprocess.fork_exec, subprocess._fork_exec  # unaudited: would bypass "subprocess.Popen"
    _install_hook(config, roots)
    app.start()


def _preload() -> None:
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed, or another ipykernel version: nothing lost
            pass


def _zygote() -> None:
    """Import once, fork a kernel per request: one JSON line ``{"argv", "env", "cwd"}`` in,
    ``{"pid"}`` out. A kernel is its own session (process group) and is reaped here."""
    _preload()

    def reap(signum, frame):
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass

    signal.signal(signal.SIGCHLD, reap)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                os.chdir(request["cwd"])
                os.environ.clear()
                os.environ.update(request["env"])
                import tempfile

                tempfile.tempdir = None
                _kernel([*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"])  # exit with the zygote
            finally:
                os._exit(0)
        print(json.dumps({"pid": pid}), flush=True)


def main() -> None:
    if sys.argv[1:] == ["--zygote"]:
        _zygote()
    else:
        _kernel(sys.argv[1:])


if __name__ == "__main__":
    main()
