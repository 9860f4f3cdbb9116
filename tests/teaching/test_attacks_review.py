"""A second hostile review of the grader (issue 17), after the sandbox was rebuilt: attacks of
classes that test_attacks.py does not cover, in one batch graded by the command line, one kernel
at a time (so that a submission's leftovers meet the next student in the same slot).

Found to work, and fixed: a folder without permissions left in the slot's /tmp crashed the warm
server when the next student's kernel was forked (that student: "could not be graded", 0); odd
nbgrader metadata (a string, a list as grade id, a number as a cell's source) and a folder name
that is not UTF-8 crashed the whole batch; a cell nested 1000 deep crashed the similarity step,
and two long repetitive cells made it run for hours; iopub messages the output cap did not count
(display metadata and updates, stream names, errors, widget state), and messages to the
stdin channel that nothing reads, filled the grader's memory; a
replaced ``sys.stdout`` lost the submission's own probes; empty files in the sandbox's /tmp cost
unbounded kernel memory (now counted and capped: ``Limits.files``); a student's two copies of one
exercise were added up in the LMS gradebook (now the better one counts). Stopped: forged probe lines (the nonce read by replacing
``__rk_probe__``, answers of NaN and infinity), exit hooks and signal handlers that hang.
"""
import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from retrievalkit.teaching import jail, kernels
from retrievalkit.teaching.grading import Exercise, Graded, TaskGrade
from sandboxing import LIMITS, POOLING, needs_sandbox, pooling_notebook


# leftovers the warm server cannot remove: the next student's kernel in this slot used to be refused
POISON = "import os\nos.makedirs('/tmp/work/locked/inner')\nos.chmod('/tmp/work/locked', 0)\n"
# valid Python the similarity step could not normalise (RecursionError), and repetitive code that
# made difflib's matcher cubic: 2,000 lines in each of two students' cells
DEEP = "def unused(x):\n    return " + " + ".join(["x"] * 1200) + "\n"
REPEAT = "def unused(x):\n" + "".join(f"    y = x.sum(dim=(-2, -1)).pow({i})\n" for i in range(2000)) + "    return y\n"
# the probe's nonce read from the cell about to run, __rk_probe__ replaced: a forged line for gem
# (NaN and infinity of the right shape: judged as the wrong answers they are), the real probe else
FORGE = """import json, pickle, base64
real = __rk_probe__
def __rk_probe__(name, nonce, blob):
    if name != 'gem':
        return real(name, nonce, blob)
    outputs = []
    for args, _ in pickle.loads(base64.b64decode(blob)):
        n, k = args[0].shape[:2]
        outputs.append({'shape': [n, k], 'values': [float('nan'), float('inf')] * (n * k // 2) + [0.0] * (n * k % 2)})
    print(nonce, json.dumps({'outputs': outputs}))
    print(nonce.upper(), '{"outputs": []}')
"""
# exit hooks that never return, SIGTERM ignored, stdout replaced: the kernel is killed, not asked
HANG = """import atexit, signal, sys
class Stuck:
    def __del__(self):
        while True:
            pass
stuck = Stuck()
atexit.register(lambda: [None for _ in iter(int, 1)])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdout = open('/dev/null', 'w')
"""


def _notebook(replace=(), prepend=(), meta=False) -> str:
    nb = pooling_notebook(replace, prepend)
    if not meta:
        return nbformat.writes(nb)
    # what nbformat reads as is and nbgrader never writes: metadata of the wrong type, a list as
    # grade id, a code cell whose source is a number (the first with grade id gem)
    nb.cells[0].metadata["nbgrader"] = "x"
    nb.cells[1].metadata["nbgrader"] = {"grade_id": ["a", "list"], "solution": True}
    raw = json.loads(nbformat.writes(nb))
    raw["cells"].insert(1, {"cell_type": "code", "execution_count": None, "outputs": [], "source": 5,
                            "metadata": {"nbgrader": {"grade_id": "gem", "solution": True}}})
    return json.dumps(raw)


def _spoc() -> str:
    return next(c.source for c in nbformat.read(POOLING, as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "spoc")


# empty files cost the host's kernel memory (about 1.3 kB each, no limit counts it: 220,000 in 4 s)
FILES = ("import os\nos.mkdir('/tmp/work/many')\nn = 0\ntry:\n    while n < 100_000:\n"
         "        os.close(os.open(f'/tmp/work/many/{n}', os.O_CREAT | os.O_WRONLY))\n        n += 1\n"
         "except OSError:\n    pass\nprint(n)\n")
ODD = os.fsdecode(b"b_honest_\xff")  # a folder name that is not UTF-8 (as an archive may unpack it)
# folder (graded in this order, one slot) -> (notebook, expected total)
BATCH = {
    "a_poison": (_notebook(prepend={"window_pool": POISON}), 7),
    ODD: (_notebook(), 7),
    "c_odd": (_notebook({"spoc": _spoc() + "\n" + DEEP}, prepend={"gem": HANG}, meta=True), 7),
    "d_repeat1": (_notebook({"spoc": _spoc() + "\n" + REPEAT}, prepend={"mac": FORGE}), 5),
    "d_repeat2": (_notebook({"spoc": _spoc() + "\n" + REPEAT.replace("-1", "-2")}), 7),
    "e_files": (_notebook(prepend={"mac": FILES}), 6),  # killed in its mac cell: mac (1 point) is missing
    "f_honest": (_notebook(), 7),  # next in the slot the attacker filled
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    needs_sandbox()
    subs, out = tmp_path_factory.mktemp("submissions"), tmp_path_factory.mktemp("results")
    for folder, (text, _) in BATCH.items():
        (subs / folder).mkdir()
        (subs / folder / "01_pooling.ipynb").write_text(text, encoding="utf-8")
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "retrievalkit", "grade", str(subs), "--out", str(out), "--seed", "3",
                          "--jobs", "1", "--cell-timeout", "5", "--timeout", "30", "--memory", "2"],
                         capture_output=True, text=True, timeout=240)
    seconds = time.monotonic() - start
    print(f"\nreview batch: {len(BATCH)} notebooks in {seconds:.1f} s on 1 kernel")
    return run, out, seconds


def test_the_batch_completes_and_every_student_gets_the_exact_score(batch):
    run, out, _ = batch
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "scores.csv", newline="", encoding="utf-8") as f:
        totals = {row["student"]: (float(row["total"]), row["note"]) for row in csv.DictReader(f)}
    expected = {folder.replace(ODD, "b_honest_\ufffd"): total for folder, (_, total) in BATCH.items()}
    assert {s: t for s, (t, _) in totals.items()} == expected, totals
    feedback = (out / "feedback" / "d_repeat1.md").read_text(encoding="utf-8")
    assert "gives NaN or infinity" in feedback  # the forged line was read, and judged wrong
    feedback = (out / "feedback" / "e_files.md").read_text(encoding="utf-8")
    assert "created more than 20000 files" in feedback, feedback


def test_the_similarity_step_survives_deep_and_long_cells(batch):
    run, out, seconds = batch
    similar = (out / "similarity.csv").read_text(encoding="utf-8")
    assert "d_repeat1" in similar and "d_repeat2" in similar  # still compared, on their first tokens
    assert seconds < 150, seconds


FLOOD = ("from IPython.display import publish_display_data\nk = get_ipython().kernel\nbig = 'y' * (1 << 20)\n"
         "send = lambda kind, content: k.session.send(k.iopub_socket, kind, content, parent=k.get_parent('shell'))\n"
         "for i in range(8):\n    publish_display_data({'text/plain': 'x'}, metadata={'m': big})\n"
         "    publish_display_data({'text/plain': 'x'}, transient={'display_id': str(i)})\n"
         "    update = {'data': {'text/plain': big}, 'metadata': {}, 'transient': {'display_id': str(i)}}\n"
         "    send('update_display_data', update)\n"
         "    send('stream', {'name': big, 'text': 'z', 'transient': {'display_id': str(i)}})\n"
         "    send('update_display_data', update)\n"
         "    send('error', {'ename': big, 'evalue': big, 'traceback': [big]})\n"
         "    send('comm_open', {'comm_id': str(i), 'target_name': 'jupyter.widget', 'data': {'state': {'s': big}}})\n"
         "print('done')\n")
# messages to the stdin channel, which nbclient never reads (they used to sit in the grader: 16 x 30 MB)
UNREAD = ("k = get_ipython().kernel\nparent, ident = k.get_parent('shell'), k._parent_ident['shell']\n"
          "big = 'y' * (30 << 20)\nfor _ in range(16):\n"
          "    k.session.send(k.stdin_socket, 'input_request', {'prompt': big}, parent=parent, ident=ident)\n"
          "import time\ntime.sleep(0.5)\n")


def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def cells():
    """A flood of every iopub kind, then many empty files, in one sandboxed kernel: the outcomes,
    and what the grader kept of the flood (bytes)."""
    needs_sandbox()

    async def run():
        context = kernels.grading_context(LIMITS)
        try:
            async with kernels.kernel_pool(LIMITS, 1) as pool, pool.slot() as slot:
                session = kernels.Session(["import os", FLOOD, FILES, UNREAD], [1 << 16] * 4, LIMITS, context, slot,
                                          time.monotonic() + 60)
                await session.start()
                try:
                    outcomes = [await session.run(i) for i in range(2)]
                    kept = len(json.dumps([session.nb.cells[1], session.client.widget_state,
                                           session.client._display_id_map]))
                    outcomes.append(await session.run(2))
                    outcomes.append(jail.files_used(slot.view))  # what the killed kernel left
                    await session.start()
                    before = _rss()
                    outcomes.append(await session.run(3))
                    outcomes.append(_rss() - before)
                finally:
                    await session.stop()
                return outcomes, kept
        finally:
            context.destroy(linger=0)

    return asyncio.run(run())


def test_no_flood_of_any_message_kind_passes_the_output_cap(cells):
    """Displays with large metadata or updated, streams with large names, errors, widget state;
    messages to the stdin channel, which nothing reads."""
    (first, flood, _, _, unread, grown), kept = cells
    assert first.kind == "ok" and flood.kind == "error" and "done" in flood.stdout
    assert kept < 80_000, kept  # 64 kB of output, one short error; 56 MB came in
    assert unread.kind in ("ok", "timeout") and grown < 200 << 20, grown  # 480 MB sent where nothing reads


def test_a_kernel_cannot_create_files_without_bound(cells):
    """The tmpfs counts bytes, not files: the grader counts its inodes while a cell runs (every 0.2 s)."""
    (_, _, files, left, _, _), _ = cells
    assert files.kind == "files" and files.limit == LIMITS.files == 20_000, files
    print(f"\nfiles in the sandbox's /tmp when the kernel was killed: {left}")
    assert LIMITS.files < left < LIMITS.files + 40_000, left  # a poll's worth past the limit, far from 100,000


def test_two_copies_of_one_exercise_do_not_earn_twice_in_the_gradebook(tmp_path):
    """The best copy of each exercise counts (a resubmission with a lower score does not lower it)."""
    from retrievalkit.teaching import lms

    ex = Exercise("01_pooling", "", ("gem",), {"gem": 2.0}, frozenset({"gem"}))
    # the better copy is read first ("01_pooling (1)" sorts before "01_pooling."), the worse one last
    copies = [Graded("s1", Path(f"s1/{name}.ipynb"), ex, [TaskGrade("gem", 2.0, score)])
              for name, score in (("01_pooling", 0.5), ("01_pooling (1)", 2.0))]
    export = lms.Export("moodle", tmp_path, {"s1": lms.Student("Sam One", "1")})
    path = lms.write_gradebook(copies, export, tmp_path)
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    assert (rows[0]["Grade"], rows[0]["Maximum Grade"]) == ("2", "2"), rows
    assert "gem 0.5/2" in rows[0]["Feedback comments"] and "gem 2/2" in rows[0]["Feedback comments"], rows
