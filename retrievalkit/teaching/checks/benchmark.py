"""Checks of notebook 10 (benchmark): one row of the benchmark table, end to end on a tiny set."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...evaluate import mean_average_precision
from ...normalization import l2n
from ...pooling import gem
from ...search import rank
from .core import Case, Mistake, Task, run_check, to_numpy


def _tiny_benchmark(rng: np.random.Generator, n_objects: int, per_object: int, C: int, size: int,
                    noise: float) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Feature maps of ``n_objects`` objects: each database map is its object's pattern plus noise,
    scaled by a random brightness (so that unnormalised dot products rank differently); one query per object."""
    patterns = rng.random((n_objects, C, size, size)) ** 3
    obj = rng.permutation(np.repeat(np.arange(n_objects), per_object))
    def view(o: int) -> np.ndarray:
        return np.maximum(patterns[o] + noise * rng.standard_normal((C, size, size)), 0) * rng.uniform(0.3, 3.0)
    db = np.stack([view(o) for o in obj])
    queries = np.stack([view(o) for o in range(n_objects)])
    positives = [np.flatnonzero(obj == o).tolist() for o in range(n_objects)]
    return torch.tensor(queries, dtype=torch.float32), torch.tensor(db, dtype=torch.float32), positives


def _row_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case("GeM, p = 3", "GeM descriptors, L2-normalised, the database ranked by cosine similarity, trapezoid AP per "
             "query: [mAP, mean P@1], shape (2,)", (*_tiny_benchmark(rng, 4, 4, 8, 5, 0.35), 3.0)),
        Case("p = 1 (average pooling)", "p is used as given: p = 1 is average pooling", (*_tiny_benchmark(rng, 3, 5, 6, 4, 0.3), 1.0)),
        Case("a harder set", "noisier views: most queries have an AP below 1", (*_tiny_benchmark(rng, 5, 3, 10, 4, 0.6), 3.0)),
    ]


def _row_ref(query_maps: torch.Tensor, db_maps: torch.Tensor, positives: list[list[int]], p: float = 3.0) -> np.ndarray:
    Q, X = l2n(gem(query_maps, p=p)), l2n(gem(db_maps, p=p))
    m, _, mpk, _ = mean_average_precision(to_numpy(rank(Q, X)).astype(np.int64), [{"ok": ok, "junk": []} for ok in positives], kappas=(1,))
    return np.array([m, mpk[0]])


def _row_variant(
    *, pool: str = "gem", l2: bool = True, best_first: bool = True, ap: str = "trapezoid",
) -> Callable[..., np.ndarray]:
    """The benchmark row with one step done wrong (float64 numpy, an independent implementation):
    ``pool`` "gem", "max" or "avg"; ``ap`` "trapezoid" or "finite" (sum of precisions at each positive / n)."""
    def f(query_maps: Any, db_maps: Any, positives: list[list[int]], p: float = 3.0) -> np.ndarray:
        def describe(maps: Any) -> np.ndarray:
            x = to_numpy(maps)
            v = {"gem": (np.maximum(x, 1e-6) ** p).mean(axis=(2, 3)) ** (1 / p), "max": x.max(axis=(2, 3)),
                 "avg": x.mean(axis=(2, 3))}[pool]
            return v / np.linalg.norm(v, axis=1, keepdims=True) if l2 else v
        S = describe(query_maps) @ describe(db_maps).T
        order = np.argsort(-S if best_first else S, axis=1, kind="stable")
        aps, pks = [], []
        for i, ok in enumerate(positives):
            r = np.sort(np.flatnonzero(np.isin(order[i], ok)))  # 0-based ranks of the positives
            j = np.arange(len(r))
            if ap == "trapezoid":
                p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1))
                aps.append(((p0 + (j + 1) / (r + 1)) / 2).sum() / len(ok))
            else:
                aps.append(((j + 1) / (r + 1)).sum() / len(ok))
            pks.append(float(r[0] == 0))  # P@1: is the first result a positive?
        return np.array([np.mean(aps), np.mean(pks)])
    return f


TASKS: dict[str, Task] = {
    "benchmark_row": Task(
        "benchmark_row", _row_cases, _row_ref,
        [
            Mistake("ranks by the descriptors without L2-normalising them: a bright image then wins whatever it shows",
                    _row_variant(l2=False)),
            Mistake("ranks the least similar images first: sort the similarities in descending order", _row_variant(best_first=False)),
            Mistake("uses max pooling (MAC) whatever p says", _row_variant(pool="max")),
            Mistake("uses average pooling whatever p says", _row_variant(pool="avg")),
            Mistake("uses the finite-sum AP (scikit-learn's): the benchmarks use the trapezoid AP", _row_variant(ap="finite")),
        ],
    ),
}


def check_benchmark_row(benchmark_row: Callable) -> None:
    """Check a student's ``benchmark_row`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("benchmark_row", benchmark_row)
