"""Losses and hard-negative mining, tested by hand, against cirtorch's code and a brute-force miner."""
import numpy as np
import pytest
import torch

from retrievalkit.losses import contrastive_loss, hard_negatives, triplet_loss

# Four pairs (a_i, b_i) in 2-D, labels 1 = matching, 0 = non-matching, margin 1:
#   pair 0: (1,0)-(0,0)   y=1  D = 1     d = 1
#   pair 1: (0,0)-(.3,.4) y=0  D = 0.25  d = 0.5
#   pair 2: (0,0)-(3,4)   y=0  D = 25    d = 5     (far negative)
#   pair 3: (1,1)-(1,3)   y=1  D = 4     d = 2
A = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
B = torch.tensor([[0.0, 0.0], [0.3, 0.4], [3.0, 4.0], [1.0, 3.0]], dtype=torch.float64)
Y = torch.tensor([1, 0, 0, 1])
# slides:   1/2*1, 1/2*max(0, 1 - 0.25), 1/2*max(0, 1 - 25), 1/2*4       = 0.5, 0.375, 0, 2
SLIDES = [0.5, 0.375, 0.0, 2.0]
# cirtorch: 1/2*1^2, 1/2*max(0, 1 - 0.5)^2, 1/2*max(0, 1 - 5)^2, 1/2*2^2 = 0.5, 0.125, 0, 2
CIRTORCH = [0.5, 0.125, 0.0, 2.0]


def cirtorch_contrastive(x, label, margin=0.7, eps=1e-6):
    """cirtorch.layers.functional.contrastive_loss, transcribed: x is D x N, tuples [q, p, n...]."""
    dim = x.size(0)
    nq = int(torch.sum(label == -1))
    S = x.size(1) // nq
    x1 = x[:, ::S].permute(1, 0).repeat(1, S - 1).view((S - 1) * nq, dim).permute(1, 0)
    x2 = x[:, label != -1]
    lbl = label[label != -1]
    D = torch.pow(x1 - x2 + eps, 2).sum(dim=0).sqrt()
    return torch.sum(0.5 * lbl * torch.pow(D, 2) + 0.5 * (1 - lbl) * torch.pow(torch.clamp(margin - D, min=0), 2))


def cirtorch_triplet(x, label, margin=0.1):
    """cirtorch.layers.functional.triplet_loss, transcribed."""
    dim = x.size(0)
    nq = int(torch.sum(label == -1))
    S = x.size(1) // nq
    xa = x[:, label == -1].permute(1, 0).repeat(1, S - 2).view((S - 2) * nq, dim).permute(1, 0)
    xp = x[:, label == 1].permute(1, 0).repeat(1, S - 2).view((S - 2) * nq, dim).permute(1, 0)
    xn = x[:, label == 0]
    dist_pos = torch.sum(torch.pow(xa - xp, 2), dim=0)
    dist_neg = torch.sum(torch.pow(xa - xn, 2), dim=0)
    return torch.sum(torch.clamp(dist_pos - dist_neg + margin, min=0))


def test_contrastive_slides_by_hand():
    out = contrastive_loss(A, B, Y, margin=1.0, reduction="none")
    torch.testing.assert_close(out, torch.tensor(SLIDES, dtype=torch.float64))
    assert contrastive_loss(A, B, Y, 1.0, reduction="sum").item() == pytest.approx(2.875)  # 0.5 + 0.375 + 2
    assert contrastive_loss(A, B, Y, 1.0).item() == pytest.approx(2.875 / 4)  # mean is the default


def test_cirtorch_form_differs_from_the_slides_by_hand():
    out = contrastive_loss(A, B, Y, margin=1.0, reduction="none", form="cirtorch")
    # equal up to cirtorch's eps = 1e-6 inside the norm (an O(1e-6) change of each d)
    torch.testing.assert_close(out, torch.tensor(CIRTORCH, dtype=torch.float64), atol=1e-5, rtol=0)
    slides = contrastive_loss(A, B, Y, margin=1.0, reduction="none")
    diff = slides - out
    # only the active non-matching pair differs: 1/2(1 - 0.25) - 1/2(1 - 0.5)^2 = 0.375 - 0.125 = 0.25
    assert diff[1].item() == pytest.approx(0.25, abs=1e-5)
    assert diff[[0, 2, 3]].abs().max().item() < 1e-5
    assert contrastive_loss(A, B, Y, 1.0, "sum", "cirtorch").item() == pytest.approx(2.625, abs=1e-5)


def test_cirtorch_eps_sits_inside_the_norm():
    # identical pair: slides D = 0; cirtorch d = ||0 + 1e-6 * (1,1,1,1)|| = 2e-6, loss 1/2 d^2 = 2e-12
    a = torch.ones(1, 4, dtype=torch.float64)
    assert contrastive_loss(a, a.clone(), [1], 0.7).item() == 0.0
    assert contrastive_loss(a, a.clone(), [1], 0.7, form="cirtorch").item() == pytest.approx(2e-12, rel=1e-9)


def test_margins_by_hand():
    # non-matching pair with D = ||(.3,.4)||^2 = 0.25, d = 0.5
    a, b = A[1:2], B[1:2]
    for m, slides, cirtorch in [(0.0, 0.0, 0.0), (0.25, 0.0, 0.0), (1.0, 0.375, 0.125), (2.0, 0.875, 1.125)]:
        # slides: 1/2 max(0, m - 0.25); cirtorch: 1/2 max(0, m - 0.5)^2
        assert contrastive_loss(a, b, [0], m).item() == pytest.approx(slides)
        assert contrastive_loss(a, b, [0], m, form="cirtorch").item() == pytest.approx(cirtorch, abs=1e-5)


def test_contrastive_agrees_with_cirtorch_code_on_tuples():
    g = torch.Generator().manual_seed(0)
    nq, nneg, dim = 3, 4, 8
    S = 2 + nneg
    x = torch.nn.functional.normalize(torch.randn(nq * S, dim, generator=g, dtype=torch.float64), dim=1)
    label = torch.tensor(([-1, 1] + [0] * nneg) * nq, dtype=torch.float64)
    q = x[::S].repeat_interleave(S - 1, dim=0)
    other = x[label != -1]
    y = label[label != -1]
    ours = contrastive_loss(q, other, y, margin=0.7, reduction="sum", form="cirtorch")
    torch.testing.assert_close(ours, cirtorch_contrastive(x.T, label, margin=0.7))


def test_far_negatives_give_zero_loss_and_zero_gradient():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = (a.detach() + 10.0).requires_grad_(True)  # D = 600, d = sqrt(600)
    for form in ("slides", "cirtorch"):
        loss = contrastive_loss(a, b, torch.zeros(5), margin=2.0, form=form, reduction="sum")
        assert loss.item() == 0.0
        (ga,) = torch.autograd.grad(loss, a)
        assert ga.abs().max().item() == 0.0


def test_gradients_flow_by_hand_and_numerically():
    a = A.clone().requires_grad_(True)
    contrastive_loss(a, B, Y, 1.0, reduction="sum").backward()
    # d/da [1/2 ||a-b||^2] = a - b for matching pairs; d/da [1/2 (m - ||a-b||^2)] = -(a - b) when active
    expected = torch.stack([A[0] - B[0], -(A[1] - B[1]), torch.zeros(2, dtype=torch.float64), A[3] - B[3]])
    torch.testing.assert_close(a.grad, expected)
    b = B.clone().requires_grad_(True)
    a = A.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: contrastive_loss(a, b, Y, 1.0, form="cirtorch"), (a, b))
    neg = torch.rand(4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, n: triplet_loss(a, b, n, 0.5), (a, b, neg))


def test_triplet_by_hand_with_several_negatives():
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # D(a, p) = 1 and 0
    negative = torch.tensor([[[0.0, 2.0], [1.0, 1.0], [0.5, 0.0]],  # D(a, n) = 4, 2, 0.25
                             [[1.0, 1.0], [2.0, 2.0], [1.0, 2.0]]])  # D(a, n) = 0, 2, 1
    # margin 1.5: max(0, 1.5 + 1 - [4, 2, .25]) = [0, .5, 2.25]; max(0, 1.5 + 0 - [0, 2, 1]) = [1.5, 0, .5]
    expected = torch.tensor([[0.0, 0.5, 2.25], [1.5, 0.0, 0.5]])
    torch.testing.assert_close(triplet_loss(anchor, positive, negative, 1.5, reduction="none"), expected)
    assert triplet_loss(anchor, positive, negative, 1.5, reduction="sum").item() == pytest.approx(4.75)
    assert triplet_loss(anchor, positive, negative, 1.5).item() == pytest.approx(4.75 / 6)
    # one negative per anchor: (N, D) gives the first column
    torch.testing.assert_close(triplet_loss(anchor, positive, negative[:, 0], 1.5, reduction="none"), expected[:, 0])
    # margin 0 and a far negative: nothing to learn
    assert triplet_loss(anchor, positive, negative + 100, 0.0, reduction="sum").item() == 0.0


def test_triplet_agrees_with_cirtorch_code_on_tuples():
    g = torch.Generator().manual_seed(2)
    nq, nneg, dim = 4, 5, 16
    S = 2 + nneg
    x = torch.nn.functional.normalize(torch.randn(nq * S, dim, generator=g, dtype=torch.float64), dim=1)
    label = torch.tensor(([-1, 1] + [0] * nneg) * nq)
    ours = triplet_loss(x[::S], x[1::S], x.view(nq, S, dim)[:, 2:], margin=0.7, reduction="sum")
    torch.testing.assert_close(ours, cirtorch_triplet(x.T, label, margin=0.7))


def brute_force_negatives(A, P, positives_of, n):
    out = []
    for i in range(A.shape[0]):
        cand = [(float(A[i] @ P[j]), j) for j in range(P.shape[0]) if j not in set(positives_of[i])]
        cand.sort(key=lambda t: (-t[0], t[1]))
        out.append([j for _, j in cand[:n]])
    return np.array(out)


@pytest.mark.parametrize("seed", range(20))
def test_miner_never_returns_a_positive_and_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    Na, Np, dim = 6, 40, 8
    A = rng.standard_normal((Na, dim))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    P = rng.standard_normal((Np, dim))
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    # positives: the anchor's 5 nearest pool items plus some random ones (the hard case)
    near = np.argsort(-(A @ P.T), axis=1)[:, :5]
    positives = [list(near[i]) + list(rng.choice(Np, size=rng.integers(0, 6), replace=False)) for i in range(Na)]
    n = 10
    out = hard_negatives(A, P, positives, n)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (Na, n)
    for i in range(Na):
        assert not set(out[i]) & set(positives[i])
    np.testing.assert_array_equal(out, brute_force_negatives(A, P, positives, n))
    t = hard_negatives(torch.from_numpy(A).float(), torch.from_numpy(P).float(), positives, n)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.long
    np.testing.assert_array_equal(t.numpy(), out)


def test_miner_ties_and_every_non_positive():
    A = np.array([[1.0, 0.0]])
    P = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    # pool 0 is a positive; 1 and 2 tie (score 0): lower index first; n = 3 = all non-positives
    np.testing.assert_array_equal(hard_negatives(A, P, [[0]], 3), [[1, 2, 3]])
    np.testing.assert_array_equal(hard_negatives(A, P, [[]], 1), [[0]])


def test_bad_input_is_rejected():
    a, b = torch.rand(3, 4), torch.rand(3, 4)
    with pytest.raises(ValueError, match="a and b"):
        contrastive_loss(a, torch.rand(3, 5), [1, 0, 1], 0.5)
    with pytest.raises(ValueError, match="y must have shape"):
        contrastive_loss(a, b, [1, 0], 0.5)
    with pytest.raises(ValueError, match="y must hold only 0"):
        contrastive_loss(a, b, [1, 0, 2], 0.5)
    with pytest.raises(ValueError, match="y must hold only 0"):
        contrastive_loss(a, b, [1, 0, -1], 0.5)  # cirtorch's query label is not a pair label
    with pytest.raises(ValueError, match="margin"):
        contrastive_loss(a, b, [1, 0, 1], -0.1)
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(a, b, b, float("nan"))
    with pytest.raises(ValueError, match="a must not contain NaN"):
        contrastive_loss(torch.full((3, 4), float("nan")), b, [1, 0, 1], 0.5)
    with pytest.raises(ValueError, match="negative must not contain NaN"):
        triplet_loss(a, b, torch.full((3, 2, 4), float("nan")), 0.5)
    with pytest.raises(ValueError, match="reduction"):
        contrastive_loss(a, b, [1, 0, 1], 0.5, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        triplet_loss(a, b, b, 0.5, reduction="max")
    with pytest.raises(ValueError, match="form"):
        contrastive_loss(a, b, [1, 0, 1], 0.5, form="hadsell")
    with pytest.raises(ValueError, match="a must be a torch.Tensor"):
        contrastive_loss(a.numpy(), b, [1, 0, 1], 0.5)
    with pytest.raises(ValueError, match="positive must have"):
        triplet_loss(a, torch.rand(2, 4), b, 0.5)
    with pytest.raises(ValueError, match="negative must have shape"):
        triplet_loss(a, b, torch.rand(3, 2, 5), 0.5)
    with pytest.raises(ValueError, match="negative must have shape"):
        triplet_loss(a, b, torch.rand(3, 0, 4), 0.5)
    with pytest.raises(ValueError, match="anchor must have shape"):
        triplet_loss(torch.rand(4), b, b, 0.5)
    X = np.eye(4)
    with pytest.raises(ValueError, match="n must be at most"):
        hard_negatives(X[:2], X, [[0], [1, 2]], 3)  # anchor 1 has only 2 non-positives
    with pytest.raises(ValueError, match="n must be"):
        hard_negatives(X[:2], X, [[0], [1]], 0)
    with pytest.raises(ValueError, match="positives_of must be a list"):
        hard_negatives(X[:2], X, [[0]], 1)
    with pytest.raises(ValueError, match=r"positives_of\[1\]"):
        hard_negatives(X[:2], X, [[0], [4]], 1)
    with pytest.raises(ValueError, match="same dimension"):
        hard_negatives(X[:2], np.eye(5), [[0], [1]], 1)
    with pytest.raises(ValueError, match="same kind"):
        hard_negatives(torch.eye(4)[:2], X, [[0], [1]], 1)
    with pytest.raises(ValueError, match="pool must not contain NaN"):
        hard_negatives(X[:2], np.full((4, 4), np.nan), [[0], [1]], 1)
