"""retrievalkit.evaluate, checked against hand-worked values and an independent Oxford AP loop."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from retrievalkit.evaluate import (
    average_precision,
    evaluate,
    holidays_gnd,
    mean_average_precision,
    original_protocol,
    revisited,
    ukbench_score,
)


def oxford_ap(positives, junk, ranked_list):
    """Oxford ``compute_ap.cpp``, line for line: walk the list, skip junk, trapezoids of P(R)."""
    old_recall, old_precision, ap = 0.0, 1.0, 0.0
    intersect_size, j = 0, 0
    for item in ranked_list:
        if item in junk:
            continue
        if item in positives:
            intersect_size += 1
        recall = intersect_size / len(positives)
        precision = intersect_size / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall, old_precision = recall, precision
        j += 1
    return ap


# ---------------------------------------------------------------- average_precision
def test_single_positive_at_rank_one_is_a_quarter():
    # trapezoid: p0 = 0/1, p1 = 1/2 -> (0 + 0.5) / 2 = 0.25 (sklearn's finite sum would say 0.5)
    assert average_precision([1], 1) == pytest.approx(0.25)


def test_single_positive_at_rank_zero_is_one():
    assert average_precision([0], 1) == pytest.approx(1.0)


def test_hand_worked_three_of_four_positives():
    # ranks [0, 2, 5], 4 positives (one never retrieved), each term (p0 + p1) / (2 * 4):
    #   j=0, r=0: p0 = 1,   p1 = 1/1 -> 2/8            = 60/240
    #   j=1, r=2: p0 = 1/2, p1 = 2/3 -> (7/6)/8 = 7/48 = 35/240
    #   j=2, r=5: p0 = 2/5, p1 = 3/6 -> (9/10)/8 = 9/80 = 27/240
    # AP = 122/240 = 61/120
    assert average_precision([0, 2, 5], 4) == pytest.approx(61 / 120)
    assert average_precision([5, 0, 2], 4) == pytest.approx(61 / 120)  # order of the input is irrelevant
    assert average_precision(np.array([0, 2, 5]), 4) == pytest.approx(61 / 120)


def test_no_positive_retrieved_gives_zero():
    assert average_precision([], 3) == 0.0


@pytest.mark.parametrize(
    "ranks, n, name",
    [
        ([0, 1], 0, "n_positives"),
        ([0, 1, 2], 2, "n_positives"),
        ([0], 1.5, "n_positives"),
        ([0], True, "n_positives"),
        ([-1, 2], 2, "positive_ranks"),
        ([1, 1], 2, "positive_ranks"),
        ([0.5, 2], 2, "positive_ranks"),
        ([np.nan, 2], 2, "positive_ranks"),
        ([[0, 1]], 2, "positive_ranks"),
        (["a"], 2, "positive_ranks"),
    ],
)
def test_average_precision_rejects(ranks, n, name):
    with pytest.raises(ValueError, match=name):
        average_precision(ranks, n)


# ---------------------------------------------------------------- mean_average_precision
def test_matches_the_oxford_loop_on_random_rankings_with_junk():
    for seed in range(100):
        rng = np.random.default_rng(seed)
        n_db, nq = int(rng.integers(5, 40)), int(rng.integers(1, 5))
        ranks = np.stack([rng.permutation(n_db) for _ in range(nq)])
        gnd = []
        for _ in range(nq):
            labels = rng.choice(3, size=n_db, p=[0.6, 0.25, 0.15])  # 0 negative, 1 ok, 2 junk
            labels[rng.integers(n_db)] = 1  # at least one positive
            gnd.append({"ok": np.flatnonzero(labels == 1).tolist(), "junk": np.flatnonzero(labels == 2).tolist()})
        cut = int(rng.integers(1, n_db + 1))  # a truncated ranking: the rest is never found
        for R in (ranks, ranks[:, :cut]):
            mAP, aps, _, _ = mean_average_precision(R, gnd)
            expected = [oxford_ap(set(g["ok"]), set(g["junk"]), row) for g, row in zip(gnd, R.tolist())]
            np.testing.assert_allclose(aps, expected, rtol=0, atol=1e-12)
            assert mAP == pytest.approx(np.mean(expected), abs=1e-12)


def test_junk_ranked_before_a_positive_moves_it_up():
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = rng.permutation(30)
        ok = row[rng.choice(30, 5, replace=False)]
        junk = [j for j in row[rng.choice(30, 8, replace=False)] if j not in ok]
        with_junk = mean_average_precision(row[None], [{"ok": ok, "junk": junk}])[1][0]
        deleted = row[~np.isin(row, junk)]
        without = mean_average_precision(deleted[None], [{"ok": ok}])[1][0]
        assert with_junk == pytest.approx(without)
    # and by hand: junk at 0 puts the single positive at rank 0 -> AP 1
    assert mean_average_precision(np.array([[3, 1, 0, 2]]), [{"ok": [1], "junk": [3]}])[0] == pytest.approx(1.0)


def test_query_without_positives_is_excluded_from_the_mean():
    ranks = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1]])
    gnd = [{"ok": [0]}, {"ok": [], "junk": [1]}, {"ok": [0]}]  # APs 1, excluded, 1/(2*1)*(0 + 1/3) = 1/6
    mAP, aps, mpk, prs = mean_average_precision(ranks, gnd)
    assert np.isnan(aps[1]) and np.isnan(prs[1]).all()
    np.testing.assert_allclose(aps[[0, 2]], [1.0, 1 / 6])
    assert mAP == pytest.approx((1 + 1 / 6) / 2)
    assert not np.isnan(mpk).any()


def test_no_query_with_positives_gives_nan_means():
    mAP, aps, mpk, _ = mean_average_precision(np.array([[0, 1]]), [{"ok": []}])
    assert np.isnan(mAP) and np.isnan(aps).all() and np.isnan(mpk).all()


def test_precision_at_k_by_hand_with_the_cap():
    # ok {1, 4}, junk {0}; ranking 0..9 -> positions [1, 4], minus one junk before each -> [0, 3],
    # 1-based pos = [1, 4]. k=1: kq = 1, 1/1. k=5: kq = min(4, 5) = 4, 2/4 (not 2/5). k=10: 2/4.
    # AP: j=0, r=0 -> (1 + 1)/4; j=1, r=3 -> (1/3 + 2/4)/4; total 1/2 + 5/24 = 17/24.
    # second query: ok {7}, no junk, pos = [8] (1-based). k=1: kq = 1, 0/1; k=5: 0/5; k=10: kq = 8, 1/8.
    ranks = np.stack([np.arange(10), np.arange(10)])
    gnd = [{"ok": [1, 4], "junk": [0]}, {"ok": [7]}]
    mAP, aps, mpk, prs = mean_average_precision(ranks, gnd, kappas=(1, 5, 10))
    np.testing.assert_allclose(prs, [[1.0, 0.5, 0.5], [0.0, 0.0, 1 / 8]])
    np.testing.assert_allclose(mpk, [0.5, 0.25, 5 / 16])
    assert aps[0] == pytest.approx(17 / 24)
    assert aps.shape == (2,) and mpk.shape == (3,) and prs.shape == (2, 3) and isinstance(mAP, float)


def test_positive_missing_from_a_truncated_ranking_counts():
    # one of two positives at rank 0, the other beyond the ranking: AP = (1 + 1)/(2*2) = 0.5
    mAP, _, _, prs = mean_average_precision(np.array([[5, 0, 1]]), [{"ok": [5, 9]}], kappas=(1, 3))
    assert mAP == pytest.approx(0.5)
    np.testing.assert_allclose(prs, [[1.0, 1.0]])  # kq = min(1, k) = 1
    assert mean_average_precision(np.array([[0, 1]]), [{"ok": [5]}], kappas=(1,))[3][0, 0] == 0.0


def test_duplicates_in_ok_count_once_and_torch_rankings_are_accepted():
    ranks = torch.tensor([[2, 0, 1]])
    assert mean_average_precision(ranks, [{"ok": [2, 2]}])[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "ranks, gnd, kwargs, name",
    [
        (np.arange(4), [{"ok": [0]}], {}, "ranks"),
        (np.zeros((1, 0), dtype=int), [{"ok": [0]}], {}, "ranks"),
        (np.array([[0.0, 1.0]]), [{"ok": [0]}], {}, "ranks"),
        (np.array([[0, -1]]), [{"ok": [0]}], {}, "ranks"),
        (np.array([[0, 0, 1]]), [{"ok": [0]}], {}, "ranks"),
        (np.array([[0, 1]]), [{"ok": [0]}, {"ok": [1]}], {}, "gnd"),
        (np.array([[0, 1]]), [{"junk": [0]}], {}, "gnd"),
        (np.array([[0, 1]]), [{"ok": [np.nan]}], {}, "gnd"),
        (np.array([[0, 1]]), [{"ok": [-1]}], {}, "gnd"),
        (np.array([[0, 1]]), [{"ok": [0], "junk": [0]}], {}, "gnd"),
        (np.array([[0, 1]]), {"ok": [0]}, {}, "gnd"),
        (np.array([[0, 1]]), [{"ok": [0]}], {"kappas": (0,)}, "kappas"),
        (np.array([[0, 1]]), [{"ok": [0]}], {"kappas": 5}, "kappas"),
    ],
)
def test_mean_average_precision_rejects(ranks, gnd, kwargs, name):
    with pytest.raises(ValueError, match=name):
        mean_average_precision(ranks, gnd, **kwargs)


# ---------------------------------------------------------------- protocols
GND_R = [{"easy": [1, 2], "hard": [3], "junk": [4], "bbx": [0, 0, 9, 9]}, {"easy": [], "hard": [0], "junk": []}]


def test_revisited_protocols():
    assert revisited(GND_R, "easy") == [
        {"ok": [1, 2], "junk": [3, 4], "bbx": [0, 0, 9, 9]},
        {"ok": [], "junk": [0]},
    ]
    assert revisited(GND_R, "medium") == [
        {"ok": [1, 2, 3], "junk": [4], "bbx": [0, 0, 9, 9]},
        {"ok": [0], "junk": []},
    ]
    assert revisited(GND_R, "hard") == [
        {"ok": [3], "junk": [1, 2, 4], "bbx": [0, 0, 9, 9]},
        {"ok": [0], "junk": []},
    ]


@pytest.mark.parametrize(
    "gnd, protocol, name",
    [(GND_R, "Medium", "protocol"), (GND_R, "all", "protocol"), ([{"easy": [1], "junk": []}], "easy", "gnd"),
     ([{"easy": [1], "hard": [-2]}], "easy", "gnd"), ("easy", "easy", "gnd")],
)
def test_revisited_rejects(gnd, protocol, name):
    with pytest.raises(ValueError, match=name):
        revisited(gnd, protocol)


def test_revisited_error_lists_the_protocols():
    with pytest.raises(ValueError, match="easy.*medium.*hard"):
        revisited(GND_R, "x")


def test_original_protocol_takes_the_union_of_good_and_ok_as_sets():
    gnd = [{"good": [5, 2, 5], "ok": [7, 2], "junk": [9, 9, 1], "bbx": [1, 2, 3, 4]}, {"ok": [3]}, {"good": [4]}]
    assert original_protocol(gnd) == [
        {"ok": [2, 5, 7], "junk": [1, 9], "bbx": [1, 2, 3, 4]},
        {"ok": [3], "junk": []},
        {"ok": [4], "junk": []},
    ]
    with pytest.raises(ValueError, match="gnd"):
        original_protocol([{"junk": [1]}])
    with pytest.raises(ValueError, match="gnd"):
        original_protocol([{"good": [1.5]}])


def test_ukbench_perfect_and_by_hand():
    perfect = np.repeat(np.arange(8).reshape(2, 4), 4, axis=0)  # each row: its own group first
    assert ukbench_score(perfect) == 4.0
    assert ukbench_score(np.c_[perfect, perfect[::-1]]) == 4.0  # longer rows: only the top 4 count
    ranks = np.array([
        [0, 1, 2, 3, 4],  # 4 of group 0
        [1, 4, 0, 5, 6],  # 1, 0 -> 2
        [4, 5, 6, 7, 2],  # 2 is fifth -> 0
        [3, 2, 6, 1, 0],  # 3, 2, 1 -> 3
        [4, 0, 1, 2, 3],  # 4 -> 1
        [5, 6, 7, 4, 0],  # 4
        [0, 1, 2, 6, 3],  # 6 -> 1
        [7, 5, 0, 1, 2],  # 7, 5 -> 2
    ])
    assert ukbench_score(ranks) == pytest.approx((4 + 2 + 0 + 3 + 1 + 4 + 1 + 2) / 8)


@pytest.mark.parametrize(
    "ranks",
    [np.zeros((4, 3), dtype=int) + np.arange(3), np.tile(np.arange(6), (6, 1)), np.arange(8), np.zeros((4, 4))],
)
def test_ukbench_rejects(ranks):
    with pytest.raises(ValueError, match="ranks"):
        ukbench_score(ranks)


def test_holidays_query_is_excluded_from_its_own_list():
    numbers = [100000, 100001, 100002, 100100, 100101, 100200]  # groups 1000 (query 0), 1001 (query 3), 1002
    queries, gnd = holidays_gnd(numbers)
    np.testing.assert_array_equal(queries, [0, 3, 5])
    assert gnd == [{"ok": [1, 2], "junk": [0]}, {"ok": [4], "junk": [3]}, {"ok": [], "junk": [5]}]
    # perfect rankings that start with the query itself: AP 1 (without the exclusion: 0.125 + 7/24)
    ranks = np.array([[0, 1, 2, 3, 4, 5], [3, 4, 0, 1, 2, 5], [5, 0, 1, 2, 3, 4]])
    mAP, aps, _, _ = mean_average_precision(ranks, gnd)
    np.testing.assert_allclose(aps[:2], [1.0, 1.0])
    assert np.isnan(aps[2]) and mAP == pytest.approx(1.0)
    # holidays_map.py's rank shift: the query at rank 1 does not push the positive after it down
    assert mean_average_precision(np.array([[1, 0, 3, 2, 4, 5]]), gnd[:1])[0] == pytest.approx(
        average_precision([0, 2], 2))


@pytest.mark.parametrize("numbers", [[], [100001, 100002], [100000, 100000], [[100000]], [-100]])
def test_holidays_rejects(numbers):
    with pytest.raises(ValueError, match="image_numbers"):
        holidays_gnd(numbers)


# ---------------------------------------------------------------- evaluate
def test_evaluate_revisited_in_percent():
    # medium: query 0 ok {1,2,3}, junk {4}; ranking 4 1 0 2 3 -> positions [1, 3, 4] - 1 junk = [0, 2, 3]
    #   AP = [2 + (1/2 + 2/3) + (2/3 + 3/4)] / 6 = (2 + 7/6 + 17/12) / 6 = 55/72
    ranks = np.array([[4, 1, 0, 2, 3], [0, 1, 2, 3, 4]])
    table = evaluate(ranks, SimpleNamespace(name="roxford5k", gnd=GND_R))
    assert set(table) == {"easy", "medium", "hard"}
    assert set(table["medium"]) == {"mAP", "mP@1", "mP@5", "mP@10"}
    assert table["medium"]["mAP"] == pytest.approx(100 * (55 / 72 + 1) / 2)
    assert table["hard"]["mP@1"] == pytest.approx(100 * (0 + 1) / 2)  # hard: query 0's positive 3 is 2nd
    # easy: query 0 ok {1, 2}, junk {3, 4}: positions [1, 3] - 1 junk = [0, 2], AP = (2 + 1/2 + 2/3)/4 = 19/24;
    # query 1 has no easy positive and is left out
    assert table["easy"]["mAP"] == pytest.approx(100 * 19 / 24)


def test_evaluate_original_and_ukbench():
    ranks = np.array([[1, 0, 2]])
    assert evaluate(ranks, SimpleNamespace(name="oxford5k", gnd=[{"ok": [0]}]))["original"]["mAP"] == pytest.approx(25.0)
    assert evaluate(ranks, SimpleNamespace(name="x", gnd=[{"good": [1], "junk": [0]}]))["original"]["mP@1"] == 100.0
    perfect = np.repeat(np.arange(8).reshape(2, 4), 4, axis=0)
    assert evaluate(perfect, SimpleNamespace(name="ukbench", gnd=None)) == {"ukbench": {"N-S": 4.0}}


@pytest.mark.parametrize("dataset", [SimpleNamespace(name="x", gnd=[{"foo": [1]}]), SimpleNamespace(name="x"), object()])
def test_evaluate_rejects_unknown_datasets(dataset):
    with pytest.raises(ValueError, match="dataset"):
        evaluate(np.array([[0, 1]]), dataset)


def test_precision_recall_skips_junk_and_its_trapezoid_area_is_the_ap():
    from retrievalkit.evaluate import average_precision, precision_recall

    # ranking 5 9 2 7 1 with ok {5, 7, 3}, junk {9}: kept 5 2 7 1 -> hits 1 1 2 2
    p, r = precision_recall([5, 9, 2, 7, 1], ok=[5, 7, 3], junk=[9])
    np.testing.assert_allclose(p, [1, 1 / 2, 2 / 3, 2 / 4])
    np.testing.assert_allclose(r, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # the trapezoid area under (recall, precision), starting from precision 1 at recall 0, is the AP
    area = np.trapezoid(np.r_[1.0, p], np.r_[0.0, r])
    assert area == pytest.approx(average_precision([0, 2], 3))
    with pytest.raises(ValueError, match="ok"):
        precision_recall([1, 2], ok=[])


def test_map_score_is_the_protocols_map_in_percent_by_hand():
    from types import SimpleNamespace

    from retrievalkit.evaluate import map_score

    # one query, database of 4: easy = {0}, hard = {2}, junk = {1}; ranking 3, 2, 1, 0
    ds = SimpleNamespace(name="toy", gnd=[{"easy": [0], "hard": [2], "junk": [1]}])
    ranks = np.array([[3, 2, 1, 0]])
    # medium: ok = {0, 2} at positions 1 and 3, junk (position 2) removed -> ranks 1 and 2:
    # AP = ((0/1 + 1/2) + (1/2 + 2/3)) / 4 = 5/12
    assert map_score(ranks, ds) == pytest.approx(100 * 5 / 12)
    # easy: ok = {0}, junk = {1, 2}: 0 at rank 1 -> (0 + 1/2) / 2; hard: ok = {2}, junk = {0, 1} -> same
    assert map_score(ranks, ds, "easy") == pytest.approx(25.0)
    assert map_score(ranks, ds, "hard") == pytest.approx(25.0)
    original = SimpleNamespace(name="toy", gnd=[{"ok": [0], "junk": []}])
    assert map_score(ranks, original, "original") == pytest.approx(12.5)  # rank 3: (0/3 + 1/4) / 2
    with pytest.raises(ValueError, match="protocol must be one of"):
        map_score(ranks, original, "medium")
