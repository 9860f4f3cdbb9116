"""synthetic-oxford: rOxford5k's layout and counts, ground truth that follows the drawn views,
determinism (whatever the number of drawing processes), reuse, bad input. Built small here."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrievalkit as rk
from retrievalkit.datasets import synthetic

SMALL = {"images": 40, "queries": 10, "long_side": 96, "seed": 3}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return synthetic.build_synthetic(tmp_path_factory.mktemp("syn"), workers=0, progress=False, **SMALL)


@pytest.fixture(scope="module")
def gnd(built) -> dict:
    with open(built / "gnd_synthetic-oxford.pkl", "rb") as f:
        return pickle.load(f)


def test_the_revisitop_layout_with_the_asked_counts(built, gnd):
    assert built.name == "synthetic-oxford"
    assert len(gnd["imlist"]) == 30 and len(gnd["qimlist"]) == 10 and len(gnd["gnd"]) == 10
    names = sorted(p.stem for p in (built / "jpg").glob("*.jpg"))
    assert names == sorted(gnd["imlist"] + gnd["qimlist"])
    assert json.loads((built / "meta.json").read_text()) == {**SMALL, "version": synthetic.VERSION}
    for name in gnd["imlist"] + gnd["qimlist"]:
        with Image.open(built / "jpg" / f"{name}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) == 96
            # database canvases 3:2 or 4:3, landscape or portrait; a query photo keeps its own aspect
            assert min(im.size) in (64, 72) or name.startswith("query")


def test_ground_truth_lists_every_view_of_the_query_object_once(gnd):
    objects, views = np.array(gnd["objects"]), gnd["views"]
    for q, g in enumerate(gnd["gnd"]):
        label = gnd["qobjects"][q]
        assert label == [0, 1, 2, 3, 4, 5, 6, 7][q % 8]  # round-robin over the eight test objects
        listed = g["easy"] + g["hard"] + g["junk"]
        assert len(listed) == len(set(listed))
        assert sorted(listed) == [i for i in range(len(objects)) if objects[i] == label and views[i] is not None]
        x1, y1, x2, y2 = g["bbx"]
        assert 0 <= x1 < x2 and 0 <= y1 < y2 and x2 <= 96 and y2 <= 96
    assert {gnd["split"][i] for i in range(len(objects)) if objects[i] in (0, 1, 2, 3, 4, 5, 6, 7)} == {"test"}
    assert {gnd["object_names"][o] for o, s in zip(objects, gnd["split"]) if s == "train" and o >= 0} <= \
        {"coins", "flower", "retina", "clock"}


def test_loads_as_a_revisited_dataset(built):
    ds = rk.datasets.load("synthetic-oxford", root=built.parent)
    assert len(ds) == 30 and len(ds.queries) == 10 and all(p.is_file() for p in ds.images)
    assert ds.split("train") and ds.bbx(0) == [float(v) for v in ds.gnd[0]["bbx"]]
    assert set(rk.evaluate.evaluate(np.tile(np.arange(30), (10, 1)), ds)) == {"easy", "medium", "hard"}


def test_same_seed_same_bytes_whatever_the_workers(built, tmp_path):
    again = synthetic.build_synthetic(tmp_path / "a", workers=1, progress=False, **SMALL)  # a drawing process
    assert _files(again) == _files(built)
    # image i depends on (seed, i) only: redrawn alone, out of order, the same bytes; another seed differs
    db, qs = synthetic._plan(SMALL["images"], SMALL["queries"], SMALL["long_side"], np.random.default_rng(SMALL["seed"]))
    for i in (38, 0):  # query 8 (a drawn view; queries 0-7 are the source photos), database image 0
        for seed in (SMALL["seed"], SMALL["seed"] + 1):
            synthetic._draw((seed, i, (db + qs)[i], str(tmp_path / f"{i}-{seed}.jpg")))
        name = f"query_{i - 30:03d}" if i >= 30 else f"db_{i:05d}"
        assert (tmp_path / f"{i}-{SMALL['seed']}.jpg").read_bytes() == (built / "jpg" / f"{name}.jpg").read_bytes()
        assert (tmp_path / f"{i}-{SMALL['seed'] + 1}.jpg").read_bytes() != (built / "jpg" / f"{name}.jpg").read_bytes()


def test_a_built_set_is_reused_and_other_parameters_replace_it(built, tmp_path):
    first = synthetic.build_synthetic(tmp_path, workers=0, progress=False, **SMALL)
    stamp = (first / "jpg" / "db_00000.jpg").stat().st_mtime_ns
    assert synthetic.build_synthetic(tmp_path, workers=0, progress=False, **SMALL) == first
    assert (first / "jpg" / "db_00000.jpg").stat().st_mtime_ns == stamp
    synthetic.build_synthetic(tmp_path, workers=0, progress=False, **{**SMALL, "images": 36})
    assert len(list((first / "jpg").glob("*.jpg"))) == 36
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-oxford"]  # no temporary folder left


def test_the_full_size_plan_has_roxford5ks_counts():
    db, qs = synthetic._plan(5063, 70, 1024, np.random.default_rng(0))
    assert (len(db), len(qs)) == (4993, 70)
    kinds = [t[0] for t in db]
    assert kinds.count("view") == round(0.15 * 4993) + round(0.05 * 4993)
    assert sum(t[5] == "train" for t in db) == round(0.2 * 4993)
    assert {t[4] for t in db} == {(1024, 768), (768, 1024), (1024, 683)}
    assert [q[0] for q in qs[:8]] == ["photo"] * 8 and {q[0] for q in qs[8:]} == {"query"}


@pytest.mark.parametrize("kwargs, blamed", [({"images": 20}, "images"), ({"queries": 0}, "queries"),
                                            ({"long_side": 8}, "long_side"), ({"seed": -1}, "seed"),
                                            ({"workers": 1.5}, "workers")])
def test_bad_parameters_are_rejected_before_any_work(tmp_path, kwargs, blamed):
    with pytest.raises(ValueError, match=blamed):
        synthetic.build_synthetic(tmp_path, **{**SMALL, **kwargs})
    assert not any(tmp_path.iterdir())
