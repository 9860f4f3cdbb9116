"""The class report: what the class as a whole got right and wrong, written next to ``scores.csv``.

Per task, in the order of the notebooks: how many students passed it (full points), each named
mistake of the checks (:attr:`checks.Result.mistake`) with how many students made it, most common
first, then the failures no listed mistake explains (an error raised, another wrong answer, not
attempted, no answer at all), and the distribution of the task's scores. A student counts once per
task: with several notebooks holding it, the best one. A notebook that could not be graded counts
as "could not be graded" with 0 on every task of its exercise.

Files: ``class_report.md`` (for the instructor), ``class_report.csv`` (one count a row: notebook,
task, kind in ``passed`` / ``mistake`` / ``other`` / ``score``, what, students, of) and
``class_report.png`` (per task: passed and each mistake; the scores), all written atomically.
"""
from __future__ import annotations

import csv
import io
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .._atomic import write_atomic
from . import checks
from .grading import Graded, TaskGrade

__all__ = ["TaskSummary", "summarise", "class_markdown", "write_class_report"]

# the failures that are not a named mistake, in the order the report lists them
RAISED, UNEXPLAINED, NOT_ATTEMPTED, NO_ANSWER, UNGRADED = (
    "raised an error", "another wrong answer (no listed mistake explains it)", "not attempted",
    "no answer (a time-out, a crash, a missing or failing cell)", "could not be graded")


@dataclass
class TaskSummary:
    """What the class did on one task."""

    notebook: str
    task: str
    points: float
    students: int
    passed: int
    mistakes: list[tuple[str, int]]  # named mistakes (their description), most common first
    other: list[tuple[str, int]]  # the other failures, in the order of the module's constants
    scores: list[tuple[float, int]]  # score -> students, lowest score first


def _failures(tg: TaskGrade | None) -> tuple[set[str], set[str]]:
    """The named mistakes and the other failures of one student's grade on a task."""
    if tg is None:
        return set(), {UNGRADED}
    named = {r.mistake for r in tg.results if not r.passed and r.mistake}
    other = set()
    for r in tg.results:
        if not r.passed and not r.mistake:
            other.add(RAISED if "; yours raised " in r.message else UNEXPLAINED)
    if not tg.results and tg.score < tg.points:
        other.add(NOT_ATTEMPTED if any("not attempted" in f for f in tg.faults) else NO_ANSWER)
    return named, other


def summarise(graded: list[Graded]) -> list[TaskSummary]:
    """One :class:`TaskSummary` per task of every exercise in the batch, notebook by notebook."""
    best: dict[tuple[str, str], dict[str, TaskGrade | None]] = {}  # (notebook, task) -> student -> grade
    points: dict[tuple[str, str], float] = {}
    for g in sorted(graded, key=lambda g: g.exercise.name if g.exercise else ""):
        if g.exercise is None:
            continue
        mine = {t.task: t for t in g.tasks}
        for task, pts in g.exercise.tasks.items():
            key = (g.exercise.name, task)
            points[key] = pts
            seen = best.setdefault(key, {})
            tg = mine.get(task)
            old = seen.get(g.student)
            if g.student not in seen or (tg is not None and (old is None or tg.score > old.score)):
                seen[g.student] = tg
    summaries = []
    for (notebook, task), by_student in best.items():
        named, other, scores = Counter(), Counter(), Counter()
        for tg in by_student.values():
            n, o = _failures(tg)
            named.update(n)
            other.update(o)
            scores[tg.score if tg else 0.0] += 1
        pts = points[(notebook, task)]
        passed = sum(1 for tg in by_student.values() if tg is not None and tg.score >= pts)
        order = [RAISED, UNEXPLAINED, NOT_ATTEMPTED, NO_ANSWER, UNGRADED]
        summaries.append(TaskSummary(
            notebook, task, pts, len(by_student), passed,
            sorted(named.items(), key=lambda kv: (-kv[1], kv[0])),
            [(o, other[o]) for o in order if other[o]], sorted(scores.items())))
    return summaries


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _name(task: str) -> str:
    return checks.TASKS[task].name if task in checks.TASKS else task


def class_markdown(summaries: list[TaskSummary]) -> str:
    """The report as Markdown: an overview table per notebook, then each task's mistakes and scores."""
    students = max((s.students for s in summaries), default=0)
    lines = ["# Class report", "",
             f"{students} students. Per task: how many passed (full points), each named mistake with how many "
             "students made it (most common first), then the scores.", ""]
    for notebook in dict.fromkeys(s.notebook for s in summaries):
        rows = [s for s in summaries if s.notebook == notebook]
        lines += [f"## {notebook}", "", "| task | points | passed | mean score | most common mistake |",
                  "| --- | --- | --- | --- | --- |"]
        for s in rows:
            mean = sum(score * n for score, n in s.scores) / max(s.students, 1)
            top = f"yours {s.mistakes[0][0]} ({s.mistakes[0][1]})" if s.mistakes else "—"
            lines.append(f"| `{_name(s.task)}` | {_fmt(s.points)} | {s.passed} / {s.students} | {_fmt(mean)} | {top} |")
        lines.append("")
        for s in rows:
            lines += [f"### `{_name(s.task)}`: {s.passed} of {s.students} passed", ""]
            if s.mistakes or s.other:
                lines += ["| mistake | students |", "| --- | --- |"]
                lines += [f"| yours {what} | {n} |" for what, n in s.mistakes]
                lines += [f"| *{what}* | {n} |" for what, n in s.other]
                lines.append("")
            lines += [f"| score (of {_fmt(s.points)}) | students | |", "| --- | --- | --- |"]
            lines += [f"| {_fmt(score)} | {n} | {'█' * n} |" for score, n in s.scores]
            lines.append("")
    return "\n".join(lines)


def _csv(summaries: list[TaskSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["notebook", "task", "kind", "what", "students", "of"])
    for s in summaries:
        writer.writerow([s.notebook, s.task, "passed", "", s.passed, s.students])
        writer.writerows([s.notebook, s.task, "mistake", what, n, s.students] for what, n in s.mistakes)
        writer.writerows([s.notebook, s.task, "other", what, n, s.students] for what, n in s.other)
        writer.writerows([s.notebook, s.task, "score", _fmt(score), n, s.students] for score, n in s.scores)
    return buf.getvalue()


def _chart(summaries: list[TaskSummary]) -> bytes:
    """Per task, left: students who passed (green), made each mistake (red), failed otherwise
    (grey); right: students per score. PNG bytes, drawn with matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    heights = [1.2 + 0.32 * (1 + len(s.mistakes) + len(s.other)) for s in summaries] or [1.0]
    fig = Figure(figsize=(12, sum(heights) + 0.3 * len(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(summaries), 1), 2, squeeze=False, gridspec_kw={
        "height_ratios": heights, "width_ratios": [3, 1]})
    for (left, right), s in zip(axes, summaries):
        labels = ["passed"] + [f"yours {w}" for w, _ in s.mistakes] + [w for w, _ in s.other]
        counts = [s.passed] + [n for _, n in s.mistakes] + [n for _, n in s.other]
        colours = ["tab:green"] + ["tab:red"] * len(s.mistakes) + ["tab:gray"] * len(s.other)
        y = range(len(labels))
        left.barh(y, counts, color=colours)
        left.set_yticks(list(y), ["\n".join(textwrap.wrap(t, 60)[:2]) for t in labels], fontsize=8)
        left.invert_yaxis()
        left.set_xlim(0, max(s.students, 1))
        left.set_title(f"{s.notebook}: {_name(s.task)} ({s.passed} of {s.students} passed)", fontsize=10, loc="left")
        for i, n in enumerate(counts):
            left.text(n, i, f" {n}", va="center", fontsize=8)
        right.bar([_fmt(score) for score, _ in s.scores], [n for _, n in s.scores], color="tab:blue")
        right.set_title(f"score of {_fmt(s.points)}", fontsize=9)
        right.set_ylim(0, max(s.students, 1))
        for ax in (left.xaxis, right.yaxis):
            ax.set_major_locator(MaxNLocator(integer=True))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def write_class_report(graded: list[Graded], out: Path) -> list[Path]:
    """``out/class_report.md``, ``.csv`` and ``.png``; returns their paths."""
    out = Path(out)
    summaries = summarise(graded)
    paths = [out / "class_report.md", out / "class_report.csv", out / "class_report.png"]
    write_atomic(paths[0], class_markdown(summaries).encode("utf-8"))
    write_atomic(paths[1], _csv(summaries).encode("utf-8"))
    write_atomic(paths[2], _chart(summaries))
    return paths
