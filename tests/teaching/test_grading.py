"""Batch grading: a corpus of submissions, each with its exact expected score, graded in one batch.

The corpus is built here from ``solutions/01_pooling.ipynb`` (so it follows the notebook) and
written to a temporary folder at test time, never kept as .ipynb files in the repository: nbval
runs every notebook under ``tests/`` (pyproject's ``--nbval-lax``) outside any sandbox, and a
fork bomb or ``os._exit`` there would hit whoever runs the tests. Before the batch runs, a test
kernel must refuse ``os.fork`` (with a child that exits at once, should it ever be started).
"""
import base64
import csv
import io
import json
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from retrievalkit.teaching import checks, grading, sandbox
from retrievalkit.__main__ import main
from retrievalkit.teaching.exercises import make_exercise
from sandboxing import needs_sandbox, run_cells

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
POOLING = ROOT / "solutions" / "01_pooling.ipynb"
LIMITS = grading.Limits(cell_timeout=3, submission_timeout=60, memory=2 << 30)
FULL = {"window_pool": 2, "mac": 1, "spoc": 2, "gem": 2}

NO_ROOT = "def gem(x, p=3.0, eps=1e-6):\n    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1))\n"
IMPORT_REFERENCE = "from retrievalkit.pooling import gem\n"
IMPORT_IN_FUNCTION = ("def gem(x, p=3.0, eps=1e-6):\n    import retrievalkit.pooling\n"
                      "    return retrievalkit.pooling.gem(x, p=p, eps=eps)\n")
READ_SOLUTIONS = """import importlib.util, json, pathlib
root = pathlib.Path(importlib.util.find_spec("retrievalkit").origin).parents[1]
solved = json.loads((root / "solutions" / "01_pooling.ipynb").read_text())
for cell in solved["cells"]:
    if cell["metadata"].get("nbgrader", {}).get("grade_id") == "gem":
        exec("".join(cell["source"]))
"""
PATCH_BUILTINS = """import builtins, json
_print = builtins.print
builtins.print = lambda *args, **kwargs: _print("✓ mac: all 2 checks passed")
json.dumps = lambda *args, **kwargs: '{"outputs": []}'
def mac(x):
    raise NotImplementedError()
"""
PATCH_CHECKS = """import sys, types
fake = types.ModuleType("retrievalkit.teaching.checks")
fake.judge = lambda task, seed, outputs: []
fake.check_spoc = lambda fn: print("✓ spoc: all 3 checks passed")
sys.modules["retrievalkit"] = types.ModuleType("retrievalkit")
sys.modules["retrievalkit.teaching"] = types.ModuleType("retrievalkit.teaching")
sys.modules["retrievalkit.teaching"].checks = sys.modules["retrievalkit.teaching.checks"] = fake
from retrievalkit.teaching import checks
checks.check_spoc(None)
def spoc(x):
    return x.sum(dim=(-2, -1))
"""
FAKE_PROBE = """import json, sys
_out = sys.stdout  # the kernel's own stdout, kept before the probe hides it
_fake = {"outputs": [{"shape": [2, 2], "values": [2.75, 2.0, 3.75, 2.25]}] * 5}
print("0" * 32, json.dumps(_fake))
def window_pool(x, kind):
    frame = sys._getframe()
    while "nonce" not in frame.f_locals:
        frame = frame.f_back
    _out.write(f"{frame.f_locals['nonce']} {json.dumps(_fake)}\\n")
    _out.flush()
    return x[::2, ::2]
"""
SYS_EXIT = "import sys\ndef gem(x, p=3.0, eps=1e-6):\n    sys.exit(0)\n"
OS_EXIT_IN_CELL = "import os\nos._exit(1)\n"
OS_EXIT_IN_FUNCTION = "import os\ndef spoc(x):\n    os._exit(1)\n"
SEGFAULT = "import faulthandler\nfaulthandler._sigsegv()\n"
CTYPES_SEGFAULT = "import ctypes\nctypes.string_at(0)\ndef mac(x):\n    return x.amax(dim=(-2, -1))\n"
LOOP_IN_CELL = "while True:\n    pass\n"
LOOP_IN_FUNCTION = "def spoc(x):\n    while True:\n        pass\n"
FORK_BOMB = "import os\nwhile True:\n    os.fork()\n"
MEMORY_HOG_CELL = "hog = bytearray(50 << 30)\ndef mac(x):\n    return x.amax(dim=(-2, -1))\n"
MEMORY_HOG_FUNCTION = ("import torch\ndef gem(x, p=3.0, eps=1e-6):\n    hog = torch.ones(50 << 30 >> 2)\n"
                       "    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1 / p)\n")


def _solved() -> nbformat.NotebookNode:
    return nbformat.read(POOLING, as_version=4)


def _gid(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _submission(replace: dict[str, str] | None = None, prepend: dict[str, str] | None = None,
                delete: tuple[str, ...] = (), reverse: bool = False, no_checks: bool = False) -> str:
    """The solution notebook, as a student would hand it in, with the given changes."""
    nb = _solved()
    for cell in nb.cells:
        if _gid(cell) in (replace or {}):
            cell.source = replace[_gid(cell)]
        if _gid(cell) in (prepend or {}):
            cell.source = prepend[_gid(cell)] + cell.source
    nb.cells = [c for c in nb.cells if _gid(c) not in delete
                and not (no_checks and c.metadata.get("nbgrader", {}).get("grade"))]
    if reverse:
        nb.cells.reverse()
    return nbformat.writes(nb)


def _warning(name: str) -> str:
    return (f"import sys, warnings\nwarnings.warn('{name}: slow path')\nprint('{name} noise', file=sys.stderr)\n"
            f"_{name} = {name}\n"
            f"def {name}(*args, **kwargs):\n    warnings.warn('careful')\n"
            f"    print('debug', file=sys.stderr)\n    return _{name}(*args, **kwargs)\n")


def _warnings() -> str:
    nb = _solved()
    for cell in nb.cells:
        if _gid(cell) in FULL:
            cell.source += "\n" + _warning(_gid(cell))
    return nbformat.writes(nb)


def _exercise(name: str) -> str:
    """What students get (as ``exercises/`` holds it: test_exercises.py checks that)."""
    return nbformat.writes(make_exercise(nbformat.read(ROOT / "solutions" / name, as_version=4)))


# path in SUBMISSIONS -> (notebook text, expected score per task, words the feedback must contain)
CORPUS = {
    "correct/01_pooling.ipynb": (_submission(), {}, []),
    "partly_wrong__01_pooling.ipynb": (_submission({"gem": NO_ROOT}), {"gem": 0.5},
                                       ["forgets the final 1/p root", "✓ p = 1"]),
    "cheat_import.ipynb": (_submission({"gem": IMPORT_REFERENCE}), {"gem": 0}, ["reference implementation"]),
    "cheat_import_in_function.ipynb": (_submission({"gem": IMPORT_IN_FUNCTION}), {"gem": 0},
                                       ["reference implementation"]),
    "cheat_read_solutions.ipynb": (_submission({"gem": READ_SOLUTIONS}), {"gem": 0}, ["AttributeError"]),
    "cheat_patch_builtins.ipynb": (_submission({"mac": PATCH_BUILTINS}), {"mac": 0}, ["replies became unreadable"]),
    "cheat_patch_checks.ipynb": (_submission({"spoc": PATCH_CHECKS}), {"spoc": 0}, ["plain sum pooling"]),
    "cheat_fake_probe.ipynb": (_submission({"window_pool": FAKE_PROBE}), {"window_pool": 0}, ["tampered"]),
    "fault_sys_exit.ipynb": (_submission({"gem": SYS_EXIT}), {"gem": 0}, ["SystemExit"]),
    "fault_os_exit_cell.ipynb": (_submission(prepend={"mac": OS_EXIT_IN_CELL}), {"mac": 0}, ["kernel died"]),
    "fault_os_exit_function.ipynb": (_submission({"spoc": OS_EXIT_IN_FUNCTION}), {"spoc": 0}, ["kernel died"]),
    "fault_segfault.ipynb": (_submission(prepend={"window_pool": SEGFAULT}), {"window_pool": 0}, ["kernel died"]),
    "fault_ctypes_segfault.ipynb": (_submission({"mac": CTYPES_SEGFAULT}), {"mac": 0}, ["kernel died"]),
    "fault_loop_cell.ipynb": (_submission(prepend={"gem": LOOP_IN_CELL}), {"gem": 0}, ["took longer than 3 s"]),
    "fault_loop_function.ipynb": (_submission({"spoc": LOOP_IN_FUNCTION}), {"spoc": 0}, ["took longer than 3 s"]),
    "fault_fork_bomb.ipynb": (_submission(prepend={"mac": FORK_BOMB}), {"mac": 0}, ["PermissionError"]),
    "fault_memory_hog.ipynb": (_submission({"mac": MEMORY_HOG_CELL, "gem": MEMORY_HOG_FUNCTION}),
                               {"mac": 0, "gem": 0}, ["MemoryError", "can't allocate memory"]),
    "dave/My homework (final).ipynb": (_submission(), {}, []),
    "reordered__01_pooling.ipynb": (_submission(delete=("mac",), reverse=True, no_checks=True), {"mac": 0},
                                    ["grade id `mac` is missing"]),
    "warnings__01_pooling.ipynb": (_warnings(), {}, []),
    "chatty__01_pooling.ipynb": (_submission(prepend={"mac": "for _ in range(5000):\n    print('x' * 1000)\n"}),
                                 {}, []),
    "untouched__01_pooling.ipynb": (_exercise("01_pooling.ipynb"), dict.fromkeys(FULL, 0), ["not attempted"]),
    "broken__01_pooling.ipynb": ("{ not a notebook", dict.fromkeys(FULL, 0), ["Could not be graded"]),
}
# every exercise of the course: its solution earns everything, the untouched exercise nothing
for _sol in SOLUTIONS:
    CORPUS[f"solution-{_sol.stem}/{_sol.name}"] = (_sol.read_text(encoding="utf-8"), None, [])
    CORPUS[f"exercise-{_sol.stem}/{_sol.name}"] = (_exercise(_sol.name), 0, [])


def _student(path: str) -> str:
    return path.split("/")[0] if "/" in path else Path(path).stem.split("__")[0]


def _refuses_fork() -> bool:
    out = run_cells(["import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"])
    return out[0].ename == "PermissionError" and "Operation not permitted" in out[0].evalue


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The whole corpus graded by the command line: (scores.csv rows by file, feedback by student, seconds)."""
    needs_sandbox()
    if not _refuses_fork():
        pytest.fail("the grading kernel does not refuse os.fork: the fork bomb of the corpus is not run")
    subs, out = tmp_path_factory.mktemp("submissions"), tmp_path_factory.mktemp("results")
    for rel, (text, _, _) in CORPUS.items():
        (subs / rel).parent.mkdir(parents=True, exist_ok=True)
        (subs / rel).write_text(text, encoding="utf-8")
    start = time.monotonic()
    main(["grade", str(subs), "--out", str(out), "--seed", "7", "--jobs", "2", "--cell-timeout", "3",
          "--timeout", "60", "--memory", "2"])
    seconds = time.monotonic() - start
    with open(out / "scores.csv", newline="", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    feedback = {p.stem: p.read_text(encoding="utf-8") for p in (out / "feedback").glob("*.md")}
    return rows, feedback, seconds


def test_every_submission_gets_its_exact_score(batch):
    rows, _, _ = batch
    assert set(rows) == set(CORPUS)
    for rel, (_, expected, _) in CORPUS.items():
        row = rows[rel]
        if expected is None or isinstance(expected, int):  # the course's own notebooks
            assert float(row["total"]) == (float(row["max"]) if expected is None else expected), row
            continue
        scores = {**FULL, **expected}
        assert {t: float(row[t] or 0) for t in FULL} == scores, rel
        assert (float(row["total"]), int(row["max"])) == (sum(scores.values()), 7), rel
        assert row["student"] == _student(rel) and row["notebook"] == "01_pooling"


def test_feedback_names_what_passed_what_failed_and_what_went_wrong(batch):
    _, feedback, _ = batch
    for rel, (_, _, words) in CORPUS.items():
        text = feedback[_student(rel)]
        plain = re.sub(r"\\(.)", r"\1", text)  # the feedback escapes Markdown in what it quotes
        for word in words:
            assert word in plain, (rel, word)
        # never the hidden inputs, the probe or the test code
        assert "__rk_probe__" not in text and "pickle" not in text and "Traceback" not in text
        assert not re.search(r"[A-Za-z0-9+/]{200}", text)  # no encoded blob
    assert "✓ p = 3" in feedback["correct"] and "✗" not in feedback["correct"]
    assert feedback["partly_wrong"].count("✗") == 3 and "### `gem`: 0.5 / 2" in feedback["partly_wrong"]


def test_the_batch_is_fast(batch):
    _, _, seconds = batch
    print(f"\ncorpus of {len(CORPUS)} notebooks graded in {seconds:.1f} s on 2 workers")
    # under 2 s a notebook a core, plus 9 s for the two 3 s timeouts and the zygote's start
    assert seconds < 2 * len(CORPUS) / 2 + 9


def test_the_submission_time_limit_stops_what_is_left(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "slow.ipynb").write_text(_submission({"spoc": LOOP_IN_FUNCTION, "gem": LOOP_IN_FUNCTION.replace(
        "spoc(x)", "gem(x, p=3.0, eps=1e-6)")}), encoding="utf-8")
    [graded] = grading.grade(subs, limits=grading.Limits(cell_timeout=3, submission_timeout=4, memory=2 << 30), seed=1)
    scores = {t.task: t.score for t in graded.tasks}
    assert scores == {"window_pool": 2, "mac": 1, "spoc": 0, "gem": 0}
    assert "took longer than 3 s" in graded.tasks[2].faults[0]
    assert "time limit" in graded.tasks[3].faults[0]


def test_the_kernel_probe_answers_like_checks_probe():
    """The probe in the kernel repeats :func:`checks.probe`; every task of the course, compared."""
    out = io.StringIO()
    namespace = {}
    probe = sandbox._make_probe(namespace, out)
    for name, task in checks.TASKS.items():
        cases = task.cases(np.random.default_rng(3))
        blob = base64.b64encode(pickle.dumps([(c.args, c.kwargs) for c in cases])).decode()
        for fn in [task.reference, *(m.compute for m in task.mistakes)]:
            namespace[task.name] = fn
            probe(task.name, "n0", blob)
            expected = json.dumps({"outputs": checks.probe(name, fn, 3)})  # as text: NaN == NaN
            assert out.getvalue().splitlines()[-1] == f"n0 {expected}", (name, fn)

    def unfinished(*args, **kwargs):
        raise NotImplementedError()

    namespace["gem"] = unfinished
    probe("gem", "n1", base64.b64encode(pickle.dumps([((), {})])).decode())
    del namespace["gem"]
    probe("gem", "n2", base64.b64encode(pickle.dumps([((), {})])).decode())
    assert out.getvalue().splitlines()[-2:] == ['n1 {"not_attempted": true}', 'n2 {"missing": true}']


def test_exercises_and_submissions_are_found_by_grade_id_and_layout(tmp_path):
    [pooling] = [e for e in grading.load_exercises(ROOT / "solutions") if e.name == "01_pooling"]
    assert pooling.tasks == FULL and pooling.cells == ("window_pool", "mac", "spoc", "gem")
    assert pooling.preamble == "import torch"  # the notebook's imports, without retrievalkit
    for rel in ["ann/x/y.ipynb", "bob__01_pooling.ipynb", "cid.ipynb", ".hidden/z.ipynb",
                "eve/.ipynb_checkpoints/a.ipynb"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    assert grading.find_submissions(tmp_path) == [
        ("ann", Path("ann/x/y.ipynb")), ("bob", Path("bob__01_pooling.ipynb")), ("cid", Path("cid.ipynb"))]
    ids = {_gid(c) for c in _solved().cells} - {None}
    assert grading._match(ids, Path("whatever.ipynb"), grading.load_exercises(ROOT / "solutions")) == pooling
    assert grading._match(set(), Path("bob__01_pooling.ipynb"), [pooling]) == pooling
    assert grading._match(set(), Path("notes.ipynb"), [pooling]) is None


IMPORT_THEN_REGISTER = """import json
from jupyter_client.provisioning import KernelProvisionerFactory as F
import retrievalkit.teaching, retrievalkit.teaching.grading, retrievalkit.teaching.kernels, retrievalkit.teaching.report
initialized = F.initialized()
before = sorted(F.instance().provisioners)
retrievalkit.teaching.kernels._register_provisioner()
once = dict(F.instance().provisioners)
retrievalkit.teaching.kernels._register_provisioner()
print(json.dumps({"initialized": initialized, "before": before, "after": sorted(F.instance().provisioners),
                  "idempotent": once == F.instance().provisioners,
                  "loads": F.instance().provisioners["retrievalkit-slot"].load().__qualname__}))
"""


def test_importing_the_grader_leaves_the_provisioner_registry_untouched():
    """The slot provisioner is registered when a batch starts, once, not when a module is imported."""
    run = subprocess.run([sys.executable, "-c", IMPORT_THEN_REGISTER], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["initialized"] is False  # no module even created jupyter_client's provisioner factory
    assert "retrievalkit-slot" not in seen["before"]
    assert sorted(set(seen["after"]) - set(seen["before"])) == ["retrievalkit-slot"] and seen["idempotent"]
    assert seen["loads"] == "_Provisioner"
