"""Checks of notebook 8 (fine-tuning): the contrastive and triplet losses, hard-negative mining and gradient descent."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...losses import contrastive_loss, hard_negatives, triplet_loss
from ...normalization import l2n
from .core import Case, Mistake, Task, run_check, to_numpy


# ---------------------------------------------------------------- contrastive loss
def _pairs(rng: np.random.Generator, n: int, D: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit pairs: "near" (squared distance about 0.05..0.6), "far" (about 2.5..4) or "any" (independent)."""
    a = l2n(rng.standard_normal((n, D)))
    noise = rng.uniform(0.1, 0.25, size=(n, 1)) * rng.standard_normal((n, D))
    b = {"near": a + noise, "far": -a + noise, "any": rng.standard_normal((n, D))}[kind]
    return torch.tensor(a, dtype=torch.float32), torch.tensor(l2n(b), dtype=torch.float32)


def _contrastive_cases(rng: np.random.Generator) -> list[Case]:
    a3, b3 = (torch.cat(p) for p in zip(_pairs(rng, 3, 6, "near"), _pairs(rng, 5, 6, "any")))
    y3 = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    D3 = ((a3 - b3) ** 2).sum(dim=1)
    m3 = float(D3[y3 == 0].sort().values[2])  # two non-matching pairs lie beyond the margin, two inside
    return [
        Case("matching pairs", "a matching pair (y = 1) costs D/2 with D = ||a - b||^2 the squared distance; the mean over pairs",
             (*_pairs(rng, 5, 8, "near"), torch.ones(5, dtype=torch.long), 1.0)),
        Case("non-matching pairs inside the margin", "a non-matching pair (y = 0) costs max(0, m - D)/2, a plain hinge on the squared distance",
             (*_pairs(rng, 4, 6, "far"), torch.zeros(4, dtype=torch.long), 5.0)),
        Case("mixed pairs", "non-matching pairs beyond the margin (D > m) cost nothing", (a3, b3, y3, m3)),
        Case("one pair", "one non-matching pair inside the margin", (*_pairs(rng, 1, 5, "far"), torch.zeros(1, dtype=torch.long), 4.5)),
    ]


def _contrastive_ref(a: torch.Tensor, b: torch.Tensor, y: Any, margin: float) -> torch.Tensor:
    return contrastive_loss(a, b, y, margin)


def _contrastive_variant(
    *, cirtorch: bool = False, root: bool = False, swap: bool = False, total: bool = False, half: float = 0.5, hinge: bool = True,
) -> Callable[..., torch.Tensor]:
    """The contrastive loss with one step done wrong (float64)."""
    def f(a: torch.Tensor, b: torch.Tensor, y: Any, margin: float) -> torch.Tensor:
        y = torch.as_tensor(y).double()
        y = 1 - y if swap else y
        D = (a.double() - b.double()).pow(2).sum(dim=1)
        if cirtorch:
            d = D.sqrt()
            loss = half * y * D + half * (1 - y) * (margin - d).clamp(min=0) ** 2
        else:
            D = D.sqrt() if root else D
            loss = half * y * D + half * (1 - y) * ((margin - D).clamp(min=0) if hinge else margin - D)
        return loss.sum() if total else loss.mean()
    return f


# ---------------------------------------------------------------- triplet loss
def _triplet_cases(rng: np.random.Generator) -> list[Case]:
    def triplets(n: int, D: int, hard: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = l2n(rng.standard_normal((n, D)))
        near, far = l2n(a + 0.3 * rng.standard_normal((n, D))), l2n(0.4 * rng.standard_normal((n, D)) - a)
        p, q = (far, near) if hard else (near, far)
        return tuple(torch.tensor(v, dtype=torch.float32) for v in (a, p, q))

    a, p, q = triplets(6, 8, hard=False)
    mixed = [torch.cat(pair) for pair in zip(triplets(3, 8, hard=True), triplets(4, 8, hard=False))]
    return [
        Case("hard triplets", "max(0, m + D(a, p) - D(a, n)) with D the squared L2 distance, the mean over triplets",
             (*triplets(5, 8, hard=True), 0.5)),
        Case("easy triplets", "a triplet with D(a, n) > D(a, p) + m costs nothing", (a, p, q, 0.2)),
        Case("mixed triplets", "only the triplets that violate the margin count, averaged over all", (*mixed, 0.7)),
    ]


def _triplet_ref(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    return triplet_loss(anchor, positive, negative, margin)


def _triplet_variant(
    *, root: bool = False, hinge: bool = True, swap: bool = False, total: bool = False, minus_margin: bool = False,
    violating: bool = False,
) -> Callable[..., torch.Tensor]:
    """The triplet loss with one step done wrong (float64)."""
    def f(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
        a, p, n = anchor.double(), positive.double(), negative.double()
        p, n = (n, p) if swap else (p, n)
        dp, dn = (a - p).pow(2).sum(dim=1), (a - n).pow(2).sum(dim=1)
        dp, dn = (dp.sqrt(), dn.sqrt()) if root else (dp, dn)
        t = dp - dn + (-margin if minus_margin else margin)
        t = t.clamp(min=0) if hinge else t
        if violating:
            return t[t > 0].mean()
        return t.sum() if total else t.mean()
    return f


# ---------------------------------------------------------------- hard-negative mining
def _mining_cases(rng: np.random.Generator) -> list[Case]:
    # 6 objects seen 4 times each; the first 6 pool items are one view of each object
    objects = l2n(rng.standard_normal((6, 10)))
    views = l2n(np.repeat(objects, 4, axis=0) + 0.5 * rng.standard_normal((24, 10)))
    order = np.concatenate([np.arange(0, 24, 4), rng.permutation(np.setdiff1d(np.arange(24), np.arange(0, 24, 4)))])
    pool, label = views[order], np.repeat(np.arange(6), 4)[order]
    positives = [np.flatnonzero(label == i).tolist() for i in range(6)]
    queries = l2n(objects[:4] + 0.5 * rng.standard_normal((4, 10)))
    q_pos = positives[:3] + [[]]  # the last query has no positive in the pool
    P = torch.tensor(pool, dtype=torch.float32)
    return [
        Case("anchors from the pool", "the n pool items with the highest inner product that are not the anchor's positives, "
             "nearest first, shape (Na, n)", (P[:6], P, positives, 3)),
        Case("n = 1", "n = 1: the hardest negative of each anchor", (P[:6], P, positives, 1)),
        Case("queries outside the pool", "anchors need not be pool items; an anchor without positives may get any pool item",
             (torch.tensor(queries, dtype=torch.float32), P, q_pos, 4)),
        Case("every negative, most of them dissimilar", "with n = every non-positive, all of them come back, nearest first, "
             "even those with a negative inner product; never a positive", (-P[:6], P, positives, 20)),
    ]


def _mining_ref(anchors: Any, pool: Any, positives_of: Any, n: int) -> Any:
    return hard_negatives(anchors, pool, positives_of, n)


def _mining_variant(*, mask: str = "positives", farthest: bool = False, index_order: bool = False, skip: int = 0) -> Callable[..., np.ndarray]:
    """Hard-negative mining with one step done wrong (float64 numpy); ``mask`` "positives" (right),
    "none", "self" (the anchor's own index only) or "zero" (positives at similarity 0)."""
    def f(anchors: Any, pool: Any, positives_of: Any, n: int) -> np.ndarray:
        S = to_numpy(anchors) @ to_numpy(pool).T
        excluded = np.zeros(S.shape, dtype=bool)
        for i, p in enumerate(positives_of):
            if mask in ("positives", "zero"):
                excluded[i, list(p)] = True
            elif mask == "self" and i < S.shape[1]:
                excluded[i, i] = True
        if mask == "zero":
            S, excluded = np.where(excluded, 0.0, S), np.zeros_like(excluded)
        key = np.where(excluded, np.inf, S if farthest else -S)
        top = np.argsort(key, axis=1, kind="stable")[:, skip : skip + n]
        return np.sort(top, axis=1) if index_order else top
    return f


# ---------------------------------------------------------------- gradient descent on the contrastive loss
def _descent_cases(rng: np.random.Generator) -> list[Case]:
    def problem(n_match: int, n_other: int, D: int, d: int) -> tuple[torch.Tensor, ...]:
        W = torch.tensor(rng.standard_normal((D, d)) / np.sqrt(D))
        a = rng.standard_normal((n_match + n_other, D))
        b = np.concatenate([a[:n_match] + 0.6 * rng.standard_normal((n_match, D)), rng.standard_normal((n_other, D))])
        y = torch.tensor([1] * n_match + [0] * n_other)
        return W, torch.tensor(a), torch.tensor(b), y

    def margin_between(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> float:
        D = ((a - b) @ W).pow(2).sum(dim=1)[y == 0].sort().values
        return float((D[len(D) // 2 - 1] + D[len(D) // 2]) / 2)  # half the non-matching pairs beyond the margin

    mixed = problem(3, 6, 6, 3)
    loop = problem(4, 4, 5, 2)
    return [
        Case("matching pairs", "one step W - lr dL/dW of L = mean of 1/2 y D + 1/2 (1 - y) max(0, m - D), D = ||a W - b W||^2, "
             "shape (D, d)", (*problem(5, 0, 6, 3), 1.0, 0.1, 1)),
        Case("non-matching pairs inside the margin", "a non-matching pair with D < m pushes a W and b W apart",
             (*problem(0, 4, 5, 4), 50.0, 0.05, 1)),
        Case("mixed pairs", "a non-matching pair beyond the margin (D > m) has no gradient", (*mixed, margin_between(*mixed), 0.05, 1)),
        Case("twenty steps", "steps=20 repeats the step, the gradient recomputed at each W; the loss falls",
             (*loop, margin_between(*loop), 0.02, 20)),
    ]


def _descent_ref(W: torch.Tensor, a: torch.Tensor, b: torch.Tensor, y: Any, margin: float, lr: float, steps: int = 1) -> torch.Tensor:
    W = W.detach().clone()
    for _ in range(steps):
        W.requires_grad_(True)
        (grad,) = torch.autograd.grad(contrastive_loss(a @ W, b @ W, y, margin), W)
        W = (W - lr * grad).detach()
    return W


def _descent_variant(
    *, ascend: bool = False, factor: float = 1.0, hinge: bool = True, mean: bool = True, swap: bool = False, once: bool = False,
    frozen: bool = False,
) -> Callable[..., np.ndarray]:
    """Gradient descent with one step done wrong (float64 numpy, the gradient derived by hand):
    dL/dW = 1/N sum_i c_i d_i^T d_i W with d_i = a_i - b_i, c_i = y_i - (1 - y_i) [D_i < m]."""
    def f(W: Any, a: Any, b: Any, y: Any, margin: float, lr: float, steps: int = 1) -> np.ndarray:
        W, d, y = to_numpy(W), to_numpy(a) - to_numpy(b), to_numpy(y)
        y = 1 - y if swap else y
        g = None
        for _ in range(1 if once else steps):
            if g is None or not frozen:
                D = ((d @ W) ** 2).sum(axis=1)
                c = y - (1 - y) * ((D < margin) if hinge else 1.0)
                g = factor * np.einsum("i,ij,ik->jk", c, d, d) @ W / (len(d) if mean else 1)
            W = W + lr * g if ascend else W - lr * g
        return W
    return f


TASKS: dict[str, Task] = {
    "contrastive_loss": Task(
        "contrastive_loss", _contrastive_cases, _contrastive_ref,
        [
            Mistake("is cirtorch's form (cirtorch,"
                    " the PyTorch retrieval code of Radenović, Tolias & Chum: distance not squared, hinge squared): "
                    "the slides use D = ||a - b||^2 and a plain hinge",
                    _contrastive_variant(cirtorch=True)),
            Mistake("uses the distance ||a - b|| instead of its square D", _contrastive_variant(root=True)),
            Mistake("swaps the labels: y = 1 marks a matching pair", _contrastive_variant(swap=True)),
            Mistake("sums over the pairs instead of averaging", _contrastive_variant(total=True)),
            Mistake("forgets the factors 1/2", _contrastive_variant(half=1.0)),
            Mistake("forgets the max(0, .): a non-matching pair beyond the margin costs nothing", _contrastive_variant(hinge=False)),
        ],
        axes=("pair", "dimension"),
    ),
    "triplet_loss": Task(
        "triplet_loss", _triplet_cases, _triplet_ref,
        [
            Mistake("uses distances ||a - p|| instead of squared distances", _triplet_variant(root=True)),
            Mistake("forgets the max(0, .): a triplet that satisfies the margin costs nothing", _triplet_variant(hinge=False)),
            Mistake("swaps the positive and the negative", _triplet_variant(swap=True)),
            Mistake("sums over the triplets instead of averaging", _triplet_variant(total=True)),
            Mistake("subtracts the margin: L = max(0, m + D(a, p) - D(a, n))", _triplet_variant(minus_margin=True)),
            Mistake("averages over the triplets that violate the margin only: average over all N", _triplet_variant(violating=True)),
        ],
        axes=("triplet", "dimension"),
    ),
    "hard_negatives": Task(
        "hard_negatives", _mining_cases, _mining_ref,
        [
            Mistake("returns the anchor's positives: they must never be returned", _mining_variant(mask="none")),
            Mistake("leaves out only the anchor's own index i: leave out all of positives_of[i]", _mining_variant(mask="self")),
            Mistake("gives the positives similarity 0 instead of leaving them out: below 0 they still come back (use -inf)",
                    _mining_variant(mask="zero")),
            Mistake("returns the farthest negatives: the hardest have the highest inner product", _mining_variant(farthest=True)),
            Mistake("returns the right negatives in index order: sort them nearest first", _mining_variant(index_order=True)),
            Mistake("skips the nearest negative", _mining_variant(skip=1)),
        ],
        axes=("query", "dimension"),
    ),
    "gradient_descent": Task(
        "gradient_descent", _descent_cases, _descent_ref,
        [
            Mistake("steps uphill (W + lr dL/dW): the loss rises", _descent_variant(ascend=True)),
            Mistake("has half the gradient: the derivative of ||u||^2 is 2u", _descent_variant(factor=0.5)),
            Mistake("has twice the gradient: the loss has factors 1/2", _descent_variant(factor=2.0)),
            Mistake("pushes apart the non-matching pairs beyond the margin too: max(0, m - D) has no gradient where D > m",
                    _descent_variant(hinge=False)),
            Mistake("sums the gradient over the pairs: the loss is their mean", _descent_variant(mean=False)),
            Mistake("swaps the labels: y = 1 marks a matching pair, pulled together", _descent_variant(swap=True)),
            Mistake("takes one step whatever steps says", _descent_variant(once=True)),
            Mistake("reuses the first gradient at every step: recompute it at the new W", _descent_variant(frozen=True)),
        ],
        axes=("input dimension", "output dimension"),
    ),
}


def check_contrastive_loss(contrastive_loss: Callable) -> None:
    """Check a student's ``contrastive_loss`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("contrastive_loss", contrastive_loss)


def check_triplet_loss(triplet_loss: Callable) -> None:
    """Check a student's ``triplet_loss`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("triplet_loss", triplet_loss)


def check_hard_negatives(hard_negatives: Callable) -> None:
    """Check a student's ``hard_negatives`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("hard_negatives", hard_negatives)


def check_gradient_descent(gradient_descent: Callable) -> None:
    """Check a student's ``gradient_descent`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("gradient_descent", gradient_descent)
