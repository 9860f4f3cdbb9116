"""The results of a batch (:func:`retrievalkit.teaching.grading.grade`).

``RESULTS/scores.csv``: one row per graded notebook (student, notebook, file, one column per
task of every notebook in the batch, an empty column per written question, headed
``<grade id> (by hand, /points)``, for the instructor to fill, total, max, note), and
``RESULTS/feedback/<student>.md``: per notebook and task the points, each property as ✓/✗ with
the teaching message of the checks, and what went wrong (timeouts, crashes, refused operations);
never the hidden inputs or the test code; the written answers are listed as "to grade by hand".
``RESULTS/to_grade_by_hand.md`` gathers, per written question, every student's answer (or that
there is none). Everything a student wrote is escaped (inert Markdown, CSV cells that do not
run as formulas); all files are written atomically.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from pathlib import Path

from .._atomic import write_atomic
from . import checks
from .exercises import ANSWER_HERE
from .grading import Graded

__all__ = ["write_results", "summary", "cell"]


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _safe(name: str) -> str:
    """A file name for ``name``: its letters, digits, ``.``, ``_`` and ``-`` (NFC), and, when anything
    had to change, a hash of the exact name, so that two students never share a feedback file
    (``alice`` and ``alice_``, ``zoë`` typed two ways)."""
    slug = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", name)).strip("._")[:80] or "student"
    return slug if slug == name else f"{slug}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _md(text: object) -> str:
    """``text`` (a student's name, path or error message) as inert Markdown on one line: no links,
    images, HTML, emphasis or code spans that the student could have planted."""
    return re.sub(r"([\\`*_\[\]<>|~!#])", r"\\\1", " ".join(str(text).split()))


def cell(value: object) -> object:
    """A CSV cell that spreadsheets will not run: text starting with ``= + - @`` (or a tab or CR)
    gets a leading ``'`` (OWASP's advice on CSV injection); numbers pass unchanged."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _feedback(student: str, rows: list[Graded]) -> str:
    lines = [f"# Feedback for {_md(student)}", ""]
    for g in rows:
        title = g.exercise.name if g.exercise else "?"
        lines += [f"## {title} ({_md(g.path.as_posix())}): {_fmt(g.total)} / {_fmt(g.max_points)}", ""]
        if g.problem:
            lines += [f"Could not be graded: {_md(g.problem)}. Score 0.", ""]
            continue
        for t in g.tasks:
            lines += [f"### `{checks.TASKS[t.task].name}`: {_fmt(t.score)} / {_fmt(t.points)}", ""]
            lines += [f"- ⚠ {_md(f)}" for f in t.faults]
            lines += [f"- {'✓' if r.passed else '✗'} {_md(r.label)}: {_md(r.message)}" for r in t.results]
            lines.append("")
        for gid, points in g.exercise.written.items() if g.exercise else ():
            answered = g.written.get(gid, "").strip() not in ("", ANSWER_HERE)
            lines += [f"### written answer `{gid}`: to grade by hand (/ {_fmt(points)})", "",
                      "Your answer is with the instructor." if answered else "No answer was written.", ""]
    return "\n".join(lines)


def write_results(graded: list[Graded], out: Path) -> tuple[Path, list[Path]]:
    """``out/scores.csv`` and ``out/feedback/<student>.md``; returns their paths."""
    out = Path(out)
    tasks = list(dict.fromkeys(t.task for g in graded for t in g.tasks))
    written = dict(kv for g in graded if g.exercise for kv in g.exercise.written.items())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "notebook", "file", *tasks, *(f"{w} (by hand, /{_fmt(p)})" for w, p in written.items()),
                     "total", "max", "note"])
    for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix())):
        scores = {t.task: _fmt(t.score) for t in g.tasks}
        writer.writerow([cell(v) for v in (g.student, g.exercise.name if g.exercise else "", g.path.as_posix(),
                         *[scores.get(t, "") for t in tasks], *[""] * len(written), _fmt(g.total), _fmt(g.max_points),
                         f"could not be graded: {g.problem}" if g.problem else "")])
    scores = out / "scores.csv"
    write_atomic(scores, buf.getvalue().encode("utf-8"))
    by_student: dict[str, list[Graded]] = {}
    for g in graded:
        by_student.setdefault(g.student, []).append(g)
    feedback = []
    for student, rows in sorted(by_student.items()):
        path = out / "feedback" / f"{_safe(student)}.md"
        write_atomic(path, _feedback(student, sorted(rows, key=lambda g: g.path.as_posix())).encode("utf-8"))
        feedback.append(path)
    if written:
        write_atomic(out / "to_grade_by_hand.md", _by_hand(graded, written).encode("utf-8"))
    return scores, feedback


def _by_hand(graded: list[Graded], written: dict[str, float]) -> str:
    """Every student's answer to each written question, for the instructor (escaped, quoted)."""
    lines = ["# Written answers to grade by hand", "",
             "Enter the points in the question's column of scores.csv (or your gradebook).", ""]
    for gid, points in written.items():
        lines += [f"## `{gid}` (/ {_fmt(points)})", ""]
        for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix())):
            if not g.exercise or gid not in g.exercise.written:
                continue
            text = g.written.get(gid, "").strip()
            lines += [f"### {_md(g.student)} ({_md(g.path.as_posix())})", ""]
            lines += ([f"> {_md(line)}" if line.strip() else ">" for line in text.splitlines()]
                      if text not in ("", ANSWER_HERE) else ["*(no answer)*"])
            lines.append("")
    return "\n".join(lines)


def summary(graded: list[Graded]) -> str:
    """A plain-text table: student, notebook, score."""
    rows = [(g.student, g.exercise.name if g.exercise else "?",
             f"{_fmt(g.total)} / {_fmt(g.max_points)}" + (" (could not be graded)" if g.problem else ""))
            for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix()))]
    head = ("student", "notebook", "score")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])
