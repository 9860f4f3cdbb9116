"""Generate the students' ``exercises/`` from ``solutions/`` (nbgrader's source format).

A solution notebook marks its answer cells with nbgrader metadata (schema 3,
``"solution": true``) and writes the answer between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; its check cells have ``"grade": true, "locked": true`` and points. The
exercise is the same notebook with every answer replaced by ``raise NotImplementedError()``,
all outputs cleared and the check cells locked against editing and deletion in JupyterLab.
An instructor who uses nbgrader can point it at ``solutions/`` directly.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "END", "make_exercise", "write_exercises"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
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
        if meta.get("solution"):
            if BEGIN not in cell.source:
                raise ValueError(f"{name} cell {i}: a solution cell needs {BEGIN!r} / {END!r} markers")
            cell.source = _strip(cell.source, f"{name} cell {i}")
        elif BEGIN in cell.source:
            raise ValueError(f"{name} cell {i}: solution markers outside a cell marked 'solution'")
        if meta.get("locked") or meta.get("grade"):
            meta["locked"] = True
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
    nb.metadata.pop("widgets", None)
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
