"""Pictures for the lectures: annotated small maps, heat maps over photos, curves."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["annotated_map", "maps_row", "heat_over", "result_grid", "OK_COLOUR", "BAD_COLOUR", "JUNK_COLOUR"]

OK_COLOUR, BAD_COLOUR, JUNK_COLOUR = "tab:green", "tab:red", "tab:gray"


def _array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def annotated_map(ax: Any, values: Any, title: str = "", fmt: str = "{:g}", cmap: str = "Blues") -> None:
    """A small 2-D map as coloured cells with its numbers written in them."""
    m = _array(values)
    if m.ndim != 2:
        raise ValueError(f"values must be a 2-D map, got shape {m.shape}")
    im = ax.imshow(m, cmap=cmap, vmin=min(0, m.min()), vmax=m.max() if m.max() > 0 else 1)
    for (i, j), v in np.ndenumerate(m):
        dark = np.mean(im.cmap(im.norm(v))[:3]) < 0.5  # white numbers on dark cells
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=12, color="white" if dark else "black")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.set_title(title)


def maps_row(maps: Sequence[Any], titles: Sequence[str], size: float = 3.0, **kw: Any) -> Any:
    """Several annotated maps side by side; returns the figure."""
    import matplotlib.pyplot as plt

    if len(maps) != len(titles):
        raise ValueError(f"titles must name every map: {len(maps)} maps, {len(titles)} titles")
    fig, axes = plt.subplots(1, len(maps), figsize=(size * len(maps), size))
    for ax, m, t in zip(np.atleast_1d(axes), maps, titles):
        annotated_map(ax, m, t, **kw)
    fig.tight_layout()
    return fig


def heat_over(ax: Any, image: Any, heat: Any, alpha: float = 0.5, cmap: str = "jet", title: str = "",
              interpolation: str = "bilinear") -> None:
    """A heat map (any size) stretched over an ``(H, W, 3)`` image (``interpolation="nearest"``
    for labels, such as visual words or region masks, which must not be blended)."""
    img = _array(image)
    h = _array(heat)
    if img.ndim != 3 or h.ndim != 2:
        raise ValueError(f"image must be (H, W, 3) and heat (h, w), got {img.shape} and {h.shape}")
    ax.imshow(img)
    ax.imshow(h, cmap=cmap, alpha=alpha, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5), interpolation=interpolation)
    ax.set_axis_off()
    ax.set_title(title)


def _thumb(ax: Any, image: Any, colour: str | None, title: str) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(colour is not None)
        if colour is not None:
            spine.set_color(colour)
            spine.set_linewidth(5)
    ax.set_title(title, fontsize=9)


def result_grid(dataset: Any, ranks: Any, queries: Sequence[int], gnd: Sequence[dict] | None = None, k: int = 6) -> Any:
    """One row per query: the query crop, then its top ``k`` results framed green (relevant),
    red (irrelevant) or grey (junk, ignored by the protocol). ``gnd`` is the ``{"ok", "junk"}``
    form; by default ``dataset.gnd``, and for a revisited ground truth (``easy`` / ``hard`` lists,
    as the mini benchmark's) its Medium protocol. Returns the figure."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from .evaluate import revisited

    R = _array(ranks)
    if gnd is None:
        gnd = revisited(dataset.gnd, "medium") if "ok" not in dataset.gnd[0] else dataset.gnd
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.8 * (k + 1), 1.9 * len(queries)), squeeze=False)
    for row, q in zip(axes, queries):
        _thumb(row[0], dataset.query_image(q), "black", f"query {q}")
        ok, junk = set(gnd[q].get("ok", [])), set(gnd[q].get("junk", []))
        for rank, (ax, i) in enumerate(zip(row[1:], R[q][:k])):
            colour = OK_COLOUR if i in ok else JUNK_COLOUR if i in junk else BAD_COLOUR
            with Image.open(dataset.images[i]) as im:
                _thumb(ax, im.convert("RGB"), colour, f"#{rank + 1}")
    fig.tight_layout()
    return fig
