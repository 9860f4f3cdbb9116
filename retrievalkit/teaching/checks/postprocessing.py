"""Checks of notebook 7 (post-processing): alpha query expansion."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...normalization import l2n
from .core import Case, Mistake, Task, run_check, to_numpy


def _positive_unit(rng: np.random.Generator, n: int, D: int) -> torch.Tensor:
    """Unit rows with non-negative entries: every similarity is >= 0 (as with post-ReLU descriptors)."""
    return torch.tensor(l2n(np.abs(rng.standard_normal((n, D)))), dtype=torch.float32)


def _aqe_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("alpha = 3, k = 5", "q' = l2n(q + sum_j s_j^alpha x_j) over the k database vectors most similar to q (s_j = q . x_j)",
             (_positive_unit(rng, 3, 8), _positive_unit(rng, 30, 8), 5, 3.0)),
        Case("alpha = 0", "alpha = 0 is average query expansion: l2n(q + sum of the top-k)",
             (_positive_unit(rng, 2, 6), _positive_unit(rng, 25, 6), 4, 0.0)),
        Case("k = 1", "k = 1 adds only the nearest vector, weighted by s^alpha", (_positive_unit(rng, 4, 5), _positive_unit(rng, 20, 5), 1, 2.0)),
        Case("one query", "one query (1, D) gives one expanded query (1, D)", (_positive_unit(rng, 1, 10), _positive_unit(rng, 40, 10), 6, 5.0)),
    ]


def _aqe_ref(Q: Any, X: Any, k: int, alpha: float) -> Any:
    from ...postprocess import alpha_query_expansion  # faiss and scikit-learn load only when needed

    return alpha_query_expansion(Q, X, k, alpha)


def _aqe_variant(
    *, query: bool = True, weighting: str = "s^alpha", skip: int = 0, farthest: bool = False, l2: bool = True, mean: bool = False,
    everything: bool = False,
) -> Callable[..., np.ndarray]:
    """alpha-QE with one step done wrong (float64 numpy); ``weighting`` "s^alpha" (right), "s" or "none"."""
    def f(Q: Any, X: Any, k: int, alpha: float) -> np.ndarray:
        Q, X = to_numpy(Q), to_numpy(X)
        k = len(X) if everything else k
        S = Q @ X.T
        idx = np.argsort(S if farthest else -S, axis=1, kind="stable")[:, skip : skip + k]
        s = np.take_along_axis(S, idx, axis=1)
        w = {"s^alpha": s**alpha, "s": s, "none": np.ones_like(s)}[weighting]
        v = (w[..., None] * X[idx]).sum(axis=1) / (k if mean else 1) + (Q if query else 0)
        return l2n(v) if l2 else v
    return f


TASKS: dict[str, Task] = {
    "alpha_qe": Task(
        "alpha_qe", _aqe_cases, _aqe_ref,
        [
            Mistake("leaves out the query itself: add q to the weighted sum before normalising", _aqe_variant(query=False)),
            Mistake("weights the neighbours by s_j instead of s_j^alpha", _aqe_variant(weighting="s")),
            Mistake("ignores the weights s_j^alpha (plain average query expansion)", _aqe_variant(weighting="none")),
            Mistake("skips the nearest vector (as database-side augmentation skips the vector itself)", _aqe_variant(skip=1)),
            Mistake("takes the k least similar vectors: the top-k have the highest q . x", _aqe_variant(farthest=True)),
            Mistake("is not L2-normalised", _aqe_variant(l2=False)),
            Mistake("divides the neighbours' sum by k: the query then outweighs them; add the sum itself", _aqe_variant(mean=True)),
            Mistake("expands with the whole database: only the k most similar vectors are added", _aqe_variant(everything=True)),
        ],
        axes=("query", "dimension"),
    ),
}


def check_alpha_qe(alpha_qe: Callable) -> None:
    """Check a student's ``alpha_qe`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("alpha_qe", alpha_qe)
