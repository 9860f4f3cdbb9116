"""Near-identical code, for the instructor to judge: a solution cell against the package's own
implementation of its task and against the other students' cells of the same task.

Grading proves that a function gives the right numbers on inputs the student never saw; it cannot
prove who wrote it. Students have the package, so pasting its source passes every check: this
flags it. Code is compared after normalisation (the syntax tree without docstrings or
annotations, every variable, argument and function name replaced by ``_``, printed back and split
into tokens, so renaming and reformatting change nothing; attribute names and constants stay) with :class:`difflib.SequenceMatcher`;
against the package, the share of its function's tokens found in order in the cell (pasting it
with helpers around still counts), between students the matcher's ratio (1: identical). Cells of under ``min_tokens`` tokens are not compared: a one-line answer can
hardly be written differently by two honest students. A flag is a reason to look, not a verdict.
"""
from __future__ import annotations

import ast
import csv
import difflib
import inspect
import io
import itertools
import tokenize
from dataclasses import dataclass
from pathlib import Path

from .report import cell
from .._atomic import write_atomic
from . import checks

__all__ = ["Pair", "similar", "write_similar"]


@dataclass(frozen=True)
class Pair:
    task: str
    first: str  # "student (notebook path)"
    second: str  # another student, or "retrievalkit: module.function"
    score: float


class _Names(ast.NodeTransformer):
    """Docstrings and annotations out; names (variables, arguments, functions) all ``_``."""

    def visit_Name(self, node):
        node.id = "_"
        return node

    def visit_arg(self, node):
        node.arg, node.annotation = "_", None
        return node

    def visit_FunctionDef(self, node):
        node.name, node.returns = "_", None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str) and len(body) > 1:
            node.body = body[1:]
        self.generic_visit(node)
        return node


def tokens(source: str, limit: int | None = None) -> list[str]:
    """The first ``limit`` (default: all) normalised tokens of ``source`` (empty when it does not parse)."""
    try:
        tree = _Names().visit(ast.parse(source))
        text = ast.unparse(tree)
        kept = (t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                  tokenize.ENDMARKER, tokenize.COMMENT))
        return list(itertools.islice(kept, limit))
    except (SyntaxError, ValueError, tokenize.TokenError, RecursionError, MemoryError):  # e.g. x + x + ... 1000 deep
        return []


def _contains(cell: list[str], reference: list[str]) -> float:
    matcher = difflib.SequenceMatcher(None, cell, reference, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(reference)


def _ratio(a: list[str], b: list[str]) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _package_source(task: str) -> tuple[str, str] | None:
    """The package's function that a task asks students to write (the reference's namesake)."""
    t = checks.TASKS[task]
    fn = getattr(t.reference, "__globals__", {}).get(t.name)
    if fn is None or not callable(fn):
        return None
    try:
        return f"retrievalkit: {fn.__module__}.{fn.__qualname__}", inspect.getsource(fn)
    except (OSError, TypeError):
        return None


def similar(graded: list, threshold: float = 0.9, min_tokens: int = 60, max_tokens: int = 1000) -> list[Pair]:
    """The pairs at or above ``threshold``, most similar first; ``graded`` as
    :func:`retrievalkit.teaching.grading.grade` returns it. A cell is compared on its first
    ``max_tokens`` tokens, and not at all when longer than ``100 * max_tokens`` characters (parsing
    takes a second per 100 kB): the matcher's time grows with the cube of the length on repetitive
    code (two cells of 4,000 tokens: 40 s); the package's longest function has about 500 tokens."""
    cells: dict[str, list[tuple[str, list[str]]]] = {}
    for g in graded:
        for task, source in g.sources.items():
            if task in checks.TASKS and len(source) <= 100 * max_tokens \
                    and len(toks := tokens(source, max_tokens)) >= min_tokens:
                cells.setdefault(task, []).append((f"{g.student} ({g.path.as_posix()})", toks))
    pairs = []
    for task, entries in cells.items():
        if package := _package_source(task):
            reference = tokens(package[1])
            pairs += [Pair(task, who, package[0], s) for who, toks in entries
                      if reference and (s := _contains(toks, reference)) >= threshold]
        for (a, ta), (b, tb) in itertools.combinations(entries, 2):
            if a.split(" (")[0] != b.split(" (")[0] and (s := _ratio(ta, tb)) >= threshold:
                pairs.append(Pair(task, a, b, s))
    return sorted(pairs, key=lambda p: (-p.score, p.task, p.first, p.second))


def write_similar(pairs: list[Pair], out: Path) -> Path:
    """``out/similarity.csv``: task, first, second, score (written even when empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "first", "second", "similarity"])
    writer.writerows([p.task, cell(p.first), cell(p.second), f"{p.score:.2f}"] for p in pairs)
    path = Path(out) / "similarity.csv"
    write_atomic(path, buf.getvalue().encode("utf-8"))
    return path
