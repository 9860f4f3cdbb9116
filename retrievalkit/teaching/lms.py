"""Submissions as Canvas and Moodle export them, and the gradebook CSV each imports.

**Reading.** :func:`read_export` takes an export as downloaded (a ``.zip``) or unpacked (a
folder) and lays its notebooks out as ``<student>/<file>.ipynb`` in a temporary folder, the layout
:func:`retrievalkit.teaching.grading.find_submissions` reads; other files (PDFs, screenshots, a
Moodle online text) are left out.

* **Canvas** ("Download Submissions"): one flat folder of ``<lastfirst>_<userid>_<attachmentid>_<file>``,
  with ``LATE`` after the name for a late submission (``leeann_LATE_1234_98765_01_pooling.ipynb``)
  and ``-1``, ``-2`` ... before the extension of a resubmitted file name. ``lastfirst`` is the
  sortable name, lowercase, without spaces or punctuation; ``userid`` is the Canvas user ID the
  gradebook matches on. The student is ``<lastfirst>_<userid>``.
* **Moodle** ("Download all submissions"): ``<Full Name>_<participant id>_assignsubmission_file_/<file>``
  (one folder per student and plugin, Moodle 3.1 onwards) or, with "Download submissions in
  folders" off, flat files ``<Full Name>_<participant id>_assignsubmission_file_<file>``. Moodle
  writes underscores in names as spaces; with blind marking the name is ``Participant``; with team
  submissions it starts with ``<group>-``. The participant id is what the grading worksheet
  matches on. The student is ``<Full Name>_<participant id>``.

A name that matches neither layout raises ``ValueError`` naming the file, so nobody is silently
dropped; zip members with absolute paths, ``..`` or links are refused the same way.

**Writing.** :func:`write_gradebook` writes, per student, the sum over the exercises of their
best notebook's score: two copies of one exercise (a resubmission, ``01_pooling (1).ipynb``)
count once, the better one, so no total passes the maximum; the feedback lists every notebook.

* Canvas: ``gradebook_canvas.csv`` in the columns of Canvas's own gradebook export: ``Student``,
  ``ID``, ``SIS User ID``, ``SIS Login ID``, ``Section``, then one column for the assignment,
  and a ``Points Possible`` row. Canvas matches students on ``ID``; it matches the column to an
  existing assignment when the header is ``<Assignment name> (<assignment id>)`` as in its export
  (pass it as ``assignment``), and otherwise offers to create a new assignment.
* Moodle: ``gradebook_moodle.csv``, the assignment's offline grading worksheet ("Upload grading
  worksheet", feedback type "Offline grading worksheet" enabled): ``Identifier`` (``Participant
  <id>``), ``Full name``, ``Grade``, ``Maximum Grade``, ``Last modified (grade)`` and ``Feedback
  comments`` (the points per task).
"""
from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from .._atomic import write_atomic
from .grading import Graded
from .report import cell

__all__ = ["LMS", "Student", "Export", "read_export", "write_gradebook"]

LMS = ("canvas", "moodle")
_CANVAS = re.compile(r"(?P<name>[^_/]+)(?P<late>_LATE)?_(?P<id>\d+)_(?P<attachment>\d+)_(?P<file>.+)")
_MOODLE = re.compile(r"(?P<name>.+?)_(?P<id>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.*)")


@dataclass(frozen=True)
class Student:
    """A student as the LMS names them."""

    name: str  # Canvas: the lowercase lastfirst; Moodle: the full name
    lms_id: str  # Canvas: the user ID; Moodle: the participant id of the assignment
    late: bool = False  # Canvas marks late submissions; Moodle does not say


@dataclass
class Export:
    """An export laid out for grading: ``root/<student>/<file>.ipynb``."""

    lms: str | None  # "canvas", "moodle", or None for the plain layouts
    root: Path
    students: dict[str, Student]  # by the student's folder name under root (empty without an LMS)


def _unzip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest``, refusing members that would land outside it or are links."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise ValueError(f"submissions: {archive.name} holds an unsafe path {info.filename!r}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"submissions: {archive.name} holds a link {info.filename!r}")
            if not info.is_dir():
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _notebooks(folder: Path) -> list[Path]:
    """The notebooks under ``folder``, relative, without hidden parts (``__MACOSX``, checkpoints)."""
    found = []
    for path in sorted(folder.rglob("*.ipynb")):
        rel = path.relative_to(folder)
        if not any(p.startswith((".", "__MACOSX")) for p in rel.parts):
            found.append(rel)
    return found


def _identify(rel: Path, lms: str) -> tuple[str, Student, str]:
    """``(student folder, student, file name)`` of one exported notebook, or ValueError."""
    if lms == "canvas":
        m = _CANVAS.fullmatch(rel.name)
        if m:
            return f"{m['name']}_{m['id']}", Student(m["name"], m["id"], bool(m["late"])), m["file"]
        raise ValueError(f"submissions: {rel.as_posix()!r} is not named like a Canvas download "
                         "(<lastfirst>_<userid>_<attachmentid>_<file>)")
    for i, part in enumerate(rel.parts):  # the folder (or flat file) Moodle named after the student
        m = _MOODLE.fullmatch(part)
        if m and m["plugin"] == "file":
            file = m["file"] if i == len(rel.parts) - 1 else "/".join(rel.parts[i + 1:])
            return f"{m['name']}_{m['id']}", Student(m["name"], m["id"]), file
    raise ValueError(f"submissions: {rel.as_posix()!r} is not named like a Moodle download "
                     "(<Full Name>_<id>_assignsubmission_file_/<file>)")


@contextlib.contextmanager
def read_export(path: Path, lms: str | None = None) -> Iterator[Export]:
    """The submissions under ``path`` (a folder or a ``.zip``) laid out for grading, in a temporary
    folder removed on exit. ``lms`` is ``"canvas"``, ``"moodle"`` or ``None`` (a folder per student
    or ``<student>__<name>.ipynb``, as :mod:`.grading` reads)."""
    path = Path(path)
    if lms is not None and lms not in LMS:
        raise ValueError(f"lms must be one of {LMS} or None, got {lms!r}")
    if not path.exists():
        raise ValueError(f"submissions: {path} does not exist")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"submissions: {path} is neither a folder nor a zip archive")
    with tempfile.TemporaryDirectory(prefix="rk-submissions-") as tmp:
        source = path
        if path.is_file():
            source = Path(tmp) / "unzipped"
            _unzip(path, source)
        if lms is None:
            yield Export(None, source, {})
            return
        root, students = Path(tmp) / "submissions", {}
        for rel in _notebooks(source):
            folder, student, file = _identify(rel, lms)
            old = students.get(folder)  # a student's files: late if any is
            students[folder] = student if old is None else Student(old.name, old.lms_id, old.late or student.late)
            target = root / folder / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target)
        if not students:
            raise ValueError(f"submissions: no notebook in {path}")
        yield Export(lms, root, students)


def _totals(graded: list[Graded]) -> tuple[dict[str, float], dict[str, list[str]], float]:
    """Per student their total (the best notebook of each exercise) and a line per notebook; and the
    assignment's maximum (the exercises met)."""
    best: dict[tuple[str, str], float] = {}
    notes: dict[str, list[str]] = {}
    maxima: dict[str, float] = {}
    for g in sorted(graded, key=lambda g: g.path.as_posix()):
        title = g.exercise.name if g.exercise else g.path.name
        best[g.student, title] = max(best.get((g.student, title), 0.0), g.total)
        if g.exercise is not None:
            maxima[g.exercise.name] = g.exercise.max_points
        if g.problem:
            notes.setdefault(g.student, []).append(f"{title}: could not be graded, 0")
        else:
            tasks = ", ".join(f"{t.task} {_fmt(t.score)}/{_fmt(t.points)}" for t in g.tasks)
            notes.setdefault(g.student, []).append(f"{title}: {tasks}")
    totals: dict[str, float] = {}
    for (student, _), score in best.items():
        totals[student] = totals.get(student, 0.0) + score
    return totals, notes, sum(maxima.values())


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def write_gradebook(graded: list[Graded], export: Export, out: Path, assignment: str | None = None,
                    when: datetime | None = None) -> Path:
    """The gradebook CSV of ``export.lms`` for ``graded`` in ``out``; returns its path. ``assignment``
    heads Canvas's grade column (default: the exercises' names, ``01_pooling + 04_rmac``); ``when``
    is Moodle's "Last modified (grade)" (default: now)."""
    if export.lms not in LMS:
        raise ValueError(f"export.lms must be one of {LMS} to write a gradebook, got {export.lms!r}")
    totals, notes, maximum = _totals(graded)
    unknown = sorted(set(totals) - set(export.students))
    if unknown:
        raise ValueError(f"graded: students {unknown} are not in the {export.lms} export")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    ordered = sorted(export.students.items(), key=lambda kv: (kv[1].name.lower(), kv[1].lms_id))
    if export.lms == "canvas":
        names = dict.fromkeys(sorted(g.exercise.name for g in graded if g.exercise)) or {"retrievalkit": None}
        writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment or " + ".join(names)])
        writer.writerow(["    Points Possible", "", "", "", "", _fmt(maximum)])
        writer.writerows([cell(s.name), s.lms_id, "", "", "", _fmt(totals.get(key, 0.0))] for key, s in ordered)
    else:
        stamp = (when or datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
        writer.writerow(["Identifier", "Full name", "Grade", "Maximum Grade", "Last modified (grade)",
                         "Feedback comments"])
        writer.writerows([f"Participant {s.lms_id}", cell(s.name), _fmt(totals.get(key, 0.0)), _fmt(maximum), stamp,
                          "; ".join(notes.get(key, ["no notebook"]))] for key, s in ordered)
    path = Path(out) / f"gradebook_{export.lms}.csv"
    write_atomic(path, buf.getvalue().encode("utf-8"))
    return path
