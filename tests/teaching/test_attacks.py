"""The attacks of issue 17, and new ones, as hostile students in one batch among honest ones.

Each hostile notebook is the solution of exercise 1 with an attack added (so its expected score
is 7 minus what the attack replaced). The batch is graded by the command line in a subprocess
whose environment holds an instructor's secret, two kernels at once. Asserted: every attacker's
exact score, every honest student's exact score, the batch complete (a row per notebook), the
checkout, the honest notebooks and the results untouched, no secret or solution text in any
output, the grader's memory bounded, and the package pasted by a student flagged.
"""
import csv
import hashlib
import inspect
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import retrievalkit.pooling
from sandboxing import POOLING, needs_sandbox, pooling_notebook

ROOT = Path(__file__).resolve().parents[2]
FULL = {"window_pool": 2, "mac": 1, "spoc": 2, "gem": 2}
MARK = f"rk-attack-{secrets.token_hex(6)}"  # written by every attack that writes; must appear nowhere
SECRET = f"instructor-secret-{secrets.token_hex(8)}"
TARGETS = [ROOT / "retrievalkit" / "teaching" / "grading.py", ROOT / "retrievalkit" / "pooling.py",
           ROOT / "solutions" / "01_pooling.ipynb"]

# issue 17, 1: another copy of the course found on disk and loaded by file name
GLOB_COPY = """import glob, importlib.util, os
found = [p for top in os.listdir('/') if top not in ('proc', 'dev', 'sys')
         for p in glob.glob(f'/{top}/**/retrievalkit/pooling.py', recursive=True)]
spec = importlib.util.spec_from_file_location('copy', found[0])
copy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(copy)
gem = copy.gem
"""
# 4: importlib.import_module
IMPORT_MODULE = "import importlib\nmac = importlib.import_module('retrievalkit.pooling').mac\n"
# 2: a file descriptor of / used as dir_fd: read solutions, notebooks, environments; write anywhere;
# list and readlink; what it got is raised in spoc, so it would reach the feedback
DIR_FD = f"""import os
root = os.open('/', os.O_RDONLY)
got = []
for path in {[str(p) for p in TARGETS]!r} + ['/proc/%s/environ' % p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        got.append(os.read(os.open(path.lstrip('/'), os.O_RDONLY, dir_fd=root), 4000))
    except OSError as e:
        got.append(repr(e))
for path in {[str(p) for p in TARGETS]!r} + ['{{SUBS}}/honest_0/01_pooling.ipynb']:
    try:
        fd = os.open(path.lstrip('/'), os.O_WRONLY | os.O_APPEND, dir_fd=root)
        os.write(fd, b'{MARK}')
    except OSError:
        pass
got.append(os.listdir(root))
for fd in os.listdir('/proc/self/fd'):
    try:
        got.append(os.readlink(f'/proc/self/fd/{{fd}}'))
    except OSError:
        pass
def spoc(x):
    raise RuntimeError(repr(got)[-290:])
"""
# 3: file I/O in native code
NATIVE_IO = f"""import sqlite3, torch, torchvision.io
for path in {[str(p) for p in TARGETS]!r}:
    for attempt in [lambda: torch.from_file(path, size=10, dtype=torch.uint8),
                    lambda: torchvision.io.read_file(path),
                    lambda: torchvision.io.write_file(path, torch.frombuffer(bytearray(b'{MARK}'), dtype=torch.uint8)),
                    lambda: sqlite3.connect(path + '-{MARK}.db').execute('create table t (x)')]:
        try:
            attempt()
        except Exception:
            pass
"""
# 5: ctypes raw memory, processes through libc, a process left behind to rewrite scores.csv, gdb
CTYPES = """import ctypes, os
libc = ctypes.CDLL(None)
buf = ctypes.create_string_buffer(64)
ctypes.memset(buf, 0, 64)
ctypes.memmove(buf, b'anything', 8)
if libc.fork() == 0:
    os.system('sleep 5; echo {MARK} > ../scores.csv; gdb -p 1 -batch -ex "call system(\\"true\\")"')
    os._exit(0)
libc.execve(b'/usr/bin/gdb', None, None)
"""
# 6: every process it can name, killed through pidfds and kill(-1); new: its own warm server, through
# SIGIO turned SIGKILL (allowed: same user), which loses only its own kernel (the server restarts)
KILL = """import os, signal, fcntl
for pid in range(1, 500):
    try:
        signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)
    except OSError:
        pass
for pid in [-1, 1, os.getppid()]:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""
KILL_SERVER = """import os, fcntl, signal, time
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())
fcntl.fcntl(r, fcntl.F_SETSIG, signal.SIGKILL)
fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)
os.write(w, b'x')
time.sleep(2)  # dies here: the server's death takes the sandbox, this kernel included
"""
# 7: other students' kernels: connection files, sockets, /proc of others; injected code would lower them
REACH = """import glob, json, os, zmq
found = glob.glob('/tmp/**/*.json', recursive=True) + glob.glob('/proc/*/root/tmp/**', recursive=True)
for f in found:
    try:
        info = json.load(open(f))
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.connect(f"{info['transport']}://{info['ip']}-{info['shell_port']}")
    except Exception:
        pass
"""
# 8: memory that RLIMIT_DATA did not count
MMAP = """import mmap
try:
    hog = mmap.mmap(-1, 6 << 30, flags=mmap.MAP_SHARED)
    for i in range(0, 6 << 30, 4096):
        hog[i] = 1
except OSError:
    pass
"""
# 9: iopub flood: 30 messages of 200 MB, each decoded by the old grader before the cap
FLOOD = "import sys\nfor _ in range(30):\n    sys.stdout.write('x' * (200 << 20))\n    sys.stdout.flush()\n"
SPIN = "while True:\n    pass\n"
# new: a thread bomb, filling /tmp, new namespaces
THREADS = """import threading
try:
    while True:
        threading.Thread(target=threading.Event().wait, daemon=True).start()
except RuntimeError:
    pass
"""
FILL = "try:\n    f = open('/tmp/work/fill', 'wb')\n    while True:\n        f.write(b'x' * (1 << 20))\nexcept OSError:\n    pass\n"
# part 2: the package's own gem pasted, names changed, helpers stubbed
PASTE = ("import torch\ndef check_maps(t):\n    return (t[None], True) if t.dim() == 3 else (t, False)\n"
         "def positive_number(v, name):\n    return float(v)\ndef check_finite(v, name):\n    pass\n"
         "def unbatch(out, single):\n    return out[0] if single else out\n"
         + inspect.getsource(retrievalkit.pooling.gem).replace("x4", "maps").replace("squeezed", "single"))


def _submission(replace: dict[str, str] = (), prepend: dict[str, str] = ()) -> str:
    return nbformat.writes(pooling_notebook(replace, prepend))


NO_ROOT = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1))\n"
# path -> (notebook, expected total or None: not graded, words its feedback must hold)
HOSTILE = {
    "mallory_copy/01_pooling.ipynb": (_submission({"gem": GLOB_COPY, "mac": IMPORT_MODULE}), 4, []),
    "mallory_fd/01_pooling.ipynb": (_submission({"spoc": DIR_FD}), 5, ["RuntimeError"]),
    "mallory_native/01_pooling.ipynb": (_submission(prepend={"mac": NATIVE_IO}), 7, []),
    "mallory_ctypes/01_pooling.ipynb": (_submission(prepend={"gem": CTYPES}), 7, []),
    "mallory_kill/01_pooling.ipynb": (_submission(prepend={"window_pool": KILL}), 7, []),
    "mallory_server/01_pooling.ipynb": (_submission(prepend={"mac": KILL_SERVER}), 6, ["kernel died"]),
    "mallory_reach/01_pooling.ipynb": (_submission(prepend={"spoc": REACH}), 7, []),
    "mallory_mmap/01_pooling.ipynb": (_submission(prepend={"gem": MMAP}), 7, []),
    "mallory_flood/01_pooling.ipynb": (_submission(prepend={"mac": FLOOD}), 6, []),
    "mallory_threads/01_pooling.ipynb": (_submission(prepend={"window_pool": THREADS}), 7, []),
    "mallory_fill/01_pooling.ipynb": (_submission(prepend={"spoc": FILL}), 7, []),
    "mallory_paste/01_pooling.ipynb": (_submission({"gem": PASTE}), 7, []),
    **{f"spinner/{i}.ipynb": (_submission(prepend={"window_pool": SPIN}), None, ["time limit"]) for i in range(6)},
}
HONEST = {**{f"honest_{i}/01_pooling.ipynb": (_submission(), 7, []) for i in range(6)},
          "honest_partly/01_pooling.ipynb": (_submission({"gem": NO_ROOT}), 5.5, ["forgets the final 1/p root"])}
# 10: submissions that are symbolic links (to the solutions, another student, a system file), a
# 29 MB notebook, a named pipe: not graded, 0
LINKS = {"mallory_link__01_pooling.ipynb": POOLING, "mallory_steal/01_pooling.ipynb": "../honest_0/01_pooling.ipynb",
         "mallory_host.ipynb": Path("/etc/hostname")}
# the grader's own peak: VmHWM (kB), which exec resets; ru_maxrss keeps the forking pytest worker's peak
GRADER = ("import re, sys\nfrom retrievalkit.__main__ import main\ncode = main(sys.argv[1:])\n"
          "print('maxrss', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\nsys.exit(code)\n")


def _fingerprint(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    needs_sandbox()
    subs, out = tmp_path_factory.mktemp("submissions"), tmp_path_factory.mktemp("results")
    for rel, (text, _, _) in {**HOSTILE, **HONEST}.items():
        (subs / rel).parent.mkdir(parents=True, exist_ok=True)
        (subs / rel).write_text(text.replace("{SUBS}", str(subs)), encoding="utf-8")
    for rel, target in LINKS.items():
        (subs / rel).parent.mkdir(parents=True, exist_ok=True)
        (subs / rel).symlink_to(target)
    (subs / "mallory_big.ipynb").write_text(_submission(prepend={"mac": "x = '" + "y" * (29 << 20) + "'\n"}))
    os.mkfifo(subs / "mallory_fifo.ipynb")
    before = _fingerprint([*TARGETS, *(subs / rel for rel in HONEST)])
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", GRADER, "grade", str(subs), "--out", str(out), "--seed", "5",
                          "--jobs", "2", "--cell-timeout", "3", "--timeout", "15", "--memory", "2"],
                         env={**os.environ, "RK_INSTRUCTOR_SECRET": SECRET}, cwd=subs, capture_output=True,
                         text=True, timeout=600)
    seconds = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-3000:]
    time.sleep(1)  # what a process left behind would do after the grader exits
    with open(out / "scores.csv", newline="", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    outputs = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8", errors="replace")
               for p in out.rglob("*") if p.is_file() and p.suffix in (".md", ".csv")}
    print(f"\nhostile batch: {len(rows)} notebooks ({len(HONEST)} honest) in {seconds:.1f} s on 2 kernels")
    return rows, outputs, run.stdout, before, subs, seconds


def test_every_attacker_and_every_honest_student_gets_the_exact_score(batch):
    rows, outputs, _, _, _, _ = batch
    expected = {rel: total for rel, (_, total, _) in {**HOSTILE, **HONEST}.items() if total is not None}
    expected |= dict.fromkeys([*LINKS, "mallory_big.ipynb", "mallory_fifo.ipynb"], 0)
    assert set(rows) == set(expected) | {f"spinner/{i}.ipynb" for i in range(6)}  # the batch is complete
    assert {rel: float(rows[rel]["total"]) for rel in expected} == expected
    for rel in [*LINKS, "mallory_big.ipynb", "mallory_fifo.ipynb"]:
        assert "could not be graded" in rows[rel]["note"], rows[rel]
    assert "symbolic link" in rows["mallory_link__01_pooling.ipynb"]["note"]
    assert "larger than 8 MB" in rows["mallory_big.ipynb"]["note"]
    for rel, (_, _, words) in {**HOSTILE, **HONEST}.items():
        for word in words:
            assert word in outputs[f"feedback/{rel.split('/')[0]}.md"], (rel, word)


def test_one_students_spinning_notebooks_share_one_time_limit(batch):
    rows, _, _, _, _, seconds = batch
    spun = [float(rows[f"spinner/{i}.ipynb"]["total"]) for i in range(6)]
    assert all(total <= 5 for total in spun)  # window_pool never returns
    assert seconds < 150, seconds  # six notebooks of 15 s each would take 90 s in the spinner's slot alone


def test_nothing_outside_the_sandbox_was_touched_or_leaked(batch):
    rows, outputs, stdout, before, subs, _ = batch
    assert _fingerprint([*TARGETS, *(subs / rel for rel in HONEST)]) == before  # checkout, queued notebooks
    for text in [stdout, *outputs.values()]:
        assert SECRET not in text and MARK not in text  # no secret; nothing written came back
        assert "BEGIN SOLUTION" not in text
    assert not [p for p in ROOT.glob(f"**/*{MARK}*")]  # no file created in the checkout
    assert str(ROOT) not in outputs["feedback/mallory_fd.md"]  # what it listed is the sandbox, not the host


def test_the_graders_memory_stays_bounded_under_the_flood(batch):
    _, _, stdout, _, _, _ = batch
    maxrss_kb = int(re.search(r"maxrss (\d+)", stdout).group(1))
    assert maxrss_kb < 2_500_000, maxrss_kb  # the old grader reached 5 GB


def test_the_pasted_package_is_flagged_for_the_instructor(batch):
    _, outputs, stdout, _, _, _ = batch
    similar = outputs["similarity.csv"]
    assert re.search(r"gem,mallory_paste \(mallory_paste/01_pooling.ipynb\),retrievalkit: retrievalkit.pooling.gem", similar)
    assert "mallory_paste" in stdout and "near-identical" in stdout


def test_similarity_sees_through_renaming_and_leaves_short_answers_alone():
    from retrievalkit.teaching.grading import Graded
    from retrievalkit.teaching.similarity import similar

    spoc = [c.source for c in nbformat.read(POOLING, as_version=4).cells
            if c.metadata.get("nbgrader", {}).get("grade_id") == "spoc"][0]
    renamed = re.sub(r"\bH\b", "rows", re.sub(r"\bW\b", "cols", spoc)).replace("    ", "  ")
    own = ("def spoc(x):\n    h, w = x.shape[-2], x.shape[-1]\n    out = []\n    for i in range(h):\n"
           "        for j in range(w):\n            out.append(x[..., i, j] * weight(i, j, h, w))\n"
           "    return sum(out)\ndef weight(i, j, h, w):\n    import math\n"
           "    return math.exp(-((i - (h - 1) / 2) ** 2 + (j - (w - 1) / 2) ** 2) / (2 * (min(h, w) / 3) ** 2))\n")
    short = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)\n"
    graded = [Graded("ann", Path("ann.ipynb"), sources={"spoc": spoc, "gem": short}),
              Graded("bob", Path("bob.ipynb"), sources={"spoc": renamed, "gem": short}),
              Graded("cid", Path("cid.ipynb"), sources={"spoc": own, "gem": short}),
              Graded("dan", Path("dan.ipynb"), sources={"gem": PASTE})]
    pairs = {(p.task, p.first.split()[0], p.second.split()[0]): p.score for p in similar(graded)}
    assert set(pairs) == {("spoc", "ann", "bob"), ("gem", "dan", "retrievalkit:")}, pairs
    assert pairs[("spoc", "ann", "bob")] == 1.0


def test_a_killed_grader_takes_its_sandboxes_with_it(tmp_path):
    """Nothing outlives the grader: its sandboxes die with it (``--die-with-parent``), so the
    connection files it leaves (removed by the next run) open no kernel."""
    needs_sandbox()
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "spinner.ipynb").write_text(_submission(prepend={"window_pool": SPIN}), encoding="utf-8")
    grader = subprocess.Popen([sys.executable, "-m", "retrievalkit", "grade", str(tmp_path / "subs"), "--out",
                               str(tmp_path / "out"), "--jobs", "1", "--cell-timeout", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sandboxes: list[int] = []
        deadline = time.monotonic() + 120
        while not sandboxes and time.monotonic() < deadline:  # the slot's bwrap, once its kernel spins
            time.sleep(0.5)
            children = Path(f"/proc/{grader.pid}/task/{grader.pid}/children").read_text().split()
            sandboxes = [int(c) for c in children if b"bwrap" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert sandboxes, "no sandbox started"
        inside = [int(c) for s in sandboxes for c in Path(f"/proc/{s}/task/{s}/children").read_text().split()]
        time.sleep(3)
    finally:
        grader.kill()
        grader.wait()
    time.sleep(1)

    def running(pid: int) -> bool:  # a zombie waits for init to reap it: it runs nothing
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    assert [p for p in sandboxes + inside if running(p)] == []
