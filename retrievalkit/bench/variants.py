"""Post-processing variants of the benchmark: a named tuple of steps, each learnt on the training
descriptors and applied in order to the queries and the database ``(Q, X)``."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .. import postprocess
from .._validate import nonnegative_number, positive_int

__all__ = ["Descriptors", "Apply", "Step", "PCAw", "AlphaQE", "Variant", "VARIANTS"]

Descriptors = torch.Tensor  # (N, D) rows
Apply = Callable[[Descriptors, Descriptors], tuple[Descriptors, Descriptors]]  # (Q, X) -> (Q', X')


class Step(Protocol):
    """A post-processing step: ``fit(T)`` learns on the training descriptors ``T`` and returns the
    function ``(Q, X) -> (Q', X')`` applied to queries and database."""

    def fit(self, T: Descriptors) -> Apply: ...


@dataclass(frozen=True)
class PCAw:
    """PCA-whitening (Radenović et al., TPAMI 2018; cirtorch ``pcawhitenlearn``) learnt on ``T``:
    ``x -> l2n(P (x - m))`` on queries and database, keeping ``min(dim, D, n_train - 1)`` directions
    (512: the papers' descriptors; ``n_train - 1``: the most ``n_train`` images can whiten)."""

    dim: int = 512

    def __post_init__(self) -> None:
        positive_int(self.dim, "dim")

    def fit(self, T: Descriptors) -> Apply:
        whiten = postprocess.PCAWhitening(dim=min(self.dim, T.shape[1], T.shape[0] - 1)).fit(T)
        return lambda Q, X: (whiten.transform(Q), whiten.transform(X))


@dataclass(frozen=True)
class AlphaQE:
    """alpha query expansion (Radenović et al., TPAMI 2018): ``q -> l2n(q + sum_{top-k} s_j^alpha x_j)``;
    the database is unchanged and nothing is learnt. ``k = 10`` as PyRetri's ``qe_k`` and the CroW /
    CAM papers' ``N_QE``."""

    k: int = 10
    alpha: float = 3.0

    def __post_init__(self) -> None:
        positive_int(self.k, "k")
        nonnegative_number(self.alpha, "alpha")

    def fit(self, T: Descriptors) -> Apply:
        return lambda Q, X: (postprocess.alpha_query_expansion(Q, X, self.k, self.alpha), X)


@dataclass(frozen=True)
class Variant:
    """A named post-processing: ``steps`` applied in order to ``(Q, X)``."""

    name: str
    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.steps, tuple) or not all(callable(getattr(s, "fit", None)) for s in self.steps):
            raise ValueError(f"steps must be a tuple of steps with a fit(T) method, got {self.steps!r}")

    @property
    def setting(self) -> str:
        return " → ".join(map(repr, self.steps)) or "none"

    def fit(self, T: Descriptors) -> Apply:
        """Learn each step on the training descriptors as the steps before it left them (``T`` is
        treated as a database) -> ``(Q, X) -> (Q', X')``, every step in order."""
        fitted: list[Apply] = []
        for step in self.steps:
            if fitted:
                T = fitted[-1](T, T)[1]
            fitted.append(step.fit(T))

        def apply(Q: Descriptors, X: Descriptors) -> tuple[Descriptors, Descriptors]:
            for f in fitted:
                Q, X = f(Q, X)
            return Q, X

        return apply


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("raw"),
    Variant("+PCAw", (PCAw(dim=512),)),
    Variant("+PCAw+αQE", (PCAw(dim=512), AlphaQE(k=10, alpha=3.0))),
)}
"""Post-processing, by name: none; PCA-whitening learnt on the other set; the same then alpha-QE."""

