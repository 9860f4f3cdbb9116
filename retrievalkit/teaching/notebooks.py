"""Committed notebook outputs that read well where students open them.

:func:`execute` runs a notebook top to bottom and saves it with its outputs the way the lectures
and solutions are committed:

* **widgets**: the kernel's widget state is stored in the notebook (nbclient's
  ``store_widget_state=True``, the ``metadata.widgets`` that JupyterLab and nbviewer render), so a
  slider and the plot it drives show as widgets, not as ``interactive(children=...)`` text;
* **progress bars**: a tqdm bar displayed as a widget keeps, as its plain-text form, the "0%" of the
  moment it was displayed; its text becomes the bar's final state (``maps: 100%|██████████| 34/34``),
  and a bar hidden when it closed (``leave=False``) is dropped. Text bars on stderr keep only their
  last state (consecutive stream outputs merged);
* nbclient's volatile execution timestamps are removed (as the exercise generator does).

``python -m retrievalkit.teaching.notebooks lectures/01_pooling.ipynb ...`` executes notebooks in
place (each from its own folder). :func:`missing_widget_state` and :func:`frozen_progress_bars`
are what the tests check on every committed notebook.
"""
from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .._atomic import write_atomic
from .channels import SteppedKernelManager

__all__ = ["execute", "settle_progress_bars", "missing_widget_state", "frozen_progress_bars"]

_VIEW = "application/vnd.jupyter.widget-view+json"
_STATE = "application/vnd.jupyter.widget-state+json"
_FROZEN = re.compile(r"(?<!\d)(\d{1,2})%\|")  # a bar short of 100%: "  0%|", " 45%|"


def _state(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(_STATE, {}).get("state", {})


def _model(models: dict, ref: object) -> dict:
    return models.get(str(ref).removeprefix("IPY_MODEL_"), {})


def _bar_text(models: dict, model_id: str) -> str | None:
    """The final text of a tqdm notebook bar (an HBox of HTML, FloatProgress, HTML): "" for a bar
    hidden when it closed, None for any other widget."""
    box = models.get(model_id, {})
    if box.get("model_name") != "HBoxModel":
        return None
    children = [_model(models, c) for c in box["state"].get("children", [])]
    if [c.get("model_name") for c in children] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    if _model(models, box["state"].get("layout")).get("state", {}).get("visibility") == "hidden":
        return ""
    left, bar, right = (c["state"] for c in children)
    filled = int(10 * bar.get("value", 0) / bar["max"]) if bar.get("max") else 10
    text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
    return html.unescape(text).replace("\u2007", " ")


def settle_progress_bars(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Give each tqdm widget bar its final text, drop the bars hidden when they closed, keep the
    last state of each text bar on a stream (in place; returns ``nb``)."""
    models = _state(nb)
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(_VIEW)
            text = _bar_text(models, view["model_id"]) if view is not None else None
            if text == "":
                continue
            if text is not None:
                out["data"]["text/plain"] = text
            if (out.get("output_type") == "stream" and kept and kept[-1].get("output_type") == "stream"
                    and kept[-1]["name"] == out["name"]):  # a text bar writes one stream output an update
                kept[-1]["text"] += out["text"]
                continue
            kept.append(out)
        for out in kept:
            if out.get("output_type") == "stream" and "\r" in out["text"]:
                out["text"] = "\n".join(line.rsplit("\r", 1)[-1] for line in out["text"].split("\n"))
        if "outputs" in cell:
            cell.outputs = kept
    return nb


def missing_widget_state(nb: nbformat.NotebookNode) -> list[str]:
    """The model ids of the widgets the outputs display that the notebook holds no state for."""
    models = _state(nb)
    return [out["data"][_VIEW]["model_id"] for cell in nb.cells for out in cell.get("outputs", [])
            if _VIEW in out.get("data", {}) and out["data"][_VIEW]["model_id"] not in models]


def frozen_progress_bars(nb: nbformat.NotebookNode) -> list[str]:
    """The outputs' texts that show a progress bar short of 100%."""
    texts = [str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
             for cell in nb.cells for out in cell.get("outputs", [])]
    return [t for t in texts if _FROZEN.search(t)]


def execute(path: str | Path, timeout: int = 1200, kernel_name: str = "python3") -> Path:
    """Run the notebook at ``path`` in its own folder and save it in place with its outputs, widget
    state and settled progress bars (atomically); returns the path."""
    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ValueError(f"path must be an existing .ipynb file, got {path}")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
                   kernel_manager_class=SteppedKernelManager,  # never sleeps through a reply (.channels)
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    settle_progress_bars(nb)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    write_atomic(path, (nbformat.writes(nb) + "\n").encode("utf-8"))
    return path


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m retrievalkit.teaching.notebooks NOTEBOOK.ipynb ...")
    for name in sys.argv[1:]:
        print(f"executed {execute(name)}", flush=True)
