"""Checks of notebook 3 (encoding): VLAD."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...encoding import vlad
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


TASKS: dict[str, Task] = {
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


def check_vlad(vlad: Callable) -> None:
    """Check a student's ``vlad`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("vlad", vlad)
