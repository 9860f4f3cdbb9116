"""``bench --speed`` (retrievalkit.bench.speed) on a handful of tiny images: the fast path and the
per-image loop give cirtorch's multi-scale descriptors; every stage is timed; the table, its files
and the weights note. The GPU decoder is tested where CUDA is."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from PIL import Image

import retrievalkit as rk
from retrievalkit import bench
from retrievalkit.__main__ import main
from retrievalkit.bench import speed
from retrievalkit.datasets import synthetic

SIZE = 64
MULTI = (1.0, 1 / math.sqrt(2), 0.5)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speed")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(96, 72), (72, 96), (96, 72), (96, 64), (96, 72)]):
        paths.append(str(folder / f"{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    return paths


@pytest.fixture(scope="module")
def net():
    return rk.models.backbone()


@pytest.mark.parametrize("scales", [(1.0,), MULTI])
def test_the_fast_path_gives_extracts_multiscale_descriptors(images, net, scales):
    pools = speed._pools(["GeM", "CroW"])
    X, seconds = speed.end_to_end(net, images, pools, SIZE, scales, batch_size=2, num_workers=0, queries=2, k=3,
                                  progress=False)
    assert seconds > 0
    for name, pool, power in (("GeM", functools.partial(rk.pooling.gem, p=3.0), 3.0), ("CroW", rk.crow.crow, 1.0)):
        expected = rk.extract.descriptors(net, images, pool, size=SIZE, scales=scales, power=power, cache=None,
                                          num_workers=0, progress=False)
        torch.testing.assert_close(X[name], expected, atol=1e-5, rtol=0)


def test_the_per_image_loop_agrees_up_to_pils_resize(images, net):
    pools = speed._pools(["GeM"])
    X, _ = speed.baseline(net, images, pools, SIZE, MULTI, queries=2, k=3, progress=False)
    expected = rk.extract.descriptors(net, images, functools.partial(rk.pooling.gem, p=3.0), size=SIZE, scales=MULTI,
                                      power=3.0, cache=None, num_workers=0, progress=False)
    cosine = (X["GeM"] * expected).sum(dim=1)
    assert X["GeM"].shape == expected.shape and bool((cosine > 0.99).all()), cosine  # PIL vs torchvision resize


def test_speed_rows_time_every_stage_and_say_the_weights(images, tmp_path):
    rows = speed.speed(images, ["efficientnet_lite0", "resnet50"], ["GeM", "R-MAC"], size=SIZE, batch_size=2,
                       num_workers=0, queries=2, k=3, progress=False)
    assert [(r["model"], r["method"], r["scales"]) for r in rows] == [
        (m, x, s) for m in ("efficientnet_lite0", "resnet50") for s in speed.SCALES for x in ("GeM", "R-MAC")]
    weights = {r["model"]: r["weights"] for r in rows}
    assert weights["efficientnet_lite0"] == "ImageNet"  # from pip; ResNet50's are in the hub cache or not
    assert weights["resnet50"] in ("ImageNet", "random (ImageNet weights absent)")
    for r in rows:
        assert r["images"] == 5 and r["decoder"] == "workers" and r["device"] == "cpu" and r["h2d img/s"] == ""
        for column in ("decode img/s", "resize img/s", "network img/s", "pooling img/s", "search q/s",
                       "end-to-end img/s", "baseline img/s"):
            assert 0 < r[column] < math.inf, column
        assert r["end-to-end img/s"] == pytest.approx(5 / r["end-to-end s"])
        assert r["ratio"] == pytest.approx(r["end-to-end img/s"] / r["baseline img/s"])
    single, multi = (next(r for r in rows if r["model"] == "resnet50" and r["scales"] == s) for s in speed.SCALES)
    assert single["network img/s"] > multi["network img/s"]  # three scales: 1 + 1/2 + 1/4 of the pixels
    csv_path, md_path = bench.write_table(rows, tmp_path, speed.SPEED_COLUMNS, "speed")
    assert csv_path.name == "speed.csv" and md_path.read_text().count("\n") == len(rows) + 2


def test_cli_speed_writes_its_table(tmp_path, capsys):
    root = tmp_path / "data"
    synthetic.build_synthetic(root, images=32, queries=8, long_side=96, workers=0, progress=False)
    assert main(["bench", "--speed", "--speed-images", "3", "--model", "efficientnet_lite0", "--method", "GeM",
                 "--size", str(SIZE), "--root", str(root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0 weights: ImageNet" in out and "| ratio |" in out.replace(" | device", "")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["speed.csv", "speed.md"]
    assert main(["bench", "--speed", "--method", "VLAD", "--root", str(root)]) == 2
    assert "methods must be poolings" in capsys.readouterr().err


def test_bad_speed_arguments_are_rejected(images):
    for kwargs, blamed in (({"model_names": ["alexnet"]}, "model_names"), ({"methods": ["CAM"]}, "methods"),
                           ({"decoders": ["cuda"], "device": "cpu"}, "decoders"), ({"size": 0}, "size")):
        with pytest.raises(ValueError, match=blamed):
            speed.speed(images, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run on a GPU machine")
def test_gpu_decoding_matches_the_workers_and_the_gpu_rows_have_h2d(images):
    net = rk.models.backbone(device="cuda")
    pools = speed._pools(["GeM"])
    on_gpu, _ = speed.end_to_end(net, images, pools, SIZE, (1.0,), decoder="cuda", queries=2, k=3, progress=False)
    workers, _ = speed.end_to_end(net, images, pools, SIZE, (1.0,), num_workers=0, queries=2, k=3, progress=False)
    cosine = (on_gpu["GeM"] * workers["GeM"]).sum(dim=1)
    assert bool((cosine > 0.99).all()), cosine  # nvjpeg vs libjpeg: a grey level apart
    rows = speed.speed(images, ["efficientnet_lite0"], ["GeM"], size=SIZE, queries=2, k=3, progress=False)
    assert {r["decoder"] for r in rows} == {"workers", "cuda"} and all(r["h2d img/s"] != "" for r in rows)
    assert all(r["device"].startswith("cuda") for r in rows)
