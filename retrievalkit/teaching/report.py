"""The results of a batch (:func:`retrievalkit.teaching.grading.grade`).

``RESULTS/scores.csv``: one row per graded notebook (student, notebook, file, one column per
task of every notebook in the batch, total, max, note), and ``RESULTS/feedback/<student>.md``:
per notebook and task the points, each property as ✓/✗ with the teaching message of the checks,
and what went wrong (timeouts, crashes, refused operations); never the hidden inputs or the
test code. Both are written atomically.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from .._atomic import write_atomic
from . import checks
from .grading import Graded

__all__ = ["write_results", "summary"]


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"


def _feedback(student: str, rows: list[Graded]) -> str:
    lines = [f"# Feedback for {student}", ""]
    for g in rows:
        title = g.exercise.name if g.exercise else "?"
        lines += [f"## {title} (`{g.path.as_posix()}`): {_fmt(g.total)} / {_fmt(g.max_points)}", ""]
        if g.problem:
            lines += [f"Could not be graded: {g.problem}. Score 0.", ""]
            continue
        for t in g.tasks:
            lines += [f"### `{checks.TASKS[t.task].name}`: {_fmt(t.score)} / {_fmt(t.points)}", ""]
            lines += [f"- ⚠ {f}" for f in t.faults]
            lines += [f"- {'✓' if r.passed else '✗'} {r.label}: {r.message}" for r in t.results]
            lines.append("")
    return "\n".join(lines)


def write_results(graded: list[Graded], out: Path) -> tuple[Path, list[Path]]:
    """``out/scores.csv`` and ``out/feedback/<student>.md``; returns their paths."""
    out = Path(out)
    tasks = list(dict.fromkeys(t.task for g in graded for t in g.tasks))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "notebook", "file", *tasks, "total", "max", "note"])
    for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix())):
        scores = {t.task: _fmt(t.score) for t in g.tasks}
        writer.writerow([g.student, g.exercise.name if g.exercise else "", g.path.as_posix(),
                         *[scores.get(t, "") for t in tasks], _fmt(g.total), _fmt(g.max_points),
                         f"could not be graded: {g.problem}" if g.problem else ""])
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
    return scores, feedback


def summary(graded: list[Graded]) -> str:
    """A plain-text table: student, notebook, score."""
    rows = [(g.student, g.exercise.name if g.exercise else "?",
             f"{_fmt(g.total)} / {_fmt(g.max_points)}" + (" (could not be graded)" if g.problem else ""))
            for g in sorted(graded, key=lambda g: (g.student, g.path.as_posix()))]
    head = ("student", "notebook", "score")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])
