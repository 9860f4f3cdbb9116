"""Checks of notebook 3 (encoding): BoW with tf-idf and VLAD."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...encoding import idf_weights, vlad
from ...normalization import l2n
from .core import Case, Mistake, Task, run_check, to_numpy


def _clusters(rng: np.random.Generator, counts: list[int], D: int, peaked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``K <= D`` centres far apart (the last one far from everything when its count is 0) and ``counts[k]``
    descriptors around centre k, shuffled. Each cluster is offset from its centre by +-(0.8..4)
    per dimension, so that no residual sum is near 0 (where float32 rounding would be magnified
    by a square root); ``peaked`` stretches cluster 0's offset along the first axis."""
    centers = 25 * np.linalg.qr(rng.standard_normal((D, len(counts))))[0].T  # K <= D orthogonal directions
    if counts[-1] == 0:
        centers[-1] = 80 + rng.random(D)
    size = rng.uniform(0.8, 4.0, size=(len(counts), D))
    if peaked:  # cluster 0's offset along one axis, the others' diagonal: |v|^p scales their norms differently
        size = np.full((len(counts), D), 2.5) + 0.5 * rng.random((len(counts), D))
        size[0] = [6.0] + [0.8] * (D - 1)
    offsets = rng.choice([-1, 1], size=(len(counts), D)) * size
    X = np.concatenate([centers[k] + offsets[k] + 0.3 * rng.standard_normal((n, D)) for k, n in enumerate(counts) if n])
    X = X[rng.permutation(len(X))]
    return torch.tensor(X, dtype=torch.float32), torch.tensor(centers, dtype=torch.float32)


def _vlad_cases(rng: np.random.Generator) -> list[Case]:
    counts = rng.permutation([2, 5, 9, 14]).tolist()
    return [
        Case("plain VLAD", "vlad(X, centers) sums the residuals x_t - c_k of the descriptors nearest to c_k, "
             "stacks the K x D sums row by row into K*D values and L2-normalises", _clusters(rng, counts, 6)),
        Case("signed square root", "power=0.5 applies sign(v) |v|^0.5 to every value, then the L2",
             _clusters(rng, rng.permutation([3, 6, 8, 12]).tolist(), 5), {"power": 0.5}),
        Case("intra-normalisation", "intra=True L2-normalises each centre's sum v_k (an empty centre stays 0), then the global L2",
             _clusters(rng, rng.permutation([4, 7, 10]).tolist() + [0], 6), {"intra": True}),
        Case("power, then intra", "with power and intra, the power comes first, then intra-normalisation, then the global L2",
             _clusters(rng, rng.permutation([2, 6, 11]).tolist(), 6, peaked=True), {"power": 0.5, "intra": True}),
    ]


def _vlad_ref(X: Any, centers: Any, power: float | None = None, intra: bool = False) -> Any:
    return vlad(X, centers, power=power, intra=intra)


def _vlad_variant(
    *, every_centre: bool = False, flipped: bool = False, mean: bool = False, unit_residuals: bool = False,
    intra_first: bool = False, signed: bool = True, nan_empty: bool = False, l2: bool = True, dim_major: bool = False,
) -> Callable[..., np.ndarray]:
    """VLAD with one step done wrong (float64 numpy, an independent implementation)."""
    def f(X: Any, centers: Any, power: float | None = None, intra: bool = False) -> np.ndarray:
        X, C = to_numpy(X), to_numpy(centers)
        K = len(C)
        A = np.ones((len(X), K)) if every_centre else np.eye(K)[((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)]
        R = (C[None] - X[:, None, :]) if flipped else (X[:, None, :] - C[None])  # (T, K, D)
        if unit_residuals and intra:  # each residual normalised instead of each centre's sum
            R = l2n(R)
        V = np.einsum("tk,tkd->kd", A, R)
        if mean:
            V = V / np.maximum(A.sum(0), 1)[:, None]

        def normalise(V: np.ndarray) -> np.ndarray:
            return V / np.linalg.norm(V, axis=1, keepdims=True) if nan_empty else l2n(V)

        if intra and intra_first:
            V = normalise(V)
        if power is not None:
            V = np.sign(V) * np.abs(V) ** power if signed else np.abs(V) ** power
        if intra and not intra_first and not unit_residuals:
            V = normalise(V)
        v = (V.T if dim_major else V).ravel()
        return l2n(v) if l2 else v
    return f


# ---------------------------------------------------------------- BoW with tf-idf
def _database(rng: np.random.Generator, N: int, K: int) -> torch.Tensor:
    """Word counts ``(N, K)`` of N database images: every word in some but not all images, counts
    up to 5 (so that counting images and counting occurrences differ)."""
    counts = rng.poisson(1.2, size=(N, K)) * (rng.random((N, K)) < 0.6)
    for k in range(K):
        present, missing = rng.choice(N, size=2, replace=False)
        counts[present, k] = rng.integers(1, 5)  # in at least one image
        counts[missing, k] = 0  # missing from at least one
    return torch.tensor(counts, dtype=torch.float64)


def _words(rng: np.random.Generator, K: int, T: int) -> torch.Tensor:
    return torch.tensor(rng.integers(0, K, size=T), dtype=torch.long)


def _tfidf_cases(rng: np.random.Generator) -> list[Case]:
    common = _database(rng, 6, 7)
    common[:, 0] = torch.tensor(rng.integers(1, 4, size=6), dtype=torch.float64)  # word 0 in every image
    unseen = _database(rng, 5, 8)
    unseen[:, 3] = 0  # word 3 in no database image
    return [
        Case("tf-idf", "bow_tfidf(words, database) is (n_k / T) log(N / N_k) per word k, N_k the number of database images "
             "that contain word k, then L2-normalised, shape (K,)", (_words(rng, 8, 15), _database(rng, 6, 8))),
        Case("a word in every image", "a word that every database image contains has idf log(N / N) = 0",
             (torch.cat([torch.zeros(4, dtype=torch.long), _words(rng, 7, 10)]), common)),
        Case("a word in no database image", "a word that no database image contains (N_k = 0) gets idf 0, not log(N / 0)",
             (torch.cat([torch.full((3,), 3, dtype=torch.long), _words(rng, 8, 9)]), unseen)),
        Case("an image without words", "an image without any word (T = 0) gives the zero vector", (torch.zeros(0, dtype=torch.long), _database(rng, 4, 6))),
    ]


def _tfidf_ref(words: Any, database: Any) -> torch.Tensor:
    h = torch.bincount(torch.as_tensor(words), minlength=database.shape[1]).double()
    tf = h / max(len(words), 1)
    return l2n(tf * torch.from_numpy(idf_weights(to_numpy(database))))


def _tfidf_variant(*, idf: str = "log", df: str = "images", l2: bool = True, unseen: str = "zero", empty: str = "zero") -> Callable[..., np.ndarray]:
    """BoW tf-idf with one step done wrong (float64 numpy, an independent implementation); ``idf``
    "log" (right), "none", "ratio" (N / N_k), "inverted" (log(N_k / N)) or "sklearn" (log((1 + N)/(1 + N_k)) + 1);
    ``df`` "images" (right) or "occurrences"; ``unseen`` / ``empty`` "zero" (right) or "nan"."""
    def f(words: Any, database: Any) -> np.ndarray:
        w, D = to_numpy(words).astype(np.int64), to_numpy(database)
        N, K = D.shape
        n = np.bincount(w, minlength=K).astype(np.float64)
        tf = n / len(w) if empty == "nan" else n / max(len(w), 1)
        Nk = (D > 0).sum(axis=0) if df == "images" else D.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = {"log": np.log(N / Nk), "none": np.ones(K), "ratio": N / Nk, "inverted": np.log(Nk / N),
                      "sklearn": np.log((1 + N) / (1 + Nk)) + 1}[idf]
            if unseen == "zero" and idf not in ("none", "sklearn"):  # those two are finite for N_k = 0
                weight = np.where(Nk > 0, weight, 0.0)
            v = tf * weight
            return l2n(v) if l2 else v
    return f


TASKS: dict[str, Task] = {
    "bow_tfidf": Task(
        "bow_tfidf", _tfidf_cases, _tfidf_ref,
        [
            Mistake("has no idf weights (plain tf): weigh each word by log(N / N_k)", _tfidf_variant(idf="none")),
            Mistake("weighs by N / N_k: the idf is its logarithm, log(N / N_k)", _tfidf_variant(idf="ratio")),
            Mistake("weighs by log(N_k / N), the negated idf: log(N / N_k)", _tfidf_variant(idf="inverted")),
            Mistake("uses scikit-learn's smoothed idf log((1 + N)/(1 + N_k)) + 1: the paper's is log(N / N_k)", _tfidf_variant(idf="sklearn")),
            Mistake("counts every occurrence of word k in the database for N_k: N_k is the number of images that contain it",
                    _tfidf_variant(df="occurrences")),
            Mistake("is not L2-normalised", _tfidf_variant(l2=False)),
            Mistake("gives NaN for a word that no database image contains (log(N / 0)): its idf is 0", _tfidf_variant(unseen="nan")),
            Mistake("divides by T = 0 for an image without words (NaN): it gives the zero vector", _tfidf_variant(empty="nan")),
        ],
    ),
    "vlad": Task(
        "vlad", _vlad_cases, _vlad_ref,
        [
            Mistake("adds every descriptor's residual to every centre: each descriptor counts only for its nearest centre",
                    _vlad_variant(every_centre=True)),
            Mistake("uses c_k - x_t: the residuals are x_t - c_k", _vlad_variant(flipped=True)),
            Mistake("flattens dimension-major (the D x K stack): row k of the K x D stack, centre k's sum, comes k-th",
                    _vlad_variant(dim_major=True)),
            Mistake("is not L2-normalised at the end", _vlad_variant(l2=False)),
            Mistake("averages the residuals of each centre instead of summing them", _vlad_variant(mean=True)),
            Mistake("intra-normalises before the power: the power comes first", _vlad_variant(intra_first=True)),
            Mistake("normalises each residual x_t - c_k: intra-normalisation divides each centre's sum v_k by its norm",
                    _vlad_variant(unit_residuals=True)),
            Mistake("drops the sign in the power: use sign(v) |v|^power", _vlad_variant(signed=False)),
            Mistake("divides an empty centre's zero sum by its zero norm (NaN): leave it at 0", _vlad_variant(nan_empty=True)),
        ],
        axes=("local descriptor", "dimension"),
    ),
}


def check_bow_tfidf(bow_tfidf: Callable) -> None:
    """Check a student's ``bow_tfidf`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("bow_tfidf", bow_tfidf)


def check_vlad(vlad: Callable) -> None:
    """Check a student's ``vlad`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("vlad", vlad)
