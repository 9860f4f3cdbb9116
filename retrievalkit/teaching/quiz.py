"""Check-your-understanding questions with instant feedback, for the lectures.

Two kinds, each answered in the notebook itself, with no grading infrastructure:

* :func:`choice`: multiple choice. Every option carries its own feedback: why the right one is
  right, why each wrong one is wrong (the point of the question is what a student learns from
  the wrong answer they picked).
* :func:`number`: a number the student works out (often on paper first), accepted within a
  tolerance; answers that a typical mistake gives can be listed with the mistake they reveal.

In JupyterLab a question shows as a widget (radio buttons or a text box, a "Check" button and the
feedback). Everywhere else, and for tests, ``question.answer(x)`` returns the same feedback as a
string. Executing a question cell only displays it, so the lectures run under nbval with them.

    q = choice("GeM with p = 1 is ...", {
        "average pooling": (True, "The p-th root of the mean of x^1 is the mean."),
        "max pooling": (False, "That is the limit p -> infinity."),
    })
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Choice", "Number", "choice", "number"]

_RIGHT, _WRONG = "✓ Right. ", "✗ Not quite. "


@dataclass
class Choice:
    """A multiple-choice question: ``options`` maps each option's text to (is it right, why)."""

    prompt: str
    options: dict[str, tuple[bool, str]]

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if not isinstance(self.options, dict) or len(self.options) < 2:
            raise ValueError("options must be a dict of at least two options")
        for text, value in self.options.items():
            if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool)
                    and isinstance(value[1], str) and value[1].strip()):
                raise ValueError(f"options[{text!r}] must be (is_right: bool, why: non-empty str), got {value!r}")
        if not any(right for right, _ in self.options.values()):
            raise ValueError("options must mark at least one option as right")

    def answer(self, picked: str) -> str:
        """The feedback on ``picked`` (an option's text, or its letter "a", "b", ...)."""
        keys = list(self.options)
        if isinstance(picked, str) and len(picked) == 1 and picked.lower() in "abcdefghij"[: len(keys)]:
            picked = keys["abcdefghij".index(picked.lower())]
        if picked not in self.options:
            raise ValueError(f"picked must be one of the options {keys} or a letter a-{'abcdefghij'[len(keys) - 1]}, got {picked!r}")
        right, why = self.options[picked]
        return (_RIGHT if right else _WRONG) + why

    def _ipython_display_(self) -> None:
        import ipywidgets as widgets

        keys = list(self.options)
        labels = [f"{'abcdefghij'[i]}) {k}" for i, k in enumerate(keys)]
        buttons = widgets.RadioButtons(options=list(zip(labels, keys)), value=None, layout=widgets.Layout(width="max-content"))
        _show(_ask(self.prompt, buttons, lambda: None if buttons.value is None else self.answer(buttons.value)),
              "\n".join([f"Question. {self.prompt}", *labels]))


@dataclass
class Number:
    """A numeric question: ``value`` within ``tol`` (absolute) is right; ``mistakes`` maps the answers
    that typical mistakes give to what the mistake is."""

    prompt: str
    value: float
    tol: float
    why: str
    mistakes: dict[float, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ValueError(f"value must be a finite number, got {self.value!r}")
        if not isinstance(self.tol, (int, float)) or not self.tol > 0:
            raise ValueError(f"tol must be a positive number, got {self.tol!r}")
        for wrong in self.mistakes:
            if abs(wrong - self.value) <= self.tol:
                raise ValueError(f"mistakes must not list an answer within tol of the right value, got {wrong!r}")

    def answer(self, given: Any) -> str:
        """The feedback on the number ``given`` (a number or its text, "0.83", "5/6")."""
        try:
            x = _parse(given)
        except (ValueError, ZeroDivisionError):
            return f"✗ {given!r} is not a number: type a number such as 0.25 or 1/4."
        if abs(x - self.value) <= self.tol:
            return _RIGHT + self.why
        for wrong, mistake in self.mistakes.items():
            if abs(x - wrong) <= self.tol:
                return _WRONG + mistake
        return _WRONG + "Work it through once more on paper, step by step, then check again."

    def _ipython_display_(self) -> None:
        import ipywidgets as widgets

        box = widgets.Text(placeholder="your answer", layout=widgets.Layout(width="12em"))
        _show(_ask(self.prompt, box, lambda: self.answer(box.value) if box.value.strip() else None),
              f"Question. {self.prompt}")


def _parse(given: Any) -> float:
    if isinstance(given, bool):
        raise ValueError(given)
    if isinstance(given, (int, float)):
        return float(given)
    text = str(given).strip().replace(",", ".")
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text.rstrip("%")) / (100 if text.endswith("%") else 1)


def _ask(prompt: str, field_: Any, feedback: Any) -> Any:
    """The widget: the question, the answer field, a Check button and the feedback line."""
    import ipywidgets as widgets

    out = widgets.HTMLMath()
    check = widgets.Button(description="Check", button_style="primary", layout=widgets.Layout(width="6em"))

    def on_click(_: Any) -> None:
        text = feedback()
        out.value = "<i>Pick an answer first.</i>" if text is None else html.escape(text)

    check.on_click(on_click)
    return widgets.VBox([widgets.HTMLMath(f"<b>Question.</b> {html.escape(prompt)}"), field_, check, out])


def _show(widget: Any, text: str) -> None:
    """Display ``widget`` with ``text`` as its plain-text form (what a viewer without widgets shows)."""
    from IPython.display import display

    view = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
    display({"application/vnd.jupyter.widget-view+json": view, "text/plain": text}, raw=True)


def choice(prompt: str, options: dict[str, tuple[bool, str]]) -> Choice:
    """A multiple-choice question (see :class:`Choice`); displayed when it ends a cell."""
    return Choice(prompt, options)


def number(prompt: str, value: float, tol: float, why: str, mistakes: dict[float, str] | None = None) -> Number:
    """A numeric question (see :class:`Number`); displayed when it ends a cell."""
    return Number(prompt, value, tol, why, dict(mistakes or {}))
