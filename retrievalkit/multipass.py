"""Multiple feed-forward passes: describe image patches separately, then aggregate (survey fig. 6).

Where single-pass methods run the network once and pool its feature map, multi-pass methods
(MOP-CNN of Gong et al., Razavian et al.'s sliding windows, spatial pyramids) cut the image into
patches (:func:`retrievalkit.regions.patch_boxes`), run the network on each and aggregate the
patch descriptors into one global descriptor: more passes, more time, sometimes more accuracy.
MOP-CNN (Gong et al., ECCV 2014, https://arxiv.org/abs/1403.1840) resizes every patch to the
network's input size (``size``), so that each patch costs a full pass and the network sees the
patch's details enlarged; without ``size`` a patch goes in at its own, smaller size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision.transforms.functional import InterpolationMode, resize

from ._batching import rows_by_shape
from ._validate import positive_int
from .normalization import l2n

__all__ = ["patch_descriptors", "multi_pass"]

Embed = Callable[[torch.Tensor], torch.Tensor]


def _check(image: torch.Tensor, boxes: Sequence[Sequence[int]]) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.numel() == 0:
        raise ValueError(f"image must be a non-empty (channels, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if len(boxes) == 0:
        raise ValueError("boxes must hold at least one [x1, y1, x2, y2] box")
    H, W = image.shape[-2:]
    for b in boxes:
        if len(b) != 4 or not (0 <= b[0] < b[2] <= W and 0 <= b[1] < b[3] <= H):
            raise ValueError(f"boxes must be [x1, y1, x2, y2] inside the {H}x{W} image with x1 < x2, y1 < y2, got {tuple(b)}")


def patch_descriptors(
    image: torch.Tensor, boxes: Sequence[Sequence[int]], embed: Embed, batch_size: int = 16,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """One descriptor per box: ``embed`` on the crop ``image[:, y1:y2, x1:x2]`` -> ``(n_boxes, D)``.

    ``embed`` maps a batch ``(B, channels, h, w)`` to descriptors ``(B, D)`` (for instance a
    network followed by a pooling). ``size = (h, w)``: each crop is first resized to it
    (bilinear, antialiased), as MOP-CNN feeds every patch at the network's input size. Crops of
    one size go through the network together, at most ``batch_size`` at a time; rows come back
    in the order of ``boxes``.
    """
    _check(image, boxes)
    batch_size = positive_int(batch_size, "batch_size")
    crops = [image[:, y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]  # views, no copies
    if size is not None:
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
            raise ValueError(f"size must be (height, width), two integers >= 1, got {size!r}")
        crops = [resize(c, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True) for c in crops]
    return rows_by_shape(crops, embed, batch_size, "embed")


def multi_pass(
    image: torch.Tensor, boxes: Sequence[Sequence[int]], embed: Embed, aggregate: str = "sum", batch_size: int = 16,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Global descriptor from patch descriptors -> ``(D,)``, L2-normalised.

    ``aggregate="sum"``: ``l2n(sum_i l2n(d_i))``, each patch counting equally, as R-MAC does
    with its regions; ``"max"``: ``l2n(max_i d_i)`` per dimension. ``size``: as in
    :func:`patch_descriptors`.
    """
    if aggregate not in ("sum", "max"):
        raise ValueError(f"aggregate must be 'sum' or 'max', got {aggregate!r}")
    d = patch_descriptors(image, boxes, embed, batch_size, size)
    if aggregate == "sum":
        v = l2n(d).sum(dim=0)
    else:
        v = d.amax(dim=0)
    return l2n(v)
