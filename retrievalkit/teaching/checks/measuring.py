"""Checks of notebook 2 (measuring): average precision and mean average precision."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...evaluate import average_precision, mean_average_precision
from .core import Case, Mistake, Task, run_check


# ---------------------------------------------------------------- AP
def _ap_cases(rng: np.random.Generator) -> list[Case]:
    n = int(rng.integers(5, 9))
    ranks = np.sort(rng.choice(40, size=n - 2, replace=False))
    return [
        Case("one positive at rank 1", "one positive at (0-based) rank 1 of 1 gives AP 0.25 (trapezoid rule)", ([1], 1)),
        Case("first place", "a positive at rank 0 contributes precision 1 on both sides", ([0, 3], 2)),
        Case("missed positives", "positives never retrieved still count in n_positives", (ranks.tolist(), n)),
        Case("unsorted input", "the ranks may come in any order", (ranks[::-1].tolist(), n)),
    ]


def _ap_ref(positive_ranks: Any, n_positives: int) -> float:
    return average_precision(positive_ranks, n_positives)


def _ap_finite_sum(positive_ranks: Any, n_positives: int) -> float:
    r = np.sort(np.asarray(positive_ranks))
    return float(((np.arange(r.size) + 1) / (r + 1)).sum() / n_positives)


def _ap_found(positive_ranks: Any, n_positives: int) -> float:
    return average_precision(positive_ranks, len(positive_ranks))


def _ap_trapezoid(r: np.ndarray, n_positives: int) -> float:
    """The trapezoid AP of the ranks ``r`` taken in the order given."""
    j = np.arange(r.size)
    p0 = np.where(r == 0, 1.0, j / np.maximum(r, 1))
    return float(((p0 + (j + 1) / (r + 1)) / (2 * n_positives)).sum())


def _ap_unsorted(positive_ranks: Any, n_positives: int) -> float:
    return _ap_trapezoid(np.asarray(positive_ranks, dtype=float), n_positives)


def _ap_one_based(positive_ranks: Any, n_positives: int) -> float:
    return _ap_trapezoid(np.sort(np.asarray(positive_ranks, dtype=float)) + 1, n_positives)


# ---------------------------------------------------------------- mAP
def _map_cases(rng: np.random.Generator) -> list[Case]:
    n_db = 30
    ranks = np.stack([rng.permutation(n_db) for _ in range(4)])
    gnd = []
    for q in range(4):
        ok = rng.choice(n_db, size=4, replace=False)
        rest = np.setdiff1d(np.arange(n_db), ok)
        gnd.append({"ok": sorted(ok.tolist()), "junk": sorted(rng.choice(rest, size=3, replace=False).tolist())})
    # junk placed ahead of the positives so that counting it changes the positions
    for q in range(4):
        order = [j for j in ranks[q] if j in gnd[q]["junk"]] + [j for j in ranks[q] if j not in gnd[q]["junk"]]
        ranks[q] = order
    no_pos = [dict(g) for g in gnd]
    no_pos[2] = {"ok": [], "junk": []}
    no_junk = [{"ok": g["ok"], "junk": []} for g in gnd]
    return [
        Case("no junk", "mAP is the mean over queries of their AP", (ranks, no_junk)),
        Case("junk", "junk images are removed from the ranking before AP: they neither help nor hurt", (ranks, gnd)),
        Case("query without positives", "a query without positives is left out of the mean", (ranks, no_pos)),
    ]


def _map_ref(ranks: Any, gnd: list[dict]) -> float:
    return mean_average_precision(ranks, gnd)[0]


def _map_counts_junk(ranks: Any, gnd: list[dict]) -> float:
    return mean_average_precision(ranks, [{"ok": g["ok"], "junk": []} for g in gnd])[0]


def _map_zero_for_empty(ranks: Any, gnd: list[dict]) -> float:
    _, aps, _, _ = mean_average_precision(ranks, gnd)
    return float(np.nan_to_num(aps, nan=0.0).mean())


def _map_junk_as_positive(ranks: Any, gnd: list[dict]) -> float:
    return mean_average_precision(ranks, [{"ok": sorted(set(g["ok"]) | set(g.get("junk", []))), "junk": []} for g in gnd])[0]


def _map_finite_sum(ranks: Any, gnd: list[dict]) -> float:
    aps = []
    for row, g in zip(np.asarray(ranks), gnd):
        if not g["ok"]:
            continue
        kept = row[~np.isin(row, g.get("junk", []))]
        aps.append(_ap_finite_sum(np.flatnonzero(np.isin(kept, g["ok"])), len(g["ok"])))
    return float(np.mean(aps))


TASKS: dict[str, Task] = {
    "average_precision": Task(
        "average_precision", _ap_cases, _ap_ref,
        [
            Mistake("is the finite-sum AP (mean precision at each positive) instead of the trapezoid rule", _ap_finite_sum),
            Mistake("divides by the number of positives found instead of n_positives", _ap_found),
            Mistake("assumes the ranks are sorted: sort them first", _ap_unsorted),
            Mistake("treats the ranks as 1-based: they are 0-based (rank 0 is the first result)", _ap_one_based),
        ],
    ),
    "mean_ap": Task(
        "mean_ap", _map_cases, _map_ref,
        [
            Mistake("counts junk images: remove them from the ranking first", _map_counts_junk),
            Mistake("gives queries without positives AP 0 instead of leaving them out", _map_zero_for_empty),
            Mistake("treats junk images as positives", _map_junk_as_positive),
            Mistake("uses the finite-sum AP instead of the trapezoid rule", _map_finite_sum),
        ],
        axes=("query", "rank"),
    ),
}


def check_average_precision(average_precision: Callable) -> None:
    """Check a student's ``average_precision`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("average_precision", average_precision)


def check_mean_ap(mean_ap: Callable) -> None:
    """Check a student's ``mean_ap`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("mean_ap", mean_ap)
