"""Real mode's one streaming pass (retrievalkit.bench.stream): the descriptors of pooling stored maps,
a bounded VLAD sample, host memory that does not grow with the number of images, and the rows of
bench.run on a small synthetic-oxford (the VGG16 CAM row says why it is empty)."""
from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import pytest
import torch

import retrievalkit as rk
from retrievalkit import bench
from retrievalkit.__main__ import main
from retrievalkit.bench import stream
from retrievalkit.datasets import synthetic

SIZE = 96


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    synthetic.build_synthetic(root, images=44, queries=8, long_side=128, seed=1, workers=0, progress=False)
    return root, rk.datasets.load("synthetic-oxford", root=root)


@pytest.fixture(scope="module")
def net():
    return rk.models.backbone()


def test_stream_gives_the_descriptors_of_the_stored_maps(small, net):
    _, ds = small
    images = [str(p) for p in ds.images[:10]]
    methods = [bench.METHODS[m] for m in ("GeM", "CroW", "CAM")]
    s = stream.stream(net, methods, [stream.Part("database", images)], SIZE, progress=False, num_workers=0)
    maps = rk.extract.feature_maps(net, images, size=SIZE, num_workers=0, progress=False)
    expected = {"GeM": rk.extract.pool_maps(maps, functools.partial(rk.pooling.gem, p=3.0)),
                "CroW": rk.extract.pool_maps(maps, rk.crow.crow),
                "CAM": rk.cam.aggregate_classes(rk.cam.class_vectors(net, maps, n=bench.CAM_CLASSES))}
    for name, X in expected.items():
        torch.testing.assert_close(s.descriptors[name]["database"], X, atol=1e-5, rtol=0)
    t = s.seconds["database"]
    assert set(t) == {"decode", "network", "pool GeM", "pool CroW", "pool CAM"} and t["network"] > 0


def test_the_vlad_sample_is_bounded_seeded_and_drawn_from_each_images_positions(small, net):
    _, ds = small
    images = [str(p) for p in ds.images[:6]]
    vlad = bench.VLAD(positions=30, seed=2)  # 5 of each image's 6 or 9 positions
    sample = stream.local_sample(net, images, SIZE, vlad, num_workers=0, progress=False)
    torch.testing.assert_close(stream.local_sample(net, images, SIZE, vlad, batch_size=1, num_workers=0,
                                                   progress=False), sample, atol=1e-4, rtol=1e-3)  # same positions
    maps = rk.extract.feature_maps(net, images, size=SIZE, num_workers=0, progress=False)
    counts = [min(5, m.shape[1] * m.shape[2]) for m in maps]
    assert sample.shape == (30, 1280) and counts == [5] * 6
    start = 0
    for m, n in zip(maps, counts):
        rows = m.flatten(1).T  # (h*w, C): this image's positions
        dist = torch.cdist(sample[start: start + n], rows)
        assert bool((dist.min(dim=1).values < 1e-4).all()) and len(set(dist.argmin(dim=1).tolist())) == n
        start += n

MEMORY = textwrap.dedent("""
    import sys, tempfile, torch
    from PIL import Image
    from torch import nn
    from retrievalkit import bench, extract
    from retrievalkit.bench import stream

    class Big(nn.Module):  # 4 MB of float32 maps per image, whatever its size
        name = "big"
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(256, 3, 1, 1, generator=torch.Generator().manual_seed(0)))
        def transform(self, x):
            return x.float() / 255
        def features(self, x):
            return torch.nn.functional.interpolate(torch.nn.functional.conv2d(x, self.w).relu(), size=(64, 64))

    folder = tempfile.mkdtemp()
    paths = []
    pixels = torch.randint(0, 256, (128, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for i, p in enumerate(pixels):
        paths.append(f"{folder}/{i}.png")
        Image.fromarray(p.numpy()).save(paths[-1])
    methods = [bench.METHODS["GeM"], bench.Method("VLAD", bench.VLAD(k=4, local_dim=2, positions=2000), None)]
    def peak():  # this process's peak resident MiB (VmHWM: ru_maxrss would keep the forking parent's peak across exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    net = Big()
    def run(n):
        s = stream.stream(net, methods, [stream.Part("database", paths[:n])], None, learn=paths[:20], num_workers=0,
                          progress=False)
        assert s.descriptors["GeM"]["database"].shape == (n, 256)
    run(16); small = peak()
    run(128); streamed = peak()
    with torch.inference_mode():
        kept = extract.feature_maps(net, paths, num_workers=0, progress=False)  # control: keeps every map
    print(small, streamed, peak())
""")


def test_host_memory_does_not_grow_with_the_number_of_images(tmp_path):
    # in a fresh process (ru_maxrss is a peak): 16 then 128 images streamed; then the maps of the 128
    # kept (512 MB, less the batch the streamed peak already held) as the control that shows the measure sees growth
    done = subprocess.run([sys.executable, "-c", MEMORY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    small, streamed, kept = map(float, done.stdout.split())
    assert streamed - small < 48, (small, streamed)  # 112 more images: their maps would be 448 MB
    assert kept - streamed > 300, (streamed, kept)


def test_run_streams_a_synthetic_set_and_learns_on_its_training_split(small, monkeypatch):
    root, ds = small
    # a small VLAD: this tiny training split has about 70 positions, too few for 64-D PCA
    monkeypatch.setitem(bench.METHODS, "VLAD", bench.Method("VLAD", bench.VLAD(k=4, local_dim=16), bench.PAPERS["Jégou"]))
    rows = bench.run(["synthetic-oxford"], methods=["GeM", "VLAD"], variants=["raw", "+PCAw"], root=root, size=SIZE)
    assert [(r["method"], r["variant"]) for r in rows] == [(m, v) for m in ("GeM", "VLAD") for v in ("raw", "+PCAw")]
    n_train = len(ds.split("train"))
    for r in rows:
        assert r["timed"] == 44 and r["decode s"] > 0 and r["network s"] > 0 and r["pooling s"] > 0
        assert 0 <= r["H"] <= 100 and 0 <= r["M"] <= 100 and r["old"] == "" and r["note"] == ""
        assert r["dim"] == {"GeM": 1280, "VLAD": 64}[r["method"]] if r["variant"] == "raw" else n_train - 1
    (sub,) = bench.run(["synthetic-oxford"], methods=["GeM"], variants=["raw"], root=root, size=SIZE, database_images=12)
    assert sub["timed"] == 8 + 12


def test_vgg16_gets_a_cam_row_that_says_why_it_is_empty(small, monkeypatch):
    root, _ = small
    real = rk.models.backbone  # VGG16's ImageNet weights may be absent: random ones show the same rows
    monkeypatch.setattr(bench.models, "backbone", lambda name, device: real(name, pretrained=False))
    monkeypatch.setattr(bench, "METHODS", {"GeM": bench.METHODS["GeM"], "CAM": bench.METHODS["CAM"]})
    rows = bench.run(["synthetic-oxford"], model="vgg16", variants=["raw"], root=root, size=64, database_images=6)
    assert [r["method"] for r in rows] == ["GeM", "CAM"]
    assert rows[1]["M"] == "" and "vgg16 has no global-average-pooling" in rows[1]["note"]
    assert "| CAM |" in bench.markdown(rows) and "no CAM" in bench.markdown(rows)


def test_cli_streams_a_subset_and_a_missing_set_names_the_flag(small, tmp_path, capsys):
    root, _ = small
    assert main(["bench", "--dataset", "synthetic-oxford", "--root", str(root), "--size", "64", "--database-images", "8",
                 "--method", "GeM", "--variant", "raw", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "bench.csv").read_text().count("synthetic-oxford") == 1
    assert main(["bench", "--dataset", "roxford5k", "--root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "download=True" in err and "--download" in err and "GB" in err
