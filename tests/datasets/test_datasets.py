"""Dataset loaders on hand-made fixtures of each real format, in tmp folders with tiny JPEGs
written here; downloads only from the loopback server of conftest.py."""
import io
import json
import pickle
import shutil
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests
from PIL import Image

from retrievalkit import datasets as DS
from retrievalkit.datasets import download as D
from retrievalkit.evaluate import evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _jpeg_bytes(size=(16, 12)):
    """A gradient: red = 15 x, green = 15 y, so a crop's corner tells where it was cut."""
    w, h = size
    y, x = np.mgrid[:h, :w]
    rgb = np.stack([15 * x, 15 * y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=100, subsampling=0)
    return buf.getvalue()


def _images(folder, names, size=(16, 12)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / f"{n}.jpg").write_bytes(_jpeg_bytes(size))


def _targz(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path.read_bytes()


OXFORD_IMAGES = ["all_souls_000013", "all_souls_000026", "all_souls_000040", "all_souls_000051",
                 "christ_church_000179", "radcliffe_camera_000095", "radcliffe_camera_000519",
                 "radcliffe_camera_000523"]  # already sorted: indices 0..7


def test_read_oxford_gt_fixture():
    qimlist, gnd = DS.read_oxford_gt(FIXTURES / "oxford_gt")
    assert qimlist == ["all_souls_000013", "radcliffe_camera_000519"]  # oxc1_ stripped
    assert gnd == [
        {"bbx": [2.0, 3.0, 10.0, 9.0], "good": ["all_souls_000013", "all_souls_000026"],  # repeat dropped
         "ok": ["all_souls_000026", "all_souls_000051"], "junk": ["all_souls_000040"]},
        {"bbx": [1.0, 1.0, 7.0, 5.0], "good": ["radcliffe_camera_000519", "radcliffe_camera_000523"],
         "ok": [], "junk": ["radcliffe_camera_000095"]},  # blank line skipped
    ]
    with pytest.raises(FileNotFoundError, match="query"):
        DS.read_oxford_gt(FIXTURES)


def test_load_oxford5k_from_gt_files(tmp_path):
    _images(tmp_path / "oxford5k" / "jpg", OXFORD_IMAGES)
    shutil.copytree(FIXTURES / "oxford_gt", tmp_path / "oxford5k" / "gt_files")
    ds = DS.load("oxford5k", root=tmp_path)
    assert ds.imlist == OXFORD_IMAGES and ds.qimlist == ["all_souls_000013", "radcliffe_camera_000519"]
    # ok = good ∪ ok as sets, indices into imlist; the query image stays in the database
    assert ds.gnd == [{"ok": [0, 1, 3], "junk": [2], "bbx": [2.0, 3.0, 10.0, 9.0]},
                      {"ok": [6, 7], "junk": [5], "bbx": [1.0, 1.0, 7.0, 5.0]}]
    assert ds.images == [tmp_path / "oxford5k" / "jpg" / f"{n}.jpg" for n in OXFORD_IMAGES]
    assert ds.queries == [ds.images[0], ds.images[6]] and ds.root == tmp_path / "oxford5k"
    # x1 y1 x2 y2, not x y w h: an 8 x 6 crop whose corner is pixel (2, 3)
    crop = ds.query_image(0)
    assert crop.size == (10 - 2, 9 - 3) and crop.mode == "RGB"
    assert np.allclose(np.asarray(crop)[0, 0, :2], [15 * 2, 15 * 3], atol=6)
    assert ds.query_image(1).size == (6, 4) and ds.bbx(1) == [1.0, 1.0, 7.0, 5.0]
    # the pickle written is the cirtorch one, and the protocol is the original one
    with open(tmp_path / "oxford5k" / "gnd_oxford5k.pkl", "rb") as f:
        assert pickle.load(f) == {"imlist": ds.imlist, "qimlist": ds.qimlist, "gnd": ds.gnd}
    perfect = np.array([[0, 1, 3, 2, 4, 5, 6, 7], [6, 7, 5, 0, 1, 2, 3, 4]])
    assert evaluate(perfect, ds)["original"]["mAP"] == 100.0
    assert len(ds) == 8 and repr(ds) == f"Dataset('oxford5k', 8 images, 2 queries, root='{tmp_path / 'oxford5k'}')"


def test_oxford_ground_truth_naming_absent_images_warns(tmp_path):
    _images(tmp_path / "oxford5k" / "jpg", [n for n in OXFORD_IMAGES if n != "all_souls_000051"])
    shutil.copytree(FIXTURES / "oxford_gt", tmp_path / "oxford5k" / "gt_files")
    with pytest.warns(UserWarning, match="all_souls_000051"):
        ds = DS.load("oxford5k", root=tmp_path)
    assert ds.gnd[0]["ok"] == [0, 1]
    (tmp_path / "oxford5k" / "gnd_oxford5k.pkl").unlink()
    (tmp_path / "oxford5k" / "jpg" / "all_souls_000013.jpg").unlink()  # a query image
    with pytest.raises(DS.DatasetNotFoundError, match="all_souls_000013"):
        DS.load("oxford5k", root=tmp_path)


PARIS_1 = ["paris/defense/paris_defense_000605.jpg", "paris/defense/paris_defense_000041.jpg",
           "paris/general/paris_general_000001.jpg"]
PARIS_2 = ["paris/pantheon/paris_pantheon_000466.jpg", "paris/pantheon/paris_pantheon_000547.jpg"]


def _serve_paris(server, monkeypatch, tmp_path):
    tmp_path.mkdir()
    server.files["paris_1-v1.tgz"] = _targz(tmp_path / "p1.tgz", {n: _jpeg_bytes() for n in PARIS_1})
    members = {n: _jpeg_bytes() for n in PARIS_2}
    members["paris/pantheon/paris_pantheon_000284.jpg"] = b"\xff\xd8 truncated"  # one of the 20 corrupt
    server.files["paris_2-v1.tgz"] = _targz(tmp_path / "p2.tgz", members)
    gt = {f"paris_120310/{p.name}": p.read_bytes() for p in (FIXTURES / "paris_gt").iterdir()}
    server.files["paris_120310.tgz"] = _targz(tmp_path / "gt.tgz", gt)
    for f in ("paris_1-v1.tgz", "paris_2-v1.tgz", "paris_120310.tgz"):
        monkeypatch.setitem(D.REGISTRY, f, D.Remote(server.url(f)))


def test_paris6k_download_flattens_the_tree_and_drops_corrupt_images(server, monkeypatch, tmp_path):
    _serve_paris(server, monkeypatch, tmp_path / "src")
    root = tmp_path / "data"
    with pytest.raises(DS.DatasetNotFoundError):
        DS.load("paris6k", root=root)
    ds = DS.load("paris6k", root=root, download=True)
    assert ds.imlist == ["paris_defense_000041", "paris_defense_000605", "paris_general_000001",
                         "paris_pantheon_000466", "paris_pantheon_000547"]
    assert ds.qimlist == ["paris_defense_000605", "paris_pantheon_000466"]
    # pantheon_000284 (good) and pantheon_000960 (junk) are corrupt: out of the ground truth
    assert ds.gnd == [{"ok": [0, 1], "junk": [], "bbx": [0.0, 0.0, 8.0, 6.0]},
                      {"ok": [3, 4], "junk": [], "bbx": [2.0, 2.0, 12.0, 10.0]}]
    assert ds.query_image(1).size == (10, 8)
    jpg = sorted(p.name for p in (root / "paris6k" / "jpg").iterdir())
    assert jpg == sorted([Path(n).name for n in PARIS_1 + PARIS_2] + ["paris_pantheon_000284.jpg"])
    # archives deleted once unpacked, no staging or marker left, first-seen hashes recorded
    assert sorted(p.name for p in (root / "paris6k").iterdir()) == ["gnd_paris6k.pkl", "gt_files", "jpg"]
    assert list((root / "downloads").iterdir()) == []
    assert sorted(json.loads((root / "hashes.json").read_text())) == sorted(
        server.url(f) for f in ("paris_1-v1.tgz", "paris_2-v1.tgz", "paris_120310.tgz"))
    n = len(server.seen)
    assert DS.load("paris6k", root=root, download=True).gnd == ds.gnd and len(server.seen) == n


def test_interrupted_dataset_download_is_not_loaded_and_resumes(server, monkeypatch, tmp_path):
    _serve_paris(server, monkeypatch, tmp_path / "src")
    del server.files["paris_2-v1.tgz"]  # the second archive fails: 404
    root = tmp_path / "data"
    with pytest.raises(requests.HTTPError, match="404"):
        DS.load("paris6k", root=root, download=True)
    with pytest.raises(DS.DatasetNotFoundError, match="did not finish"):
        DS.load("paris6k", root=root)
    _serve_paris(server, monkeypatch, tmp_path / "src2")
    n = len(server.seen)
    assert len(DS.load("paris6k", root=root, download=True)) == 5
    assert [p for p, _ in server.seen[n:]] == ["/paris_2-v1.tgz", "/paris_120310.tgz"]  # paris_1 not again


def _revisitop(path, imlist, qimlist, gnd, numpy1=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, protocol=2)
    if numpy1:  # as a pickle written with NumPy 1 names its array constructor
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def test_roxford5k_reads_revisitop_pickle_and_oxford_images(tmp_path):
    _images(tmp_path / "oxford5k" / "jpg", OXFORD_IMAGES)
    # queries are not in imlist; revisitop stores numpy arrays
    _revisitop(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", OXFORD_IMAGES[1:6], ["all_souls_000013"],
               [{"bbx": np.array([1.0, 2.0, 9.0, 8.0]), "easy": np.array([0, 2]), "hard": [1], "junk": [3]}],
               numpy1=True)
    ds = DS.load("roxford5k", root=tmp_path)
    assert ds.image_dir == tmp_path / "oxford5k" / "jpg" and ds.root == tmp_path / "roxford5k"
    assert ds.queries == [tmp_path / "oxford5k" / "jpg" / "all_souls_000013.jpg"]
    assert ds.images[0] == tmp_path / "oxford5k" / "jpg" / "all_souls_000026.jpg" and len(ds) == 5
    assert ds.bbx(0) == [1.0, 2.0, 9.0, 8.0] and ds.query_image(0).size == (8, 6)
    scores = evaluate(np.array([[1, 4, 0, 2, 3]]), ds)
    assert set(scores) == {"easy", "medium", "hard"} and scores["hard"]["mAP"] == 100.0


def test_rparis6k_with_its_own_jpg_folder_cirtorch_layout(tmp_path):
    _images(tmp_path / "rparis6k" / "jpg", ["paris_defense_000041", "paris_defense_000605"])
    _revisitop(tmp_path / "rparis6k" / "gnd_rparis6k.pkl", ["paris_defense_000041"], ["paris_defense_000605"],
               [{"bbx": [0, 0, 4, 4], "easy": [0], "hard": [], "junk": []}])
    ds = DS.load("rparis6k", root=tmp_path)
    assert ds.image_dir == tmp_path / "rparis6k" / "jpg" and ds.query_image(0).size == (4, 4)


def test_roxford5k_download_fetches_the_oxford_images_too(server, monkeypatch, tmp_path):
    gnd = [{"bbx": [2, 3, 10, 9], "easy": [0], "hard": [1], "junk": []}]
    server.files["gnd_roxford5k.pkl"] = pickle.dumps({"imlist": OXFORD_IMAGES[1:3], "qimlist": OXFORD_IMAGES[:1],
                                                      "gnd": gnd})
    gt = {p.name: p.read_bytes() for p in (FIXTURES / "oxford_gt").iterdir()}
    server.files["gt_files_170407.tgz"] = _targz(tmp_path / "gt.tgz", gt)
    for f in ("gnd_roxford5k.pkl", "gt_files_170407.tgz", "oxbuild_images-v1.tgz"):
        monkeypatch.setitem(D.REGISTRY, f, D.Remote(server.url(f)))
    root = tmp_path / "data"
    with pytest.raises(requests.HTTPError, match="404"):  # the image archive is not served yet
        DS.load("roxford5k", root=root, download=True)
    with pytest.raises(DS.DatasetNotFoundError, match=f"download into {root / 'oxford5k'} did not finish"):
        DS.load("roxford5k", root=root)
    server.files["oxbuild_images-v1.tgz"] = _targz(tmp_path / "ox.tgz", {f"{n}.jpg": _jpeg_bytes() for n in OXFORD_IMAGES})
    ds = DS.load("roxford5k", root=root, download=True)
    assert ds.gnd == gnd and ds.image_dir == root / "oxford5k" / "jpg" and ds.query_image(0).size == (8, 6)
    assert sorted(p.name for p in root.iterdir()) == ["downloads", "hashes.json", "oxford5k", "roxford5k"]
    assert sorted(p.name for p in (root / "roxford5k").iterdir()) == ["gnd_roxford5k.pkl"]
    assert len(DS.load("oxford5k", root=root)) == 8


def test_archive_with_two_images_of_one_name_is_refused(server, monkeypatch, tmp_path):
    server.files["jpg1.tar.gz"] = _targz(tmp_path / "h.tgz", {"a/100000.jpg": _jpeg_bytes(), "b/100000.jpg": b"x"})
    monkeypatch.setitem(D.REGISTRY, "jpg1.tar.gz", D.Remote(server.url("jpg1.tar.gz")))
    with pytest.raises(ValueError, match="two files named 100000.jpg"):
        DS.load("holidays", root=tmp_path, download=True)


class _Evil:
    def __reduce__(self):
        import os
        return (os.getcwd, ())


def test_pickle_with_code_is_refused(tmp_path):
    _images(tmp_path / "oxford5k" / "jpg", OXFORD_IMAGES)
    _revisitop(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", OXFORD_IMAGES, [], [_Evil()])
    with pytest.raises(pickle.UnpicklingError, match="getcwd"):
        DS.load("roxford5k", root=tmp_path)


def test_holidays_by_image_number(tmp_path):
    names = ["100000", "100001", "100002", "100100", "100101", "100200"]
    _images(tmp_path / "holidays" / "jpg", names[::-1], size=(20, 10))
    ds = DS.load("holidays", root=tmp_path)
    assert ds.imlist == names and ds.qimlist == ["100000", "100100", "100200"]
    # positives: the rest of the group imno // 100; the query stays in the database as its own junk
    assert ds.gnd == [{"ok": [1, 2], "junk": [0]}, {"ok": [4], "junk": [3]}, {"ok": [], "junk": [5]}]
    assert ds.bbx(0) is None and ds.query_image(2).size == (20, 10)
    (tmp_path / "holidays" / "gnd_holidays.pkl").unlink()
    _images(tmp_path / "holidays" / "jpg", ["IMG_1"])
    with pytest.raises(ValueError, match="6 digits"):
        DS.load("holidays", root=tmp_path)


def test_ukbench_groups_of_four(tmp_path):
    _images(tmp_path / "ukbench" / "jpg", [f"ukbench{i:05d}" for i in range(8)])
    ds = DS.load("ukbench", root=tmp_path)
    assert ds.qimlist == ds.imlist == [f"ukbench{i:05d}" for i in range(8)]
    assert ds.gnd == [{"ok": [0, 1, 2, 3], "junk": []}] * 4 + [{"ok": [4, 5, 6, 7], "junk": []}] * 4
    perfect = np.array([[*range(4 * g, 4 * g + 4), *range(4 - 4 * g, 8 - 4 * g)] for g in (0, 0, 0, 0, 1, 1, 1, 1)])
    assert evaluate(perfect, ds) == {"ukbench": {"N-S": 4.0}}
    (tmp_path / "ukbench" / "gnd_ukbench.pkl").unlink()
    (tmp_path / "ukbench" / "jpg" / "ukbench00005.jpg").unlink()
    with pytest.raises(ValueError, match="groups of 4"):
        DS.load("ukbench", root=tmp_path)


def test_ukbench_download_keeps_full_size_images_only(server, monkeypatch, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4):
            zf.writestr(f"full/ukbench{i:05d}.jpg", _jpeg_bytes((32, 24)))
            zf.writestr(f"thumbnails/ukbench{i:05d}.jpg", _jpeg_bytes((8, 6)))
        zf.writestr("index.html", "<html></html>")
    server.files["ukbench.zip"] = buf.getvalue()
    monkeypatch.setitem(D.REGISTRY, "ukbench.zip", D.Remote(server.url("ukbench.zip")))
    ds = DS.load("ukbench", root=tmp_path, download=True)
    assert len(ds) == 4
    for p in ds.images:
        with Image.open(p) as im:
            assert im.size == (32, 24)
    assert sorted(p.name for p in (tmp_path / "ukbench" / "jpg").iterdir()) == [f"ukbench{i:05d}.jpg" for i in range(4)]


def test_missing_dataset_says_what_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(DS.DatasetNotFoundError) as e:
        DS.load("oxford5k", root=tmp_path)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert f'retrievalkit.datasets.load("oxford5k", root={str(tmp_path)!r}, download=True)' in msg
    assert str(tmp_path / "oxford5k" / "jpg") in msg and str(tmp_path / "oxford5k" / "gt_files") in msg
    assert "about 1.9 GB plus gt_files_170407.tgz of unknown size" in msg
    assert D.REGISTRY["oxbuild_images-v1.tgz"].url in msg
    # no root given: the call to copy has none either; rOxford also needs the Oxford images
    monkeypatch.setenv("RETRIEVALKIT_DATA", str(tmp_path))
    with pytest.raises(DS.DatasetNotFoundError) as e:
        DS.load("roxford5k")
    msg = str(e.value)
    assert 'retrievalkit.datasets.load("roxford5k", download=True)' in msg
    assert str(tmp_path / "roxford5k" / "gnd_roxford5k.pkl") in msg and D.REGISTRY["gnd_roxford5k.pkl"].url in msg
    assert D.REGISTRY["oxbuild_images-v1.tgz"].url in msg
    # images listed in the pickle but not on disk
    _images(tmp_path / "holidays" / "jpg", ["100000"])
    _revisitop(tmp_path / "holidays" / "gnd_holidays.pkl", ["100000", "100001"], ["100000"], [{"ok": [1]}])
    with pytest.raises(DS.DatasetNotFoundError, match="1 images .*100001.jpg"):
        DS.load("holidays")


def test_names_root_and_indices_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="name must be one of mini, mini-other, oxford5k, .*ukbench"):
        DS.load("oxford105k", root=tmp_path)
    assert DS.resolve_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("RETRIEVALKIT_DATA", str(tmp_path / "env"))
    assert DS.resolve_root() == tmp_path / "env"
    monkeypatch.delenv("RETRIEVALKIT_DATA")
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(DS.loading, "__file__", str(checkout / "retrievalkit" / "datasets" / "loading.py"))
    assert DS.resolve_root() == Path(pooch.os_cache("retrievalkit"))  # an installed package
    (checkout / "data").mkdir(parents=True)
    assert DS.resolve_root() == checkout / "data" / "cache"  # the course checkout
    _images(tmp_path / "ukbench" / "jpg", [f"ukbench{i:05d}" for i in range(4)])
    ds = DS.load("ukbench", root=tmp_path)
    for bad in (4, -1, 1.0, True):
        with pytest.raises(ValueError, match="i must be a query index"):
            ds.query_image(bad)


def test_mini_is_loaded_through_build_mini(tmp_path, monkeypatch):
    # build_mini itself returns the cached set at once (test_mini.py); load always asks it,
    # so a set of an older generator version is rebuilt
    calls = []

    def fake_build_mini(root, seed=0):
        calls.append((root, seed))
        _images(root / "mini" / "jpg", ["a", "b"])
        _revisitop(root / "mini" / "gnd_mini.pkl", ["a", "b"], ["a"], [{"ok": [1], "junk": [0], "bbx": [0, 0, 5, 5]}])
        return root / "mini"

    monkeypatch.setitem(sys.modules, "retrievalkit.datasets.mini", types.SimpleNamespace(build_mini=fake_build_mini))
    ds = DS.load("mini", root=tmp_path)  # download=False: built offline anyway
    assert calls == [(tmp_path, 0)] and ds.imlist == ["a", "b"] and ds.query_image(0).size == (5, 5)
    DS.load("mini", root=tmp_path)
    assert calls == [(tmp_path, 0)] * 2
    assert DS.build_mini(tmp_path, seed=3) == tmp_path / "mini" and calls[-1] == (tmp_path, 3)


def test_subset_renumbers_the_ground_truth():
    from retrievalkit.datasets import Dataset

    ds = Dataset("toy", Path("/x"), [f"im{i}" for i in range(6)], ["q0", "q1"],
                 [{"bbx": [0, 0, 1, 1], "easy": [1, 4], "hard": [5], "junk": [2]}, {"easy": [0], "hard": [], "junk": []}],
                 Path("/x/jpg"))
    sub = ds.subset([0], [4, 2, 3])
    assert sub.imlist == ["im4", "im2", "im3"] and sub.qimlist == ["q0"]
    assert sub.gnd == [{"bbx": [0, 0, 1, 1], "easy": [0], "hard": [], "junk": [1]}]
    assert sub.images[0] == Path("/x/jpg/im4.jpg")
    with pytest.raises(ValueError, match="queries and images"):
        ds.subset([5], [0])


def test_split_lists_the_images_of_a_split(tmp_path):
    _images(tmp_path / "mini" / "jpg", ["a", "b", "c"])
    ds = DS.Dataset("mini", tmp_path / "mini", ["a", "b", "c"], [], [], tmp_path / "mini" / "jpg",
                    {"split": ["test", "train", "train"]})
    assert ds.split("train") == [1, 2] and ds.split("test") == [0]
    with pytest.raises(ValueError, match=r"name must be one of \['test', 'train'\], got 'val'"):
        ds.split("val")
    with pytest.raises(ValueError, match="has no train / test split"):
        DS.Dataset("x", tmp_path, ["a"], [], [], tmp_path / "mini" / "jpg").split("train")
