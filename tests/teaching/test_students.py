"""What students meet: saved widgets and settled progress bars in committed notebooks, a working
copy that keeps the checkout clean, and a warning when an answer calls retrievalkit itself."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import nbformat
import pytest

import retrievalkit as rk
from retrievalkit.teaching import checks
from retrievalkit.teaching.exercises import UP_FRONT
from retrievalkit.teaching.notebooks import execute, frozen_progress_bars, missing_widget_state

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "lectures").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_notebooks_hold_the_state_of_their_widgets_and_no_frozen_progress_bar(path):
    nb = nbformat.read(path, as_version=4)
    assert missing_widget_state(nb) == [], f"{path.name}: re-run it with python -m retrievalkit.teaching.notebooks"
    assert frozen_progress_bars(nb) == [], f"{path.name}: re-run it with python -m retrievalkit.teaching.notebooks"


def test_the_lecture_with_the_gem_slider_saves_it_as_a_widget():
    nb = nbformat.read(ROOT / "lectures" / "01_pooling.ipynb", as_version=4)
    shown = [o for c in nb.cells for o in c.get("outputs", []) if VIEW in o.get("data", {})]
    assert shown, "lecture 1 shows no widget"
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(m["model_name"] == "FloatLogSliderModel" for m in state.values())


def test_execute_stores_widget_state_and_gives_progress_bars_their_final_text(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import ipywidgets as w\nw.IntSlider(value=5, description='k')"),
                nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor i in tqdm(range(3), desc='steps'):\n    pass"),
                nbformat.v4.new_code_cell("for i in tqdm(range(3), desc='gone', leave=False):\n    pass"),
                nbformat.v4.new_code_cell("import sys, tqdm as t\nfor i in t.tqdm(range(3), desc='text', file=sys.stderr, "
                                          "mininterval=0):\n    pass")]
    path = tmp_path / "widgets.ipynb"
    nbformat.write(nb, path)
    execute(path)
    saved = nbformat.read(path, as_version=4)
    slider, bar, gone, text = (c.outputs for c in saved.cells)
    state = saved.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert state[slider[0]["data"][VIEW]["model_id"]]["state"]["value"] == 5
    assert bar[0]["data"]["text/plain"].startswith("steps: 100%|██████████| 3/3")
    assert gone == []  # hidden when it closed: nothing to show
    assert [o["text"].strip()[:21] for o in text] == ["text: 100%|██████████"]  # a text bar: its last state
    assert missing_widget_state(saved) == [] and frozen_progress_bars(saved) == []
    assert all("execution" not in c.metadata for c in saved.cells)


def test_a_check_warns_when_the_answer_calls_retrievalkit(capsys):
    checks.run_check("gem", lambda x, p=3.0, eps=1e-6: rk.pooling.gem(x, p=p, eps=eps), seed=1)
    out = capsys.readouterr().out
    assert "✓ gem: all" in out and "calls retrievalkit (retrievalkit.pooling.gem)" in out
    assert "passes here, but scores 0 when graded" in out
    with pytest.raises(checks.CheckFailed, match=r"equals max pooling(.|\n)*calls retrievalkit \(retrievalkit.pooling.mac\)"):
        checks.run_check("gem", lambda x, p=3.0, eps=1e-6: rk.pooling.mac(x), seed=1)

    def own(x, p=3.0, eps=1e-6):
        return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1 / p)

    checks.run_check("gem", own, seed=1)
    assert "retrievalkit" not in capsys.readouterr().out


def test_every_exercise_says_up_front_that_calling_retrievalkit_scores_0():
    for path in sorted((ROOT / "exercises").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells[:2]
        assert any(c.cell_type == "markdown" and c.source == UP_FRONT for c in cells), path.name
    assert "scores 0" in UP_FRONT and "retrievalkit" in UP_FRONT


def _course(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("course_under_test", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    course.ROOT, course.WORK = tmp_path / "checkout", tmp_path / "checkout" / "work"
    return course


def test_lab_opens_a_working_copy_that_is_never_overwritten(tmp_path):
    course = _course(tmp_path)
    for rel in ["lectures/01_pooling.ipynb", "exercises/01_pooling.ipynb", "lectures/.ipynb_checkpoints/x.ipynb"]:
        (course.ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
        (course.ROOT / rel).write_text(f"committed {rel}")
    work = course.working_copy()
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()) == [
        "exercises/01_pooling.ipynb", "lectures/01_pooling.ipynb"]
    (work / "exercises" / "01_pooling.ipynb").write_text("my answers")
    (course.ROOT / "lectures" / "02_measuring.ipynb").write_text("new upstream")  # after a git pull
    course.working_copy()
    assert (work / "exercises" / "01_pooling.ipynb").read_text() == "my answers"
    assert (work / "lectures" / "02_measuring.ipynb").read_text() == "new upstream"
    assert (course.ROOT / "exercises" / "01_pooling.ipynb").read_text() == "committed exercises/01_pooling.ipynb"


def test_git_ignores_the_working_copy():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: run the tests in a clone of the course")
    done = subprocess.run(["git", "check-ignore", "-q", "work/exercises/01_pooling.ipynb"], cwd=ROOT)
    assert done.returncode == 0
