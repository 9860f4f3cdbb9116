"""The benchmark (retrievalkit.bench and ``python -m retrievalkit bench``), on the mini set."""
import csv
import functools
import re
import subprocess
import sys
from pathlib import Path

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
def other(mini):
    """The maps of mini-other, the set mini's whitening and codebook are learnt on (cached like the lectures')."""
    net = mini[0]
    return rk.extract.dataset_maps(net, rk.datasets.load("mini-other"), progress=False)[1]


@pytest.fixture(scope="module")
def rows(mini, other):
    return bench.run(["mini"], timing_images=6)


@pytest.fixture(scope="module")
def described(mini, other):
    """Every method's descriptors of the mini queries, database and mini-other, as run() makes them."""
    net, ds, _, _ = mini
    maps = bench.benchmark_maps(net, ds, rk.datasets.load("mini-other"), None)
    return {name: bench.describe(method, net, maps) for name, method in bench.METHODS.items()}


def _row(rows, method, variant):
    (row,) = [r for r in rows if r["method"] == method and r["variant"] == variant]
    return row


def _map(Q, X, gnd):
    """mAP (%) of ranking by inner product, by argsort rather than retrievalkit.search."""
    ranks = np.argsort(-(Q @ X.T), axis=1, kind="stable")
    return 100 * rk.evaluate.mean_average_precision(ranks, gnd)[0]


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _gem(maps, p=3.0):
    return _unit(np.stack([np.mean(np.clip(m.numpy().astype(np.float64), 1e-6, None) ** p, axis=(1, 2)) ** (1 / p)
                           for m in maps]))


def _whitening(T, dim):
    """PCA-whitening learnt on T, the ``dim`` largest directions, by numpy's eigh: A -> l2n((A - mean) P)."""
    mean = T.mean(axis=0)
    val, vec = np.linalg.eigh((T - mean).T @ (T - mean) / len(T))
    keep = np.argsort(val)[::-1][:dim]
    P = vec[:, keep] / np.sqrt(val[keep])
    return lambda A: _unit((A - mean) @ P)


def _alpha_qe(Q, X, k, alpha):
    """alpha-QE one query at a time: l2n(q + sum over its top k of max(s, 0)^alpha x)."""
    out = []
    for q in Q:
        s = X @ q
        top = np.argsort(-s)[:k]
        out.append(q + (np.clip(s[top], 0, None)[:, None] ** alpha * X[top]).sum(axis=0))
    return _unit(np.stack(out))


def _by_hand(steps, Q, X, T):
    """A variant's steps applied in order by the numpy above, read off each step's parameters; each
    whitening is learnt on the training descriptors as the steps before it left them."""
    for step in steps:
        if isinstance(step, bench.PCAw):
            w = _whitening(T, min(step.dim, T.shape[1], len(T) - 1))
            Q, X, T = w(Q), w(X), w(T)
        else:
            assert isinstance(step, bench.AlphaQE)
            Q = _alpha_qe(Q, X, step.k, step.alpha)
    return Q, X


def _float64(*tensors):
    return [t.double().numpy() for t in tensors]


def test_every_method_and_variant_has_a_row(rows):
    assert [(r["method"], r["variant"]) for r in rows] == [(m, v) for m in bench.METHODS for v in bench.VARIANTS]
    assert all(r["dataset"] == "mini" and r["old"] == "" and 0 <= r["H"] <= r["M"] <= 100 for r in rows)


def test_gem_map_equals_an_independent_computation(mini, other, rows):
    net, ds, qmaps, xmaps = mini
    Q, X, T = _gem(qmaps), _gem(xmaps), _gem(other)
    whiten = _whitening(T, 512)  # PCAw(dim=512), learnt on mini-other's 1,972 views
    Qw, Xw = whiten(Q), whiten(X)
    Qe = _alpha_qe(Qw, Xw, 10, 3.0)  # alpha = 3, k = 10
    for variant, (A, B) in {"raw": (Q, X), "+PCAw": (Qw, Xw), "+PCAw+αQE": (Qe, Xw)}.items():
        row = _row(rows, "GeM", variant)
        assert row["dim"] == B.shape[1]
        for protocol, column in (("medium", "M"), ("hard", "H")):
            assert row[column] == pytest.approx(_map(A, B, rk.evaluate.revisited(ds.gnd, protocol)), abs=0.05), (variant, column)


@pytest.mark.parametrize("variant", list(bench.VARIANTS))
def test_each_variants_steps_by_hand_give_runs_ranking_and_rows(mini, rows, described, variant):
    net, ds, _, _ = mini
    v = bench.VARIANTS[variant]
    gnd = rk.evaluate.revisited(ds.gnd, "medium")
    for name, d in described.items():
        A, B = _by_hand(v.steps, *_float64(d.Q, d.X, d.T))
        ranks = rk.search.rank(*v.fit(d.T)(d.Q, d.X)).numpy()
        S = np.take_along_axis(A @ B.T, ranks, axis=1)  # the hand similarities in the package's order
        assert (np.diff(S, axis=1) <= 1e-4).all(), (name, variant)  # non-increasing: the same ranking up to ties
        row = _row(rows, name, variant)
        assert row["dim"] == B.shape[1] and row["M"] == pytest.approx(_map(A, B, gnd), abs=0.05), (name, variant)


def test_a_new_variant_is_data_run_needs_no_code(mini, other):
    # a variant not in VARIANTS: whitening to 8 dimensions, then alpha-QE with k = 3, alpha = 1
    net, ds, qmaps, xmaps = mini
    variant = bench.Variant("+PCAw8+QE3", (bench.PCAw(dim=8), bench.AlphaQE(k=3, alpha=1.0)))
    (row,) = bench.run(["mini"], methods=["GeM"], variants=[variant], timing_images=1)
    Q, X = _gem(qmaps), _gem(xmaps)
    w = _whitening(_gem(other), 8)
    A, B = _alpha_qe(w(Q), w(X), 3, 1.0), w(X)
    assert (row["variant"], row["dim"]) == ("+PCAw8+QE3", 8)
    assert row["M"] == pytest.approx(_map(A, B, rk.evaluate.revisited(ds.gnd, "medium")), abs=0.05)
    assert row["setting"] == "pooling.gem(p=3.0) → PCAw(dim=8) → AlphaQE(k=3, alpha=1.0)"


def test_a_later_step_learns_on_what_the_earlier_ones_left():
    g = torch.Generator().manual_seed(0)
    Q, X, T = (torch.randn(n, 24, generator=g, dtype=torch.float64) for n in (4, 30, 40))
    steps = (bench.PCAw(dim=16), bench.PCAw(dim=6))
    A, B = bench.Variant("twice", steps).fit(T)(Q, X)
    w1 = _whitening(T.numpy(), 16)
    w2 = _whitening(w1(T.numpy()), 6)
    S = w2(w1(Q.numpy())) @ w2(w1(X.numpy())).T
    np.testing.assert_allclose((A @ B.T).numpy(), S, atol=1e-9)  # similarities: free of eigenvector signs


def test_steps_and_variants_show_their_parameters():
    assert repr(bench.PCAw(dim=256)) == "PCAw(dim=256)"
    assert repr(bench.AlphaQE(k=5, alpha=2.0)) == "AlphaQE(k=5, alpha=2.0)"
    assert bench.Variant("x", (bench.PCAw(dim=64), bench.AlphaQE(k=1, alpha=0.0))).setting == \
        "PCAw(dim=64) → AlphaQE(k=1, alpha=0.0)"
    assert bench.VARIANTS["raw"].setting == "none"
    assert [s for v in bench.VARIANTS.values() for s in v.steps] == \
        [bench.PCAw(dim=512), bench.PCAw(dim=512), bench.AlphaQE(k=10, alpha=3.0)]


def test_method_settings_are_their_parameters(mini, rows):
    settings = {name: m.setting for name, m in bench.METHODS.items()}
    assert settings == {
        "MAC": "pooling.mac()", "SPoC": "pooling.spoc(center_prior=True)", "GeM": "pooling.gem(p=3.0)",
        "R-MAC": "regions.rmac(L=3, global_term=False)", "OS-RMAC": "regions.os_rmac(L=3)", "CroW": "crow.crow(a=2, b=2)",
        "CAM": "CAMOffline(classes=64)", "VLAD": "VLAD(k=32, local_dim=64, positions=20000, seed=0, n_iter=10)"}
    assert _row(rows, "CroW", "+PCAw+αQE")["setting"] == "crow.crow(a=2, b=2) → PCAw(dim=512) → AlphaQE(k=10, alpha=3.0)"
    # the parameters shown are the ones used: GeM at p = 5 against numpy
    net, ds, qmaps, xmaps = mini
    gem5 = bench.Method("GeM5", bench.Pooled(functools.partial(rk.pooling.gem, p=5.0)), bench.PAPERS["Radenović"])
    assert gem5.setting == "pooling.gem(p=5.0)"
    np.testing.assert_allclose(gem5.build(net, [])(xmaps[:4]).double().numpy(), _gem(xmaps[:4], p=5.0), atol=1e-5)


def test_methods_give_unit_descriptors_of_the_stated_dim(mini, other, rows):
    net, ds, qmaps, xmaps = mini
    for name, method in bench.METHODS.items():
        V = method.build(net, other)(xmaps[:5])
        assert V.shape == (5, _row(rows, name, "raw")["dim"]), name
        torch.testing.assert_close(V.norm(dim=1), torch.ones(5), atol=1e-4, rtol=0)
        assert _row(rows, name, "+PCAw")["dim"] == 512  # PCAw(dim=512): mini-other's 1,972 views have the rank
    assert _row(rows, "VLAD", "raw")["dim"] == bench.VLAD_K * bench.VLAD_LOCAL_DIM


def test_stages_return_what_run_uses(mini, other, described):
    net, ds, qmaps, xmaps = mini
    ((loaded, learn_on),) = bench.load_datasets(["mini"])
    assert loaded.name == "mini" and learn_on.name == "mini-other"  # mini learns on its other collection
    maps = bench.benchmark_maps(net, ds, learn_on, None)
    assert len(maps.train) == len(learn_on.images) == 1972
    assert all(torch.equal(t, x) for t, x in zip(maps.train, other))
    d = described["GeM"]
    np.testing.assert_allclose(d.T.double().numpy(), _gem(maps.train), atol=1e-5)
    assert d.Q.shape[0] == len(qmaps) and d.X.shape[0] == len(xmaps) and d.seconds > 0


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
    assert [(r["method"], r["variant"], float(r["M"]), r["setting"]) for r in read] == \
        [(r["method"], r["variant"], r["M"], r["setting"]) for r in rows]
    lines = md_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows) + 2 and lines[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    for line, r in zip(lines[2:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2:4] == [r["method"], r["variant"]] and float(cells[6]) == pytest.approx(r["M"], abs=0.005)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.csv", "bench.md"]  # no temporary left


def test_published_anchors_name_a_known_row_and_cite_a_paper():
    for (dataset, method, variant, model), (values, source) in {**bench.PUBLISHED, **bench.REFERENCES}.items():
        assert dataset in REAL and method in bench.METHODS and variant in bench.VARIANTS and model in rk.models.BACKBONES
        assert set(values) <= {"old", "M", "H"} and all(0 < v < 100 for v in values.values())
        assert re.search(r"\b(19|20)\d\d\b", source) and "https://" in source, source  # a year and a link
    assert all(re.search(r", [A-Za-z ]+ (19|20)\d\d$", p.cite) and p.link.startswith("https://") and p.reference
               for p in bench.PAPERS.values())
    assert all(isinstance(m.paper, bench.Paper) for m in bench.METHODS.values())
    # beside our rows only the real-mode setting (VGG16, 512-D, whitening on the other dataset); no fork re-runs
    assert all(model == "vgg16" and source.startswith("512-D, PCAw on ") for (*_, model), (_, source) in bench.PUBLISHED.items())
    assert not set(bench.PUBLISHED) & set(bench.REFERENCES)
    # Tolias et al. whiten each region before the sum, our +PCAw the sum: R-MAC's figures are references only
    assert {method for _, method, _, _ in bench.PUBLISHED} == {"CroW"}
    assert all("before the sum" in bench.REFERENCES[(d, "R-MAC", "+PCAw", "vgg16")][1] for d in ("oxford5k", "paris6k"))
    assert not any("github.com/bkj" in s for _, s in {**bench.PUBLISHED, **bench.REFERENCES}.values())


def test_the_package_cites_no_file_outside_the_repository():
    text = "\n".join(p.read_text(encoding="utf-8") for p in Path(bench.__file__).parent.glob("*.py"))
    assert not re.search(r"PUBLISHED\.md|REFERENCE\.md|API\.md|COURSE\.md|seeds? 00\d|\.\./shared", text)


@pytest.mark.parametrize("kwargs, blamed", [
    ({"methods": ["GeM", "NetVLAD"]}, "methods"), ({"dataset_names": ["holidays"]}, "dataset_names"),
    ({"variants": ["+DFS"]}, "variants"), ({"variants": [bench.PCAw()]}, "variants"), ({"variants": []}, "variants"),
    ({"model": "alexnet"}, "model"), ({"timing_images": 0}, "timing_images"),
])
def test_bad_names_are_rejected(kwargs, blamed):
    with pytest.raises(ValueError, match=blamed):
        bench.run(**kwargs)


@pytest.mark.parametrize("args, blamed", [(("", ()), "name"), (("x", [bench.PCAw()]), "steps"), (("x", ("PCAw",)), "steps")])
def test_bad_variants_are_rejected(args, blamed):
    with pytest.raises(ValueError, match=blamed):
        bench.Variant(*args)


@pytest.mark.parametrize("make, blamed", [(lambda: bench.PCAw(dim=0), "dim"), (lambda: bench.AlphaQE(k=0), "k"),
                                          (lambda: bench.AlphaQE(alpha=-1.0), "alpha")])
def test_bad_step_parameters_are_rejected(make, blamed):
    with pytest.raises(ValueError, match=blamed):
        make()


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


@pytest.mark.parametrize("option, value, message", [("--method", "Foo", "methods must be"), ("--variant", "+DFS", "variants must be")])
def test_cli_unknown_name_exits_2(capsys, option, value, message):
    assert main(["bench", option, value]) == 2
    assert message in capsys.readouterr().err
