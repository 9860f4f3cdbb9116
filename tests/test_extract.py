"""Extraction: batching that does not change a descriptor, query crops, cirtorch's multi-scale
formula written out independently, and the on-disk cache. Images are small files in tmp_path."""
import functools
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data
from torch import nn

from retrievalkit import extract as E
from retrievalkit import models as M
from retrievalkit import pooling as P

# float32 round-off only: batch composition and memory layout must not matter (BatchNorm in eval
# mode, no padding). Maps reach 6 (ReLU6): 1e-4 absolute; descriptors are unit vectors: 1e-5.
MAPS_ATOL, ATOL = 1e-4, 1e-5


class Toy(M.Backbone):
    """features = the image scaled to [0, 1] times a weight, so crops and sizes can be read off the maps."""

    name = "toy"
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    out_channels = 3

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = []

    def multi_layer(self, x):
        self.calls.append(tuple(x.shape))
        return [x, x * self.w]


@pytest.fixture(scope="module")
def lite0():
    return M.backbone()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """The default cache goes under the data root: keep the tests' results out of data/cache."""
    monkeypatch.setenv("RETRIEVALKIT_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four 192 x 128 JPEGs from scikit-image photos and one 128 x 192 (portrait)."""
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        p = root / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).resize((192, 128), Image.BILINEAR).save(p, quality=90)
        paths.append(p)
    p = root / "portrait.jpg"
    Image.fromarray(data.astronaut()).resize((128, 192), Image.BILINEAR).save(p, quality=90)
    return paths + [p]


def by_hand(path):
    """Decode with PIL and scale to [-1, 1] (Lite0's normalisation), as a (1, 3, H, W) batch."""
    x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(x).permute(2, 0, 1)[None]


def l2n(v):
    return v / (v.norm(dim=1, keepdim=True) + 1e-6)  # cirtorch's L2N


def test_feature_maps_are_the_networks_maps_in_input_order(lite0, photos):
    order = [photos[4], photos[0], photos[1], photos[4]]  # two sizes, interleaved
    maps = E.feature_maps(lite0, order, batch_size=3, num_workers=0, progress=False)
    assert [m.shape for m in maps] == [(1280, 6, 4), (1280, 4, 6), (1280, 4, 6), (1280, 6, 4)]
    with torch.inference_mode():
        for m, p in zip(maps, order):
            torch.testing.assert_close(m, lite0.features(by_hand(p))[0], atol=MAPS_ATOL, rtol=0)


def test_same_descriptor_alone_and_in_a_batch(lite0, photos):
    same_size = photos[:4]
    batched = E.descriptors(lite0, same_size, P.gem, batch_size=4, num_workers=0, progress=False)
    alone = torch.cat([E.descriptors(lite0, [p], P.gem, num_workers=0, progress=False) for p in same_size])
    torch.testing.assert_close(batched, alone, atol=ATOL, rtol=0)
    assert batched.dtype == torch.float32 and batched.shape == (4, 1280)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(4))


def test_images_of_one_size_share_a_batch_without_padding(photos):
    toy = Toy()
    order = [photos[0], photos[4], photos[1], photos[2], photos[4], photos[3]]
    maps = E.feature_maps(toy, order, batch_size=2, num_workers=0, progress=False)
    # landscape 0, 2, 3, 5 -> two batches of 2; portrait 1, 4 -> one batch of 2
    assert sorted(toy.calls) == [(2, 3, 128, 192), (2, 3, 128, 192), (2, 3, 192, 128)]
    for m, p in zip(maps, order):
        torch.testing.assert_close(m, torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1))


def test_single_scale_is_l2_normalised_pooling(lite0, photos):
    X = E.descriptors(lite0, photos[3:], functools.partial(P.gem, p=3), scales=(1,), num_workers=0, progress=False)
    with torch.inference_mode():
        expected = torch.cat([F.normalize(P.gem(lite0.features(by_hand(p)), p=3), dim=1) for p in photos[3:]])
    torch.testing.assert_close(X, expected, atol=ATOL, rtol=0)


def test_multi_scale_equals_cirtorch_extract_ms(lite0, photos):
    scales, msp = (1, 1 / math.sqrt(2), 1 / 2), 3.0
    X = E.descriptors(lite0, photos[:2], P.gem, size=160, scales=scales, power=msp, num_workers=0, progress=False)

    def net(x):  # cirtorch's ImageRetrievalNet: features -> pool -> L2N
        return l2n(P.gem(lite0.features(x)))

    rows = []
    for p in photos[:2]:
        image = torch.from_numpy(np.asarray(M.resize_longest(Image.open(p), 160), dtype=np.float32) / 127.5 - 1)
        input = image.permute(2, 0, 1)[None]
        with torch.inference_mode():  # cirtorch's extract_ms, line by line
            v = torch.zeros(1280)
            for s in scales:
                input_t = input.clone() if s == 1 else F.interpolate(input, scale_factor=s, mode="bilinear", align_corners=False)
                v += net(input_t).pow(msp).squeeze()
            v /= len(scales)
            v = v.pow(1.0 / msp)
            v /= v.norm()
        rows.append(v)
    # PIL's resize and torchvision's differ by at most 1 grey level on a few pixels
    torch.testing.assert_close(X, torch.stack(rows), atol=2e-3, rtol=0)


def test_power_mean_by_hand(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("RGB", (64, 32), (90, 90, 90)).save(path)

    def positions(maps):  # a toy pooling that sees the scale: (H * W, 1)
        n = maps.shape[0]
        return torch.stack([maps.new_full((n,), float(maps.shape[-2] * maps.shape[-1])), maps.new_ones(n)], dim=1)

    X = E.descriptors(Toy(), [path], positions, scales=(1, 0.5), power=2, num_workers=0, progress=False)
    f1 = np.array([2048.0, 1.0]) / (math.hypot(2048, 1) + 1e-6)  # 32 x 64 positions at scale 1
    f2 = np.array([512.0, 1.0]) / (math.hypot(512, 1) + 1e-6)  # 16 x 32 at scale 1/2
    v = np.sqrt((f1**2 + f2**2) / 2)
    np.testing.assert_allclose(X[0].numpy(), v / np.linalg.norm(v), rtol=1e-6)
    # power 1 is the plain mean of the normalised vectors
    X1 = E.descriptors(Toy(), [path], positions, scales=(1, 0.5), num_workers=0, progress=False)
    np.testing.assert_allclose(X1[0].numpy(), (f1 + f2) / np.linalg.norm(f1 + f2), rtol=1e-6)


@pytest.fixture
def red_box(tmp_path):
    """A 300 x 200 grey PNG with a red rectangle x in [60, 140), y in [40, 100)."""
    a = np.full((200, 300, 3), 128, np.uint8)
    a[40:100, 60:140] = (255, 0, 0)
    path = tmp_path / "box.png"
    Image.fromarray(a).save(path)
    return path


def test_query_box_crops_exactly_the_box(red_box):
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    (m,) = E.feature_maps(Toy(), [red_box], boxes=[[60, 40, 140, 100]], num_workers=0, progress=False)
    assert m.shape == (3, 60, 80) and torch.equal(m, red.expand(3, 60, 80))
    # fractional coordinates are rounded as PIL's Image.crop does
    box = [59.6, 40.4, 140.2, 99.5]
    assert Image.open(red_box).crop(box).size == (80, 60)
    (m,) = E.feature_maps(Toy(), [red_box], boxes=[box], num_workers=0, progress=False)
    assert torch.equal(m, red.expand(3, 60, 80))


def test_query_crop_keeps_the_scale_of_the_full_image(red_box):
    # full image 300 px -> 150: factor 1/2; the 80 x 60 crop must get the same factor: 40 x 30
    full, crop = E.feature_maps(Toy(), [red_box, red_box], size=150, boxes=[None, [60, 40, 140, 100]],
                                num_workers=0, progress=False)
    assert full.shape == (3, 100, 150)
    assert crop.shape == (3, 30, 40)
    torch.testing.assert_close(crop, torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 30, 40))


def test_pil_images_and_worker_processes_give_the_same(red_box, photos):
    toy = Toy()
    paths = [photos[0], red_box]
    X = E.descriptors(toy, paths, P.mac, size=100, num_workers=0, progress=False)
    X_workers = E.descriptors(toy, paths, P.mac, size=100, num_workers=1, progress=False)
    X_pil = E.descriptors(toy, [Image.open(p) for p in paths], P.mac, size=100, num_workers=0, progress=False)
    torch.testing.assert_close(X_workers, X, rtol=0, atol=0)
    torch.testing.assert_close(X_pil, X, rtol=0, atol=0)


def test_cache_loads_instead_of_recomputing(tmp_path, photos, monkeypatch):
    toy = Toy()
    gem3 = functools.partial(P.gem, p=3)
    X = E.descriptors(toy, photos, gem3, size=64, cache=tmp_path, key="mini/database", num_workers=0, progress=False)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("mini-database-toy-gem-")

    def broken(x):
        raise AssertionError("the network ran although the descriptors are cached")

    monkeypatch.setattr(toy, "multi_layer", broken)
    again = E.descriptors(toy, photos, gem3, size=64, cache=tmp_path, key="mini/database", num_workers=0, progress=False)
    torch.testing.assert_close(again, X, rtol=0, atol=0)
    # anything that changes the result is part of the key: pooling parameter, size, scales, weights, images
    for changed in (dict(pool=functools.partial(P.gem, p=4)), dict(size=65), dict(scales=(1, 0.5)), dict(images=photos[:2])):
        args = dict(images=photos, pool=gem3, size=64) | changed
        with pytest.raises(AssertionError, match="network ran"):
            E.descriptors(toy, cache=tmp_path, key="mini/database", num_workers=0, progress=False, **args)
    with torch.no_grad():
        toy.w.mul_(2)  # fine-tuned weights
    with pytest.raises(AssertionError, match="network ran"):
        E.descriptors(toy, photos, gem3, size=64, cache=tmp_path, key="mini/database", num_workers=0, progress=False)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


def test_lambda_pools_are_keyed_by_their_code_and_closure(tmp_path, photos):
    toy = Toy()
    calls = []
    for p in (2.0, 3.0, 3.0):
        pool = lambda x, p=p: P.gem(x, p=p)  # noqa: E731
        n = len(toy.calls)
        E.descriptors(toy, photos[:1], pool, cache=tmp_path, num_workers=0, progress=False)
        calls.append(len(toy.calls) - n)
    assert calls == [1, 1, 0]  # p=2, p=3 computed; p=3 again loaded


def test_dataset_descriptors_use_boxes_or_indices(red_box, photos):
    toy = Toy()
    kw = dict(size=100, num_workers=0, progress=False)
    crops = types.SimpleNamespace(name="fake", images=photos, queries=[red_box], gnd=[{"bbx": [60, 40, 140, 100]}])
    Q, X = E.dataset_descriptors(toy, crops, P.mac, **kw)
    torch.testing.assert_close(X, E.descriptors(toy, photos, P.mac, **kw))
    torch.testing.assert_close(Q, torch.tensor([[1.0, 0.0, 0.0]]))  # MAC of the red crop only
    holidays_like = types.SimpleNamespace(name="fake", images=photos, queries=[3, 0], gnd=[{}, {}])
    Q, X = E.dataset_descriptors(toy, holidays_like, P.mac, **kw)
    torch.testing.assert_close(Q, X[[3, 0]])
    # queries given by name only: the dataset's own crops are described as they are
    blue = Image.new("RGB", (30, 20), (0, 0, 255))
    named = types.SimpleNamespace(name="fake", images=photos, queries=["q0"], gnd=[{}], query_image=lambda i: blue)
    Q, _ = E.dataset_descriptors(toy, named, P.mac, **kw)
    torch.testing.assert_close(Q, torch.tensor([[0.0, 0.0, 1.0]]))


def test_bad_input(photos, tmp_path):
    toy = Toy()
    kw = dict(num_workers=0, progress=False)
    with pytest.raises(ValueError, match="images"):
        E.descriptors(toy, [], P.mac, **kw)
    with pytest.raises(ValueError, match="images"):
        E.feature_maps(toy, str(photos[0]), **kw)
    with pytest.raises(FileNotFoundError, match="images"):
        E.feature_maps(toy, [tmp_path / "missing.jpg"], **kw)
    with pytest.raises(ValueError, match="scales"):
        E.descriptors(toy, photos, P.mac, scales=(1, 0), **kw)
    with pytest.raises(ValueError, match="scales"):
        E.descriptors(toy, photos, P.mac, scales=(), **kw)
    with pytest.raises(ValueError, match="scales"):
        E.descriptors(toy, photos, P.mac, scales=(1, 0.001), **kw)
    with pytest.raises(ValueError, match="power"):
        E.descriptors(toy, photos, P.mac, power=0, **kw)
    with pytest.raises(ValueError, match="power"):  # x^(1/p) of a negative number
        E.descriptors(toy, photos, lambda x: x.mean(dim=(2, 3)) - 1, power=3, **kw)
    with pytest.raises(ValueError, match="pool"):
        E.descriptors(toy, photos, "gem", **kw)
    with pytest.raises(ValueError, match="pool"):
        E.descriptors(toy, photos, lambda x: x, **kw)  # maps, not descriptors
    with pytest.raises(ValueError, match="boxes"):
        E.feature_maps(toy, photos, boxes=[[0, 0, 10, 10]], **kw)
    with pytest.raises(ValueError, match="boxes"):
        E.feature_maps(toy, photos[:1], boxes=[[500, 0, 600, 10]], **kw)
    with pytest.raises(ValueError, match="boxes"):
        E.feature_maps(toy, photos[:1], boxes=[[0, 0, 10]], **kw)
    with pytest.raises(ValueError, match="size"):
        E.feature_maps(toy, photos, size=0, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        E.feature_maps(toy, photos, batch_size=0, **kw)
    with pytest.raises(ValueError, match="num_workers"):
        E.feature_maps(toy, photos, num_workers=-1, progress=False)
    with pytest.raises(ValueError, match="pool"):  # an object without a stable description cannot key a cache
        E.descriptors(toy, photos, type("Pool", (), {"__call__": lambda self, x: P.mac(x)})(), cache=tmp_path, **kw)


def test_pool_maps_pools_each_map_as_alone_in_input_order():
    from retrievalkit.extract import pool_maps
    from retrievalkit.pooling import gem, mac

    torch.manual_seed(0)
    maps = [torch.rand(8, h, w) for h, w in [(3, 4), (5, 5), (3, 4), (2, 7), (5, 5)]]
    for pool in (mac, gem):
        out = pool_maps(maps, pool, batch_size=1 if pool is mac else 64)
        expected = torch.stack([torch.nn.functional.normalize(pool(m[None]), dim=1)[0] for m in maps])
        torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="maps"):
        pool_maps([], mac)
    with pytest.raises(ValueError, match=r"maps\[1\]"):
        pool_maps([torch.rand(2, 3, 3), torch.rand(3, 3)], mac)


def test_dataset_maps_are_cached_and_match_a_fresh_extraction(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from retrievalkit import extract
    from retrievalkit.models import backbone

    net = backbone()
    paths = []
    for i, (w, h) in enumerate([(64, 48), (48, 64), (64, 48)]):
        p = tmp_path / f"im{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    ds = SimpleNamespace(name="toy", queries=[paths[0]], gnd=[{"bbx": [8, 4, 40, 36]}], images=paths[1:])
    q, x = extract.dataset_maps(net, ds, cache=tmp_path / "maps", num_workers=0, progress=False)
    assert len(q) == 1 and len(x) == 2 and len(list((tmp_path / "maps").glob("*.pt"))) == 1
    fresh = extract.feature_maps(net, [str(paths[0])], boxes=[[8, 4, 40, 36]], num_workers=0, progress=False)
    torch.testing.assert_close(q[0], fresh[0], atol=1e-2, rtol=1e-2)  # stored as float16

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(extract, "feature_maps", fail)
    q2, x2 = extract.dataset_maps(net, ds, cache=tmp_path / "maps")
    torch.testing.assert_close(x2[1], x[1])
    monkeypatch.undo()
    # queries that are database images (Holidays, UKBench): their maps are the database's
    held = SimpleNamespace(name="held", queries=[1], gnd=[{"ok": [0]}], images=paths[1:])
    q3, x3 = extract.dataset_maps(net, held, cache=None, num_workers=0, progress=False)
    assert len(q3) == 1 and torch.equal(q3[0], x3[1])


def test_rewritten_image_misses_the_cache(tmp_path, photos):
    import os
    import shutil

    p = tmp_path / "a.jpg"
    shutil.copy(photos[0], p)
    toy = Toy()
    kw = dict(cache=tmp_path / "cache", key="k", num_workers=0, progress=False)
    first = E.descriptors(toy, [p], P.mac, **kw)
    E.descriptors(toy, [p], P.mac, **kw)
    assert len(toy.calls) == 1  # the second call was read from the cache
    shutil.copy(photos[1], p)  # another photo under the same name
    os.utime(p, ns=(1, 2))
    second = E.descriptors(toy, [p], P.mac, **kw)
    assert len(toy.calls) == 2 and not torch.equal(first, second)
    torch.testing.assert_close(second, E.descriptors(toy, [photos[1]], P.mac, cache=None, num_workers=0, progress=False))


def test_pool_dataset_maps_pools_queries_and_database_alike():
    g = torch.Generator().manual_seed(0)
    Qm = [torch.rand(4, 3, 5, generator=g), torch.rand(4, 2, 2, generator=g)]
    Xm = [torch.rand(4, 6, 4, generator=g)]
    Q, X = E.pool_dataset_maps(Qm, Xm, P.mac)
    for got, maps in ((Q, Qm), (X, Xm)):
        expected = np.array([m.numpy().max(axis=(1, 2)) for m in maps])
        np.testing.assert_allclose(got.numpy(), expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)


def test_decode_gives_what_the_network_receives(photos):
    # the public decode step equals the extraction's own: the maps of decode's output are feature_maps'
    net = Toy()
    decoded = E.decode(photos[:2], boxes=[[2, 3, 40, 30], None], size=48)
    maps = E.feature_maps(net, photos[:2], size=48, boxes=[[2, 3, 40, 30], None], num_workers=0, progress=False)
    # the 38 x 27 crop keeps its scale in the 192 x 128 photo resized to 48: x 1/4 -> 10 x 7 (rounded)
    assert [tuple(d.shape) for d in decoded] == [(3, 7, 10), (3, 32, 48)] and decoded[0].dtype == torch.uint8
    for d, m in zip(decoded, maps):
        torch.testing.assert_close(E.forward_maps(net, net.transform(d[None]))[0], m)
