"""CroW (Kalantidis et al. 2016) against hand-worked values and an independent numpy port of yahoo/crow."""
import math

import numpy as np
import pytest
import torch

from retrievalkit.crow import CroW, crow, crow_channel_weights, crow_spatial_weights


def yahoo_crow(X, a=2.0, b=2.0):
    """yahoo/crow's three functions on one (C, H, W) numpy map, written with plain loops."""
    C, H, W = X.shape
    S = X.sum(axis=0)
    z = (S**a).sum() ** (1.0 / a)
    Sp = (S / z) ** (1.0 / b)
    Q = np.array([np.count_nonzero(X[k]) / (H * W) for k in range(C)])
    w = np.array([np.log(Q.sum() / q) if q > 0 else 0.0 for q in Q])
    return Sp, w, (X * Sp).sum(axis=(1, 2)) * w


def sparse_maps(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(*shape, generator=g, dtype=dtype))


def test_hand_worked_2x2x2():
    # x_0 = [[1, 4], [0, 0]], x_1 = [[2, 0], [0, 0]]  (C = 2, H = W = 2), a = b = 2
    # S = x_0 + x_1 = [[3, 4], [0, 0]];  z = (3^2 + 4^2)^(1/2) = 5
    # S' = (S / 5)^(1/2) = [[sqrt(0.6), sqrt(0.8)], [0, 0]]
    # Q_0 = 2/4 = 0.5, Q_1 = 1/4 = 0.25, sum_j Q_j = 0.75
    # w_0 = log(0.75 / 0.5) = log(1.5),  w_1 = log(0.75 / 0.25) = log(3)
    # f_0 = (1 sqrt(0.6) + 4 sqrt(0.8)) log(1.5) ~ 1.764708,  f_1 = 2 sqrt(0.6) log(3) ~ 1.701963
    x = torch.tensor([[[1.0, 4.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    s6, s8 = math.sqrt(0.6), math.sqrt(0.8)
    torch.testing.assert_close(crow_spatial_weights(x), torch.tensor([[s6, s8], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(crow_channel_weights(x), torch.tensor([math.log(1.5), math.log(3.0)], dtype=torch.float64))
    expected = torch.tensor([(s6 + 4 * s8) * math.log(1.5), 2 * s6 * math.log(3.0)], dtype=torch.float64)
    torch.testing.assert_close(crow(x), expected)
    torch.testing.assert_close(crow(x), torch.tensor([1.764708, 1.701963], dtype=torch.float64), atol=1e-6, rtol=0)
    # channel=False: spatially weighted sum only
    torch.testing.assert_close(crow(x, channel=False), torch.tensor([s6 + 4 * s8, 2 * s6], dtype=torch.float64))


def test_all_zero_channel_gets_weight_zero():
    x = sparse_maps(2, 3, 4, 5)
    x[:, 2] = 0
    w = crow_channel_weights(x)
    assert torch.isfinite(w).all()
    assert (w[:, 2] == 0).all() and (w[:, :2] > 0).all()
    v = crow(x)
    assert torch.isfinite(v).all() and (v[:, 2] == 0).all()


def test_all_zero_map_gives_zeros():
    x = torch.zeros(1, 3, 4, 4)
    assert (crow_spatial_weights(x) == 0).all()
    assert (crow_channel_weights(x) == 0).all()
    assert (crow(x) == 0).all()


@pytest.mark.parametrize("a", [0.5, 2.0, 3.0])
def test_spatial_weights_unit_a_norm_when_b_is_1(a):
    s = crow_spatial_weights(sparse_maps(3, 4, 5, 6), a=a, b=1)
    torch.testing.assert_close(s.pow(a).sum(dim=(1, 2)).pow(1 / a), torch.ones(3, dtype=torch.float64))


def test_spatial_weights_scale_invariant_without_overflow():
    x = sparse_maps(2, 8, 4, 4, dtype=torch.float32)
    big = crow_spatial_weights(x * 1e6, a=8)  # S^8 ~ 1e56 overflows float32 if computed naively
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, crow_spatial_weights(x, a=8))


def test_matches_independent_numpy_port():
    x = sparse_maps(3, 6, 5, 7, seed=1)
    for a, b in [(2, 2), (3, 0.5)]:
        for i in range(3):
            Sp, w, f = yahoo_crow(x[i].numpy(), a, b)
            np.testing.assert_allclose(crow_spatial_weights(x, a, b)[i].numpy(), Sp, rtol=1e-12)
            np.testing.assert_allclose(crow_channel_weights(x)[i].numpy(), w, rtol=1e-12)
            np.testing.assert_allclose(crow(x, a, b)[i].numpy(), f, rtol=1e-12)


def test_batch_equals_per_image_and_single_map_shape():
    x = sparse_maps(4, 5, 3, 6, seed=2)
    batch = crow(x)
    assert batch.shape == (4, 5)
    for i in range(4):
        single = crow(x[i])
        assert single.shape == (5,)
        torch.testing.assert_close(batch[i], single)
    assert crow_spatial_weights(x[0]).shape == (3, 6)
    assert crow_channel_weights(x[0]).shape == (5,)


def test_ucrow_is_plain_sum_pooling():
    x = sparse_maps(2, 4, 3, 3, seed=3)
    torch.testing.assert_close(crow(x, spatial=False, channel=False), x.sum(dim=(2, 3)))
    torch.testing.assert_close(crow(x, spatial=False), x.sum(dim=(2, 3)) * crow_channel_weights(x))


def test_dtype_kept():
    x = sparse_maps(1, 3, 2, 2, dtype=torch.float32)
    assert crow(x).dtype == torch.float32
    assert crow(x.double()).dtype == torch.float64


def test_module_matches_function_and_repr():
    m = CroW(a=3, b=1, channel=False)
    x = sparse_maps(2, 3, 4, 4, seed=4)
    torch.testing.assert_close(m(x), crow(x, a=3, b=1, channel=False))
    assert repr(m) == "CroW(a=3, b=1, channel=False, spatial=True)"
    with pytest.raises(ValueError, match="^b must"):
        CroW(b=0)


def test_gradient_flows_through_crow():
    x = (torch.rand(2, 3, 3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: crow(t), (x,))
    crow(x).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs() > 0).any()


@pytest.mark.parametrize("fn", [crow_spatial_weights, crow_channel_weights, crow])
@pytest.mark.parametrize(
    "bad",
    [
        torch.ones(3, 4),  # wrong rank
        torch.ones(1, 0, 2, 2),  # empty
        torch.tensor([[[float("nan"), 1.0]]]),  # NaN
        -torch.ones(1, 2, 2, 2),  # negative (not post-ReLU)
        np.ones((2, 2, 2)),  # not a tensor
    ],
)
def test_rejects_bad_maps(fn, bad):
    with pytest.raises(ValueError, match="^x must"):
        fn(bad)


@pytest.mark.parametrize("fn", [crow_spatial_weights, crow])
@pytest.mark.parametrize("name, value", [("a", 0), ("a", -1), ("b", 0), ("b", float("nan"))])
def test_rejects_bad_exponents(fn, name, value):
    with pytest.raises(ValueError, match=f"^{name} must"):
        fn(torch.ones(1, 2, 2, 2), **{name: value})


@pytest.mark.parametrize("name", ["channel", "spatial"])
def test_rejects_non_bool_flags(name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        crow(torch.ones(1, 2, 2, 2), **{name: "no"})


def test_channel_weights_with_eps_are_eq_2_of_jeong_et_al_by_hand():
    # two channels on a 2x2 map: Q = (1/4, 0); eps = 0.1, K = 2
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    expected = [math.log((0.2 + 0.25) / 0.35), math.log((0.2 + 0.25) / 0.1)]
    torch.testing.assert_close(crow_channel_weights(x, eps=0.1), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(crow_channel_weights(x), torch.tensor([0.0, 0.0], dtype=torch.float64))  # yahoo: log 1, 0
    with pytest.raises(ValueError, match="eps must be"):
        crow_channel_weights(x, eps=-1)
