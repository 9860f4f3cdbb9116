"""The batch's files: one feedback file per student whatever their names, inert Markdown, safe CSV."""
import csv
import re
import unicodedata
from pathlib import Path

from retrievalkit.teaching import checks
from retrievalkit.teaching.grading import Exercise, Graded, TaskGrade
from retrievalkit.teaching.report import write_results

EX = Exercise("01_pooling", "", ("mac",), {"mac": 1.0}, frozenset({"mac", "check_mac"}))


def graded(student: str, message: str = "yours equals average pooling") -> Graded:
    result = checks.Result("batch", False, message)
    return Graded(student, Path(student) / "01_pooling.ipynb", EX, [TaskGrade("mac", 1.0, 0.0, [result])])


def test_names_that_sanitise_alike_get_separate_feedback_files(tmp_path):
    names = ["alice", "alice_", "alice.", unicodedata.normalize("NFC", "zoë"), unicodedata.normalize("NFD", "zoë"), "a/b", "a_b"]
    _, files = write_results([graded(n) for n in names], tmp_path)
    assert len({f.name for f in files}) == len(names)
    assert {f.parent for f in files} == {tmp_path / "feedback"}  # "a/b" stays inside the folder
    texts = {f.read_text(encoding="utf-8").splitlines()[0] for f in files}
    assert "# Feedback for alice" in texts and "# Feedback for alice\\_" in texts


def test_student_text_cannot_plant_markdown_or_html(tmp_path):
    evil = "ValueError: [click](http://evil.example) <img src=x onerror=alert(1)> ![t](http://t.example/p.png) `x`"
    _, (path,) = write_results([graded("mallory", f"yours raised {evil}\n# Full marks")], tmp_path)
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\\)(\]\(http|<img|`)", next(l for l in text.splitlines() if l.startswith("- ✗")))  # all escaped
    assert "\n# Full marks" not in text and "\\[click\\]" in text and "\\<img" in text


def test_scores_csv_cells_cannot_run_as_spreadsheet_formulas(tmp_path):
    scores, _ = write_results([graded("=HYPERLINK(\"http://evil.example\")"), graded("@SUM(A1)")], tmp_path)
    rows = list(csv.DictReader(scores.open(encoding="utf-8")))
    assert sorted(r["student"] for r in rows) == ["'=HYPERLINK(\"http://evil.example\")", "'@SUM(A1)"]
    assert all(r["total"] == "0" for r in rows)


def test_written_answers_go_to_the_instructor_and_are_not_scored(tmp_path):
    from retrievalkit.teaching.grading import load_exercises

    ex = {e.name: e for e in load_exercises(Path(__file__).resolve().parents[2] / "solutions")}["01_pooling"]
    assert ex.written == {"written_mac_vs_gem": 2.0} and "written_mac_vs_gem" not in ex.cells
    bob = Graded("bob", Path("bob/01_pooling.ipynb"), ex, [TaskGrade("mac", 1.0, 1.0)],
                 written={"written_mac_vs_gem": "GeM with p = 1 is *average* pooling.\n\n<b>and</b> MAC"})
    eve = Graded("eve", Path("eve/01_pooling.ipynb"), ex, [TaskGrade("mac", 1.0, 0.0)],
                 written={"written_mac_vs_gem": "YOUR ANSWER HERE"})
    scores, files = write_results([bob, eve], tmp_path)
    rows = list(csv.DictReader(scores.open(encoding="utf-8")))
    assert [r["written_mac_vs_gem (by hand, /2)"] for r in rows] == ["", ""]
    assert [r["total"] for r in rows] == ["1", "0"] and [r["max"] for r in rows] == ["7", "7"]
    by_hand = (tmp_path / "to_grade_by_hand.md").read_text(encoding="utf-8")
    assert "## `written_mac_vs_gem` (/ 2)" in by_hand
    assert "> GeM with p = 1 is \\*average\\* pooling.\n>\n> \\<b\\>and\\</b\\> MAC" in by_hand
    assert by_hand.index("### bob") < by_hand.index("### eve") and "*(no answer)*" in by_hand
    feedback = {f.stem: f.read_text(encoding="utf-8") for f in files}
    assert "to grade by hand (/ 2)\n\nYour answer is with the instructor." in feedback["bob"]
    assert "No answer was written." in feedback["eve"]


def test_the_grader_reads_the_first_written_answer_cell_by_grade_id_wherever_it_is():
    import nbformat

    from retrievalkit.teaching import grading

    ex = EX.__class__("01_pooling", "", ("mac",), {"mac": 1.0}, frozenset({"mac", "w"}), {"w": 2.0})
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("x = 1")
    code.metadata["nbgrader"] = {"grade_id": "w"}  # a code cell with the id is not the answer
    first, second = nbformat.v4.new_markdown_cell("mine"), nbformat.v4.new_markdown_cell("a copy")
    first.metadata["nbgrader"] = second.metadata["nbgrader"] = {"grade_id": "w", "solution": True, "grade": True}
    odd = nbformat.v4.new_markdown_cell("a list as grade id")
    odd.metadata["nbgrader"] = {"grade_id": ["w"], "solution": True, "grade": True}  # unhashable: not an answer
    nb.cells = [code, nbformat.v4.new_markdown_cell("intro"), odd, first, second]
    assert grading._cells_by_id(nb, ex.written, "markdown") == {"w": "mine"}
    assert grading._cells_by_id(nb, ex.cells, "code") == {}  # "w" is not a solution cell of the exercise
