"""Checks of notebook 7 (post-processing): alpha query expansion and PCA-whitening learnt on another set."""
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


# ---------------------------------------------------------------- PCA-whitening learnt on one set, applied to another
def _gaussian(rng: np.random.Generator, n: int, D: int, shift: float) -> np.ndarray:
    """``n`` rows with distinct variances along random directions, centred at ``shift`` per coordinate."""
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
    scales = np.linspace(3.0, 0.4, D) * rng.uniform(0.9, 1.1, size=D)
    return (rng.standard_normal((n, D)) * scales) @ basis.T + shift + rng.uniform(-1, 1, size=D)


def _whiten_cases(rng: np.random.Generator) -> list[Case]:
    def pair(n: int, m: int, D: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        train = _gaussian(rng, n, D, 2.0)
        test = train[rng.choice(n, size=m)] * rng.uniform(0.5, 1.5) + shift + rng.standard_normal((m, D))
        return torch.tensor(train), torch.tensor(test)

    return [
        Case("all dimensions", "learnt on train: y = diag(lambda^-1/2) E^T (x - m) with the training mean m, covariance "
             "(1/N) sum (x - m)(x - m)^T, eigenvalues largest first; each row then L2-normalised, shape (M, dim)",
             (*pair(40, 8, 5, 0.0), 5)),
        Case("dim < D", "dim keeps the dim directions of largest variance", (*pair(50, 10, 6, 0.5), 3)),
        Case("a shifted test set", "the test rows are centred with the training mean, not their own", (*pair(30, 12, 4, 4.0), 4)),
        Case("one test row", "a single test row is whitened like any other", (*pair(25, 1, 4, 1.0), 2)),
    ]


def _column_signs(value: np.ndarray) -> np.ndarray:
    """Each column's sign fixed (its largest-magnitude entry positive): an eigenvector's sign is arbitrary."""
    if value.ndim != 2 or value.size == 0:
        return value
    top = value[np.abs(value).argmax(axis=0), np.arange(value.shape[1])]
    return value * np.where(top < 0, -1.0, 1.0)


def _whiten_ref(train: Any, test: Any, dim: int) -> np.ndarray:
    from ...postprocess import PCAWhitening  # here: the module loads faiss, which importing the checks must not

    return PCAWhitening(dim).fit(to_numpy(train)).transform(to_numpy(test))


def _whiten_variant(
    *, learn: str = "train", centre: str = "train", power: float = 0.5, order: str = "largest", l2: bool = True,
) -> Callable[..., np.ndarray]:
    """PCA-whitening with one step done wrong (float64 numpy): ``learn`` "train" (right) or "test";
    ``centre`` "train" (right), "test" or "none"; ``order`` "largest" (right) or "smallest"."""
    def f(train: Any, test: Any, dim: int) -> np.ndarray:
        X, Y = to_numpy(train), to_numpy(test)
        fit = Y if learn == "test" else X
        m = fit.mean(axis=0)
        lam, E = np.linalg.eigh((fit - m).T @ (fit - m) / len(fit))  # ascending
        keep = np.argsort(lam)[::-1][:dim] if order == "largest" else np.argsort(lam)[:dim]
        with np.errstate(all="ignore"):
            P = E[:, keep] * lam[keep] ** -power
        shift = {"train": m, "test": Y.mean(axis=0), "none": 0.0}[centre]
        out = (Y - shift) @ P
        return l2n(out) if l2 else out
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
    "pca_whiten": Task(
        "pca_whiten", _whiten_cases, _whiten_ref,
        [
            Mistake("is learnt on the test set (its mean and covariance): learn on train, apply to test", _whiten_variant(learn="test")),
            Mistake("centres the test rows with their own mean: subtract the training mean", _whiten_variant(centre="test")),
            Mistake("does not subtract the training mean", _whiten_variant(centre="none")),
            Mistake("divides by the eigenvalues: whitening divides by their square roots", _whiten_variant(power=1.0)),
            Mistake("is a PCA rotation without whitening: divide by sqrt(lambda)", _whiten_variant(power=0.0)),
            Mistake("keeps the directions of smallest variance (eigh sorts ascending): keep the largest", _whiten_variant(order="smallest")),
            Mistake("is not L2-normalised", _whiten_variant(l2=False)),
        ],
        canonical=_column_signs,
        axes=("row", "dimension"),  # of train (N, D); the answer is (test rows, dim)
    ),
}


def check_alpha_qe(alpha_qe: Callable) -> None:
    """Check a student's ``alpha_qe`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("alpha_qe", alpha_qe)


def check_pca_whiten(pca_whiten: Callable) -> None:
    """Check a student's ``pca_whiten`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("pca_whiten", pca_whiten)
