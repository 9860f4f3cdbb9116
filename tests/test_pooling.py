"""Pooling, tested against the slides' example, closed forms and limits."""
import math

import numpy as np
import pytest
import torch

from retrievalkit import pooling as P

SLIDES = torch.tensor([[5, 3, 1, 2], [1, 2, 3, 2], [4, 2, 2, 5], [3, 6, 1, 1]], dtype=torch.float32)


def test_window_pool_matches_the_slides():
    torch.testing.assert_close(P.window_pool(SLIDES, "avg"), torch.tensor([[2.75, 2.0], [3.75, 2.25]]))
    torch.testing.assert_close(P.window_pool(SLIDES, "max"), torch.tensor([[5.0, 3.0], [6.0, 5.0]]))
    # sum pooling: the four numbers of each window added up (5+3+1+2 = 11, ...)
    torch.testing.assert_close(P.window_pool(SLIDES, "sum"), torch.tensor([[11.0, 8.0], [15.0, 9.0]]))


def test_window_pool_keeps_leading_axes_and_strides():
    x = torch.rand(2, 3, 5, 6)
    out = P.window_pool(x, "max", size=3, stride=1)
    assert out.shape == (2, 3, 3, 4)
    # top-left window of the first map, by hand
    assert out[1, 2, 0, 0] == x[1, 2, :3, :3].max()
    assert out[0, 1, 2, 3] == x[0, 1, 2:5, 3:6].max()


def test_global_poolings_equal_numpy():
    x = torch.randn(4, 8, 5, 7, dtype=torch.float64)
    a = x.numpy()
    np.testing.assert_allclose(P.mac(x).numpy(), a.max(axis=(2, 3)))
    np.testing.assert_allclose(P.avg_pool(x).numpy(), a.mean(axis=(2, 3)))
    np.testing.assert_allclose(P.spoc(x, center_prior=False).numpy(), a.sum(axis=(2, 3)))


def test_single_map_drops_batch_axis_and_keeps_dtype():
    x = torch.rand(8, 5, 7, dtype=torch.float64)
    for f in (P.mac, P.avg_pool, P.spoc, P.gem):
        out = f(x)
        assert out.shape == (8,) and out.dtype == torch.float64
        torch.testing.assert_close(out, f(x[None])[0])


def test_spoc_weights_closed_form():
    H, W = 5, 9
    w = P.spoc_weights(H, W, dtype=torch.float64)
    sigma = min(H, W) / 6  # a third of the distance from the centre to the nearest border
    for y, x in [(0, 0), (2, 4), (4, 8), (1, 6)]:
        expected = math.exp(-((y - 2) ** 2 + (x - 4) ** 2) / (2 * sigma**2))
        assert w[y, x].item() == pytest.approx(expected, rel=1e-12)
    assert w[2, 4] == 1.0 and w.argmax() == 2 * W + 4
    # even sizes: the centre falls between pixels, four equal maxima
    w = P.spoc_weights(4, 6, dtype=torch.float64)
    assert w[1, 2] == w[2, 3] == w[1, 3] == w[2, 2] == w.max()
    torch.testing.assert_close(w, w.flip(0).flip(1))


def test_spoc_is_prior_weighted_sum():
    x = torch.rand(3, 4, 6, 8, dtype=torch.float64)
    w = P.spoc_weights(6, 8, dtype=torch.float64)
    expected = (x * w).sum(dim=(2, 3))
    torch.testing.assert_close(P.spoc(x), expected)
    # the prior favours the centre: a single activation in the corner counts less
    centre = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    centre[..., 2, 2] = 1
    corner = torch.zeros_like(centre)
    corner[..., 0, 0] = 1
    assert P.spoc(centre) > P.spoc(corner)


def test_gem_p1_is_average_and_large_p_tends_to_max():
    x = torch.rand(2, 16, 7, 9, dtype=torch.float64) + 0.01
    torch.testing.assert_close(P.gem(x, p=1.0), P.avg_pool(x))
    mac = P.mac(x)
    gaps = [(mac - P.gem(x, p=p)).abs().max().item() for p in (3, 10, 100, 1000)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # moves monotonically towards MAC
    # (mean x^p)^(1/p) >= max * (1/(HW))^(1/p): the gap to MAC is bounded in closed form
    assert gaps[-1] <= mac.max().item() * (1 - (1 / 63) ** (1 / 1000)) + 1e-12


def test_gem_large_p_does_not_overflow_in_float32():
    x = torch.tensor([[5, 3, 1, 2], [1, 2, 3, 2], [4, 2, 2, 5], [3, 6, 1, 1]], dtype=torch.float32)[None, None]
    # (mean x^100)^(1/100) = 6 * (#sixes/16 + ...)^(1/100): 6 * (1/16)^(1/100) = 5.8353 to 4 digits
    expected = 6 * ((1 + 2 * (5 / 6) ** 100) / 16) ** (1 / 100)
    assert P.gem(x, p=100).item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(P.gem(x * 1e3, p=500)).all()


def test_gem_formula_and_clamp():
    x = torch.tensor([[[[-1.0, 0.0], [2.0, 4.0]]]], dtype=torch.float64)
    eps = 1e-6
    expected = ((eps**3 + eps**3 + 8 + 64) / 4) ** (1 / 3)
    assert P.gem(x, p=3.0).item() == pytest.approx(expected, rel=1e-12)


def test_gem_per_channel_p():
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    p = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = P.gem(x, p)
    a = x.numpy()
    for c, pc in enumerate([1.0, 2.0, 3.0]):  # the formula, one channel at a time
        expected = (np.maximum(a[:, c], 1e-6) ** pc).mean(axis=(1, 2)) ** (1 / pc)
        np.testing.assert_allclose(out[:, c].numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(out[:, 0].numpy(), a[:, 0].mean(axis=(1, 2)), rtol=1e-12)  # p = 1: the average


def test_gem_module_learns_p_and_has_readable_repr():
    layer = P.GeM(p=3.0)
    assert repr(layer) == "GeM(p=3.0000, learnable=True, eps=1e-06)"
    x = torch.rand(2, 4, 5, 5) + 0.1
    layer(x).sum().backward()
    assert layer.p.grad is not None and layer.p.grad.abs().item() > 0
    frozen = P.GeM(p=2.0, learnable=False)
    assert not any(True for _ in frozen.parameters())
    assert "learnable=False" in repr(frozen)
    torch.testing.assert_close(frozen(x), P.gem(x, 2.0))
    torch.testing.assert_close(P.MAC()(x), P.mac(x))
    torch.testing.assert_close(P.SPoC()(x), P.spoc(x))
    assert repr(P.SPoC(center_prior=False)) == "SPoC(center_prior=False)"


@pytest.mark.parametrize("f", [P.mac, P.avg_pool, P.spoc, P.gem])
@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(5, 7), "x must have shape"),
        (torch.rand(1, 2, 3, 4, 5), "x must have shape"),
        (torch.rand(2, 3, 0, 4), "x must not be empty"),
        (torch.tensor([[[[1.0, float("nan")]]]]), "x must not contain NaN"),
        (np.zeros((1, 2, 3, 3)), "x must be a torch.Tensor"),
        (torch.ones(1, 2, 3, 3, dtype=torch.long), "x must be a floating-point"),
    ],
)
def test_bad_maps_are_rejected(f, bad, match):
    with pytest.raises(ValueError, match=match):
        f(bad)


@pytest.mark.parametrize("p", [0, -1.0, float("nan"), torch.tensor([1.0, -2.0]), torch.ones(3), "three"])
def test_gem_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p must"):
        P.gem(torch.rand(1, 2, 3, 3), p)
    if not isinstance(p, torch.Tensor):
        with pytest.raises(ValueError, match="p must"):
            P.GeM(p)


def test_window_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        P.window_pool(SLIDES, "median")
    with pytest.raises(ValueError, match="size"):
        P.window_pool(SLIDES, "max", size=5)
    with pytest.raises(ValueError, match="stride"):
        P.window_pool(SLIDES, "max", stride=0)
    with pytest.raises(ValueError, match="x must"):
        P.window_pool(torch.rand(4), "max")
    with pytest.raises(ValueError, match="NaN"):
        P.window_pool(torch.full((2, 2), float("nan")), "max")
    with pytest.raises(ValueError, match="H must"):
        P.spoc_weights(0, 3)
