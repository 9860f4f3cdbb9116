"""The benchmark of notebook 10 (retrievalkit.bench and ``python -m retrievalkit bench``), on the mini set."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

import retrievalkit as rk
from retrievalkit import bench
from retrievalkit.__main__ import main

REAL = ["oxford5k", "paris6k", "roxford5k", "rparis6k"]


@pytest.fixture(scope="module")
def mini():
    net = rk.models.backbone()
    ds = rk.datasets.load("mini")
    qmaps, xmaps = rk.extract.dataset_maps(net, ds, progress=False)  # the lectures' cached maps
    return net, ds, qmaps, xmaps


@pytest.fixture(scope="module")
def rows(mini):
    return bench.run(["mini"], timing_images=6)


def _row(rows, method, variant):
    (row,) = [r for r in rows if r["method"] == method and r["variant"] == variant]
    return row


def _map(Q, X, gnd):
    """mAP (%) of ranking by inner product, by argsort rather than retrievalkit.search."""
    ranks = np.argsort(-(Q @ X.T), axis=1, kind="stable")
    return 100 * rk.evaluate.mean_average_precision(ranks, gnd)[0]


def _gem(maps):
    v = np.stack([np.mean(np.clip(m.numpy().astype(np.float64), 1e-6, None) ** 3, axis=(1, 2)) ** (1 / 3) for m in maps])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_every_method_and_variant_has_a_row(rows):
    assert [(r["method"], r["variant"]) for r in rows] == [(m, v) for m in bench.METHODS for v in bench.VARIANTS]
    assert all(r["dataset"] == "mini" and r["old"] == "" and 0 <= r["H"] <= r["M"] <= 100 for r in rows)


def test_gem_map_equals_an_independent_computation(mini, rows):
    net, ds, qmaps, xmaps = mini
    Q, X = _gem(qmaps), _gem(xmaps)
    train = [i for i, s in enumerate(ds.info["split"]) if s == "train"]
    T = X[train]
    # PCA-whitening learnt on the training split, all n_train - 1 = 33 directions, by numpy's eigh
    mean = T.mean(axis=0)
    val, vec = np.linalg.eigh((T - mean).T @ (T - mean) / len(T))
    keep = np.argsort(val)[::-1][: len(T) - 1]
    P = vec[:, keep] / np.sqrt(val[keep])
    whiten = lambda A: (lambda W: W / np.linalg.norm(W, axis=1, keepdims=True))((A - mean) @ P)
    Qw, Xw = whiten(Q), whiten(X)
    # alpha-QE, alpha = 3, k = 10, one query at a time
    Qe = []
    for q in Qw:
        s = Xw @ q
        top = np.argsort(-s)[:10]
        e = q + (np.clip(s[top], 0, None)[:, None] ** 3 * Xw[top]).sum(axis=0)
        Qe.append(e / np.linalg.norm(e))
    Qe = np.stack(Qe)
    for variant, (A, B) in {"raw": (Q, X), "+PCAw": (Qw, Xw), "+PCAw+αQE": (Qe, Xw)}.items():
        row = _row(rows, "GeM", variant)
        assert row["dim"] == B.shape[1]
        for protocol, column in (("medium", "M"), ("hard", "H")):
            assert row[column] == pytest.approx(_map(A, B, rk.evaluate.revisited(ds.gnd, protocol)), abs=0.05), (variant, column)


def test_methods_give_unit_descriptors_of_the_stated_dim(mini, rows):
    net, ds, qmaps, xmaps = mini
    train = [m for m, s in zip(xmaps, ds.info["split"]) if s == "train"]
    for name, method in bench.METHODS.items():
        V = method.build(net, train)(xmaps[:5])
        assert V.shape == (5, _row(rows, name, "raw")["dim"]), name
        torch.testing.assert_close(V.norm(dim=1), torch.ones(5), atol=1e-4, rtol=0)
        assert _row(rows, name, "+PCAw")["dim"] == len(train) - 1  # capped by the 34 training images
    assert _row(rows, "VLAD", "raw")["dim"] == bench.VLAD_K * bench.VLAD_LOCAL_DIM


def test_stage_timings_are_positive_and_consistent(mini, rows):
    net, ds, qmaps, xmaps = mini
    for r in rows:
        assert r["timed"] == 6
        for stage, n in (("decode", 6), ("network", 6), ("pooling", len(qmaps) + len(xmaps)), ("search", len(qmaps))):
            assert r[f"{stage} s"] > 0
            assert r[f"{stage} img/s"] == pytest.approx(n / r[f"{stage} s"])


def test_table_files_hold_every_row(rows, tmp_path):
    csv_path, md_path = bench.write_table(rows, tmp_path / "out")
    with open(csv_path, encoding="utf-8", newline="") as f:
        read = list(csv.DictReader(f))
    assert [(r["method"], r["variant"], float(r["M"])) for r in read] == [(r["method"], r["variant"], r["M"]) for r in rows]
    lines = md_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows) + 2 and lines[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    for line, r in zip(lines[2:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2:4] == [r["method"], r["variant"]] and float(cells[6]) == pytest.approx(r["M"], abs=0.005)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.csv", "bench.md"]  # no temporary left


def test_published_anchors_name_a_known_row():
    for (dataset, method, variant, model), (values, setting) in bench.PUBLISHED.items():
        assert dataset in REAL and method in bench.METHODS and variant in bench.VARIANTS and model in rk.models.BACKBONES
        assert set(values) <= {"old", "M", "H"} and all(0 < v < 100 for v in values.values()) and setting


@pytest.mark.parametrize("kwargs, blamed", [
    ({"methods": ["GeM", "NetVLAD"]}, "methods"), ({"dataset_names": ["holidays"]}, "dataset_names"),
    ({"variants": ["+DFS"]}, "variants"), ({"model": "alexnet"}, "model"), ({"timing_images": 0}, "timing_images"),
])
def test_bad_names_are_rejected(kwargs, blamed):
    with pytest.raises(ValueError, match=blamed):
        bench.run(**kwargs)


def test_real_mode_without_data_says_what_is_missing(tmp_path):
    # the notebook's real mode: every dataset is checked before the network (VGG16 weights are absent too)
    with pytest.raises(rk.datasets.DatasetNotFoundError, match="download=True") as err:
        bench.run(REAL, model="vgg16", root=tmp_path)
    assert "'oxford5k' is not in" in str(err.value)


def test_cli_missing_dataset_exits_2_with_the_message(tmp_path):
    done = subprocess.run([sys.executable, "-m", "retrievalkit", "bench", "--dataset", "roxford5k", "--root", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "'roxford5k' is not in" in done.stderr and "download=True" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and not (tmp_path / "out").exists()


def test_cli_unknown_method_exits_2(capsys):
    assert main(["bench", "--method", "Foo"]) == 2
    assert "methods must be" in capsys.readouterr().err
