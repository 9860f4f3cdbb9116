"""Fusion of several views of one image: resolutions, layers and the CAM mask of Seddati et al.

Seddati et al., "Towards good practices for image retrieval based on CNN features" (ICCVW
2017, https://scholar.google.com/scholar?q=%22Towards+Good+Practices+for+Image+Retrieval+Based+on+CNN+Features%22) feed an image at three resolutions (longest side 1050, 800, 550), rescale the
feature maps to the largest one and sum them ("early fusion"), where Gordo et al. pool each
resolution and sum the descriptors ("late fusion"). The descriptors of the last two layers are
concatenated (:func:`retrievalkit.postprocess.fuse`) and an optional CAM mask restricts pooling
to the object ("local R-MAC"); an image then keeps its global and its local descriptor, and two
images are as far apart as the nearer of the two pairs (:func:`global_local_distance`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ._validate import check_maps, check_rows, positive_number, unbatch
from .normalization import l2n
from .regions import os_rmac

__all__ = ["SEDDATI_RESOLUTIONS", "early_fusion", "late_fusion", "cam_mask", "local_rmac", "global_local_distance"]

SEDDATI_RESOLUTIONS = (1050, 800, 550)  # longest side of the three inputs (Algorithm 1)


def early_fusion(maps: Sequence[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Rescale feature maps of several resolutions to one size and sum them (Seddati et al.).

    ``F = sum_r resize(F_r, size)`` with bilinear interpolation (``align_corners=False``);
    ``size`` defaults to the largest map (the highest resolution). All maps need the same
    batch and channel sizes.
    """
    if isinstance(maps, torch.Tensor) or len(maps) == 0:
        raise ValueError("maps must be a non-empty sequence of feature maps, one per resolution")
    checked = [check_maps(m, f"maps[{i}]") for i, m in enumerate(maps)]
    shapes = {(m.shape[0], m.shape[1]) for m, _ in checked}
    if len(shapes) != 1:
        raise ValueError(f"maps must share batch and channel sizes, got {sorted(shapes)}")
    if size is None:
        size = max((m.shape[-2:] for m, _ in checked), key=lambda hw: hw[0] * hw[1])
    elif len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) >= 1, got {size!r}")
    size = (int(size[0]), int(size[1]))
    total = sum(
        m if tuple(m.shape[-2:]) == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        for m, _ in checked
    )
    return unbatch(total, checked[0][1])


def late_fusion(vectors: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Sum the descriptors of several resolutions, then L2-normalise (Gordo et al.).

    ``vectors`` is a sequence of ``(N, D)`` tensors or one ``(S, N, D)`` tensor.
    """
    stacked = torch.stack(list(vectors)) if not isinstance(vectors, torch.Tensor) else vectors
    if stacked.dim() == 2:
        stacked = stacked[:, None, :]
    if stacked.dim() != 3 or stacked.shape[0] == 0:
        raise ValueError(f"vectors must be S descriptors of shape (N, D), got shape {tuple(stacked.shape)}")
    check_rows(stacked.flatten(0, 1), "vectors")
    return l2n(stacked.sum(dim=0))


def cam_mask(cam: torch.Tensor, factor: float = 0.9) -> torch.Tensor:
    """Binary spatial mask ``cam > factor * mean(cam)`` per image (Seddati et al., "Localization").

    ``cam`` is ``(N, H, W)`` or ``(H, W)``; the result has the same shape and dtype (0 or 1).
    """
    factor = positive_number(factor, "factor")
    if not isinstance(cam, torch.Tensor) or cam.dim() not in (2, 3) or cam.numel() == 0:
        raise ValueError(f"cam must be a non-empty tensor of shape (N, H, W) or (H, W), got {getattr(cam, 'shape', type(cam))}")
    if not bool(torch.isfinite(cam).all()):
        raise ValueError("cam must not contain NaN or infinity")
    mean = cam.mean(dim=(-2, -1), keepdim=True)
    return (cam > factor * mean).to(cam.dtype if cam.is_floating_point() else torch.float32)


def local_rmac(x: torch.Tensor, cam: torch.Tensor, factor: float = 0.9, L: int = 3) -> torch.Tensor:
    """CAM-masked local R-MAC of Seddati et al.: ``os_rmac(x * cam_mask(cam, factor))``.

    ``cam`` is ``(N, H', W')`` (or ``(H', W')`` for one map); a mask of another size than the
    feature maps (a CAM from another layer) is resized with nearest-neighbour interpolation.
    """
    x4, squeezed = check_maps(x)
    mask = cam_mask(cam, factor)
    if mask.dim() == 2:
        mask = mask[None]
    if mask.shape[0] != x4.shape[0]:
        raise ValueError(f"cam must have one map per image ({x4.shape[0]}), got {mask.shape[0]}")
    mask = mask[:, None].to(x4.dtype)
    if mask.shape[-2:] != x4.shape[-2:]:
        mask = F.interpolate(mask, size=x4.shape[-2:], mode="nearest")
    return unbatch(os_rmac(x4 * mask, L=L), squeezed)


def global_local_distance(
    query_global: torch.Tensor, database_global: torch.Tensor, query_local: torch.Tensor, database_local: torch.Tensor,
    p: float = 1.0,
) -> torch.Tensor:
    """Distance of Seddati et al. with the CAM: ``min(||g_q - g_x||_p, ||l_q - l_x||_p)`` -> ``(n_q, n_x)``.

    Each image keeps a global descriptor ``g`` (R-MAC of the whole map) and a local one ``l``
    (:func:`local_rmac`); the paper (Sec. 4.1) computes the Manhattan distance (``p = 1``, the
    default) between the query and every database image for both, keeps the smaller one and ranks by
    it, nearest first (``torch.argsort(d, dim=1, stable=True)``). Global with global and local with
    local only: no cross pairs. All four are ``(n, D)`` rows of one width ``D``.
    """
    p = positive_number(p, "p")
    names = ("query_global", "database_global", "query_local", "database_local")
    given = (query_global, database_global, query_local, database_local)
    rows = [torch.as_tensor(check_rows(v, n)) for v, n in zip(given, names)]
    for a, b, what in ((0, 2, "query"), (1, 3, "database image")):
        if rows[a].shape != rows[b].shape:
            raise ValueError(f"{names[b]} must have the shape of {names[a]} (one row per {what}), "
                             f"got {tuple(rows[b].shape)} and {tuple(rows[a].shape)}")
    if rows[0].shape[1] != rows[1].shape[1]:
        raise ValueError(f"database_global must have the width of query_global ({rows[0].shape[1]}), "
                         f"got {rows[1].shape[1]}")
    qg, xg, ql, xl = (r.to(torch.promote_types(r.dtype, torch.float32)) for r in rows)
    return torch.minimum(torch.cdist(qg, xg, p=p), torch.cdist(ql, xl, p=p))
