"""Generate the students' ``exercises/`` from ``solutions/`` (nbgrader's source format).

A solution notebook marks its answer cells with nbgrader metadata (schema 3,
``"solution": true``) and writes the answer between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; its check cells have ``"grade": true, "locked": true`` and points. The
exercise is the same notebook with every answer replaced by ``raise NotImplementedError()``
(a written answer, a Markdown cell marked ``"solution": true, "grade": true``, by "YOUR ANSWER HERE"),
all outputs cleared and the check cells locked against editing and deletion in JupyterLab.
Under the title (a first Markdown cell), :data:`UP_FRONT` tells students that an answer calling ``retrievalkit`` passes its
check but scores 0 when graded (the check cell warns about it too). An instructor who uses nbgrader
can point it at ``solutions/`` directly.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "ANSWER_HERE", "UP_FRONT", "make_exercise", "write_exercises"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
ANSWER_HERE = "YOUR ANSWER HERE"  # what a written answer cell holds in the exercise, as nbgrader writes it
UP_FRONT = (
    "**Before you start.** Write each function with torch (and numpy) alone: do not call `retrievalkit` "
    "inside your answers (`rk.pooling.gem`, `from retrievalkit.pooling import gem`). The check cells "
    "import it to test your work, and a function that calls it would pass them here, but your notebook "
    "is graded where `retrievalkit` cannot be imported: such an answer scores 0. The check cell warns "
    "you when your function calls it.")
_BLOCK = re.compile(rf"^([ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*$", re.S | re.M)


def _strip(source: str, where: str) -> str:
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"{where}: unbalanced {BEGIN!r} / {END!r} markers")
    return _BLOCK.sub(lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()", source)


def make_exercise(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The exercise version of a solution notebook (a new notebook; the input is unchanged)."""
    nb = copy.deepcopy(solution)
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        cell.metadata.pop("execution", None)  # nbclient's timestamps: volatile
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if meta.get("solution") and cell.cell_type == "markdown":  # a written answer, graded by hand
            cell.source = ANSWER_HERE
        elif meta.get("solution"):
            if BEGIN not in cell.source:
                raise ValueError(f"{name} cell {i}: a solution cell needs {BEGIN!r} / {END!r} markers")
            cell.source = _strip(cell.source, f"{name} cell {i}")
        elif BEGIN in cell.source:
            raise ValueError(f"{name} cell {i}: solution markers outside a cell marked 'solution'")
        if meta.get("locked") or (meta.get("grade") and not meta.get("solution")):  # answers stay editable
            meta["locked"] = True
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
    nb.metadata.pop("widgets", None)
    if nb.cells and nb.cells[0].cell_type == "markdown":  # under the title
        note = nbformat.v4.new_markdown_cell(UP_FRONT)
        note.id = "before-you-start"  # fixed, so that the generated file does not change from run to run
        nb.cells.insert(1, note)
    return nb


def write_exercises(solutions: Path, exercises: Path) -> list[Path]:
    """Regenerate ``exercises/`` from every ``solutions/*.ipynb``; returns the files written."""
    solutions, exercises = Path(solutions), Path(exercises)
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(solutions.glob("*.ipynb")):
        nb = make_exercise(nbformat.read(src, as_version=4), src.name)
        dst = exercises / src.name
        tmp = dst.with_suffix(".ipynb.tmp")
        tmp.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        tmp.replace(dst)
        written.append(dst)
    return written
