"""Checks of notebook 9 (manifolds): the kNN preservation of an embedding."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...normalization import l2n
from .core import Case, Mistake, Task, run_check, to_numpy


def _knn_cases(rng: np.random.Generator) -> list[Case]:
    X = rng.standard_normal((40, 5)) + 1.0
    P = rng.standard_normal((5, 2))
    X2 = rng.standard_normal((30, 6)) + 0.5
    return [
        Case("a 2-D projection", "the mean over points of |kNN in X ∩ kNN in Y| / k, neighbours by Euclidean distance, "
             "each point left out of its own neighbours", (X, X @ P + 0.3 * rng.standard_normal((40, 2)), 5)),
        Case("a scaled, shifted copy", "Y = 2 X + 3 keeps every neighbour: the score is 1", (X2, 2 * X2 + 3, 4)),
        Case("k = 1", "k = 1: the fraction of points whose nearest neighbour stays their nearest",
             (X2, X2 @ rng.standard_normal((6, 3)), 1)),
        Case("an unrelated embedding", "a random Y keeps few neighbours", (X2, rng.standard_normal((30, 2)), 6)),
    ]


def _knn_ref(X: Any, Y: Any, k: int) -> float:
    from ...manifold import knn_preservation  # faiss loads only when needed

    return knn_preservation(X, Y, k)


def _knn_variant(
    *, with_self: bool = False, cosine: bool = False, farthest: bool = False, fewer: bool = False, score: str = "fraction",
) -> Callable[..., float]:
    """kNN preservation with one step done wrong (numpy, an independent implementation): the mean over
    points of ``|N_k^X(i) ∩ N_k^Y(i)| / k``; ``score`` "fraction" (right), "count", "jaccard" or "same rank"."""
    def neighbours(Z: np.ndarray, k: int) -> np.ndarray:
        """Each row's k nearest other rows, nearest first ``(n, k)``."""
        if cosine:
            U = l2n(Z)
            key = -(U @ U.T)
        else:
            key = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        key = -key if farthest else key
        order = np.argsort(key, axis=1, kind="stable")
        if not with_self:
            order = order[order != np.arange(len(Z))[:, None]].reshape(len(Z), -1)
        return order[:, : k - 1 if fewer else k]

    def f(X: Any, Y: Any, k: int) -> float:
        A, B = neighbours(to_numpy(X), k), neighbours(to_numpy(Y), k)
        if score == "same rank":
            return float((A == B).sum(1).mean() / k)
        shared = (A[:, :, None] == B[:, None, :]).any(-1).sum(1)
        per_point = {"fraction": shared / k, "count": shared, "jaccard": shared / (2 * k - shared)}[score]
        return float(per_point.mean())
    return f


TASKS: dict[str, Task] = {
    "knn_preservation": Task(
        "knn_preservation", _knn_cases, _knn_ref,
        [
            Mistake("counts each point as its own neighbour: leave i out of its k nearest", _knn_variant(with_self=True)),
            Mistake("ranks by cosine similarity: the neighbours are by Euclidean distance", _knn_variant(cosine=True)),
            Mistake("takes the k farthest points instead of the k nearest", _knn_variant(farthest=True)),
            Mistake("is the number of kept neighbours, not the fraction (divide by k)", _knn_variant(score="count")),
            Mistake("divides by the size of the union (Jaccard) instead of k", _knn_variant(score="jaccard")),
            Mistake("takes k - 1 neighbours (argsort[:, 1:k] after the point itself): take argsort[:, 1:k + 1]",
                    _knn_variant(fewer=True)),
            Mistake("counts a neighbour only at the same rank in both: compare the k nearest as sets",
                    _knn_variant(score="same rank")),
        ],
        axes=("point", "dimension"),
    ),
}


def check_knn_preservation(knn_preservation: Callable) -> None:
    """Check a student's ``knn_preservation`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("knn_preservation", knn_preservation)
