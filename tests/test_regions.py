"""R-MAC grid, R-MAC and the seed paper's modified R-MAC, tested against independent loops."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from retrievalkit import regions as R


def cirtorch_rmac_loop(x, L=3, eps=1e-6):
    """cirtorch's ``rmac`` (``cirtorch/layers/functional.py``) written as its per-region loop, one image at a time."""
    out = []
    for img in x:
        C, H, W = img.shape
        w = min(W, H)
        steps = torch.tensor([2, 3, 4, 5, 6, 7], dtype=torch.float32)
        b = (max(H, W) - w) / (steps - 1)
        idx = torch.argmin(torch.abs(((w**2 - w * b) / w**2) - 0.4)).item()
        Wd = idx + 1 if H < W else 0
        Hd = idx + 1 if H > W else 0
        v = img.amax(dim=(1, 2))
        v = v / (v.norm() + eps)
        for l in range(1, L + 1):
            wl = math.floor(2 * w / (l + 1))
            wl2 = math.floor(wl / 2 - 1)
            bW = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
            bH = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
            cenW = torch.floor(wl2 + torch.arange(l + Wd, dtype=torch.float32) * bW) - wl2
            cenH = torch.floor(wl2 + torch.arange(l + Hd, dtype=torch.float32) * bH) - wl2
            for i in cenH.tolist():
                for j in cenW.tolist():
                    if wl == 0:
                        continue
                    vt = img[:, int(i) : int(i) + wl, int(j) : int(j) + wl].amax(dim=(1, 2))
                    v = v + vt / (vt.norm() + eps)
        out.append(v)
    return torch.stack(out)


@pytest.mark.parametrize(
    "H, W, count, sides",
    [(4, 4, 14, [4, 2]), (5, 7, 20, [5, 3, 2]), (7, 10, 20, [7, 4, 3]), (30, 40, 20, [30, 20, 15]), (48, 64, 20, [48, 32, 24])],
)
def test_region_counts_and_sizes(H, W, count, sides):
    regions = R.rmac_regions(H, W)
    assert len(regions) == count
    assert sorted({h for _, _, h, _ in regions}, reverse=True) == sides
    assert all(h == w for _, _, h, w in regions)  # square regions


def test_30x40_grid_by_level():
    regions = R.rmac_regions(30, 40)
    # level l: l rows x (l + 1) columns on a landscape map; level 1 first
    assert [r[2] for r in regions] == [30] * 2 + [20] * 6 + [15] * 12
    assert regions[:2] == [(0, 0, 30, 30), (0, 10, 30, 30)]
    # portrait maps get the transposed grid
    assert sorted(R.rmac_regions(40, 30)) == sorted((x, y, w, h) for y, x, h, w in regions)


@pytest.mark.parametrize("H, W", [(4, 4), (5, 7), (7, 10), (30, 40), (40, 30), (13, 50), (48, 64), (9, 9)])
def test_regions_touch_every_border_and_stay_inside(H, W):
    regions = R.rmac_regions(H, W)
    for side in {h for _, _, h, _ in regions}:
        level = [r for r in regions if r[2] == side]
        assert min(y for y, *_ in level) == 0 and min(x for _, x, *_ in level) == 0
        assert max(y + h for y, _, h, _ in level) == H
        assert max(x + w for _, x, _, w in level) == W
    assert all(y >= 0 and x >= 0 and y + h <= H and x + w <= W for y, x, h, w in regions)


def test_rmac_hand_example():
    # Two channels on a 2x2 map: channel 0 fires top-left, channel 1 bottom-right.
    x = torch.zeros(2, 2, 2, dtype=torch.float64)
    x[0, 0, 0] = 1
    x[1, 1, 1] = 1
    # Grid: level 1 = the whole map -> MAC (1, 1), l2n (1, 1)/sqrt 2.
    # Level 2 (side 1): corners floor(-1 + [0, 1]) + 1 = [0, 1] -> the four cells:
    #   (0,0) -> (1, 0); (0,1), (1,0) -> zero vectors (l2n keeps 0); (1,1) -> (0, 1).
    # Level 3 (side 1): corners floor(-1 + [0, .5, 1]) + 1 = [0, 0, 1] -> 9 regions:
    #   (0,0) four times -> (4, 0); (1,1) once -> (0, 1); the rest zero.
    # Sum: (1/sqrt2 + 1 + 4, 1/sqrt2 + 1 + 1); then L2.
    s = np.array([1 / math.sqrt(2) + 5, 1 / math.sqrt(2) + 2])
    np.testing.assert_allclose(R.rmac(x).numpy(), s / np.linalg.norm(s), rtol=1e-5)
    # cirtorch's global term adds the whole-map MAC once more
    g = s + 1 / math.sqrt(2)
    np.testing.assert_allclose(R.rmac(x, global_term=True).numpy(), g / np.linalg.norm(g), rtol=1e-5)


@pytest.mark.parametrize("H, W", [(4, 4), (5, 7), (7, 10), (30, 40), (40, 30), (1, 9), (2, 3)])
def test_rmac_equals_cirtorch_loop(H, W):
    torch.manual_seed(H * 100 + W)
    x = torch.relu(torch.randn(3, 16, H, W, dtype=torch.float64))
    expected = cirtorch_rmac_loop(x)
    expected = expected / (expected.norm(dim=1, keepdim=True) + 1e-6)
    # cirtorch's l2n adds 1e-6 to each norm, ours divides by the norm itself: a relative 1e-6 apart
    torch.testing.assert_close(R.rmac(x, global_term=True), expected, rtol=1e-5, atol=1e-7)
    # without the global term
    no_global = cirtorch_rmac_loop(x) - cirtorch_rmac_loop(x, L=0)
    torch.testing.assert_close(R.rmac(x), no_global / (no_global.norm(dim=1, keepdim=True) + 1e-6), rtol=1e-5, atol=1e-7)


def test_rmac_batch_equals_single_and_is_unit_norm():
    x = torch.rand(5, 32, 9, 13)
    out = R.rmac(x)
    torch.testing.assert_close(out, torch.stack([R.rmac(m) for m in x]))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert out.dtype == torch.float32


def test_rmac_is_differentiable():
    x = torch.rand(2, 4, 6, 8, requires_grad=True)
    R.rmac(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_os_rmac_windows():
    assert R.os_rmac_windows(30, 40) == [(30, 12), (20, 8), (15, 6)]
    assert R.os_rmac_windows(7, 10) == [(7, 2), (5, 2), (4, 1)]
    assert R.os_rmac_windows(1, 1) == [(1, 1), (1, 1), (1, 1)]


def os_rmac_loop(x, L=3):
    """Algorithm 1 (OS_RMAC) of Seddati et al. with explicit windows, in numpy."""
    C, H, W = x.shape
    vec = np.zeros(C)
    for l in range(1, L + 1):
        kw = max(1, math.ceil(2 * min(W, H) / (l + 1)))
        ks = max(1, math.floor(0.4 * kw))
        sq = np.zeros(C)
        for y in range(0, H - kw + 1, ks):
            for xx in range(0, W - kw + 1, ks):
                sq += x[:, y : y + kw, xx : xx + kw].max(axis=(1, 2)) ** 2
        vec += np.sqrt(sq)
    return vec / np.linalg.norm(vec)


@pytest.mark.parametrize("H, W", [(30, 40), (7, 10), (10, 7), (5, 5), (2, 3)])
def test_os_rmac_equals_algorithm_1(H, W):
    rng = np.random.default_rng(H * W)
    x = np.maximum(rng.standard_normal((2, 8, H, W)), 0)
    out = R.os_rmac(torch.from_numpy(x))
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), os_rmac_loop(x[i]), rtol=1e-6)


def test_os_rmac_hand_example():
    # One 2x3 map, two channels. Levels 1 and 2: kw = ceil(4/2) = ceil(4/3) = 2, stride 1 ->
    # two 2x2 windows; level 3: kw = 1 -> every cell.
    x = torch.tensor([[[1.0, 0, 0], [0, 0, 2]], [[0, 3, 0], [0, 0, 0]]], dtype=torch.float64)
    # channel 0: windows max 1 and 2 -> sqrt(1 + 4) per level (x2); cells -> sqrt(1 + 4)
    # channel 1: windows max 3 and 3 -> sqrt(18) (x2); cells -> 3
    v = np.array([3 * math.sqrt(5), 2 * math.sqrt(18) + 3])
    np.testing.assert_allclose(R.os_rmac(x).numpy(), v / np.linalg.norm(v))


def test_draw_regions_scales_to_the_image():
    fig, ax = plt.subplots()
    regions = R.rmac_regions(3, 4)
    patches = R.draw_regions(ax, regions, image_size=(300, 400), map_size=(3, 4))
    assert len(patches) == len(regions) == len(ax.patches)
    first = patches[0]
    y, x, h, w = regions[0]
    assert (first.get_width(), first.get_height()) == (w * 100, h * 100)
    assert first.get_xy() == (x * 100 - 0.5, y * 100 - 0.5)
    # regions of one size share a colour, different sizes differ
    colours = {(r[2], tuple(p.get_edgecolor())) for r, p in zip(regions, patches)}
    assert len(colours) == len({r[2] for r in regions})
    with pytest.raises(ValueError, match="regions must lie inside"):
        R.draw_regions(ax, [(0, 0, 5, 5)], (300, 400), (3, 4))
    with pytest.raises(ValueError, match="image_size"):
        R.draw_regions(ax, regions, (0, 400), (3, 4))
    plt.close(fig)


@pytest.mark.parametrize("f", [R.rmac, R.os_rmac])
def test_bad_input_is_rejected(f):
    with pytest.raises(ValueError, match="x must have shape"):
        f(torch.rand(5, 5))
    with pytest.raises(ValueError, match="x must not be empty"):
        f(torch.rand(1, 4, 0, 5))
    with pytest.raises(ValueError, match="NaN"):
        f(torch.full((1, 2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="L must"):
        f(torch.rand(1, 2, 3, 3), L=0)
    with pytest.raises(ValueError, match="W must"):
        R.rmac_regions(3, 0)


def test_regional_mac_is_the_mac_of_each_region_in_grid_order():
    x = torch.rand(2, 5, 7, 10, dtype=torch.float64)
    out = R.regional_mac(x)
    regions = R.rmac_regions(7, 10)
    assert out.shape == (2, len(regions), 5)
    for r, (y, xx, h, w) in enumerate(regions):
        torch.testing.assert_close(out[:, r], x[:, :, y : y + h, xx : xx + w].amax(dim=(2, 3)))


def test_rmac_with_regional_whitening_sums_whitened_regions():
    from retrievalkit.postprocess import PCAWhitening

    g = np.random.default_rng(0)
    pca = PCAWhitening(dim=4).fit(g.random((60, 6)))
    x = g.random((3, 6, 5, 7))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    expected = []
    for m in x:  # by hand: each region's maximum, L2, whitened by the learnt P and mean, L2, summed, L2
        s = sum(unit((unit(m[:, y : y + h, c : c + w].max(axis=(1, 2))) - pca.mean_) @ pca.P_.T)
                for y, c, h, w in R.rmac_regions(5, 7))
        expected.append(unit(s))
    got = R.rmac(torch.from_numpy(x), whiten=pca)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.numpy(), np.array(expected), rtol=1e-10)


def test_regional_pool_takes_any_pooling_r_gem_by_hand():
    from retrievalkit.pooling import gem

    g = np.random.default_rng(1)
    x = g.random((2, 4, 6, 9))
    regions = R.rmac_regions(6, 9)
    gem_np = lambda a, p=3.0: (np.maximum(a, 1e-6) ** p).mean(axis=(-2, -1)) ** (1 / p)
    expected = np.stack([[gem_np(m[:, y : y + h, c : c + w]) for y, c, h, w in regions] for m in x])
    np.testing.assert_allclose(R.regional_pool(torch.from_numpy(x), gem).numpy(), expected, rtol=1e-12)
    # R-GeM: the R-MAC recipe with GeM in each region (and in the global term)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    r_gem = unit(unit(expected).sum(axis=1) + unit(gem_np(x)))
    np.testing.assert_allclose(R.rmac(torch.from_numpy(x), global_term=True, pool=gem).numpy(), r_gem, rtol=1e-12)
    # MAC takes the separable fast path: the same maxima as the loop
    maxima = np.stack([[m[:, y : y + h, c : c + w].max(axis=(1, 2)) for y, c, h, w in regions] for m in x])
    np.testing.assert_array_equal(R.regional_pool(torch.from_numpy(x)).numpy(), maxima)
    with pytest.raises(ValueError, match="pool must map"):
        R.regional_pool(torch.from_numpy(x), lambda t: t.sum(dim=1))


def test_regional_vectors_are_unit_region_maxima_of_each_map():
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(5, 4, 6, generator=g), torch.rand(5, 7, 3, generator=g)]
    got = R.regional_vectors(maps)
    for m, v in zip(maps, got):
        a = m.numpy()
        boxes = R.rmac_regions(*a.shape[1:])
        expected = np.array([a[:, y:y + h, x:x + w].max(axis=(1, 2)) for y, x, h, w in boxes])
        np.testing.assert_allclose(v.numpy(), expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("maps, name", [([], "maps"), (torch.rand(3, 4), "maps"), ([torch.rand(3, 4, 4), torch.rand(2, 4, 4)], "maps must all have the same number of channels"), ([torch.rand(3, 4)], r"maps\[0\]")])
def test_regional_vectors_rejects_bad_input(maps, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        R.regional_vectors(maps)
