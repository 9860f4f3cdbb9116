"""The grading kernels' sandbox: a bubblewrap (https://github.com/containers/bubblewrap) command.

Built on what a kernel may see, not on what it may not: a fresh root holding, read-only, the
system's shared libraries (``/usr/lib``), the Python installation, the virtual environment's
``lib`` (the packages; anything named ``*retrievalkit*`` or ``__editable__*`` in a site folder,
and the package folder itself, covered by an empty mount) and ``sandbox.py`` at ``/rk``; a
size-limited private ``/tmp`` (working and connection folders); a read-only ``/dev`` with the usual
devices; ``/proc`` of its own PID namespace. Nothing else: no course checkout, submissions,
results, home folders or ``/etc`` (but ``ld.so.cache``). Its own user, PID, mount, network, IPC,
UTS and cgroup namespaces (``--unshare-all``), no further user namespaces (``--disable-userns``),
no capabilities, a new session (no terminal injection), an empty environment, killed with the
grader (``--die-with-parent``). Inside it runs as ``nobody``; run by root, bubblewrap itself is
started as an unprivileged host user of its own (``2000000000 + slot``) when every bound path is
readable by others (else as root, whose user namespace still gives it no capability outside).

The tmpfs bounds its bytes (``--size``) but not its files: each empty file or folder costs the
host about 1.3 kB of kernel memory that no limit counts (a kernel made 220,000 in 4 s), and
neither bwrap (no ``nr_inodes``) nor an unprivileged grader (no memory cgroup) can cap them.
:func:`bounded` therefore polls the tmpfs's inode count from the host while a cell runs and stops
the cell past a limit: at most the limit plus what is made in one poll (0.2 s, about 15,000).

Needs Linux with unprivileged user namespaces (or root) and bubblewrap 0.8 or newer (``--size``,
``--disable-userns``): Debian/Ubuntu ``apt-get install bubblewrap``; ``python3 course.py test``
installs it when run as root.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import site
import stat
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

__all__ = ["SandboxUnavailable", "TooManyFiles", "unavailable", "command", "files_used", "bounded"]

SANDBOX = Path(__file__).resolve().with_name("sandbox.py")
_PACKAGE = Path(__file__).resolve().parents[1]
_UID = 2_000_000_000  # + slot: the host user a root grader runs a sandbox as
_VENV = "/venv"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create the sandbox on this machine."""


class TooManyFiles(RuntimeError):
    """A kernel made more files and folders in its sandbox's ``/tmp`` than its limit."""


def _python() -> tuple[list[tuple[str, str]], str]:
    """``(host, sandbox)`` paths of the Python installation and the sandbox's interpreter."""
    base, prefix = Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()
    binds = [] if base == Path("/usr") else [(str(base), str(base))]
    executable = str(Path(sys.executable).resolve())
    if prefix == base:  # no virtual environment: the interpreter where it is
        return binds, executable
    binds += [(str(prefix / "lib"), f"{_VENV}/lib"), (str(prefix / "pyvenv.cfg"), f"{_VENV}/pyvenv.cfg"),
              (executable, f"{_VENV}/bin/python")]
    if (prefix / "lib64").is_dir() and not (prefix / "lib64").is_symlink():
        binds.append((str(prefix / "lib64"), f"{_VENV}/lib64"))
    return binds, f"{_VENV}/bin/python"


def _system() -> list[str]:
    """Read-only binds and symlinks of the shared libraries, as the host lays them out."""
    args = []
    for path in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32"):
        p = Path(path)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), path]
        elif p.is_dir():
            args += ["--ro-bind", path, path]
    if Path("/etc/ld.so.cache").is_file():
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _hidden(binds: list[tuple[str, str]]) -> list[str]:
    """Empty mounts over the course package wherever a bind would show it (an editable install's
    finder and ``.pth``, an installed copy, the package folder inside a bound tree)."""
    hide = {str(_PACKAGE)}
    for folder in site.getsitepackages():
        if Path(folder).is_dir():
            hide |= {str(p) for p in Path(folder).iterdir() if "retrievalkit" in p.name or p.name.startswith("__editable__")}
    args = []
    for path in sorted(hide):
        for host, inside in binds:
            if path == host or path.startswith(host.rstrip("/") + "/"):
                target = inside + path[len(host):]
                args += (["--tmpfs", target, "--remount-ro", target] if Path(path).is_dir()
                         else ["--ro-bind", "/dev/null", target])
    return args


def _others_can_read(path: str) -> bool:
    p = Path(path)
    for folder in p.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(p.stat().st_mode & stat.S_IROTH)


def command(tmp_bytes: int, info_fd: int, slot: int) -> tuple[list[str], int | None]:
    """The bwrap command line of a warm server, and the host user to run it as (``None``: as is)."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    python, interpreter = _python()
    binds = [*python, (str(SANDBOX), "/rk/sandbox.py")]
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", "65534", "--gid", "65534", "--hostname", "grading", "--clearenv", "--cap-drop", "ALL",
            *_system()]
    for host, inside in binds:
        argv += ["--ro-bind", host, inside]
    argv += [*_hidden(binds), "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(tmp_bytes), "--perms", "0700", "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp",
             "--info-fd", str(info_fd), interpreter, "-I", "-B", "/rk/sandbox.py", "--zygote", "/tmp", "sandboxed"]
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0 and all(_others_can_read(h) for h, _ in binds):
        user = _UID + slot
    return argv, user


@functools.cache
def unavailable() -> str | None:
    """Why the sandbox cannot run here (``None``: it can): a trial run of its command."""
    if not sys.platform.startswith("linux"):
        return "the sandbox needs Linux (namespaces, seccomp)"
    try:
        argv, user = command(1 << 20, 2, 0)  # fd 2 exists; the trial prints nothing there
    except SandboxUnavailable as exc:
        return str(exc)
    i = argv.index("--info-fd")
    argv[i:] = [argv[i + 2], "-I", "-c", "import os; open('/tmp/x', 'w').write('ok'); print(os.getuid())"]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, user=user, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not run ({exc})"
    if run.returncode != 0 or run.stdout.strip() != "65534":
        return f"bubblewrap could not create the sandbox: {(run.stderr.strip() or run.stdout.strip())[:300]}"
    return None


def files_used(tmp: str) -> int:
    """Files, folders and sockets on the tmpfs at ``tmp`` (a sandbox's ``/tmp`` seen from the host,
    ``/proc/<sandbox init>/root/tmp``): its inodes in use."""
    st = os.statvfs(tmp)
    return st.f_files - st.f_ffree


T = TypeVar("T")


async def bounded(work: Awaitable[T], tmp: str | None, limit: int, every: float = 0.2) -> T:
    """``await work`` while polling :func:`files_used` of ``tmp`` every ``every`` seconds: past
    ``limit``, ``work`` is cancelled and :class:`TooManyFiles` raised. ``tmp=None``: no polling
    (a kernel outside the sandbox writes to the host's ``/tmp``, whose count says nothing of it)."""
    task = asyncio.ensure_future(work)
    try:
        while tmp is not None and not task.done():
            await asyncio.wait({task}, timeout=every)
            with contextlib.suppress(OSError):  # the sandbox ended: the kernel's end is reported
                if not task.done() and files_used(tmp) > limit:
                    raise TooManyFiles(f"created more than {limit} files and folders in /tmp")
        return await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
