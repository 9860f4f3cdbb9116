"""Checks that teach: a correct answer passes, each plausible wrong answer gets its own message.

The wrong answers below are written the way a student would write them, independently of the
mistake models in retrievalkit.checks.
"""
import math

import numpy as np
import pytest
import torch

from retrievalkit import checks


# ----------------------------------------------------------------- window pooling (2x2, stride 2)
def wp_correct(x, kind):
    w = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2)
    return {"max": w.amax(dim=(1, 3)), "avg": w.mean(dim=(1, 3)), "sum": w.sum(dim=(1, 3))}[kind]


def wp_always_max(x, kind):
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).amax(dim=(1, 3))


def wp_always_avg(x, kind):
    return torch.nn.functional.avg_pool2d(x[None, None], 2)[0, 0]


def wp_stride_one(x, kind):
    f = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    out = f(x[None, None], 2, stride=1)[0, 0]
    return out * 4 if kind == "sum" else out


def wp_avg_is_sum(x, kind):
    w = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2)
    return w.amax(dim=(1, 3)) if kind == "max" else w.sum(dim=(1, 3))


# ----------------------------------------------------------------- MAC
def mac_correct(x):
    return x.flatten(-2).max(dim=-1).values


def mac_mean(x):
    return x.mean(dim=(-2, -1))


def mac_sum(x):
    return x.sum(dim=(-2, -1))


def mac_rows_then_mean(x):
    return x.max(dim=-2).values.mean(dim=-1)


def mac_abs(x):
    return x.abs().flatten(-2).max(-1).values


# ----------------------------------------------------------------- SPoC
def _gauss(H, W, cy, cx, sigma, two=True):
    i = torch.arange(H, dtype=torch.float64)[:, None] - cy
    j = torch.arange(W, dtype=torch.float64)[None, :] - cx
    return torch.exp(-(i**2 + j**2) / ((2 if two else 1) * sigma**2))


def spoc_correct(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 6)).sum(dim=(-2, -1))


def spoc_no_prior(x):
    return x.sum(dim=(-2, -1))


def spoc_centre_half(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, H / 2, W / 2, min(H, W) / 6)).sum(dim=(-2, -1))


def spoc_sigma_third(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 3)).sum(dim=(-2, -1))


def spoc_no_two(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 6, two=False)).sum(dim=(-2, -1))


def spoc_mean(x):
    return x.mean(dim=(-2, -1))


# ----------------------------------------------------------------- GeM
def gem_correct(x, p=3.0, eps=1e-6):
    return torch.mean(torch.clamp(x, min=eps) ** p, dim=(-2, -1)) ** (1 / p)


def gem_max(x, p=3.0, eps=1e-6):
    return torch.amax(x, dim=(-2, -1))


def gem_no_root(x, p=3.0, eps=1e-6):
    return torch.mean(torch.clamp(x, min=eps) ** p, dim=(-2, -1))


def gem_sum(x, p=3.0, eps=1e-6):
    return torch.sum(torch.clamp(x, min=eps) ** p, dim=(-2, -1)) ** (1 / p)


def gem_no_clamp(x, p=3.0, eps=1e-6):
    return torch.mean(x**p, dim=(-2, -1)) ** (1 / p)


def gem_ignores_p(x, p=3.0, eps=1e-6):
    return torch.mean(torch.clamp(x, min=eps), dim=(-2, -1))


# ----------------------------------------------------------------- AP
def ap_correct(positive_ranks, n_positives):
    ap = 0.0
    for j, r in enumerate(sorted(positive_ranks)):
        p0 = 1.0 if r == 0 else j / r
        ap += (p0 + (j + 1) / (r + 1)) / (2 * n_positives)
    return ap


def ap_sklearn(positive_ranks, n_positives):
    return sum((j + 1) / (r + 1) for j, r in enumerate(sorted(positive_ranks))) / n_positives


def ap_found(positive_ranks, n_positives):
    return ap_correct(positive_ranks, len(positive_ranks))


def ap_unsorted(positive_ranks, n_positives):
    ap = 0.0
    for j, r in enumerate(positive_ranks):
        p0 = 1.0 if r == 0 else j / r
        ap += (p0 + (j + 1) / (r + 1)) / (2 * n_positives)
    return ap


def ap_one_based(positive_ranks, n_positives):
    return ap_correct([r + 1 for r in positive_ranks], n_positives)


# ----------------------------------------------------------------- mAP
def _ap_of(row, ok, junk):
    kept = [i for i in row if i not in junk]
    return ap_correct([k for k, i in enumerate(kept) if i in ok], len(ok))


def map_correct(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]), set(g.get("junk", []))) for r, g in zip(np.asarray(ranks), gnd) if g["ok"]]
    return float(np.mean(aps))


def map_counts_junk(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]), set()) for r, g in zip(np.asarray(ranks), gnd) if g["ok"]]
    return float(np.mean(aps))


def map_zero_for_empty(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]), set(g["junk"])) if g["ok"] else 0.0 for r, g in zip(np.asarray(ranks), gnd)]
    return float(np.mean(aps))


def map_junk_positive(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]) | set(g["junk"]), set()) for r, g in zip(np.asarray(ranks), gnd) if g["ok"]]
    return float(np.mean(aps))


def map_sklearn(ranks, gnd):
    aps = []
    for r, g in zip(np.asarray(ranks), gnd):
        if g["ok"]:
            kept = [i for i in r if i not in set(g["junk"])]
            aps.append(ap_sklearn([k for k, i in enumerate(kept) if i in set(g["ok"])], len(g["ok"])))
    return float(np.mean(aps))


CORRECT = {
    "window_pool": wp_correct, "mac": mac_correct, "spoc": spoc_correct, "gem": gem_correct,
    "average_precision": ap_correct, "mean_ap": map_correct,
}

WRONG = [
    ("window_pool", wp_always_max, "computes max pooling whatever `kind` says"),
    ("window_pool", wp_always_avg, "computes average pooling whatever `kind` says"),
    ("window_pool", wp_stride_one, "moves the window by 1 instead of 2"),
    ("window_pool", wp_avg_is_sum, "returns the window sums for 'avg'"),
    ("mac", mac_mean, "equals average pooling"),
    ("mac", mac_sum, "equals sum pooling"),
    ("mac", mac_rows_then_mean, "max over rows only"),
    ("mac", mac_abs, "absolute values"),
    ("spoc", spoc_no_prior, "plain sum pooling (no centre prior)"),
    ("spoc", spoc_mean, "plain average pooling"),
    ("spoc", spoc_centre_half, "centre at (H/2, W/2)"),
    ("spoc", spoc_sigma_third, "sigma = min(H, W)/3"),
    ("spoc", spoc_no_two, "without the factor 2"),
    ("gem", gem_max, "equals max pooling"),
    ("gem", gem_no_root, "forgets the final 1/p root"),
    ("gem", gem_sum, "sums x^p instead of averaging"),
    ("gem", gem_no_clamp, "does not clamp"),
    ("gem", gem_ignores_p, "equals average pooling (is p used?)"),
    ("average_precision", ap_sklearn, "finite-sum AP"),
    ("average_precision", ap_found, "number of positives found"),
    ("average_precision", ap_unsorted, "sort them first"),
    ("average_precision", ap_one_based, "1-based"),
    ("mean_ap", map_counts_junk, "counts junk images"),
    ("mean_ap", map_zero_for_empty, "AP 0 instead of leaving them out"),
    ("mean_ap", map_junk_positive, "treats junk images as positives"),
    ("mean_ap", map_sklearn, "finite-sum AP"),
]


def test_every_task_has_a_correct_fixture_and_four_wrong_ones():
    assert set(CORRECT) == set(checks.TASKS)
    for task in checks.TASKS:
        assert sum(1 for t, _, _ in WRONG if t == task) >= 4, task


@pytest.mark.parametrize("task", sorted(CORRECT))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_correct_answer_passes_with_a_short_confirmation(task, seed, capsys):
    checks.run_check(task, CORRECT[task], seed=seed)
    assert capsys.readouterr().out.strip() == f"✓ {task}: all {len(checks.TASKS[task].cases(np.random.default_rng(seed)))} checks passed"


@pytest.mark.parametrize("task, fn, message", WRONG, ids=[f"{t}-{f.__name__}" for t, f, _ in WRONG])
@pytest.mark.parametrize("seed", [0, 7])
def test_each_wrong_answer_gets_its_own_message(task, fn, message, seed):
    with pytest.raises(checks.CheckFailed) as info:
        checks.run_check(task, fn, seed=seed)
    text = str(info.value)
    assert message in text, text
    # no other mistake's message is claimed for it
    others = [m.description for m in checks.TASKS[task].mistakes if message not in m.description]
    assert not any(o in text for o in others), text


def test_the_gem_p1_message_reads_as_the_course_promises():
    with pytest.raises(checks.CheckFailed, match="GeM with p=1 should equal average pooling; yours equals max pooling"):
        checks.run_check("gem", gem_max, seed=3)


def test_an_exception_in_the_student_code_is_reported_and_not_implemented_propagates():
    def crashes(x, p=3.0, eps=1e-6):
        raise IndexError("boom")

    with pytest.raises(checks.CheckFailed, match="yours raised IndexError: boom"):
        checks.run_check("gem", crashes, seed=0)

    def todo(x, p=3.0, eps=1e-6):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        checks.check_gem(todo)


def test_judge_only_needs_numbers_and_rejects_forged_answers():
    outputs = checks.probe("mac", mac_correct, seed=5)
    assert all(set(o) == {"shape", "values"} for o in outputs)
    assert all(r.passed for r in checks.judge("mac", 5, outputs))
    # answers probed on another seed do not pass: the inputs are fresh
    assert not all(r.passed for r in checks.judge("mac", 6, outputs))
    assert not any(r.passed for r in checks.judge("mac", 5, [{"shape": [1], "values": ["x"]}] * len(outputs)))
    assert not any(r.passed for r in checks.judge("mac", 5, []))
    with pytest.raises(ValueError, match="task"):
        checks.judge("nope", 0, [])
