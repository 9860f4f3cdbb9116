"""Post-processing of global descriptors: whitening, query expansion, diffusion, fusion, selection.

Descriptors are rows ``(N, D)``, ``numpy.ndarray`` or ``torch.Tensor``; the same kind comes back
(torch on the input's device). L2 normalisation is :func:`retrievalkit.normalization.l2n`.

* :class:`PCAWhitening`, :class:`LearnedWhitening`: cirtorch ``utils/whiten.py``
  (``pcawhitenlearn``, ``whitenlearn``, ``whitenapply``); naver's shrinkage ``power=0.25``.
* :func:`average_query_expansion`, :func:`alpha_query_expansion`, :func:`database_augmentation`:
  Chum et al. 2007 and Radenović et al. TPAMI 2018 (naver ``expand_descriptors``, PyRetri ``DBA``).
* :func:`diffusion_rerank`: Iscen et al. CVPR 2017, global-descriptor setting of the authors'
  ``diffusion-retrieval`` code.
* :func:`fuse`: layer- or model-level fusion; :func:`principal_feature_analysis`: Lu et al. 2007,
  the feature selection of Seddati et al. (ICCVW 2017).
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from ._validate import bounded_int, check_region_sets, check_rows, nonnegative_number, positive_int, positive_number
from .manifold import diffuse, mutual_knn_graph
from .normalization import l2n

__all__ = [
    "PCAWhitening",
    "LearnedWhitening",
    "average_query_expansion",
    "alpha_query_expansion",
    "database_augmentation",
    "diffusion_rerank",
    "region_rerank",
    "best_per_image",
    "fuse",
    "principal_feature_analysis",
]

def _as_tensors(arrays: list[Any], names: list[str]) -> tuple[list[torch.Tensor], bool]:
    """Checked, non-empty ``(N, D)`` rows as tensors of one floating dtype, and whether the input was torch.

    All numpy or all torch (then on one device); numpy arrays are wrapped without a copy.
    """
    checked = [check_rows(a, nm) for a, nm in zip(arrays, names)]
    is_torch = isinstance(checked[0], torch.Tensor)
    if any(isinstance(c, torch.Tensor) != is_torch for c in checked):
        kinds = ", ".join(f"{nm} {type(c).__name__}" for nm, c in zip(names, checked))
        raise ValueError(f"{' and '.join(names)} must be the same kind (all numpy or all torch), got {kinds}")
    for c, nm in zip(checked, names):
        if c.shape[0] == 0:
            raise ValueError(f"{nm} must not be empty, got shape {tuple(c.shape)}")
    ts = [c if is_torch else torch.from_numpy(np.ascontiguousarray(c)) for c in checked]
    if len({t.device for t in ts}) > 1:
        raise ValueError(f"{' and '.join(names)} must be on the same device, got {[str(t.device) for t in ts]}")
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in ts])
    dtype = dtype if dtype.is_floating_point else torch.float64
    return [t.to(dtype) for t in ts], is_torch


def _query_and_database(Q: Any, X: Any) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    """``Q``, ``X`` as tensors with the same D; whether ``Q`` was one 1-D query; whether torch."""
    single = isinstance(Q, (np.ndarray, torch.Tensor)) and Q.ndim == 1
    (Qt, Xt), is_torch = _as_tensors([Q, X], ["Q", "X"])
    if Qt.shape[1] != Xt.shape[1]:
        raise ValueError(f"Q and X must have the same dimension D, got Q {tuple(Qt.shape)} and X {tuple(Xt.shape)}")
    return Qt, Xt, single, is_torch


def _back(out: torch.Tensor, is_torch: bool, single: bool = False) -> torch.Tensor | np.ndarray:
    out = out[0] if single else out
    return out if is_torch else out.numpy()


def _float64(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# Whitening


def _eig_descending(Z: np.ndarray, all_axes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of ``Z^T Z`` for a data matrix ``Z`` ``(N, D)``.

    With fewer rows than columns and ``all_axes=False``, only the ``N`` leading pairs come back,
    from the thin SVD of ``Z`` (``Z^T Z`` has rank at most ``N``): the same values and vectors as the
    ``D x D`` eigendecomposition, in ``O(N^2 D)`` instead of ``O(D^3)``. Signs are made
    deterministic: the largest-magnitude component of each eigenvector is positive (first one on
    ties), the rule of scikit-learn's ``svd_flip`` for ``PCA.components_``.
    """
    if Z.shape[0] < Z.shape[1] and not all_axes:
        _, s, Vt = np.linalg.svd(Z, full_matrices=False)
        eigval, eigvec = s**2, Vt.T
    else:
        C = Z.T @ Z
        eigval, eigvec = np.linalg.eigh((C + C.T) / 2)
        eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    peak = eigvec[np.abs(eigvec).argmax(axis=0), np.arange(eigvec.shape[1])]
    return eigval, eigvec * np.sign(peak)


class _Whitening:
    """Shared by both whitenings: checks, ``transform`` and the learnt ``mean_`` and ``P_``."""

    mean_: np.ndarray
    P_: np.ndarray

    def __init__(self, dim: int | None = None) -> None:
        self.dim = None if dim is None else positive_int(dim, "dim")

    def _training_rows(self, X: Any) -> np.ndarray:
        """``X`` as float64 numpy with at least two rows and at least ``dim`` columns."""
        (Xt,), _ = _as_tensors([X], ["X"])
        if Xt.shape[0] < 2:
            raise ValueError(f"X must have at least 2 rows to learn a whitening, got shape {tuple(Xt.shape)}")
        if self.dim is not None and self.dim > Xt.shape[1]:
            raise ValueError(f"dim must be at most the descriptor dimension D = {Xt.shape[1]}, got {self.dim}")
        return _float64(Xt)

    def transform(self, Y: Any) -> torch.Tensor | np.ndarray:
        """``l2n(P_ (y - mean_))`` for each row ``y`` of ``Y`` (cirtorch ``whitenapply``) -> ``(N, dim)``.

        ``mean_`` is the *training* mean. A 1-D ``Y`` gives a 1-D result; torch or numpy, in the
        input's floating dtype (float64 for integers) and on its device.
        """
        if not hasattr(self, "P_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit first")
        single = isinstance(Y, (np.ndarray, torch.Tensor)) and Y.ndim == 1
        (Yt,), is_torch = _as_tensors([Y], ["Y"])
        if Yt.shape[1] != self.P_.shape[1]:
            raise ValueError(f"Y must have the training dimension D = {self.P_.shape[1]}, got shape {tuple(Yt.shape)}")
        P = torch.as_tensor(self.P_, dtype=Yt.dtype, device=Yt.device)
        m = torch.as_tensor(self.mean_, dtype=Yt.dtype, device=Yt.device)
        return _back(l2n((Yt - m) @ P.T), is_torch, single)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items() if not k.endswith('_'))})"


class PCAWhitening(_Whitening):
    """PCA whitening (cirtorch ``pcawhitenlearn``), learnt on one set and applied to another.

    ``fit(X)``: ``mean_ = mean(X)``; ``C = (X - m)^T (X - m) / N`` (population covariance, as
    cirtorch; scikit-learn divides by ``N - 1``, a scalar that the final L2 removes); eigenvalues
    ``eigvals_`` in descending order with eigenvectors ``E``; ``P_ = diag(eigvals_^-power) E^T``,
    ``(dim, D)``. ``power=0.5`` is full whitening (``P C P^T = I``), ``0.25`` naver's shrinkage
    (``P C P^T = diag(eigval^0.5)``), ``0`` a plain PCA rotation. Eigenvector signs: the
    largest-magnitude component of each is positive (scikit-learn's rule; cirtorch's
    ``np.linalg.eig`` leaves them arbitrary). Only directions with a non-zero eigenvalue (above
    ``eigval_max * D * machine eps``, as ``np.linalg.matrix_rank``) are kept: ``dim=None`` keeps all
    of them (the rank ``r`` of ``C``, at most ``N - 1``), and ``dim > r`` is rejected for every
    ``power``. No randomness, so no seed. Computed in float64 numpy.
    """

    eigvals_: np.ndarray

    def __init__(self, dim: int | None = None, power: float = 0.5) -> None:
        super().__init__(dim)
        self.power = nonnegative_number(power, "power")

    def fit(self, X: Any) -> PCAWhitening:
        X64 = self._training_rows(X)
        N, D = X64.shape
        mean = X64.mean(axis=0)
        Xc = X64 - mean
        eigval, eigvec = _eig_descending(Xc, all_axes=False)
        eigval = eigval / N
        rank = int((eigval > eigval[0] * D * np.finfo(np.float64).eps).sum()) if eigval[0] > 0 else 0
        if rank == 0:
            raise ValueError("X must not be constant: every row is the same, nothing to whiten")
        dim = rank if self.dim is None else self.dim
        if dim > rank:
            raise ValueError(
                f"dim must be at most the rank of the training covariance ({rank}; N = {N} rows give at most "
                f"N - 1): the remaining eigenvalues are ~0 and cannot be whitened, got {dim}"
            )
        self.mean_ = mean
        self.eigvals_ = eigval[:dim]
        self.P_ = (eigvec[:, :dim] * eigval[:dim] ** -self.power).T
        return self


class LearnedWhitening(_Whitening):
    """Supervised whitening Lw of Radenović et al. (cirtorch ``whitenlearn``), learnt from matching pairs.

    ``fit(X, query_idx, positive_idx)`` with ``X`` ``(N, D)`` all training descriptors and pairs
    ``(X[query_idx[i]], X[positive_idx[i]])``: ``mean_ = mean(X[query_idx])``;
    ``S = sum_i (x_q - x_p)(x_q - x_p)^T / n_pairs``; ``P1 = inv(L)`` with ``L`` the lower Cholesky
    factor of ``S`` (if ``S`` is not positive definite, ``1e-10``, then ten times more, ... is added
    to its diagonal until it is, as cirtorch; a warning says how much); then the eigenvectors ``E``
    (descending eigenvalues, signs as :class:`PCAWhitening`) of ``P1 (X - m)^T (X - m) P1^T`` over
    all of ``X`` (not divided by N: only the directions matter) and ``P_ = (E^T P1)[:dim]``. So
    ``P_ S P_^T = I``: the differences of matching pairs are whitened. ``dim=None`` keeps all D.
    """

    def fit(self, X: Any, query_idx: Any, positive_idx: Any) -> LearnedWhitening:
        X64 = self._training_rows(X)
        N, D = X64.shape
        q = _pair_indices(query_idx, N, "query_idx")
        p = _pair_indices(positive_idx, N, "positive_idx")
        if q.shape != p.shape:
            raise ValueError(f"query_idx and positive_idx must have the same length, got {q.size} and {p.size}")
        mean = X64[q].mean(axis=0)
        diff = X64[q] - X64[p]
        P1 = np.linalg.inv(_cholesky(diff.T @ diff / q.size))
        Z = (X64 - mean) @ P1.T
        _, eigvec = _eig_descending(Z, all_axes=self.dim is None or self.dim > N)
        self.mean_ = mean
        self.P_ = (eigvec.T @ P1)[: D if self.dim is None else self.dim]
        return self


def _pair_indices(idx: Any, n: int, name: str) -> np.ndarray:
    """A non-empty 1-D integer index array with values in ``[0, n)``."""
    arr = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a non-empty 1-D integer array of row indices, got {idx!r}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{name} must hold row indices of X in [0, {n}), got values {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def _cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``S + a I`` for the first ``a`` in ``0, 1e-10, 1e-9, ...`` that works (cirtorch)."""
    added = 0.0
    while True:
        try:
            L = np.linalg.cholesky(S + added * np.eye(S.shape[0]))
        except np.linalg.LinAlgError:
            added = 1e-10 if added == 0 else 10 * added
            continue
        if added:
            warnings.warn(f"the pair-difference covariance S is not positive definite: added {added:g} to its diagonal",
                          RuntimeWarning, stacklevel=3)
        return L


# --------------------------------------------------------------------------------------------
# Query expansion and database-side augmentation


def _expand(V: torch.Tensor, X: torch.Tensor, S: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    """``l2n(v + sum_{j in top-k of S} max(s_j, 0)^alpha x_j)`` for each row ``v`` of ``V``; one topk, one matmul."""
    s, idx = torch.topk(S, k, dim=1)
    W = torch.zeros_like(S).scatter_(1, idx, s.clamp(min=0) ** alpha)  # 0^0 = 1: alpha = 0 is a plain sum
    return l2n(V + W @ X)


def average_query_expansion(Q: Any, X: Any, k: int) -> torch.Tensor | np.ndarray:
    """Average query expansion (Chum et al. 2007): ``q' = l2n(q + sum_{j in top-k} x_j)``.

    The top-k database vectors of each query by inner product (equal to yahoo/crow's squared-L2
    neighbours for unit ``X``); Chum's mean including the query has the same direction.
    ``Q`` ``(nq, D)`` (or one query ``(D,)``), ``X`` ``(n, D)``, ``1 <= k <= n`` -> ``(nq, D)``.
    """
    return alpha_query_expansion(Q, X, k, 0.0)


def alpha_query_expansion(Q: Any, X: Any, k: int, alpha: float) -> torch.Tensor | np.ndarray:
    """alpha-weighted query expansion (Radenović et al., TPAMI 2018): ``q' = l2n(q + sum_j s_j^alpha x_j)``.

    Over the top-k database vectors ``x_j`` of each query by ``s_j = q . x_j``; naver's
    ``expand_descriptors`` (a mean including ``q``) gives the same direction. Similarities are
    clamped at 0 first: for unit vectors with positive similarity this is the formula, and it
    avoids NaN for negative ``s_j`` and non-integer alpha (a negative neighbour gets weight 0,
    or 1 when ``alpha = 0``). ``alpha = 0`` is :func:`average_query_expansion`; ``alpha >= 0``.
    """
    alpha = nonnegative_number(alpha, "alpha")
    Qt, Xt, single, is_torch = _query_and_database(Q, X)
    k = bounded_int(k, Xt.shape[0], "k", "the database size")
    return _back(_expand(Qt, Xt, Qt @ Xt.T, k, alpha), is_torch, single)


def database_augmentation(X: Any, k: int, alpha: float = 0.0) -> torch.Tensor | np.ndarray:
    """(alpha-)database-side augmentation: alpha-QE of every database vector on the database itself.

    ``x_i' = l2n(x_i + sum_{j in top-k, j != i} max(x_i . x_j, 0)^alpha x_j)``: each vector's own
    similarity is excluded (set to -inf), so its k *other* nearest vectors are added (PyRetri
    ``DBA`` for ``alpha = 0``; naver ``--adba``). ``X`` ``(n, D)``, ``1 <= k <= n - 1``.
    """
    alpha = nonnegative_number(alpha, "alpha")
    (Xt,), is_torch = _as_tensors([X], ["X"])
    k = bounded_int(k, Xt.shape[0] - 1, "k", "the database size minus one (itself excluded)")
    S = Xt @ Xt.T
    S.fill_diagonal_(-math.inf)
    return _back(_expand(Xt, Xt, S, k, alpha), is_torch)


# --------------------------------------------------------------------------------------------
# Diffusion


def diffusion_rerank(
    Q: Any,
    X: Any,
    k: int = 50,
    alpha: float = 0.99,
    *,
    kq: int = 10,
    gamma: float = 3.0,
    tol: float = 1e-6,
    maxiter: int = 20,
) -> torch.Tensor | np.ndarray:
    """Diffusion re-ranking on the database's kNN graph (Iscen et al., CVPR 2017, global descriptors).

    The authors' recipe (``diffusion-retrieval`` ``run_test.m``, global setting): the graph ``A`` is
    :func:`retrievalkit.manifold.mutual_knn_graph` of the database (``k`` nearest by inner product,
    itself included, affinity ``max(x_i . x_j, 0)^gamma`` kept for mutual neighbours, zero
    diagonal); ``S = D^-1/2 A D^-1/2`` (isolated vertices get 0);
    ``y_j = max(q . x_j, 0)^gamma`` on the query's ``kq`` nearest database vectors, 0 elsewhere;
    ``f`` solves ``(I - alpha S) f = y`` by conjugate gradient (``scipy.sparse.linalg.cg``,
    relative residual ``tol``, at most ``maxiter`` iterations, as their ``pcg(A, y, 1e-6, 20)``).
    Defaults are theirs: ``k=50, kq=10, gamma=3, alpha=0.99``. No truncation (they truncate only
    for 100k+ regional databases). kNN by exact faiss search in float32; one CG solve per query
    (scipy's ``cg`` takes one right-hand side). The database is ranked by ``f``, best first;
    vectors that the diffusion does not reach (``f = 0``) follow in order of plain similarity
    ``q . x``. Returns ``(nq, n)`` int64 numpy, or a long tensor on the input's device.
    """
    Qt, Xt, single, is_torch = _query_and_database(Q, X)
    n = Xt.shape[0]
    k = bounded_int(k, n, "k", "the database size")
    kq = bounded_int(kq, n, "kq", "the database size")
    alpha = positive_number(alpha, "alpha")
    if alpha >= 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    gamma = positive_number(gamma, "gamma")
    tol = positive_number(tol, "tol")
    maxiter = positive_int(maxiter, "maxiter")

    Xf = np.ascontiguousarray(Xt.detach().cpu().numpy(), dtype=np.float32)
    Qf = np.ascontiguousarray(Qt.detach().cpu().numpy(), dtype=np.float32)
    A = mutual_knn_graph(Xf, k, gamma)
    index = faiss.IndexFlatIP(Xf.shape[1])
    index.add(Xf)
    sq, qnn = index.search(Qf, kq)
    Y = np.zeros((Qf.shape[0], n))
    np.put_along_axis(Y, qnn, np.maximum(sq, 0).astype(np.float64) ** gamma, axis=1)
    f = diffuse(A, Y, alpha, tol, maxiter)
    plain = _float64(Qt) @ _float64(Xt).T
    ranks = torch.from_numpy(np.lexsort((-plain, -f), axis=1).astype(np.int64))
    return _back(ranks.to(Qt.device), is_torch, single)


def best_per_image(scores: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The best of each image's regions: ``scores`` ``(..., T)`` over the regions of all images
    stacked (image ``i`` owns ``sizes[i]`` consecutive ones) -> ``(values, index)``, each
    ``(..., n_images)``: the largest score of each image's block and its position within the block
    (the first on ties). The region matching of :func:`region_rerank` and of Jeong et al.'s
    :func:`retrievalkit.salient.region_search`; one padded tensor, no loop over images."""
    sizes = torch.as_tensor(sizes, device=scores.device)
    if sizes.dim() != 1 or sizes.numel() == 0 or bool((sizes < 1).any()) or int(sizes.sum()) != scores.shape[-1]:
        raise ValueError(f"sizes must be positive region counts summing to the {scores.shape[-1]} scores, got {sizes.tolist()}")
    n = sizes.shape[0]
    image = torch.repeat_interleave(torch.arange(n, device=scores.device), sizes)
    start = torch.cumsum(sizes, 0) - sizes
    padded = torch.full((*scores.shape[:-1], n, int(sizes.max())), -math.inf, dtype=scores.dtype, device=scores.device)
    padded[..., image, torch.arange(scores.shape[-1], device=scores.device) - start[image]] = scores
    return padded.max(dim=-1)


def region_rerank(
    ranks: Any, query_regions: Sequence[Any], database_regions: Sequence[Any], k: int = 40, similarity: str = "chamfer"
) -> np.ndarray | torch.Tensor:
    """Re-rank the top ``k`` of each ranking by region-to-region matching, without geometry.

    Each image is a set of L2-normalised region descriptors (e.g. its R-MAC regions,
    :func:`retrievalkit.regions.regional_mac`). ``similarity="chamfer"``: the mean over the
    query's regions of each one's best match in the database image,
    ``1/|R_q| sum_{r in R_q} max_{s in R_x} r . s``, so every part of the query must be found
    somewhere; ``"max"``: the single best region pair (eq. 7 of Jeong et al., ICASSP 2017,
    :func:`retrievalkit.salient.region_search`). The first ``k`` of each row of ``ranks``
    ``(nq, n)`` are re-ordered by that score (stable: ties keep their order), the rest are kept.
    All region pairs of a query come from one matrix product. Same kind as ``ranks``.
    """
    if similarity not in ("chamfer", "max"):
        raise ValueError(f"similarity must be 'chamfer' or 'max', got {similarity!r}")
    is_torch = isinstance(ranks, torch.Tensor)
    R = ranks.detach().cpu().numpy() if is_torch else np.asarray(ranks)
    Qr, Xr = check_region_sets(query_regions, "query_regions"), check_region_sets(database_regions, "database_regions")
    if R.ndim != 2 or R.dtype.kind not in "iu" or R.shape != (len(Qr), len(Xr)):
        raise ValueError(f"ranks must be an integer ({len(Qr)}, {len(Xr)}) array: one full ranking per query, got "
                         f"{R.dtype} {R.shape}")
    if Qr[0].shape[1] != Xr[0].shape[1]:
        raise ValueError(f"query_regions and database_regions must have the same dimension, got {Qr[0].shape[1]} and {Xr[0].shape[1]}")
    k = bounded_int(k, len(Xr), "k", "the database size")
    T = torch.cat(Xr).double()
    sizes = torch.tensor([len(x) for x in Xr])
    out = R.copy()
    for i, q in enumerate(Qr):
        best = best_per_image(q.double() @ T.T, sizes)[0]  # (M_q, n): each query region's best match per image
        score = (best.mean(dim=0) if similarity == "chamfer" else best.amax(dim=0)).numpy()
        top = R[i, :k]
        out[i, :k] = top[np.argsort(-score[top], kind="stable")]
    return torch.from_numpy(out).to(ranks.device) if is_torch else out


# --------------------------------------------------------------------------------------------
# Fusion and feature selection


def fuse(*parts: Any) -> torch.Tensor | np.ndarray:
    """Layer- or model-level fusion: ``l2n([l2n(d_1), l2n(d_2), ...])`` -> ``(N, D_1 + D_2 + ...)``.

    Each descriptor set ``(N, D_i)`` (all numpy or all torch, the same N) is L2-normalised,
    the sets are concatenated along the features and the result L2-normalised, so every part
    weighs the same whatever its dimension or scale. 1-D inputs give a 1-D result.
    """
    if not parts:
        raise ValueError("descriptors: fuse needs at least one (N, D) descriptor set, got none")
    names = [f"descriptors[{i}]" for i in range(len(parts))]
    single = all(isinstance(p, (np.ndarray, torch.Tensor)) and p.ndim == 1 for p in parts)
    ts, is_torch = _as_tensors(list(parts), names)
    if len({t.shape[0] for t in ts}) > 1:
        raise ValueError(f"descriptors must all have the same number of rows N, got shapes {[tuple(t.shape) for t in ts]}")
    return _back(l2n(torch.cat([l2n(t) for t in ts], dim=1)), is_torch, single)


def principal_feature_analysis(X: Any, n: int, seed: int = 0, *, q: int | None = None) -> torch.Tensor | np.ndarray:
    """Principal Feature Analysis (Lu, Cohen, Zhou and Tian, ACM MM 2007): indices of n original features.

    The feature selection of Seddati et al. (ICCVW 2017): PCA of the covariance of ``X`` ``(N, D)`` (scikit-learn, exact
    SVD); ``A_q`` ``(D, q)`` holds the first ``q`` principal axes as columns, so row ``V_i``
    describes feature ``i``; k-means (scikit-learn, k-means++ seeded by ``seed``) clusters the
    rows into ``n`` clusters; in each cluster the feature whose row is nearest the centre is kept
    (ties to the lower index). ``q`` defaults to ``n`` (Lu et al. take ``n >= q``, equal here),
    capped at the rank ``r`` of the centred ``X`` (at most ``N - 1``; singular values above
    ``s_max * max(N, D) * eps``, as ``np.linalg.matrix_rank``): axes of zero variance are arbitrary
    and would split duplicate features; an explicit ``q > r`` is rejected. Returns the
    ``n`` indices sorted increasingly: int64 numpy, or a long tensor on the input's device.
    Deterministic for a given ``seed``.
    """
    (Xt,), is_torch = _as_tensors([X], ["X"])
    N, D = Xt.shape
    if N < 2:
        raise ValueError(f"X must have at least 2 rows, got shape {tuple(Xt.shape)}")
    n = bounded_int(n, D, "n", "the number of features D")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    pca = PCA(svd_solver="full").fit(_float64(Xt))
    sv = pca.singular_values_
    rank = int((sv > sv[0] * max(N, D) * np.finfo(np.float64).eps).sum()) if sv[0] > 0 else 0
    if rank == 0:
        raise ValueError("X must not be constant: every row is the same, no principal axes")
    q = min(n, rank) if q is None else bounded_int(q, rank, "q", "the rank of X's covariance")
    A = pca.components_[:q].T
    km = KMeans(n_clusters=n, n_init="auto", random_state=int(seed)).fit(A)
    dist = np.linalg.norm(A - km.cluster_centers_[km.labels_], axis=1)
    order = np.lexsort((np.arange(D), dist, km.labels_))  # by cluster, then distance, then index
    first = np.r_[True, km.labels_[order][1:] != km.labels_[order][:-1]]
    chosen = np.sort(order[first])
    if chosen.size < n:
        raise ValueError(f"n must be at most the number of distinct feature loadings: k-means found only "
                         f"{chosen.size} clusters (duplicated features?), got n = {n}")
    out = torch.from_numpy(chosen.astype(np.int64))
    return out.to(Xt.device) if is_torch else out.numpy()
