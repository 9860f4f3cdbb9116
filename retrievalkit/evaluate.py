"""Evaluation: average precision, mAP and mP@k, the Oxford / Paris (original and revisited),
INRIA Holidays and UKBench protocols.

A ranking is an integer array ``(n_queries, n_db)`` of 0-based database indices, best first
(the transpose of revisitop's ``(n_db, n_queries)``). It may be truncated (fewer columns than
the database): positives that are not in it are never found but still count.
Ground truth is one dict per query, ``{"ok": [...], "junk": [...]}`` ("junk" optional).
AP is the trapezoid rule of the Oxford ``compute_ap.cpp`` / revisitop ``compute_ap``, not the
finite sum of scikit-learn: one positive at rank 1 (0-based) scores 0.25, not 0.5.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._validate import positive_int

__all__ = [
    "average_precision",
    "mean_average_precision",
    "revisited",
    "original_protocol",
    "holidays_gnd",
    "ukbench_score",
    "precision_recall",
    "evaluate",
    "map_score",
]

PROTOCOLS = ("easy", "medium", "hard")


def _check_indices(x: Any, name: str, ndim: int = 1) -> np.ndarray:
    """Non-negative integers (an empty list, or floats holding whole numbers, are accepted) as int64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {ndim}-D array of integers") from None
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array of integers, got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if np.isnan(a).any():
            raise ValueError(f"{name} must not contain NaN")
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"{name} must hold integers, got non-integer values")
    if (a < 0).any():
        raise ValueError(f"{name} must hold non-negative (0-based) indices, got minimum {a.min()}")
    return a.astype(np.int64)


def _check_ranking(ranks: Any) -> np.ndarray:
    """A non-empty 2-D integer ranking without repeated indices in a row."""
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    a = np.asarray(ranks)
    if a.ndim != 2:
        raise ValueError(f"ranks must have shape (n_queries, n_db), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"ranks must not be empty, got shape {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ranks must be an integer array of database indices, got dtype {a.dtype}")
    a = _check_indices(a, "ranks", ndim=2)
    repeated = (np.diff(np.sort(a, axis=1), axis=1) == 0).any(axis=1)
    if repeated.any():
        raise ValueError(f"ranks must not repeat an index within a row, row {int(np.argmax(repeated))} does")
    return a


def _check_gnd(gnd: Any, n_queries: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(unique ok, unique junk)`` per query, checked against the number of ranked queries."""
    if not isinstance(gnd, Sequence) or not all(isinstance(g, Mapping) for g in gnd):
        raise ValueError("gnd must be a list of dicts {'ok': [...], 'junk': [...]}, one per query")
    if len(gnd) != n_queries:
        raise ValueError(f"gnd must have one dict per query: ranks has {n_queries} rows, gnd has {len(gnd)} entries")
    out = []
    for i, g in enumerate(gnd):
        if "ok" not in g:
            raise ValueError(f"gnd[{i}] must have an 'ok' key, got keys {sorted(g)}")
        ok = np.unique(_check_indices(g["ok"], f"gnd[{i}]['ok']"))
        junk = np.unique(_check_indices(g.get("junk", []), f"gnd[{i}]['junk']"))
        if np.intersect1d(ok, junk).size:
            raise ValueError(f"gnd[{i}]: an image cannot be both 'ok' and 'junk', got {np.intersect1d(ok, junk)}")
        out.append((ok, junk))
    return out


def _trapezoid_ap(ranks: np.ndarray, n_positives: int) -> float:
    """Trapezoid AP of sorted, unique, junk-free 0-based positive ranks (no checks)."""
    j = np.arange(ranks.size)
    p0 = np.where(ranks == 0, 1.0, j / np.maximum(ranks, 1))
    p1 = (j + 1) / (ranks + 1)
    return float((p0 + p1).sum() / (2 * n_positives))


def average_precision(positive_ranks: Any, n_positives: int) -> float:
    """Trapezoid average precision (revisitop ``compute_ap(ranks, nres)``, Oxford ``compute_ap.cpp``).

    For the j-th positive (0-based, ranks sorted ascending) at 0-based rank ``r``, junk
    already removed: ``p0 = 1 if r == 0 else j / r``, ``p1 = (j + 1) / (r + 1)`` and
    ``AP = sum_j (p0 + p1) / (2 n_positives)``. Positives never retrieved count in
    ``n_positives`` only. One positive at rank 1 gives 0.25.
    """
    n = positive_int(n_positives, "n_positives")
    r = np.sort(_check_indices(positive_ranks, "positive_ranks"))
    if r.size > n:
        raise ValueError(f"n_positives must be at least len(positive_ranks) = {r.size}, got {n}")
    if r.size > 1 and (np.diff(r) == 0).any():
        raise ValueError("positive_ranks must not contain duplicate ranks")
    return _trapezoid_ap(r, n)


def mean_average_precision(
    ranks: Any, gnd: Sequence[Mapping[str, Any]], kappas: Sequence[int] = (1, 5, 10)
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``(mAP, aps, mP@k, P@k)`` as revisitop ``compute_map`` (== cirtorch, MATLAB ``compute_map.m``).

    ``ranks`` is ``(n_queries, n_db)``. For each query, the 0-based positions of its "ok"
    images in its ranking are decreased by the number of junk images ranked before them,
    then scored by :func:`average_precision` with ``n_positives = len(unique(ok))``.
    With ``pos`` these positions made 1-based, ``P@k = #(pos <= kq) / kq``,
    ``kq = min(max(pos), k)`` (k capped at the last positive found; 0 when none is found).
    Queries without "ok" get NaN AP and P@k and are left out of the means
    (which are NaN when no query has a positive).
    """
    R = _check_ranking(ranks)
    queries = _check_gnd(gnd, R.shape[0])
    if isinstance(kappas, (str, bytes)) or not isinstance(kappas, Sequence):
        raise ValueError(f"kappas must be a sequence of integers >= 1, got {kappas!r}")
    kap = np.array([positive_int(k, "kappas") for k in kappas], dtype=np.int64)
    aps = np.full(R.shape[0], np.nan)
    prs = np.full((R.shape[0], kap.size), np.nan)
    positions = np.arange(R.shape[1])
    for i, (ok, junk) in enumerate(queries):
        if ok.size == 0:
            continue
        pos = positions[np.isin(R[i], ok)]
        pos = pos - np.searchsorted(positions[np.isin(R[i], junk)], pos)
        aps[i] = _trapezoid_ap(pos, ok.size)
        if pos.size == 0:
            prs[i] = 0.0
        else:
            kq = np.minimum(pos.max() + 1, kap)
            prs[i] = (pos[:, None] + 1 <= kq).sum(axis=0) / kq
    valid = ~np.isnan(aps)
    if not valid.any():
        return float("nan"), aps, np.full(kap.size, np.nan), prs
    return float(aps[valid].mean()), aps, prs[valid].mean(axis=0), prs


def revisited(gnd: Sequence[Mapping[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """Revisited Oxford / Paris ground truth ``{"easy", "hard", "junk"}`` -> ``{"ok", "junk"}``.

    revisitop ``example_evaluate.py``: easy: ok = easy, junk = junk + hard; medium:
    ok = easy + hard, junk = junk; hard: ok = hard, junk = junk + easy. "bbx" is carried over.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(gnd, Sequence) or not all(isinstance(g, Mapping) for g in gnd):
        raise ValueError("gnd must be a list of dicts {'easy', 'hard', 'junk'}, one per query")
    out = []
    for i, g in enumerate(gnd):
        if "easy" not in g or "hard" not in g:
            raise ValueError(f"gnd[{i}] must have 'easy' and 'hard' keys, got keys {sorted(g)}")
        easy, hard = _check_indices(g["easy"], f"gnd[{i}]['easy']"), _check_indices(g["hard"], f"gnd[{i}]['hard']")
        junk = _check_indices(g.get("junk", []), f"gnd[{i}]['junk']")
        ok, junk = {"easy": ([easy], [junk, hard]), "medium": ([easy, hard], [junk]),
                    "hard": ([hard], [junk, easy])}[protocol]
        q = {"ok": np.unique(np.concatenate(ok)).tolist(), "junk": np.unique(np.concatenate(junk)).tolist()}
        if "bbx" in g:
            q["bbx"] = g["bbx"]
        out.append(q)
    return out


def original_protocol(gnd: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Original Oxford / Paris ground truth: ok = good ∪ ok, junk = junk (Oxford ``compute_ap.cpp``).

    Each dict has "good" and/or "ok" (and optionally "junk", "bbx"); the lists may repeat an
    image, so sets are taken. Returns ``{"ok", "junk"}`` with sorted unique indices ("bbx" kept).
    """
    if not isinstance(gnd, Sequence) or not all(isinstance(g, Mapping) for g in gnd):
        raise ValueError("gnd must be a list of dicts {'good', 'ok', 'junk'}, one per query")
    out = []
    for i, g in enumerate(gnd):
        if "good" not in g and "ok" not in g:
            raise ValueError(f"gnd[{i}] must have a 'good' or an 'ok' key, got keys {sorted(g)}")
        ok = [_check_indices(g.get(key, []), f"gnd[{i}]['{key}']") for key in ("good", "ok")]
        q = {"ok": np.unique(np.concatenate(ok)).tolist(),
             "junk": np.unique(_check_indices(g.get("junk", []), f"gnd[{i}]['junk']")).tolist()}
        if "bbx" in g:
            q["bbx"] = g["bbx"]
        out.append(q)
    return out


def holidays_gnd(image_numbers: Any) -> tuple[np.ndarray, list[dict[str, list[int]]]]:
    """INRIA Holidays ground truth (``holidays_map.py``): ``(query_indices, gnd)``.

    ``image_numbers[i]`` is the number ``imno`` of database image ``i`` (``100301.jpg`` -> 100301).
    Queries are the images with ``imno % 100 == 0``; the positives of a query are the other
    images of its group ``imno // 100``. The query stays in the database and is its own
    "junk": removing it from its own ranked list is the rank shift of ``holidays_map.py``.
    Use as ``mean_average_precision(rank(X[query_indices], X), gnd)``.
    """
    imno = _check_indices(image_numbers, "image_numbers")
    if imno.size == 0:
        raise ValueError("image_numbers must not be empty")
    if np.unique(imno).size != imno.size:
        raise ValueError("image_numbers must not repeat an image number")
    queries = np.flatnonzero(imno % 100 == 0)
    if queries.size == 0:
        raise ValueError("image_numbers must contain at least one query (a number with imno % 100 == 0)")
    group = imno // 100
    gnd = [{"ok": [int(j) for j in np.flatnonzero(group == group[q]) if j != q], "junk": [int(q)]} for q in queries]
    return queries, gnd


def ukbench_score(ranks: Any) -> float:
    """UKBench N-S score: mean number of images of the query's group in its top 4 (max 4).

    Images come in groups of 4 consecutive indices (group = index // 4); query ``i`` is database
    image ``i`` and counts itself when retrieved, as in the original protocol.
    """
    R = _check_ranking(ranks)
    if R.shape[1] < 4:
        raise ValueError(f"ranks must have at least 4 columns (the top 4), got shape {R.shape}")
    if R.shape[0] % 4:
        raise ValueError(f"ranks must have one row per database image, a multiple of 4, got {R.shape[0]} rows")
    return float((R[:, :4] // 4 == np.arange(R.shape[0])[:, None] // 4).sum(axis=1).mean())


def precision_recall(ranking: Any, ok: Sequence[int], junk: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each retrieved non-junk image of one ranked list.

    ``ranking`` is one row of database indices, best first; junk images are skipped (as the
    protocol does). Returns ``(precision, recall)`` arrays, one entry per kept position.
    """
    row = _check_indices(ranking, "ranking")
    ok_set = np.unique(_check_indices(list(ok), "ok"))
    if ok_set.size == 0:
        raise ValueError("ok must list at least one positive")
    kept = row[~np.isin(row, _check_indices(list(junk), "junk"))]
    hits = np.cumsum(np.isin(kept, ok_set))
    return hits / np.arange(1, kept.size + 1), hits / ok_set.size


def _table(ranks: Any, gnd: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    mAP, _, mpk, _ = mean_average_precision(ranks, gnd, (1, 5, 10))
    return {"mAP": 100 * mAP, "mP@1": 100 * mpk[0], "mP@5": 100 * mpk[1], "mP@10": 100 * mpk[2]}


def evaluate(ranks: Any, dataset: Any) -> dict[str, dict[str, float]]:
    """The dataset's protocol(s), in percent, from its ``.name`` and ``.gnd``.

    UKBench -> ``{"ukbench": {"N-S": score}}``; revisited gnd ("easy"/"hard") ->
    ``{"easy", "medium", "hard"}``; original gnd ("ok" or "good") -> ``{"original"}``;
    each of the latter with "mAP", "mP@1", "mP@5", "mP@10".
    """
    if str(getattr(dataset, "name", "")).lower() == "ukbench":
        return {"ukbench": {"N-S": ukbench_score(ranks)}}
    gnd = getattr(dataset, "gnd", None)
    if not isinstance(gnd, Sequence) or not gnd or not all(isinstance(g, Mapping) for g in gnd):
        raise ValueError("dataset must have a .gnd list of dicts (or be named 'ukbench')")
    if "easy" in gnd[0] and "hard" in gnd[0]:
        return {p: _table(ranks, revisited(gnd, p)) for p in PROTOCOLS}
    if "ok" in gnd[0] or "good" in gnd[0]:
        return {"original": _table(ranks, original_protocol(gnd))}
    raise ValueError(f"dataset.gnd has neither the original ('ok') nor the revisited ('easy', 'hard') form, "
                     f"got keys {sorted(gnd[0])}")


def map_score(ranks: Any, dataset: Any, protocol: str = "medium") -> float:
    """mAP in percent of ``ranks`` on ``dataset`` under one ``protocol``: ``"easy"``, ``"medium"`` or
    ``"hard"`` for revisited ground truth (the mini benchmark, rOxford5k, rParis6k), ``"original"``
    for the original one (Oxford5k, Paris6k, Holidays). The number the lectures quote; the full
    table of every protocol and mP@k is :func:`evaluate`.
    """
    gnd = getattr(dataset, "gnd", None)
    if not isinstance(gnd, Sequence) or not gnd or not all(isinstance(g, Mapping) for g in gnd):
        raise ValueError("dataset must have a .gnd list of dicts, one per query")
    is_revisited = "easy" in gnd[0] and "hard" in gnd[0]
    allowed = PROTOCOLS if is_revisited else ("original",)
    if protocol not in allowed:
        raise ValueError(f"protocol must be one of {allowed} for dataset {getattr(dataset, 'name', '')!r}, got {protocol!r}")
    return 100 * mean_average_precision(ranks, revisited(gnd, protocol) if is_revisited else original_protocol(gnd))[0]
