"""The classroom around the grader: the class report, Canvas and Moodle downloads read, their
gradebooks written, and the grade command doing all of it on a generated class."""
from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from retrievalkit.__main__ import main
from retrievalkit.teaching import lms
from retrievalkit.teaching.checks import Result
from retrievalkit.teaching.classreport import class_markdown, summarise, write_class_report
from retrievalkit.teaching.grading import Exercise, Graded, TaskGrade

from classroom import CLASS, GEM_MAX, MAC_AVG, canvas_name, moodle_name, notebook, write_canvas_zip

POOLING = Exercise("01_pooling", "import torch", ("mac", "gem"), {"mac": 1.0, "gem": 2.0}, frozenset({"mac", "gem"}))


def _ok(label: str) -> Result:
    return Result(label, True, "fine")


def _wrong(label: str, mistake: str | None, message: str = "") -> Result:
    return Result(label, False, message or f"expected; yours {mistake}", mistake)


def _graded(student: str, mac: TaskGrade, gem: TaskGrade, path: str = "01_pooling.ipynb") -> Graded:
    return Graded(student, Path(student) / path, POOLING, [mac, gem])


MAC_OK = TaskGrade("mac", 1.0, 1.0, [_ok("batch"), _ok("negative")])
MAC_AVG_GRADE = TaskGrade("mac", 1.0, 0.0, [_wrong("batch", "equals average pooling"),
                                            _wrong("negative", "equals average pooling")])
GEM_OK = TaskGrade("gem", 2.0, 2.0, [_ok("p = 3"), _ok("p = 1")])
GEM_MAX_GRADE = TaskGrade("gem", 2.0, 0.0, [_wrong("p = 3", "equals max pooling"), _wrong("p = 1", "equals max pooling")])
GEM_ROOT = TaskGrade("gem", 2.0, 1.0, [_ok("p = 1"), _wrong("p = 3", "forgets the final 1/p root")])
GEM_RAISED = TaskGrade("gem", 2.0, 0.0, [_wrong("p = 3", None, "expected; yours raised IndexError: boom")] * 2)
GEM_TODO = TaskGrade("gem", 2.0, 0.0, faults=["not attempted (NotImplementedError)"])


def _class() -> list[Graded]:
    return [
        _graded("ann", MAC_OK, GEM_OK),
        _graded("bo", MAC_AVG_GRADE, GEM_MAX_GRADE),
        _graded("cy", MAC_OK, GEM_MAX_GRADE),
        _graded("di", MAC_AVG_GRADE, GEM_ROOT),
        _graded("ed", MAC_OK, GEM_RAISED),
        _graded("fe", MAC_OK, GEM_TODO),
        # a second notebook of cy's that does better on gem: the best one counts
        _graded("cy", MAC_OK, GEM_OK, path="again.ipynb"),
        Graded("gu", Path("gu.ipynb"), POOLING, problem="not a readable notebook"),
    ]


def test_the_class_report_counts_students_per_named_mistake_most_common_first(tmp_path):
    mac, gem = summarise(_class())
    assert (mac.task, mac.students, mac.passed) == ("mac", 7, 4)
    assert mac.mistakes == [("equals average pooling", 2)] and mac.other == [("could not be graded", 1)]
    assert mac.scores == [(0.0, 3), (1.0, 4)]
    assert (gem.students, gem.passed) == (7, 2)  # ann and cy (her second notebook)
    assert gem.mistakes == [("equals max pooling", 1), ("forgets the final 1/p root", 1)]
    assert [what for what, _ in gem.other] == ["raised an error", "not attempted", "could not be graded"]
    assert gem.scores == [(0.0, 4), (1.0, 1), (2.0, 2)]

    md = class_markdown([mac, gem])
    assert "| `gem` | 2 | 2 / 7 | 0.71 | yours equals max pooling (1) |" in md
    assert md.index("| yours equals max pooling | 1 |") < md.index("| *raised an error* | 1 |")
    assert "| 0 | 4 | ████ |" in md

    paths = write_class_report(_class(), tmp_path)
    assert [p.name for p in paths] == ["class_report.md", "class_report.csv", "class_report.png"]
    rows = list(csv.DictReader(io.StringIO(paths[1].read_text())))
    assert {"notebook": "01_pooling", "task": "mac", "kind": "mistake", "what": "equals average pooling",
            "students": "2", "of": "7"} in rows
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[2].stat().st_size > 10_000


def _write(folder: Path, names: dict[str, str]) -> Path:
    for name, text in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
def test_a_canvas_download_is_read_with_each_students_name_id_and_lateness(tmp_path, packed):
    files = {
        "leeann_1001_90001_01_pooling.ipynb": "{}",
        "chenbo_LATE_1002_90002_01_pooling-1.ipynb": "{}",  # late, and a resubmitted file name
        "chenbo_LATE_1002_90003_notes.pdf": "%PDF",  # not a notebook: left out
        "__MACOSX/._leeann_1001_90001_01_pooling.ipynb": "",
    }
    source = _write(tmp_path / "download", files)
    if packed:
        with zipfile.ZipFile(tmp_path / "submissions.zip", "w") as zf:
            for name, text in files.items():
                zf.writestr(name, text)
        source = tmp_path / "submissions.zip"
    with lms.read_export(source, "canvas") as export:
        assert export.students == {"leeann_1001": lms.Student("leeann", "1001", False),
                                   "chenbo_1002": lms.Student("chenbo", "1002", True)}
        assert sorted(p.relative_to(export.root).as_posix() for p in export.root.rglob("*") if p.is_file()) == [
            "chenbo_1002/01_pooling-1.ipynb", "leeann_1001/01_pooling.ipynb"]
        root = export.root
    assert not root.exists()  # laid out in a temporary folder


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
def test_a_moodle_download_is_read_in_folders_or_flat_with_full_names_and_participant_ids(tmp_path, packed):
    files = {
        "Ann Lee_501234_assignsubmission_file_/01_pooling.ipynb": "{}",  # Moodle 3.1+: a folder per student
        "Bo Chen-Smith_501235_assignsubmission_file_/sub/01_pooling.ipynb": "{}",
        "Bo Chen-Smith_501235_assignsubmission_onlinetext_/onlinetext.html": "<p>hi</p>",
        "Participant_501236_assignsubmission_file_01_pooling.ipynb": "{}",  # flat, blind marking
    }
    source = _write(tmp_path / "download", files)
    if packed:
        with zipfile.ZipFile(tmp_path / "submissions.zip", "w") as zf:
            for name, text in files.items():
                zf.writestr(f"wrapped/{name}", text)  # unpacked and packed again: a folder around it
        source = tmp_path / "submissions.zip"
    with lms.read_export(source, "moodle") as export:
        assert export.students == {"Ann Lee_501234": lms.Student("Ann Lee", "501234"),
                                   "Bo Chen-Smith_501235": lms.Student("Bo Chen-Smith", "501235"),
                                   "Participant_501236": lms.Student("Participant", "501236")}
        assert sorted(p.relative_to(export.root).as_posix() for p in export.root.rglob("*") if p.is_file()) == [
            "Ann Lee_501234/01_pooling.ipynb", "Bo Chen-Smith_501235/sub/01_pooling.ipynb",
            "Participant_501236/01_pooling.ipynb"]


def test_a_download_that_does_not_follow_its_lms_layout_or_escapes_its_folder_is_refused(tmp_path):
    _write(tmp_path / "canvas", {"Ann Lee homework.ipynb": "{}"})
    with pytest.raises(ValueError, match="Ann Lee homework.ipynb.*Canvas"):
        with lms.read_export(tmp_path / "canvas", "canvas"):
            pass
    with pytest.raises(ValueError, match="Moodle"):
        with lms.read_export(tmp_path / "canvas", "moodle"):
            pass
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../leeann_1001_1_x.ipynb", "{}")
    with pytest.raises(ValueError, match="unsafe path"):
        with lms.read_export(tmp_path / "evil.zip", "canvas"):
            pass
    with pytest.raises(ValueError, match="lms must be one of"):
        with lms.read_export(tmp_path / "canvas", "blackboard"):
            pass
    with pytest.raises(ValueError, match="does not exist"):
        with lms.read_export(tmp_path / "nothing", None):
            pass


def _gradebook(lms_name: str, students: dict[str, lms.Student], tmp_path: Path, **kw) -> list[list[str]]:
    graded = [_graded(key, mac, gem) for key, (mac, gem) in zip(students, [(MAC_OK, GEM_OK), (MAC_AVG_GRADE, GEM_ROOT)])]
    path = lms.write_gradebook(graded, lms.Export(lms_name, tmp_path, students), tmp_path, **kw)
    assert path.name == f"gradebook_{lms_name}.csv"
    return list(csv.reader(io.StringIO(path.read_text())))


def test_the_gradebooks_are_in_the_columns_canvas_and_moodle_import(tmp_path):
    canvas = _gradebook("canvas", {"leeann_1001": lms.Student("leeann", "1001"),
                                   "chenbo_1002": lms.Student("chenbo", "1002", True)}, tmp_path,
                        assignment="Pooling (4711)")
    assert canvas == [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Pooling (4711)"],
                      ["    Points Possible", "", "", "", "", "3"],
                      ["chenbo", "1002", "", "", "", "1"],
                      ["leeann", "1001", "", "", "", "3"]]
    moodle = _gradebook("moodle", {"Ann Lee_501234": lms.Student("Ann Lee", "501234"),
                                   "Bo Chen_501235": lms.Student("Bo Chen", "501235")}, tmp_path,
                        when=datetime(2026, 11, 30, 9, 0))
    assert moodle == [
        ["Identifier", "Full name", "Grade", "Maximum Grade", "Last modified (grade)", "Feedback comments"],
        ["Participant 501234", "Ann Lee", "3", "3", "2026-11-30 09:00:00", "01_pooling: mac 1/1, gem 2/2"],
        ["Participant 501235", "Bo Chen", "1", "3", "2026-11-30 09:00:00", "01_pooling: mac 0/1, gem 1/2"]]
    with pytest.raises(ValueError, match="export.lms"):
        lms.write_gradebook([], lms.Export(None, tmp_path, {}), tmp_path)


def test_grading_a_canvas_zip_writes_scores_feedback_the_class_report_and_the_gradebook(tmp_path):
    students = [CLASS[0], CLASS[1], ("Hana Sato", "satohana", 1008, {"mac": MAC_AVG})]
    assert students[1][3] == {"gem": GEM_MAX}
    download = write_canvas_zip(tmp_path / "submissions.zip", students)
    out = tmp_path / "results"
    assert main(["grade", str(download), "--lms", "canvas", "--out", str(out), "--seed", "3", "--jobs", "2",
                 "--cell-timeout", "10", "--memory", "2"]) == 0
    with open(out / "gradebook_canvas.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[2:] == [["chenbo", "1002", "", "", "", "5"], ["leeann", "1001", "", "", "", "7"],
                        ["satohana", "1008", "", "", "", "6"]]
    report = (out / "class_report.md").read_text()
    assert "### `gem`: 2 of 3 passed" in report and "| yours equals max pooling | 1 |" in report
    assert "### `mac`: 2 of 3 passed" in report and "| yours equals average pooling | 1 |" in report
    assert sorted(p.name for p in (out / "feedback").iterdir()) == [
        "chenbo_1002.md", "leeann_1001.md", "satohana_1008.md"]
    assert main(["grade", str(tmp_path / "missing.zip"), "--lms", "moodle", "--out", str(out)]) == 2


def test_the_generated_class_has_a_notebook_per_student_with_its_changes():
    assert len(CLASS) >= 20 and len({c[2] for c in CLASS}) == len(CLASS)
    assert canvas_name("leeann", 1001, 1, "a.ipynb", late=True) == "leeann_LATE_1001_90001_a.ipynb"
    assert moodle_name("Ann Lee", 7) == "Ann Lee_7_assignsubmission_file_"
    cells = nbformat.reads(notebook({"gem": GEM_MAX}), as_version=4).cells
    assert [c.source for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == "gem"] == [GEM_MAX]
