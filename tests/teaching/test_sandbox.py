"""The grading sandbox from inside: each cell below runs in one sandboxed kernel and asserts what
it may and may not do (a cell that ends "ok" passed). The batch-level attacks, with scores, are
in test_attacks.py."""
import json
import os
from pathlib import Path

import pytest

from retrievalkit.teaching import grading, jail, kernels, sandbox

from sandboxing import LIMITS, needs_sandbox, run_cells

ROOT = Path(__file__).resolve().parents[2]

# name -> a cell that must end without error inside the sandbox
INSIDE = {
    "runs as nobody, in its own PID namespace (only its init, the warm server and itself)":
        "import os\nassert (os.getuid(), os.getgid()) == (65534, 65534)\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "assert pids == sorted({1, os.getppid(), os.getpid()}), pids",
    "sees only the allowed paths: no checkout, no home, no /etc but ld.so.cache":
        f"import os\nassert not os.path.exists({str(ROOT)!r})\n"
        "assert set(os.listdir('/')) <= {'usr', 'lib', 'lib64', 'lib32', 'etc', 'root', 'venv', 'rk', 'proc', 'dev',"
        " 'tmp'}, os.listdir('/')\nassert os.listdir('/etc') == ['ld.so.cache']\n"
        "assert os.listdir('/rk') == ['sandbox.py']",
    "a file descriptor of / reaches the same view (the dir_fd attack)":
        "import os\nfd = os.open('/', os.O_RDONLY)\nassert 'work' not in os.listdir(fd)\n"
        f"assert not os.path.exists({str(ROOT / 'solutions')!r})",
    "the package is not importable, by any route":
        "import importlib, importlib.util\nassert importlib.util.find_spec('retrievalkit') is None\n"
        "try:\n    importlib.import_module('retrievalkit.pooling')\n    raise AssertionError('imported')\n"
        "except ModuleNotFoundError:\n    pass",
    "nothing outside the private /tmp can be written":
        "import os\nfor path in ['/rk/sandbox.py', '/venv/lib/x', '/usr/lib/x', '/x', '/dev/shm/x', '/dev/x', '/proc/x']:\n"
        "    try:\n        open(path, 'a').close()\n        raise AssertionError(path)\n    except OSError:\n        pass\n"
        "open('/tmp/work/mine.txt', 'w').write('ok')",
    "native file I/O sees the same view (torch, sqlite3)":
        f"import torch, sqlite3\ntry:\n    torch.from_file({str(ROOT / 'README.md')!r}, size=1, dtype=torch.uint8)\n"
        "    raise AssertionError('read')\nexcept RuntimeError:\n    pass\n"
        "try:\n    sqlite3.connect('/venv/x.db').execute('create table t (x)')\n    raise AssertionError('created')\n"
        "except sqlite3.OperationalError:\n    pass",
    "no process can be started, not even through ctypes":
        "import os, subprocess, ctypes\nfor start in [os.fork, lambda: subprocess.run(['true']),\n"
        "              lambda: os.posix_spawn('/bin/true', ['true'], {})]:\n"
        "    try:\n        start()\n        raise AssertionError(start)\n    except PermissionError:\n        pass\n"
        "libc = ctypes.CDLL(None, use_errno=True)\nassert libc.fork() == -1 and ctypes.get_errno() == 1\n"
        "assert libc.syscall(59, b'/bin/true', None, None) == -1  # execve",
    "no other process can be signalled, traced or read":
        "import os, signal, ctypes\nfor pid in [1, os.getppid(), -1]:\n    try:\n        os.kill(pid, 0)\n"
        "        raise AssertionError(pid)\n    except PermissionError:\n        pass\n"
        "for call in [lambda: os.pidfd_open(os.getppid()), lambda: open(f'/proc/{os.getppid()}/mem', 'rb'),\n"
        "             lambda: open(f'/proc/{os.getppid()}/environ', 'rb')]:\n"
        "    try:\n        call()\n        raise AssertionError(call)\n    except PermissionError:\n        pass\n"
        "assert ctypes.CDLL(None).ptrace(16, os.getppid(), None, None) == -1  # PTRACE_ATTACH\n"
        "os.kill(os.getpid(), 0)  # itself: allowed",
    "no network, not even loopback or the host's abstract unix sockets":
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "    raise AssertionError('connected')\nexcept OSError:\n    pass\n"
        "names = [line.split()[-1] for line in open('/proc/net/unix').read().splitlines()[1:] if '@' in line]\n"
        "assert names == [], names",
    "no environment of the grader (the sandbox's init holds PATH only)":
        "import os  # PYTEST_CURRENT_TEST: set in the grader's process while this test runs\n"
        "assert 'PYTEST_CURRENT_TEST' not in os.environ and 'VIRTUAL_ENV' not in os.environ\n"
        "assert open('/proc/1/environ', 'rb').read().split(b'\\0')[:-1] == [b'PATH=/usr/bin:/bin']",
    "memory no limit counts is refused; shared mappings count": (
        "import os, mmap\ntry:\n    os.memfd_create('x')\n    raise AssertionError('memfd')\nexcept PermissionError:\n    pass\n"
        "try:\n    mmap.mmap(-1, 6 << 30, flags=mmap.MAP_SHARED)\n    raise AssertionError('mapped')\n"
        "except OSError:\n    pass"),
    "the private /tmp is size-limited":
        "try:\n    for i in range(4):  # 60 MB each: under the file size limit, over /tmp's 128 MB\n"
        "        with open(f'/tmp/work/big{i}', 'wb') as f:\n            f.write(b'x' * (60 << 20))\n"
        "    raise AssertionError('wrote 240 MB')\nexcept OSError:\n    pass",
    "no new namespaces (a way back to privileges)":
        "import ctypes\nassert ctypes.CDLL(None).unshare(0x10000000) == -1",
    "threads work (torch, numpy) and are bounded":
        "import threading, torch, numpy\nt = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n"
        "assert float(torch.ones(3, 3).matmul(torch.ones(3)).sum()) == 9\nthreads = []\ntry:\n"
        "    for _ in range(10000):\n        threads.append(threading.Thread(target=threading.Event().wait, args=(30,),"
        " daemon=True))\n        threads[-1].start()\n    raise AssertionError('10000 threads')\n"
        "except RuntimeError:\n    pass",
}


def test_the_sandbox_allows_only_what_a_kernel_needs():
    needs_sandbox()
    out = run_cells(["import torch", *INSIDE.values()])
    for (name, code), o in zip(INSIDE.items(), out[1:]):
        assert o.kind == "ok", (name, o)


def test_without_bubblewrap_grading_refuses_unless_told_the_work_is_trusted(tmp_path, monkeypatch):
    """Fallback: no sandbox, no grading; ``unsafe_no_sandbox`` runs the same kernels with limits and
    the seccomp filter only (they then see the machine)."""
    fork = "import os\npid = os.fork()  # refused by the seccomp filter, sandbox or not\nif pid == 0:\n    os._exit(0)\n"
    nb = (ROOT / "solutions" / "01_pooling.ipynb").read_text(encoding="utf-8")
    (tmp_path / "ann.ipynb").write_text(nb, encoding="utf-8")
    (tmp_path / "bob.ipynb").write_text(nb.replace('"def mac(x):', json.dumps(fork)[:-1] + 'def mac(x):', 1),
                                        encoding="utf-8")
    monkeypatch.setattr(kernels.jail, "unavailable", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(jail.SandboxUnavailable, match="not installed"):
        grading.grade(tmp_path, limits=LIMITS, seed=2)
    ann, bob = grading.grade(tmp_path, limits=LIMITS, seed=2, unsafe_no_sandbox=True)
    assert (ann.problem, ann.total, bob.total) == (None, 7, 6)
    assert "PermissionError" in bob.tasks[1].faults[0]


def test_the_seccomp_program_is_well_formed():
    """Every table names the same calls; the program is whole instructions ending in ALLOW."""
    for arch, (_, table) in sandbox._TABLES.items():
        missing = set(sandbox._DENIED + sandbox._OWN_PID_ONLY + ("clone", "clone3")) - set(table)
        assert missing <= {"fork", "vfork"}, (arch, missing)
        program = sandbox._bpf(arch, 7)
        assert len(program) % 8 == 0 and program[-4:] == (0x7FFF0000).to_bytes(4, "little")


def test_the_stale_folders_of_a_killed_grader_are_removed(tmp_path):
    stale, live = tmp_path / f"{kernels._TMP_PREFIX}999999999-x", tmp_path / f"{kernels._TMP_PREFIX}{os.getpid()}-y"
    stale.mkdir()
    live.mkdir()
    kernels._remove_stale(tmp_path)
    assert not stale.exists() and live.exists()
