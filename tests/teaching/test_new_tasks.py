"""The tasks added for issue 15, worked by hand: each check's reference against numbers a student can
redo on paper (the mistakes themselves are fed in test_checks.py, from new_task_answers.py)."""
import math

import numpy as np
import pytest
import torch

from new_task_answers import descent_correct, descent_uphill, os_rmac_correct, tfidf_correct, whiten_correct
from retrievalkit.losses import contrastive_loss
from retrievalkit.teaching import checks
from retrievalkit.teaching.checks import benchmark, cam, crow, encoding, finetuning, postprocessing, rmac


def test_tfidf_by_hand():
    # 3 database images over 3 words; word 0 in every image, word 1 in one, word 2 in none
    database = torch.tensor([[2.0, 0, 0], [1, 3, 0], [1, 0, 0]])
    words = torch.tensor([0, 1, 1, 2])
    # tf = (1/4, 2/4, 1/4); idf = (log 1, log 3, 0) -> (0, log 3 / 2, 0) -> L2 -> (0, 1, 0)
    assert torch.allclose(encoding._tfidf_ref(words, database), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(tfidf_correct(words, database), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert not encoding._tfidf_ref(torch.zeros(0, dtype=torch.long), database).any()


def test_os_rmac_windows_of_a_7x10_map_by_hand():
    # 2 min(H, W)/(l + 1) = 7, 4.67, 3.5 -> kw = 7, 5, 4; stride floor(0.4 kw) = 2, 2, 1
    x = torch.zeros(1, 1, 7, 10)
    x[0, 0, 0, 0] = 1.0  # one active cell, in the top-left corner
    # level 1: windows at x = 0, 2 see it once -> sqrt(1); level 2: x = 0 only -> 1; level 3: one window -> 1
    assert torch.allclose(rmac._os_rmac_ref(x), torch.ones(1, 1))  # L2 of a single channel
    y = torch.zeros(1, 2, 7, 10)
    y[0, 0, 0, 0] = 1.0
    y[0, 1] = 1.0  # every window sees 1: counts 3 + 2 + 4x7 windows...
    n = [(7 - 7) // 2 + 1, (10 - 7) // 2 + 1, (7 - 5) // 2 + 1, (10 - 5) // 2 + 1, (7 - 4) // 1 + 1, (10 - 4) // 1 + 1]
    level = [math.sqrt(n[0] * n[1]), math.sqrt(n[2] * n[3]), math.sqrt(n[4] * n[5])]  # sqrt of the number of windows
    v = torch.tensor([3.0, sum(level)], dtype=torch.float64)
    assert torch.allclose(rmac._os_rmac_ref(y).double(), (v / v.norm())[None], atol=1e-6)
    assert torch.allclose(os_rmac_correct(y), (v / v.norm())[None], atol=1e-6)


def test_second_order_of_a_two_channel_region_by_hand():
    # two channels, each active in half the cells: beta = log((2e-6 + 1)/(1e-6 + 0.5)) for both
    x = torch.zeros(2, 1, 2, dtype=torch.float64)
    x[0, 0, 0], x[1, 0, 1] = 1.0, 1.0
    region = torch.ones(1, 2, dtype=torch.bool)
    beta = math.log((2e-6 + 1.0) / (1e-6 + 0.5))
    # alpha = (1, 1)/sqrt(2): G = diag(beta^2, beta^2)/2; log G = diag(log(beta^2/2 + 1e-6)) -> vec (g, 0, g) -> L2
    g = math.log(beta**2 / 2 + 1e-6)
    want = torch.tensor([g, 0.0, g]) / math.sqrt(2 * g * g)
    assert torch.allclose(crow._second_order_ref(x, region).float(), want, atol=1e-6)


def test_whitening_learnt_on_train_by_hand():
    # training set: variance 4 along x, 1 along y, mean (1, 1); a test row (3, 1) is 1 std along x
    train = torch.tensor([[3.0, 1], [-1, 1], [1, 2], [1, 0]], dtype=torch.float64)
    test = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    out = postprocessing._column_signs(checks.core.to_numpy(postprocessing._whiten_ref(train, test, 2)))
    # (3, 1) - m = (2, 0) -> (2/sqrt(2), 0) -> (1, 0); (1, 2) - m = (0, 1) -> (0, 1/sqrt(0.5)) -> (0, 1)
    assert np.allclose(np.abs(out), [[1, 0], [0, 1]])
    assert np.allclose(np.abs(checks.core.to_numpy(whiten_correct(train, test, 2))), [[1, 0], [0, 1]])


def test_one_gradient_step_by_hand_and_against_autograd():
    # one matching pair, W = I (2x2): D = ||a - b||^2 = 1, L = D/2, dL/dW = d^T d W = [[1, 0], [0, 0]]
    W, a, b, y = torch.eye(2, dtype=torch.float64), torch.tensor([[1.0, 0]], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1])
    want = torch.tensor([[0.9, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(finetuning._descent_ref(W, a, b, y, 1.0, 0.1), want)
    assert torch.allclose(descent_correct(W, a, b, y, 1.0, 0.1), want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_loss_falls_along_the_reference_and_rises_uphill(seed):
    case = finetuning._descent_cases(np.random.default_rng(seed))[-1]  # "twenty steps"
    W, a, b, y, margin, lr, steps = case.args
    loss = lambda V: float(contrastive_loss(a @ V, b @ V, y, margin))
    assert loss(finetuning._descent_ref(*case.args)) < loss(W)
    assert loss(descent_uphill(*case.args)) > loss(W)
    # every step of the loop lowers the loss
    losses = [loss(finetuning._descent_ref(W, a, b, y, margin, lr, k)) for k in range(0, steps + 1, 5)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))


def test_a_benchmark_row_by_hand():
    # two queries, four database maps (one channel each, 1x1): cosine ranks everything equal for 1-D
    # descriptors, so use two channels: query 0 = (1, 0), query 1 = (0, 1)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[:, :, None, None]
    db = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.6], [0.3, 0.7]])[:, :, None, None] * torch.tensor([1.0, 9.0, 1.0, 1.0])[:, None, None, None]
    positives = [[0, 3], [1]]
    # query 0 ranks 0, 2, 3, 1: positives at ranks 0, 2 -> AP = (1 + 1)/2/2 + (1/2 + 2/3)/2/2 = 0.5 + 0.2917
    # query 1 ranks 1, 3, 2, 0: positive at rank 0 -> AP 1; P@1 = 1 for both
    row = benchmark._row_ref(q, db, positives, 3.0)
    assert np.allclose(row, [(0.5 + (0.5 + 2 / 3) / 4 + 1.0) / 2, 1.0])


def test_the_aggregated_cam_descriptor_of_one_class_is_its_class_weighted_vector():
    rng = np.random.default_rng(0)
    x, W, classes = cam._aggregate_cases(rng)[2].args  # "one class"
    one = cam._weighted_ref(x[:1], cam._cam_ref(x[:1], W, int(classes[0, 0])))
    assert torch.allclose(cam._aggregate_ref(x, W, classes)[:1], one, atol=1e-6)
