"""Pictures for the lectures: annotated small maps, heat maps over photos, curves."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["annotated_map", "maps_row", "heat_over"]


def _array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def annotated_map(ax: Any, values: Any, title: str = "", fmt: str = "{:g}", cmap: str = "Blues") -> None:
    """A small 2-D map as coloured cells with its numbers written in them."""
    m = _array(values)
    if m.ndim != 2:
        raise ValueError(f"values must be a 2-D map, got shape {m.shape}")
    ax.imshow(m, cmap=cmap, vmin=min(0, m.min()), vmax=m.max() if m.max() > 0 else 1)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=12)
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


def heat_over(ax: Any, image: Any, heat: Any, alpha: float = 0.5, cmap: str = "jet", title: str = "") -> None:
    """A heat map (any size) stretched over an ``(H, W, 3)`` image."""
    img = _array(image)
    h = _array(heat)
    if img.ndim != 3 or h.ndim != 2:
        raise ValueError(f"image must be (H, W, 3) and heat (h, w), got {img.shape} and {h.shape}")
    ax.imshow(img)
    ax.imshow(h, cmap=cmap, alpha=alpha, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5), interpolation="bilinear")
    ax.set_axis_off()
    ax.set_title(title)
