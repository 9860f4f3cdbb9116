"""Regional pooling: R-MAC (Tolias et al., ICLR 2016), any pooling over its regions, and the
modified R-MAC of Seddati et al. (ICCVW 2017); image patches for multiple passes.

Regions are ``(y, x, h, w)`` in feature-map cells: top-left corner, height and width.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ._validate import check_map_list, check_maps, positive_int, unbatch
from .normalization import l2n
from .pooling import mac

__all__ = ["rmac_regions", "regional_pool", "regional_mac", "regional_vectors", "rmac", "os_rmac", "os_rmac_windows", "patch_boxes", "draw_regions"]

Pool = Callable[[torch.Tensor], torch.Tensor]
_OVERLAP = 0.4  # desired overlap of neighbouring regions (Tolias et al.)
_STEPS = (2, 3, 4, 5, 6, 7)  # candidate numbers of regions along the long side at level 1


def _grid(H: int, W: int, L: int) -> list[tuple[int, list[int], list[int]]]:
    """Per level: region side and the top-left corners along y and x (cirtorch's arithmetic)."""
    w = min(W, H)
    # cirtorch computes these in float32 (torch.Tensor); the same ops give the same corners.
    steps = torch.tensor(_STEPS, dtype=torch.float32)
    b = (max(H, W) - w) / (steps - 1)
    idx = int(torch.argmin(torch.abs(((w**2 - w * b) / w**2) - _OVERLAP)))
    Wd = idx + 1 if H < W else 0
    Hd = idx + 1 if H > W else 0
    levels = []
    for l in range(1, L + 1):
        wl = math.floor(2 * w / (l + 1))
        if wl == 0:  # the map is too small for this level
            continue
        wl2 = math.floor(wl / 2 - 1)
        corners = []
        for extra, size in ((Hd, H), (Wd, W)):
            step = 0 if l + extra == 1 else (size - wl) / (l + extra - 1)
            c = torch.floor(wl2 + torch.arange(l + extra, dtype=torch.float32) * step) - wl2
            corners.append([int(v) for v in c.tolist()])
        levels.append((wl, corners[0], corners[1]))
    return levels


def rmac_regions(H: int, W: int, L: int = 3) -> list[tuple[int, int, int, int]]:
    """The R-MAC region grid of Tolias et al. as cirtorch builds it, level 1 first.

    Level ``l`` has square regions of side ``floor(2 min(H, W) / (l + 1))``, ``l`` along the
    short side and ``l + d`` along the long one, where ``d`` is chosen so that neighbouring
    regions overlap by about 40%; the regions touch all four borders. For a 30x40 map and
    ``L = 3``: 2 + 6 + 12 = 20 regions of sides 30, 20 and 15.
    """
    H, W, L = positive_int(H, "H"), positive_int(W, "W"), positive_int(L, "L")
    return [(y, x, wl, wl) for wl, ys, xs in _grid(H, W, L) for y in ys for x in xs]


def regional_pool(x: torch.Tensor, pool: Pool = mac, L: int = 3) -> torch.Tensor:
    """``pool`` of every region of :func:`rmac_regions` -> ``(N, R, C)``, level 1 first (unnormalised).

    cirtorch's ``roipool(x, rpool, L)``: ``pool`` is any global pooling ``(B, C, h, w) -> (B, C)``
    (:func:`retrievalkit.pooling.mac`, the default, gives R-MAC's regions; ``pooling.gem`` R-GeM's).
    The regions of a level have one size, so each level is one call of ``pool`` on the stacked
    crops of every image. For ``mac`` the maxima are taken separably instead, the same values
    faster: over each of the level's row bands (a few slices of the map), then over each column
    window of those bands (CPU reductions over contiguous slices beat strided window views).
    """
    x4, squeezed = check_maps(x)
    L = positive_int(L, "L")
    if not callable(pool):
        raise ValueError(f"pool must be a global pooling (B, C, h, w) -> (B, C), got {type(pool).__name__}")
    N, C = x4.shape[:2]
    levels = []
    for wl, ys, xs in _grid(x4.shape[-2], x4.shape[-1], L):
        if pool is mac:
            bands = torch.stack([x4[:, :, y : y + wl].amax(dim=2) for y in ys], dim=2)  # (N, C, len(ys), W)
            levels.append(torch.stack([bands[..., c : c + wl].amax(dim=-1) for c in xs], dim=3).flatten(2))
            continue
        crops = torch.stack([x4[:, :, y : y + wl, c : c + wl] for y in ys for c in xs], dim=1)  # (N, R_l, C, wl, wl)
        out = pool(crops.flatten(0, 1))
        if not isinstance(out, torch.Tensor) or out.shape != (crops.shape[0] * crops.shape[1], C):
            raise ValueError(f"pool must map (B, C, h, w) to (B, C), got {getattr(out, 'shape', type(out))}")
        levels.append(out.reshape(N, -1, C).transpose(1, 2))
    out = torch.cat(levels, dim=2).transpose(1, 2)  # (N, R, C)
    return unbatch(out, squeezed)


def regional_mac(x: torch.Tensor, L: int = 3) -> torch.Tensor:
    """MAC of every region of :func:`rmac_regions` -> ``(N, R, C)``: :func:`regional_pool` with ``mac``."""
    return regional_pool(x, mac, L)


def rmac(x: torch.Tensor, L: int = 3, global_term: bool = False, whiten: Any = None, pool: Pool = mac) -> torch.Tensor:
    """Regional MAC (Tolias et al., ICLR 2016, https://arxiv.org/abs/1511.05879) -> ``(N, C)``, L2-normalised.

    ``f = l2n(sum_R l2n(MAC(x restricted to R)))`` over the regions of :func:`rmac_regions`
    (``l2n`` is :func:`retrievalkit.normalization.l2n`). ``global_term=True`` adds ``l2n(MAC(x))``
    to the sum, as cirtorch's ``rmac`` does (cirtorch also leaves the sum unnormalised: its network
    applies L2N after pooling). ``whiten``: a fitted transform with ``transform(rows)`` (e.g.
    :class:`retrievalkit.postprocess.PCAWhitening` learnt on the regional vectors of another
    set) applied to each normalised region vector before the sum, as Tolias et al. do: its
    output dimension is the descriptor's. ``pool`` replaces MAC in the regions and the global
    term (cirtorch's ``roipool``): ``pool=pooling.gem`` is R-GeM.
    """
    x4, squeezed = check_maps(x)
    regional = l2n(regional_pool(x4, pool, L))  # (N, R, C)
    if global_term:
        regional = torch.cat([l2n(pool(x4))[:, None], regional], dim=1)
    if whiten is not None:
        N, R, C = regional.shape
        regional = whiten.transform(regional.reshape(N * R, C)).reshape(N, R, -1)
    return unbatch(l2n(regional.sum(dim=1)), squeezed)


def os_rmac_windows(H: int, W: int, L: int = 3) -> list[tuple[int, int]]:
    """``(kernel, stride)`` of each level of :func:`os_rmac`: ``kw = max(1, ceil(2 min(H, W) / (l + 1)))``,
    ``ks = max(1, floor(0.4 kw))``. For a 30x40 map: (30, 12), (20, 8), (15, 6)."""
    H, W, L = positive_int(H, "H"), positive_int(W, "W"), positive_int(L, "L")
    windows = []
    for l in range(1, L + 1):
        kw = max(1, math.ceil(2 * min(W, H) / (l + 1)))
        windows.append((kw, max(1, math.floor(0.4 * kw))))
    return windows


def os_rmac(x: torch.Tensor, L: int = 3) -> torch.Tensor:
    """The modified R-MAC of Seddati et al. (Algorithm 1, ``OS_RMAC``) -> ``(N, C)``, L2-normalised.

    For each level ``l = 1..L``: max-pool with window ``kw`` and stride ``ks`` of
    :func:`os_rmac_windows` (no padding, floor mode), then per channel the square root of the
    sum of squares over the pooled positions ("square sum-pooling"); the levels are summed
    and the result L2-normalised. Unlike R-MAC there is no per-region L2 and no whitening.
    """
    x4, squeezed = check_maps(x)
    v = x4.new_zeros(x4.shape[:2])
    for kw, ks in os_rmac_windows(x4.shape[-2], x4.shape[-1], L):
        pooled = F.max_pool2d(x4, kw, stride=ks)
        v = v + pooled.pow(2).sum(dim=(-2, -1)).sqrt()
    return unbatch(l2n(v, 1), squeezed)


def _spans(length: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous spans covering ``0..length`` with integer edges ``round(i length / n)``."""
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _sliding(length: int, size: int, stride: int) -> list[int]:
    """Window starts every ``stride`` pixels; the last window is moved to end at the border."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def patch_boxes(
    H: int,
    W: int,
    scheme: str,
    n: int = 3,
    levels: Sequence[int] = (1, 2, 3),
    size: int | None = None,
    stride: int | None = None,
) -> list[tuple[int, int, int, int]]:
    """Image patches for multiple feed-forward passes (Chen et al. survey, fig. 6) as ``[x1, y1, x2, y2]``.

    Pixel boxes with exclusive ``x2, y2`` (as ``PIL.Image.crop``) on an ``H x W`` image:

    - ``"grid"``: a rigid ``n x n`` grid of non-overlapping cells covering the image;
    - ``"pyramid"``: spatial pyramid, an ``l x l`` grid for each ``l`` in ``levels`` (level 1 is
      the whole image);
    - ``"sliding"``: dense square windows of side ``size`` (default ``min(H, W) // 2``) every
      ``stride`` pixels (default ``size // 2``, 50% overlap); the last window in each direction
      is aligned with the border so the windows cover the whole image.
    """
    H, W = positive_int(H, "H"), positive_int(W, "W")
    if scheme == "grid":
        n = positive_int(n, "n")
        if n > min(H, W):
            raise ValueError(f"n must be at most min(H, W) = {min(H, W)}, got {n}")
        return [(x1, y1, x2, y2) for y1, y2 in _spans(H, n) for x1, x2 in _spans(W, n)]
    if scheme == "pyramid":
        if isinstance(levels, (int, str)) or len(levels) == 0:
            raise ValueError(f"levels must be a non-empty sequence of grid sizes, got {levels!r}")
        boxes = []
        for lv in levels:
            boxes += patch_boxes(H, W, "grid", n=positive_int(lv, "levels"))
        return boxes
    if scheme == "sliding":
        size = positive_int(size if size is not None else max(1, min(H, W) // 2), "size")
        if size > min(H, W):
            raise ValueError(f"size must be at most min(H, W) = {min(H, W)}, got {size}")
        stride = positive_int(stride if stride is not None else max(1, size // 2), "stride")
        return [(x, y, x + size, y + size) for y in _sliding(H, size, stride) for x in _sliding(W, size, stride)]
    raise ValueError(f"scheme must be 'grid', 'pyramid' or 'sliding', got {scheme!r}")


def draw_regions(
    ax: Any,
    regions: Sequence[tuple[int, int, int, int]],
    image_size: tuple[int, int],
    map_size: tuple[int, int],
    **style: Any,
) -> list[Any]:
    """Draw ``(y, x, h, w)`` map regions as rectangles over an image shown on ``ax``.

    ``image_size`` and ``map_size`` are ``(height, width)``; each region is scaled from map
    cells to image pixels. Regions of one size share a colour. Returns the rectangles.
    """
    from matplotlib.patches import Rectangle

    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"image_size must be (height, width) > 0, got {image_size!r}")
    if len(map_size) != 2 or min(map_size) <= 0:
        raise ValueError(f"map_size must be (height, width) > 0, got {map_size!r}")
    sy, sx = image_size[0] / map_size[0], image_size[1] / map_size[1]
    sizes = sorted({(h, w) for _, _, h, w in regions}, reverse=True)
    colours = [f"C{i}" for i in range(len(sizes))]
    patches = []
    for y, x, h, w in regions:
        if y < 0 or x < 0 or y + h > map_size[0] or x + w > map_size[1]:
            raise ValueError(f"regions must lie inside the map of size {tuple(map_size)}, got {(y, x, h, w)}")
        kw = {"fill": False, "linewidth": 2, "edgecolor": colours[sizes.index((h, w))], **style}
        rect = Rectangle((x * sx - 0.5, y * sy - 0.5), w * sx, h * sy, **kw)
        ax.add_patch(rect)
        patches.append(rect)
    return patches


def regional_vectors(maps: Sequence[torch.Tensor], L: int = 3) -> list[torch.Tensor]:
    """The L2-normalised regional MAC vectors that :func:`rmac` sums, ``l2n(MAC(x restricted to R))``
    for each region ``R`` of :func:`rmac_regions`, of every ``(C, H, W)`` map (any sizes) -> one
    ``(R_i, C)`` tensor per map: the region sets of ``postprocess.region_rerank``, or the rows a
    regional whitening is learnt on (Tolias et al., ICLR 2016)."""
    maps = check_map_list(maps)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(maps):  # maps of one size share the region grid: one batch each
        groups.setdefault(tuple(m.shape), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(maps)
    for members in groups.values():
        for i, v in zip(members, l2n(regional_mac(torch.stack([maps[i].float() for i in members]), L))):
            out[i] = v
    return out
