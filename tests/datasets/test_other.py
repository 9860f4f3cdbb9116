"""The mini benchmark's other collection (``mini-other``): where its photos come from (Debian's
copies when their hashes match, else a hash-checked download, here from the loopback server of
conftest.py), and the collection itself: layout, labels, determinism whatever the number of drawing
threads, reuse, atomicity, and maps extracted without queries."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

import retrievalkit as rk
from retrievalkit.datasets import download as D
from retrievalkit.datasets import other


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(buf, "JPEG")
    return buf.getvalue()


FILES = {"a.jpg": _jpeg((200, 30, 30)), "b.jpg": _jpeg((30, 200, 30))}
HASHES = {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}


@pytest.fixture
def photos(monkeypatch, tmp_path, server):
    """Two small photos in place of OpenCV's, served on 127.0.0.1; no Debian folder."""
    server.files.update({f"opencv/{name}": data for name, data in FILES.items()})
    monkeypatch.setattr(other, "PHOTOS", dict(HASHES))
    monkeypatch.setattr(other, "OPENCV_URL", server.url("opencv/"))
    monkeypatch.setattr(other, "DEBIAN_DIR", tmp_path / "no-debian")
    return server


def test_photos_are_downloaded_hash_checked_when_debian_has_none(photos, tmp_path):
    paths = other.opencv_photos(tmp_path / "root", progress=False)
    assert paths == {name: tmp_path / "root" / "opencv-samples" / name for name in FILES}
    assert all(paths[name].read_bytes() == data for name, data in FILES.items())
    n = len(photos.seen)
    assert other.opencv_photos(tmp_path / "root", progress=False) == paths and len(photos.seen) == n  # once


def test_debian_copies_are_used_only_when_their_hash_matches(photos, tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    (debian / "a.jpg").write_bytes(FILES["a.jpg"])
    (debian / "b.jpg").write_bytes(FILES["a.jpg"])  # another file under b's name: not used
    monkeypatch.setattr(other, "DEBIAN_DIR", debian)
    paths = other.opencv_photos(tmp_path / "root", progress=False)
    assert paths["a.jpg"] == debian / "a.jpg"
    assert paths["b.jpg"] == tmp_path / "root" / "opencv-samples" / "b.jpg" and paths["b.jpg"].read_bytes() == FILES["b.jpg"]
    assert [p for p, _ in photos.seen] == ["/opencv/b.jpg"]


def test_a_wrong_download_leaves_no_file_and_no_collection(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(other, "PHOTOS", {**HASHES, "b.jpg": "0" * 64})
    with pytest.raises(D.ChecksumError, match="b.jpg"):
        other.build_other(tmp_path / "root", windows=1, views=2, workers=1)
    assert not (tmp_path / "root" / "opencv-samples" / "b.jpg").exists()
    assert not (tmp_path / "root" / "mini-other").exists()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The collection from the real OpenCV photos (Debian's opencv-doc, else downloaded), 1 window, 2 views."""
    if not all((other.DEBIAN_DIR / name).is_file() for name in other.PHOTOS):
        pytest.fail("Debian's opencv-doc is not installed (course.py test installs it as root; "
                    "`apt-get install opencv-doc`): the tests never download")
    return other.build_other(tmp_path_factory.mktemp("cache"), windows=1, views=2, workers=1)


def test_layout_labels_and_sizes(small):
    with open(small / "gnd_mini-other.pkl", "rb") as f:
        gnd = pickle.load(f)
    n = len(other.PHOTOS)
    assert gnd["qimlist"] == [] and gnd["gnd"] == [] and gnd["photos"] == list(other.PHOTOS)
    assert len(gnd["imlist"]) == 2 * n and gnd["objects"] == [i // 2 for i in range(2 * n)]
    assert gnd["imlist"][:2] == ["opencv_00_w00_v0", "opencv_00_w00_v1"]
    assert json.loads((small / "meta.json").read_text()) == {"images": 2 * n, "seed": 0, "version": other.VERSION,
                                                            "windows": 1, "views": 2}
    for name in gnd["imlist"]:
        with Image.open(small / "jpg" / f"{name}.jpg") as im:
            assert im.format == "JPEG" and max(im.size) == 192  # 0.6 times the mini benchmark's 320


def test_one_thread_or_two_give_the_same_files_and_a_built_set_is_reused(small, tmp_path, monkeypatch):
    two = other.build_other(tmp_path, windows=1, views=2, workers=2)
    assert _files(two) == _files(small)
    monkeypatch.setattr(other, "_build", lambda *a: pytest.fail("rebuilt a complete set"))
    assert other.build_other(tmp_path, windows=1, views=2) == two


def test_another_seed_draws_other_views(small, tmp_path):
    seed1 = other.build_other(tmp_path, seed=1, windows=1, views=2, workers=1)
    a, b = _files(small), _files(seed1)
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert a.keys() == b.keys() and len(jpgs) == 2 * len(other.PHOTOS) and all(a[k] != b[k] for k in jpgs)


def test_load_and_maps_without_queries(small, monkeypatch):
    monkeypatch.setattr(other, "WINDOWS", 1)
    monkeypatch.setattr(other, "VIEWS", 2)
    ds = rk.datasets.load("mini-other", root=small.parent)
    assert ds.name == "mini-other" and len(ds) == 2 * len(other.PHOTOS) and ds.queries == []
    net = rk.models.backbone()
    qmaps, xmaps = rk.extract.dataset_maps(net, ds, cache=None, progress=False, num_workers=0)
    assert qmaps == [] and len(xmaps) == len(ds) and xmaps[0].shape[0] == 1280


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"windows": 0}, {"views": 1}, {"workers": 0}, {"seed": True}])
def test_bad_arguments_name_themselves(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        other.build_other(tmp_path, **kwargs)
    assert not (tmp_path / "mini-other").exists()


def test_a_built_set_is_loaded_without_looking_for_the_photos(small, monkeypatch):
    monkeypatch.setattr(other, "opencv_photos", lambda *a, **k: pytest.fail("looked for the photos of a built set"))
    assert other.build_other(small.parent, windows=1, views=2) == small
