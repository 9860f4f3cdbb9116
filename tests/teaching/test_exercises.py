"""The exercise pipeline: exercises/ is generated from solutions/ and runs to NotImplementedError only."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from retrievalkit.teaching.channels import SteppedKernelManager
from retrievalkit.teaching.exercises import ANSWER_HERE, BEGIN, END, make_exercise, write_exercises

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_every_solution_has_a_lecture_and_an_exercise():
    assert SOLUTIONS, "no solution notebooks found"
    for sol in SOLUTIONS:
        assert (ROOT / "lectures" / sol.name).exists(), f"lectures/{sol.name} is missing"
        assert (ROOT / "exercises" / sol.name).exists(), f"exercises/{sol.name} is missing"


def test_committed_exercises_match_the_generator(tmp_path):
    written = write_exercises(ROOT / "solutions", tmp_path)
    assert [p.name for p in written] == [p.name for p in SOLUTIONS]
    for path in written:
        committed = (ROOT / "exercises" / path.name).read_text(encoding="utf-8")
        assert committed == path.read_text(encoding="utf-8"), (
            f"exercises/{path.name} drifted from solutions/: run `python -m retrievalkit exercises`"
        )


def test_exercises_hide_the_answers_and_lock_the_checks():
    for sol in SOLUTIONS:
        ex = nbformat.read(ROOT / "exercises" / sol.name, as_version=4)
        solved = nbformat.read(sol, as_version=4)
        grades = [c for c in solved.cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert grades, f"{sol.name} has no graded check cell"
        for cell in ex.cells:
            assert BEGIN not in cell.source and END not in cell.source
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("solution") and cell.cell_type == "markdown":  # a written answer: empty, editable
                assert cell.source == ANSWER_HERE and meta["grade"] and meta["points"] > 0
                assert not meta["locked"] and "editable" not in cell.metadata
            elif meta.get("solution"):
                assert "raise NotImplementedError()" in cell.source
            elif meta.get("grade"):
                assert meta["locked"] and cell.metadata["editable"] is False and cell.metadata["deletable"] is False
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
            assert "execution" not in cell.metadata  # no volatile timestamps
        # grade ids are unique, schema 3, as nbgrader requires
        ids = [c.metadata["nbgrader"]["grade_id"] for c in solved.cells if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids))
        assert all(c.metadata["nbgrader"]["schema_version"] == 3 for c in solved.cells if "nbgrader" in c.metadata)


def test_every_exercise_has_a_written_question_graded_by_hand():
    for sol in SOLUTIONS:
        solved = nbformat.read(sol, as_version=4)
        written = [i for i, c in enumerate(solved.cells) if c.cell_type == "markdown"
                   and c.metadata.get("nbgrader", {}).get("solution") and c.metadata["nbgrader"].get("grade")]
        assert written, f"{sol.name} has no written question"
        for i in written:  # the question stands just above its answer, and the solution has a model answer
            assert "graded by hand" in solved.cells[i - 1].source and len(solved.cells[i].source.split()) > 30


def test_generator_replaces_only_the_marked_block_and_keeps_indentation():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"def f(x):\n    '''doc'''\n    {BEGIN}\n    return x + 1\n    {END}\n")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "f", "locked": False, "schema_version": 3, "task": False}
    nb.cells.append(cell)
    out = make_exercise(nb)
    assert out.cells[0].source == "def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert nb.cells[0].source.count("return x + 1") == 1  # input untouched
    bad = nbformat.v4.new_notebook()
    bad.cells.append(nbformat.v4.new_code_cell(f"{BEGIN}\nx = 1\n"))
    bad.cells[0].metadata["nbgrader"] = {"solution": True}
    with pytest.raises(ValueError, match="unbalanced"):
        make_exercise(bad)
    stray = nbformat.v4.new_notebook()
    stray.cells.append(nbformat.v4.new_code_cell(f"{BEGIN}\nx = 1\n{END}\n"))
    with pytest.raises(ValueError, match="outside a cell marked"):
        make_exercise(stray)


@pytest.mark.parametrize("name", [p.name for p in SOLUTIONS])
def test_exercise_runs_and_fails_only_on_the_unsolved_tasks(name):
    nb = nbformat.read(ROOT / "exercises" / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True, kernel_manager_class=SteppedKernelManager,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [(i, o["ename"]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o["output_type"] == "error"]
    assert errors, "an unsolved exercise should stop at its checks"
    assert {e for _, e in errors} <= {"NotWritten", "NotImplementedError"}, errors  # a cell using the function
    # every check cell fails in one line ("gem is not written yet"), no check passes by accident
    graded = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
    assert set(graded) <= {i for i, e in errors if e == "NotWritten"}
