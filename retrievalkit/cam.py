"""Class-weighted convolutional features: CAMs as spatial weights for retrieval.

Jimenez, Alvarez and Giro-i-Nieto, "Class-Weighted Convolutional Features for Visual
Instance Search", BMVC 2017; the peer is ``imatge-upc/retrieval-2017-cam``
(``cam_functions.py``, ``pooling_functions.py``).

Pipeline: class activation maps of the top classes (:func:`top_classes`,
:func:`class_activation_maps`) weight the feature maps, giving one CroW-channel-weighted,
L2-normalised vector per class (:func:`class_weighted`); these are optionally PCA-whitened
and summed into one image vector (:func:`aggregate_classes`). :func:`cam_boxes` gives the
boxes of the re-ranking: each box region of the top-R images is described by its class-weighted
vector (:func:`box_vectors`), the top R are re-ranked by their best box and the query is
expanded with the best boxes of the first ones (:func:`box_rerank`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ._batching import rows_by_shape
from ._validate import check_finite, check_float_tensor, check_map_list, check_maps, positive_int, unbatch
from .crow import crow_channel_weights
from .normalization import l2n

__all__ = ["class_activation_maps", "top_classes", "class_weighted", "aggregate_classes", "cam_boxes", "class_vectors",
           "box_vectors", "box_rerank"]


def _class_indices(classes: Any, n_images: int, n_classes: int, device: torch.device) -> torch.Tensor:
    """``classes`` as a long tensor ``(n_images, n)`` of indices in ``[0, n_classes)``."""
    if isinstance(classes, torch.Tensor):
        idx = classes.detach()
        integer = not idx.is_floating_point() and not idx.is_complex() and idx.dtype != torch.bool
    else:
        try:
            arr = np.asarray(classes)
        except ValueError:  # ragged nested lists
            arr = np.asarray([], dtype=float)
        integer = arr.dtype.kind in "iu"
        idx = torch.from_numpy(arr.astype(np.int64)) if integer else None
    if idx is None or idx.numel() == 0 or not integer or idx.dim() not in (1, 2):
        raise ValueError(
            "classes must be a non-empty integer tensor/array/list of class indices, "
            f"of shape (n,) or (N, n) with N = {n_images}, got {classes!r}"
        )
    if idx.dim() == 1:
        idx = idx.unsqueeze(0).expand(n_images, -1)
    elif idx.shape[0] != n_images:
        raise ValueError(f"classes must have one row per image ({n_images}), got shape {tuple(idx.shape)}")
    if bool((idx < 0).any()) or bool((idx >= n_classes).any()):
        raise ValueError(f"classes must be class indices in [0, {n_classes}), got values {idx.min().item()}..{idx.max().item()}")
    return idx.to(device=device, dtype=torch.long)


def class_activation_maps(features: torch.Tensor, fc_weight: torch.Tensor, classes: Any) -> torch.Tensor:
    """Class activation maps (Zhou et al. 2016) as used by Jimenez et al. 2017 -> ``(N, n, H, W)``.

    ``cam_c = sum_k W[c, k] A_k`` with ``A = features`` ``(N, K, H, W)``, the maps that feed the
    global-average-pooling -> FC classifier, and ``W = fc_weight`` ``(n_classes, K)``; then, as in
    the peer, ``cam_c /= max_ij cam_c`` and *afterwards* ``cam_c[cam_c < 0] = 0``. Dividing before
    clipping means a CAM whose maximum is negative flips sign: its most negative position
    becomes its maximum (the peer's order of operations). A CAM whose maximum is exactly 0 is returned as
    zeros (the peer divides 0 by 0). ``classes`` holds class indices per image ``(N, n)``, e.g.
    :func:`top_classes`, or ``(n,)`` (a tensor, array or list) for the same classes in every
    image. A single ``(K, H, W)`` map gives ``(n, H, W)``. ``fc_weight`` is moved to the
    features' dtype and device. Differentiable in ``features`` and ``fc_weight``.
    """
    x, squeezed = check_maps(features, "features")
    w = check_float_tensor(fc_weight, "fc_weight", (2,), "(n_classes, K)")
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"fc_weight must have one column per feature channel: features have K = {x.shape[1]}, "
            f"fc_weight has shape {tuple(w.shape)}"
        )
    w = w.to(x)
    idx = _class_indices(classes, x.shape[0], w.shape[0], x.device)
    cam = torch.einsum("nck,nkhw->nchw", w[idx], x)
    peak = cam.amax(dim=(-2, -1), keepdim=True)
    # peak == 0: every value is <= 0, so dividing by 1 and clipping gives zeros.
    cam = cam / torch.where(peak == 0, torch.ones_like(peak), peak)
    return unbatch(cam.clamp(min=0), squeezed)


def top_classes(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` highest-scoring classes per image, best first -> ``(N, n)``.

    ``logits`` (or probabilities) ``(N, n_classes)``, or ``(n_classes,)`` -> ``(n,)``; the peer's
    ``scores.argsort()[::-1][:n]`` (``torch.topk``, sorted; the order of exact ties is unspecified).
    ``1 <= n <= n_classes``.
    """
    s = check_float_tensor(logits, "logits", (1, 2), "(N, n_classes) or (n_classes,)")
    n = positive_int(n, "n")
    if n > s.shape[-1]:
        raise ValueError(f"n must be at most the number of classes ({s.shape[-1]}), got {n}")
    return torch.topk(s, n, dim=-1, largest=True, sorted=True).indices


def class_weighted(features: torch.Tensor, cams: torch.Tensor, channel_weights: bool = True) -> torch.Tensor:
    """One descriptor per class map (Jimenez et al. 2017, eq. 3) -> ``(N, n, C)``.

    ``d_c[k] = w_k * sum_ij x_kij cam_c,ij``, with ``w`` the CroW channel weights
    (:func:`retrievalkit.crow.crow_channel_weights`) of the unweighted maps ``x`` (``w = 1`` when
    ``channel_weights`` is False), then each ``d_c`` L2-normalised as ``d / max(||d||, 1e-12)``
    (the peer divides by ``||d||`` alone, giving NaN for a zero vector; here it stays zero).
    ``features`` ``(N, C, H, W)`` (non-negative when ``channel_weights``), ``cams`` ``(N, n, H, W)``
    from :func:`class_activation_maps`; one ``(C, H, W)`` map with ``(n, H, W)`` CAMs gives
    ``(n, C)``. Differentiable in both.
    """
    if not isinstance(channel_weights, bool):
        raise ValueError(f"channel_weights must be True or False, got {channel_weights!r}")
    x, squeezed = check_maps(features, "features", nonnegative=channel_weights)
    m = check_float_tensor(cams, "cams", (3,) if squeezed else (4,), "(N, n, H, W) matching features (or (n, H, W))")
    m = m.unsqueeze(0) if squeezed else m
    if m.shape[0] != x.shape[0] or m.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"cams must have shape (N, n, H, W) = ({x.shape[0]}, n, {x.shape[2]}, {x.shape[3]}) to match "
            f"features {tuple(x.shape)}, got {tuple(m.shape)}"
        )
    d = torch.einsum("nkhw,nchw->nck", x, m.to(x))
    if channel_weights:
        d = d * crow_channel_weights(x).unsqueeze(1)
    return unbatch(l2n(d), squeezed)


def aggregate_classes(
    vectors: torch.Tensor | np.ndarray, n: int | None = None, pca: Any = None
) -> torch.Tensor | np.ndarray:
    """Offline aggregation of class vectors into one image vector (Jimenez et al. 2017) -> ``(N, C')``.

    Takes the first ``n`` class vectors of each image (all when ``n`` is None; they are ordered
    by class score); without ``pca`` sums them and L2-normalises (the vectors of
    :func:`class_weighted` are unit already). With ``pca``, an object with ``.transform(X)`` such as
    a fitted ``sklearn.decomposition.PCA(whiten=True)``, each class vector is transformed and
    L2-normalised first (the peer's ``descriptor_aggregation``). ``vectors`` ``(N, n_cls, C)``, or
    ``(n_cls, C)`` for one image -> ``(C',)``; a tensor or an array, the same type and dtype back.
    L2 is ``x / max(||x||, 1e-12)``. Differentiable without ``pca``; the PCA path goes through
    numpy and carries no gradient.
    """
    if isinstance(vectors, torch.Tensor):
        v = check_float_tensor(vectors, "vectors", (2, 3), "(N, n_classes, C) or (n_classes, C)")
    elif isinstance(vectors, np.ndarray):
        v = vectors
        if v.ndim not in (2, 3) or v.size == 0 or v.dtype.kind != "f":
            raise ValueError(
                "vectors must be a non-empty floating-point array of shape (N, n_classes, C) or "
                f"(n_classes, C), got shape {v.shape} and dtype {v.dtype}"
            )
        check_finite(v, "vectors")
    else:
        raise ValueError(f"vectors must be a torch.Tensor or numpy.ndarray, got {type(vectors).__name__}")
    squeezed = v.ndim == 2
    v = v[None] if squeezed else v
    if n is not None:
        n = positive_int(n, "n")
        if n > v.shape[1]:
            raise ValueError(f"n must be at most the number of class vectors ({v.shape[1]}), got {n}")
        v = v[:, :n]
    if pca is None:
        out = l2n(v.sum(1))
        return out[0] if squeezed else out
    if not callable(getattr(pca, "transform", None)):
        raise ValueError(f"pca must have a .transform(X) method (e.g. a fitted sklearn PCA), got {type(pca).__name__}")
    arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
    n_img, n_cls, dim = arr.shape
    projected = np.asarray(pca.transform(arr.reshape(n_img * n_cls, dim)))
    projected = l2n(projected.reshape(n_img, n_cls, -1))
    out = l2n(projected.sum(axis=1)).astype(arr.dtype)
    out = out[0] if squeezed else out
    if isinstance(v, torch.Tensor):
        return torch.from_numpy(out).to(device=v.device, dtype=v.dtype)
    return out


def cam_boxes(
    cam: torch.Tensor | np.ndarray, thresholds: float | Sequence[float] = (0.1, 0.2, 0.3, 0.4)
) -> list[list[int]]:
    """Boxes around the largest connected region of a CAM, one per threshold (Jimenez et al. 2017).

    For each ``t`` in ``thresholds`` (each in ``(0, 1]``): binarise ``cam >= t * max(cam)``, label
    its 8-connected components (``scipy.ndimage.label``, the connectivity of OpenCV contours) and
    return the bounding box of the largest one (most pixels; the first in raster order on a
    tie) as ``[x1, y1, x2, y2]`` in map pixels, 0-based, ``x2``/``y2`` exclusive, so the region is
    ``cam[y1:y2, x1:x2]`` (the peer's ``x, y, x + w, y + h`` from ``cv2.boundingRect``; a PIL crop
    box). The peer thresholds with ``>`` and ranks contours by polygon area; here ``>=`` (so
    ``t = 1`` keeps the maximum) and pixel count. If ``max(cam) <= 0`` nothing stands out and every
    box is the whole map ``[0, 0, W, H]``. ``cam`` is one ``(H, W)`` map, tensor or array.
    """
    if isinstance(cam, torch.Tensor):
        c = cam.detach().cpu().numpy()
    elif isinstance(cam, np.ndarray):
        c = cam
    else:
        raise ValueError(f"cam must be a torch.Tensor or numpy.ndarray of shape (H, W), got {type(cam).__name__}")
    if c.ndim != 2 or c.size == 0 or c.dtype.kind not in "fiu":
        raise ValueError(f"cam must be a non-empty real (H, W) map, got shape {c.shape} and dtype {c.dtype}")
    check_finite(c, "cam")
    try:
        ts = np.atleast_1d(np.asarray(thresholds, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"thresholds must be numbers in (0, 1], got {thresholds!r}") from None
    if ts.ndim != 1 or ts.size == 0 or not bool(np.all((ts > 0) & (ts <= 1))):
        raise ValueError(f"thresholds must be a non-empty sequence of numbers in (0, 1], got {thresholds!r}")
    h, w = c.shape
    peak = float(c.max())
    if peak <= 0:
        return [[0, 0, w, h] for _ in ts]
    boxes = []
    for t in ts:
        labels, _ = ndimage.label(c >= t * peak, structure=np.ones((3, 3), dtype=bool))
        largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        rows, cols = ndimage.find_objects(labels)[largest - 1]
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
    return boxes


def class_vectors(net: Any, maps: Sequence[torch.Tensor], n: int | None = None, classes: Any = None,
                  batch_size: int = 64) -> torch.Tensor:
    """The class-weighted vectors (:func:`class_weighted`) of every image -> ``(N, n, C)``.

    ``maps``: one ``(C, H, W)`` feature map per image (any sizes); ``net`` gives the class scores
    ``net.logits(x)`` and the classifier's weights ``net.fc_weight`` (a ``models.Backbone``). Give
    ``n``: each image's own top ``n`` classes (offline aggregation), or ``classes``: ``(n,)``
    indices used for every image (online aggregation: the database described with a query's
    classes). Maps of one size go through together, ``batch_size`` at a time. :func:`aggregate_classes`
    then sums them into one vector per image.
    """
    if (n is None) == (classes is None):
        raise ValueError(f"give exactly one of n and classes, got n={n!r}, classes={classes!r}")
    maps = check_map_list(maps)
    W = net.fc_weight.detach()

    def vectors(x: torch.Tensor) -> torch.Tensor:  # a batch of same-size maps -> (B, n * C)
        c = top_classes(net.logits(x), n) if classes is None else classes
        return class_weighted(x, class_activation_maps(x, W, c)).flatten(1)

    with torch.inference_mode():
        out = rows_by_shape(maps, vectors, batch_size, "maps")
    return out.view(len(maps), -1, maps[0].shape[0])


def box_vectors(features: torch.Tensor, cams: torch.Tensor, thresholds: float | Sequence[float] = (0.1, 0.2, 0.3, 0.4),
                channel_weights: bool = True) -> torch.Tensor:
    """The class-weighted vector of every CAM box of one image (Jimenez et al. 2017, re-ranking) -> ``(n T, C)``.

    For each class map ``cams[c]`` ``(n, H, W)`` and each of its boxes ``[x1, y1, x2, y2]``
    (:func:`cam_boxes` at the ``T`` thresholds): :func:`class_weighted` of the features and of
    that CAM cropped to the box, ``features[:, y1:y2, x1:x2]``, with the CroW channel weights of
    the crop, L2-normalised. Rows are class-major: class 0 at every threshold, then class 1, ...
    ``features`` is one ``(C, H, W)`` map. All boxes are pooled at once, each as a mask over the map.
    """
    x, squeezed = check_maps(features, "features", nonnegative=channel_weights)
    if not squeezed:
        raise ValueError(f"features must be one (C, H, W) map, got shape {tuple(features.shape)}")
    x = x[0]
    m = check_float_tensor(cams, "cams", (3,), "(n, H, W) matching features").to(x)
    if m.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"cams must have the features' spatial size {tuple(x.shape[-2:])}, got {tuple(m.shape)}")
    boxes = [(c, box) for c in range(m.shape[0]) for box in cam_boxes(m[c], thresholds)]
    inside = torch.zeros(len(boxes), *x.shape[-2:], dtype=x.dtype, device=x.device)
    for b, (_, (x1, y1, x2, y2)) in enumerate(boxes):
        inside[b, y1:y2, x1:x2] = 1
    d = torch.einsum("khw,bhw->bk", x, inside * m[[c for c, _ in boxes]])  # sum over the box of x times the CAM
    if channel_weights:  # CroW's w_k = log(sum_j Q_j / Q_k), Q_k the non-zero fraction of channel k in the box
        q = torch.einsum("khw,bhw->bk", (x > 0).to(x.dtype), inside) / inside.sum(dim=(1, 2))[:, None]
        d = d * torch.where(q > 0, torch.log(q.sum(dim=1, keepdim=True) / torch.where(q > 0, q, 1)), 0)
    return l2n(d)


def box_rerank(query: torch.Tensor, ranking: Any, boxes: Sequence[torch.Tensor], qe: int = 0) -> np.ndarray:
    """Re-rank the top ``R = len(boxes)`` of one query's ranking by its best box, then expand -> ``(n_db,)``.

    Jimenez et al. 2017: ``boxes[j]`` ``(B_j, D)`` holds the box descriptors (:func:`box_vectors`)
    of the database image ``ranking[j]``; its new score is its best box, ``max_b q . boxes[j][b]``,
    and the top ``R`` are sorted by it (best first, ties keep their order). With ``qe = k > 0``,
    average query expansion with the best box of each of the first ``k`` re-ranked images:
    ``q' = l2n(q + sum_j best_j)``, and the top ``R`` are sorted again by their best box against
    ``q'``. The images after the top ``R`` keep their rank (they have no boxes). ``query`` ``(D,)``,
    unit norm as the boxes; ``ranking`` database indices, best first.
    """
    q = check_float_tensor(query, "query", (1,), "(D,)")
    order = np.asarray(ranking)
    if order.ndim != 1 or order.dtype.kind not in "iu":
        raise ValueError(f"ranking must be one query's ranking, a 1-D array of database indices, got {order!r}")
    if isinstance(boxes, torch.Tensor) or len(boxes) == 0 or len(boxes) > len(order):
        raise ValueError(f"boxes must be a list of 1..{len(order)} (B_j, D) tensors, one per top-ranked image")
    B = [check_float_tensor(b, f"boxes[{j}]", (2,), f"(B_j, {q.shape[0]})") for j, b in enumerate(boxes)]
    if any(b.shape[0] == 0 or b.shape[1] != q.shape[0] for b in B):
        raise ValueError(f"boxes must each be (B_j, {q.shape[0]}) with B_j >= 1, like the query")
    if isinstance(qe, bool) or not isinstance(qe, (int, np.integer)) or not 0 <= qe <= len(B):
        raise ValueError(f"qe must be an integer in [0, {len(B)}] (the number of re-ranked images), got {qe!r}")

    def sort(v: torch.Tensor) -> tuple[np.ndarray, list[torch.Tensor]]:
        sims = [b.to(v) @ v for b in B]
        best = torch.stack([s.max() for s in sims])
        perm = torch.sort(best, descending=True, stable=True).indices.cpu().numpy()
        return perm, [B[j][int(sims[j].argmax())].to(v) for j in perm]

    perm, best = sort(q)
    if qe:
        perm, _ = sort(l2n(q + torch.stack(best[:qe]).sum(0)))
    return np.concatenate([order[: len(B)][perm], order[len(B):]])
