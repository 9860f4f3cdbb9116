"""Regional deep feature aggregation: salient candidate regions, 2nd-order region descriptors, region matching.

Jeong, Choo, Seo and Cho, "Regional Deep Feature Aggregation for Image Retrieval",
IEEE ICASSP 2017 (https://scholar.google.com/scholar?q=%22Regional+deep+feature+aggregation+for+image+retrieval%22).
The pipeline, with the paper's equation numbers:

1. Spatial weights ``alpha`` (eq. 1), salient points (Sec. 2), ``L`` clusters of them by the
   fast global k-means of Likas et al., the power set of the clusters (empty set out, the
   whole image in) and the convex hull of each member: ``M = 2^L`` candidate regions, the
   last one, ``R_M``, the whole map (:func:`salient_points`, :func:`candidate_regions`,
   :func:`region_power_set`).
2. Channel weights ``beta`` (eq. 2); 1st-order region descriptors (eq. 3, or eq. 9 with the
   spatial weights); local descriptors reduced by PCA (eq. 4); the 2nd-order descriptor
   ``vec(log G)`` of each region (eq. 5); PCA-whitening to ``D`` dimensions (eq. 6)
   (:func:`first_order`, :func:`second_order`, :class:`RegionalAggregation`).
3. Image similarity: the best region-to-region match (eq. 7); query expansion with the
   best-matched regions of the top results (eq. 8) (:func:`image_similarity`,
   :func:`region_search`, :func:`query_expansion`).

Everything happens on the feature-map grid: a point is a map cell ``(y, x)`` and a region a
boolean mask ``(H, W)`` of cells (the paper's image-resolution regions ``R_m`` resized to the
map, ``R'_m``). The paper finds salient points with the Hessian-affine detector in the image;
here such detections may be passed in already mapped to cells (``keypoints``); without them
the paper's fallback, the ``N_min`` most active cells, is used.

Constants the paper leaves open, chosen here: ``eps = 1e-6`` in eq. 2; ``log_eps = 1e-6``
added to the eigenvalues before the matrix logarithm; the closed convex hull (cells on its
boundary count); cells with ``alpha = 0`` are never salient.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._validate import check_finite, check_map_list, check_maps, check_rows, positive_int, positive_number
from .crow import crow_channel_weights, crow_spatial_weights
from .normalization import l2n
from .postprocess import best_per_image

__all__ = ["spatial_weights", "channel_weights", "salient_points", "global_kmeans", "candidate_regions",
           "region_power_set", "first_order", "second_order", "image_similarity", "region_search", "query_expansion",
           "RegionalAggregation"]

_EPS = 1e-6  # epsilon of eq. 2, "a small positive constant" in the paper
_LOG_EPS = 1e-6  # added to the eigenvalues of G before the logarithm (G + eps I, as in O2P)


# --------------------------------------------------------------------------- input checks

def _check_map(x: Any, name: str = "x") -> torch.Tensor:
    """One non-negative feature map ``(C, H, W)``."""
    if isinstance(x, torch.Tensor) and x.dim() != 3:
        raise ValueError(f"{name} must be one feature map of shape (C, H, W), got shape {tuple(x.shape)}")
    return check_maps(x, name, nonnegative=True)[0][0]


def _check_integers(x: Any, name: str, shape: str) -> np.ndarray:
    """An integer numpy array from a tensor, an array or a list (bools rejected)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer cell coordinates {shape}, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_points(points: Any, name: str = "points") -> np.ndarray:
    """Non-empty integer ``(P, 2)`` cell coordinates ``(y, x)``, all >= 0."""
    arr = _check_integers(points, name, "(P, 2)")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (P, 2) with P >= 1, (y, x) per row, got {arr.shape}")
    if arr.min() < 0:
        raise ValueError(f"{name} must be non-negative cell coordinates, got a minimum of {arr.min()}")
    return arr


def _check_shape(shape: Any) -> tuple[int, int]:
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 2:
        raise ValueError(f"shape must be the map size (H, W), got {shape!r}")
    return positive_int(shape[0], "shape"), positive_int(shape[1], "shape")


def _check_masks(regions: Any, hw: tuple[int, int] | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean region masks ``(R, H, W)``, each with at least one cell."""
    if isinstance(regions, np.ndarray):
        regions = torch.from_numpy(regions)
    if not isinstance(regions, torch.Tensor) or regions.dtype != torch.bool or regions.dim() != 3:
        raise ValueError(f"regions must be a boolean tensor of masks (R, H, W), got {getattr(regions, 'dtype', type(regions).__name__)} "
                         f"of shape {tuple(getattr(regions, 'shape', ()))}")
    if regions.shape[0] == 0:
        raise ValueError("regions must hold at least one mask, got none")
    if hw is not None and tuple(regions.shape[1:]) != tuple(hw):
        raise ValueError(f"regions must have the map's size {tuple(hw)}, got masks of size {tuple(regions.shape[1:])}")
    empty = ~regions.flatten(1).any(dim=1)
    if bool(empty.any()):
        raise ValueError(f"regions must not be empty: mask {int(empty.nonzero()[0])} has no cell")
    return regions if device is None else regions.to(device)


def _region_weights(x: torch.Tensor, regions: Any, weighted: bool) -> torch.Tensor:
    """Masks as weights ``(R, H, W)`` in x's dtype: 1 or ``alpha_p`` inside, 0 outside."""
    m = _check_masks(regions, tuple(x.shape[-2:]), x.device).to(x.dtype)
    alpha = spatial_weights(x)
    dead = (m * alpha).sum(dim=(1, 2)) == 0
    if bool(dead.any()):
        raise ValueError(f"regions must cover an active cell: region {int(dead.nonzero()[0])} has only all-zero activations")
    return m * alpha if weighted else m


# --------------------------------------------------------------------------- weights (eqs. 1, 2)

def spatial_weights(x: torch.Tensor) -> torch.Tensor:
    """Spatial weights, eq. 1: ``alpha_p = fbar_p / sqrt(sum_p fbar_p^2)`` with ``fbar_p = sum_k f_pk``.

    The channel sum at each cell, L2-normalised over the map: CroW's spatial weights
    (:func:`retrievalkit.crow.crow_spatial_weights`) with ``a = 2`` and no power, ``b = 1``.
    ``x`` ``(N, C, H, W)`` or ``(C, H, W)``, non-negative; an all-zero map is rejected (0 / 0)
    -> ``(N, H, W)`` or ``(H, W)``.
    """
    x4, _ = check_maps(x, "x", nonnegative=True)
    if bool((x4.sum(dim=(-3, -2, -1)) == 0).any()):
        raise ValueError("x must not be all zero: eq. 1 divides by the norm of the channel sum")
    return crow_spatial_weights(x, a=2, b=1)


def channel_weights(x: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Channel weights, eq. 2: ``beta_k = log((K eps + sum_j Q_j) / (eps + Q_k))``.

    ``Q_k = 1/(WH) sum_p [f_pk > 0]`` is the fraction of active cells of channel ``k``: the
    sparser the channel, the larger its weight (CroW's weights, with the paper's ``eps``, which
    it leaves as "a small positive constant"; ``1e-6`` here, the value PyRetri adds in CroW).
    Counts carry no gradient. ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(N, C)`` or ``(C,)``.
    """
    return crow_channel_weights(x, eps=positive_number(eps, "eps"))


# --------------------------------------------------------------------------- candidate regions (Sec. 2)

def salient_points(x: torch.Tensor, n_min: int = 300, n_max: int = 4000, keypoints: Any = None) -> torch.Tensor:
    """Salient points of one map ``(C, H, W)`` (Sec. 2) -> ``(P, 2)`` long ``(y, x)``, most active first.

    With ``keypoints`` (detections, e.g. the paper's Hessian-affine points, as integer map cells
    ``(y, x)``, one row per detection): they are sorted by ``alpha`` (eq. 1) at their cell and
    the ``n_max`` best are kept. Without them, or if fewer than ``n_min`` are active, the points
    are the ``n_min`` cells with the largest ``alpha`` (the paper's fallback). Cells with
    ``alpha = 0`` (no activation at all) are never salient, so a sparse map may give fewer than
    ``n_min`` points. Ties keep the row-major (or the keypoints') order. The paper uses
    ``N_max = 4000``, ``N_min = 300`` on VGG19 maps of full-size images.
    """
    x = _check_map(x)
    n_min = positive_int(n_min, "n_min")
    n_max = positive_int(n_max, "n_max")
    if n_max < n_min:
        raise ValueError(f"n_max must be at least n_min ({n_min}), got {n_max}")
    alpha = spatial_weights(x)
    H, W = alpha.shape
    if keypoints is not None:
        kp = _check_points(keypoints, "keypoints")
        if (kp[:, 0] >= H).any() or (kp[:, 1] >= W).any():
            raise ValueError(f"keypoints must be cells of the {H}x{W} map, got a maximum of {tuple(kp.max(axis=0))}")
        kp = torch.from_numpy(kp).to(x.device)
        a = alpha[kp[:, 0], kp[:, 1]]
        kp, a = kp[a > 0], a[a > 0]
        if kp.shape[0] >= n_min:
            return kp[torch.sort(a, descending=True, stable=True).indices[:n_max]]
    flat = alpha.flatten()
    order = torch.sort(flat, descending=True, stable=True).indices
    order = order[flat[order] > 0][:n_min]
    return torch.stack((order // W, order % W), dim=1)


def global_kmeans(points: Any, L: int = 3) -> np.ndarray | torch.Tensor:
    """Fast global k-means (Likas, Vlassis and Verbeek 2003) of 2-D points -> one label per point.

    Deterministic, no seed: start from one centre (the mean); to go from ``k - 1`` to ``k``
    centres, add the point ``x_n`` with the largest guaranteed error reduction
    ``b_n = sum_j max(d_j - ||x_n - x_j||^2, 0)`` (``d_j``: squared distance of ``x_j`` to its
    centre) and run k-means (scikit-learn, Lloyd to convergence) from there. Repeated points
    count with their multiplicity; ties in ``b_n`` go to the smallest ``(y, x)``.
    ``points`` integer ``(P, 2)``, numpy or torch (same kind back, ``int64``).
    """
    pts = _check_points(points)
    L = positive_int(L, "L")
    cells, inverse, counts = np.unique(pts, axis=0, return_inverse=True, return_counts=True)
    if L > cells.shape[0]:
        raise ValueError(f"L must be at most the number of distinct points ({cells.shape[0]}), got {L}")
    X, w = cells.astype(np.float64), counts.astype(np.float64)
    centres = (w @ X / w.sum())[None]
    labels = np.zeros(X.shape[0], dtype=np.int64)
    if L > 1:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        pair = ((X[:, None] - X[None]) ** 2).sum(-1)
        for k in range(2, L + 1):
            d = ((X[:, None] - centres[None]) ** 2).sum(-1).min(axis=1)
            b = (np.maximum(d[None] - pair, 0) * w[None]).sum(axis=1)
            init = np.vstack([centres, X[b.argmax()]])
            # one thread: a few thousand 2-D points need no more, and scikit-learn's idle worker
            # threads would otherwise keep spinning and slow down the torch code that follows
            with threadpool_limits(1):
                km = KMeans(n_clusters=k, init=init, n_init=1, tol=0.0, algorithm="lloyd").fit(X, sample_weight=w)
            centres, labels = km.cluster_centers_, km.labels_.astype(np.int64)
    out = labels[inverse.ravel()]
    return torch.from_numpy(out).to(points.device) if isinstance(points, torch.Tensor) else out


def _hull_mask(cells: np.ndarray, H: int, W: int) -> np.ndarray:
    """Cells of the ``H x W`` grid inside the closed convex hull of integer ``cells`` -> ``(H, W)`` bool.

    Exact integer arithmetic: a cell is inside when it is on the inner side of (or on) every
    hull edge; collinear points span a segment and a single point is one cell.
    """
    from scipy.spatial import ConvexHull

    pts = np.unique(cells, axis=0)
    grid = np.stack(np.meshgrid(np.arange(H), np.arange(W), indexing="ij"), axis=-1).reshape(-1, 2)
    if pts.shape[0] >= 3 and np.linalg.matrix_rank(pts - pts[0]) == 2:
        v = pts[ConvexHull(pts).vertices]
        e = np.roll(v, -1, axis=0) - v  # (E, 2) edges in hull order
        r = grid[:, None, :] - v[None]  # (G, E, 2)
        cross = e[None, :, 0] * r[..., 1] - e[None, :, 1] * r[..., 0]
        inside = (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)
    else:  # a segment from the lexicographically first to the last point (a point if equal)
        d, r = pts[-1] - pts[0], grid - pts[0]
        dd = d @ d
        cross = d[0] * r[:, 1] - d[1] * r[:, 0]
        dot = r @ d
        inside = (cross == 0) & (dot >= 0) & (dot <= dd) & ((r * r).sum(axis=1) <= dd)
    return inside.reshape(H, W)


def candidate_regions(points: Any, shape: tuple[int, int], L: int = 3) -> torch.Tensor:
    """The ``L`` cluster regions of the salient points (Sec. 2) -> ``(L, H, W)`` bool masks.

    The points (``(P, 2)`` integer cells of an ``H x W`` map, e.g. from :func:`salient_points`)
    are grouped by :func:`global_kmeans` into ``C_1..C_L`` (the paper uses ``L = 3``); mask
    ``l`` holds the cells of the closed convex hull of ``C_l`` (the paper takes the hull's
    interior in the image; on the map grid the boundary is kept, so a cluster on one row or
    one cell still has a region). :func:`region_power_set` turns these into the candidate
    regions. Masks are on the points' device (CPU for numpy points).
    """
    pts = _check_points(points)
    H, W = _check_shape(shape)
    if (pts[:, 0] >= H).any() or (pts[:, 1] >= W).any():
        raise ValueError(f"points must be cells of the {H}x{W} map, got a maximum of {tuple(pts.max(axis=0))}")
    labels = global_kmeans(pts, L)
    masks = np.stack([_hull_mask(pts[labels == c], H, W) for c in range(int(L))])
    device = points.device if isinstance(points, torch.Tensor) else None
    return torch.from_numpy(masks).to(device)


def region_power_set(regions: torch.Tensor) -> torch.Tensor:
    """The candidate regions ``R_1..R_M`` from ``L`` cluster regions (Sec. 2) -> ``(M, H, W)`` bool.

    Every non-empty subset of the clusters gives the convex hull of their union (the hull of
    the union of the cluster hulls' cells is the hull of the union of their points); the whole
    map is added last (``R_M``, the paper's "set of all the positions"), so ``M = 2^L``.
    Order: single clusters, then pairs, ... (``itertools.combinations``), then the whole map.
    Duplicates (e.g. a union whose hull is already the whole map) are kept once, so ``M`` may
    be below ``2^L``. The paper also drops regions of (close to) zero size; on the grid a hull
    has at least one cell, so none is dropped. ``regions`` ``(L, H, W)`` bool, none empty.
    """
    R = _check_masks(regions)
    L, H, W = R.shape
    cells = [np.argwhere(m) for m in R.cpu().numpy()]
    hulls = [
        _hull_mask(np.concatenate([cells[i] for i in subset]), H, W)
        for r in range(1, L + 1)
        for subset in itertools.combinations(range(L), r)
    ]
    hulls = [h for h in hulls if not h.all()]
    if hulls:
        _, first = np.unique(np.stack(hulls).reshape(len(hulls), -1), axis=0, return_index=True)
        hulls = [hulls[i] for i in sorted(first)]
    return torch.from_numpy(np.stack([*hulls, np.ones((H, W), dtype=bool)])).to(R.device)


# --------------------------------------------------------------------------- region descriptors (Sec. 3)

def first_order(x: torch.Tensor, regions: Any, weighted: bool = False, eps: float = _EPS) -> torch.Tensor:
    """1st-order (sum-pooled) region descriptors, L2-normalised -> ``(R, C)``.

    Eq. 3: ``f1_R = beta o sum_{p in R} f_p``; with ``weighted=True`` eq. 9, the paper's
    "slightly tweaked" variant of Fig. 1: ``f1_R = beta o sum_{p in R} alpha_p f_p``.
    ``beta`` is :func:`channel_weights` (eq. 2, with ``eps``) and ``alpha`` :func:`spatial_weights`
    (eq. 1), both of the whole map. ``x`` one non-negative map ``(C, H, W)``; ``regions``
    boolean masks ``(R, H, W)``, each covering at least one active cell. Differentiable in ``x``.
    """
    x = _check_map(x)
    if not isinstance(weighted, bool):
        raise ValueError(f"weighted must be True or False, got {weighted!r}")
    w = _region_weights(x, regions, weighted)
    f = channel_weights(x, eps) * torch.einsum("chw,rhw->rc", x, w)
    return l2n(f)


def _basis(basis: Any, C: int, like: torch.Tensor) -> torch.Tensor:
    """PCA bases ``U1`` ``(C, K')`` as a tensor like ``like``."""
    b = torch.as_tensor(basis) if isinstance(basis, (torch.Tensor, np.ndarray)) else None
    if b is None or b.dim() != 2 or b.shape[0] != C or b.shape[1] == 0 or not b.is_floating_point():
        raise ValueError(f"basis must be a float matrix (C, K') = ({C}, K') of PCA bases, got "
                         f"{tuple(b.shape) if b is not None else type(basis).__name__}")
    check_finite(b, "basis")
    return b.to(dtype=like.dtype, device=like.device)


def second_order(
    x: torch.Tensor, regions: Any, basis: Any = None, eps: float = _EPS, log_eps: float = _LOG_EPS
) -> torch.Tensor:
    """2nd-order region descriptors ``vec(log G_R)``, L2-normalised -> ``(R, K'(K'+1)/2)``.

    Eq. 4: local descriptors ``f~_p = U1^T (beta o f_p)`` (``basis`` = ``U1`` ``(C, K')``, PCA
    bases of the database's 1st-order descriptors; ``None`` keeps all ``K' = C`` channels: the
    descriptor has ``C(C+1)/2`` entries, which is why the paper reduces to ``K' = 128`` first).
    Eq. 5: ``G_R = sum_{p in R} alpha_p f~_p f~_p^T / sum_{p in R} alpha_p``, the
    ``alpha``-weighted average of outer products (a second moment: nothing is centred, as in
    Carreira et al.'s 2nd-order average pooling). Then ``log G_R``, the matrix logarithm by
    eigen-decomposition ``V diag(log(max(lambda, 0) + log_eps)) V^T``: ``log_eps`` (not given in
    the paper; ``1e-6``) regularises the zero eigenvalues of a region with fewer cells than
    ``K'``, i.e. ``log(G + log_eps I)``. ``vec`` takes the upper triangle with the diagonal, row
    by row (``(0,0), (0,1), ..., (1,1), ...``), off-diagonal entries unscaled, as the paper
    writes it. Computed in float64 (returned in ``x``'s dtype): the logarithm of near-zero
    eigenvalues would otherwise turn float32 rounding into visible changes. Differentiable in ``x``
    where the eigenvalues are distinct.
    """
    x = _check_map(x)
    log_eps = positive_number(log_eps, "log_eps")
    x64 = x.double()  # log(lambda + log_eps) of near-zero eigenvalues would amplify float32 rounding
    w = _region_weights(x64, regions, weighted=True).flatten(1)  # (R, HW): alpha_p inside the region
    g = (channel_weights(x64, eps)[:, None, None] * x64).flatten(1)  # beta o f_p, (C, HW)
    if basis is not None:
        g = _basis(basis, x.shape[0], x64).T @ g  # (K', HW)
    G = (g.unsqueeze(0) * w.unsqueeze(1)) @ g.T / w.sum(dim=1)[:, None, None]  # (R, K', K')
    lam, V = torch.linalg.eigh(G)
    logG = V @ torch.diag_embed(torch.log(lam.clamp(min=0) + log_eps)) @ V.transpose(-2, -1)
    i, j = torch.triu_indices(G.shape[-1], G.shape[-1], device=x.device)
    return l2n(logG[:, i, j]).to(x.dtype)


# --------------------------------------------------------------------------- image search (Sec. 4)

def _check_region_sets(query: Any, database: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Query regions ``(Mq, D)``, all database regions stacked ``(T, D)``, regions per image, numpy?"""
    q = check_rows(query, "query")
    if q.shape[0] == 0:
        raise ValueError("query must hold at least one region descriptor")
    if isinstance(database, (np.ndarray, torch.Tensor)) or not isinstance(database, Sequence) or len(database) == 0:
        raise ValueError(f"database must be a non-empty list with one (M_t, D) array of region descriptors per image, "
                         f"got {type(database).__name__}")
    rows = [check_rows(t, f"database[{i}]") for i, t in enumerate(database)]
    for i, t in enumerate(rows):
        if t.shape[0] == 0 or t.shape[1] != q.shape[1]:
            raise ValueError(f"database[{i}] must be (M_t, {q.shape[1]}) with M_t >= 1, like the query, got {tuple(t.shape)}")
    is_numpy = isinstance(q, np.ndarray)
    tensors = [torch.as_tensor(t) for t in (q, *rows)]
    dtype = tensors[0].dtype if tensors[0].is_floating_point() else torch.float64
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device
    Q, *T = (t.detach().to(device=device, dtype=dtype) for t in tensors)
    sizes = torch.tensor([t.shape[0] for t in T], device=device)
    return Q, torch.cat(T), sizes, is_numpy


def image_similarity(query: Any, target: Any) -> float:
    """``ImSim(I_q, I_t) = max_{m, m'} VecSim(f_m^q, f_m'^t)``, eq. 7: the best region-to-region match.

    ``VecSim`` is the inner product, the cosine similarity of the L2-normalised region
    descriptors. ``query`` ``(Mq, D)`` and ``target`` ``(Mt, D)``, numpy or torch.
    """
    Q, T, _, _ = _check_region_sets(query, [target])
    return float((Q @ T.T).max())


def region_search(query: Any, database: Sequence[Any]) -> tuple[Any, Any]:
    """Eq. 7 of a query against every database image, in one matrix product.

    ``query`` ``(Mq, D)`` region descriptors; ``database`` a list with one ``(M_t, D)`` array per
    image. Returns ``(scores, best)``, both ``(n_db,)``: ``ImSim`` of each image and the index,
    within that image, of its region best matched to the query (first one on ties), which the
    query expansion uses. Numpy in (query) -> numpy out, torch -> torch on the query's device.
    A ranking is ``argsort(-scores)``; eq. 8 is this with a single query region.
    """
    Q, T, sizes, is_numpy = _check_region_sets(query, database)
    # each database region's best match among the query regions, then the best region of each image
    scores, best = best_per_image((T @ Q.T).amax(dim=1), sizes)
    return (scores.cpu().numpy(), best.cpu().numpy()) if is_numpy else (scores, best)


def query_expansion(query: Any, database: Sequence[Any], n: int = 10) -> Any:
    """The paper's query expansion (Sec. 4.2) -> one expanded query descriptor ``(1, D)``.

    An initial search (:func:`region_search`, eq. 7) ranks the database (ties to the lower
    index); the best-matched region descriptors of the top ``n`` images (the paper's
    ``N_QE = 10``) are averaged and L2-normalised. The original query regions are *not* part
    of the average (unlike Chum et al.'s AQE). The second search, eq. 8, is
    ``region_search(query_expansion(q, db), db)``. Same kind as ``query``.
    """
    Q, T, sizes, is_numpy = _check_region_sets(query, database)
    n = positive_int(n, "n")
    if n > sizes.shape[0]:
        raise ValueError(f"n must be at most the number of database images ({sizes.shape[0]}), got {n}")
    scores, best = region_search(Q, [t for t in torch.split(T, sizes.tolist())])
    top = torch.sort(scores, descending=True, stable=True).indices[:n]
    start = torch.cumsum(sizes, 0) - sizes
    qe = l2n(T[start[top] + best[top]].mean(dim=0, keepdim=True))
    return qe.cpu().numpy() if is_numpy else qe


# --------------------------------------------------------------------------- the whole method

class RegionalAggregation:
    """The method of Jeong et al. end to end: feature maps -> ``M`` whitened region descriptors per image.

    ``fit(maps)`` learns, on a database, the PCA bases ``U1_`` ``(C, K')`` of the 1st-order
    region descriptors (eq. 3 -> eq. 4) and the PCA-whitening ``U2_`` ``(K'(K'+1)/2, D)``,
    ``s_`` ``(D,)`` (the singular values) of the 2nd-order ones (eq. 6); PCA by scikit-learn
    (centred to find the bases; eqs. 4 and 6 project without subtracting a mean, as written).
    ``transform(maps)`` gives each image its ``(M_i, D)`` descriptors
    ``diag(s)^-1 U2^T f2_R``, L2-normalised, one per candidate region (``whole_image=True``: only
    the whole map ``R_M``, what the paper uses for cropped Oxford/Paris queries). Salient points
    are the ``n_min`` most active cells (no detector). Paper: ``L = 3``, ``N_min = 300``,
    ``K' = 128``, ``D`` in 128/256/512. Deterministic (global k-means, full SVD).
    """

    def __init__(self, L: int = 3, n_min: int = 300, reduced_dim: int = 128, dim: int = 512,
                 eps: float = _EPS, log_eps: float = _LOG_EPS) -> None:
        self.L = positive_int(L, "L")
        self.n_min = positive_int(n_min, "n_min")
        self.reduced_dim = positive_int(reduced_dim, "reduced_dim")
        self.dim = positive_int(dim, "dim")
        self.eps = positive_number(eps, "eps")
        self.log_eps = positive_number(log_eps, "log_eps")

    def __repr__(self) -> str:
        return (f"RegionalAggregation(L={self.L}, n_min={self.n_min}, reduced_dim={self.reduced_dim}, "
                f"dim={self.dim}, eps={self.eps:g}, log_eps={self.log_eps:g})")

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """The candidate regions ``(M, H, W)`` of one map: salient points, clusters, power set."""
        points = salient_points(x, n_min=self.n_min, n_max=self.n_min)
        return region_power_set(candidate_regions(points, tuple(x.shape[-2:]), self.L))

    def fit(self, maps: Any) -> RegionalAggregation:
        from sklearn.decomposition import PCA

        maps = check_map_list(maps, nonnegative=True)
        regions = [self.regions(x) for x in maps]
        f1 = torch.cat([first_order(x, r, eps=self.eps) for x, r in zip(maps, regions)]).detach().cpu().double().numpy()
        if self.reduced_dim > min(f1.shape):
            raise ValueError(f"reduced_dim must be at most min(channels, database regions) = {min(f1.shape)}, got {self.reduced_dim}")
        self.U1_ = PCA(self.reduced_dim, svd_solver="full").fit(f1).components_.T
        f2 = torch.cat([second_order(x, r, self.U1_, self.eps, self.log_eps) for x, r in zip(maps, regions)])
        f2 = f2.detach().cpu().double().numpy()
        if self.dim > min(f2.shape):
            raise ValueError(f"dim must be at most min(K'(K'+1)/2, database regions) = {min(f2.shape)}, got {self.dim}")
        pca = PCA(self.dim, svd_solver="full").fit(f2)
        if pca.singular_values_[-1] <= 1e-12 * pca.singular_values_[0]:
            raise ValueError(f"dim must be at most the rank of the database's 2nd-order descriptors, got {self.dim}")
        self.U2_, self.s_ = pca.components_.T, pca.singular_values_
        return self

    def transform(self, maps: Any, whole_image: bool = False) -> list[torch.Tensor]:
        if not hasattr(self, "U2_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This RegionalAggregation is not fitted yet: call fit(maps) first")
        if not isinstance(whole_image, bool):
            raise ValueError(f"whole_image must be True or False, got {whole_image!r}")
        maps = check_map_list(maps, nonnegative=True)
        if maps[0].shape[0] != self.U1_.shape[0]:
            raise ValueError(f"maps must have the {self.U1_.shape[0]} channels seen by fit, got {maps[0].shape[0]}")
        out = []
        for x in maps:
            r = torch.ones(1, *x.shape[-2:], dtype=torch.bool, device=x.device) if whole_image else self.regions(x)
            f2 = second_order(x, r, self.U1_, self.eps, self.log_eps)
            U2 = torch.as_tensor(self.U2_, dtype=x.dtype, device=x.device)
            s = torch.as_tensor(self.s_, dtype=x.dtype, device=x.device)
            out.append(l2n(f2 @ U2 / s))
        return out
