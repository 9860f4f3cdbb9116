"""The mini benchmark's *other collection*: views of photos that are not in it, to learn from.

Published pipelines learn their whitening on another collection than the one they test on:
Paris6k for Oxford5k (G. Tolias, R. Sicre and H. Jégou, "Particular object retrieval with integral
max-pooling of CNN activations", ICLR 2016, https://arxiv.org/abs/1511.05879), SfM-120k
(F. Radenović, G. Tolias and O. Chum, TPAMI 2018, https://arxiv.org/abs/1711.02512). For the mini
benchmark that collection is ``mini-other``: :data:`PHOTOS`, 29 photos of OpenCV's sample data,
none of them a mini object, each seen through :data:`WINDOWS` random windows (pseudo-objects,
30-80% of each side) and :data:`VIEWS` views of each, drawn exactly as the mini benchmark's database
views (warp, texture background, occluders, clutter, photometric changes; one in three strong) on
canvases :data:`SCALE` times the benchmark's (long side 192 px: about a third of the network time)::

    root/mini-other/jpg/<name>.jpg           29 * 17 * 4 = 1,972 views, no queries
    root/mini-other/gnd_mini-other.pkl       {"imlist", "qimlist": [], "gnd": [], "objects", "photos"}
    root/mini-other/meta.json                {"images", "seed", "version"}: the cache key

``objects[i]`` is view ``i``'s pseudo-object (``photo * WINDOWS + window``), ``photos`` the photo
names in :data:`PHOTOS` order. Each photo's views come from their own
``default_rng([seed, photo])``, so the set is the same whether drawn by one thread or several.

The photos: Debian's ``opencv-doc`` package ships them in :data:`DEBIAN_DIR` (used when a file
there has the pinned SHA256); elsewhere they are downloaded once from OpenCV's repository at tag
4.6.0 (:data:`OPENCV_URL`, 4.7 MB in all, hash-checked) into ``root/opencv-samples``.
"""
from __future__ import annotations

import concurrent.futures
import functools
import os
import pickle
from pathlib import Path
import numpy as np
import pooch
from PIL import Image

from . import download as dl
from . import mini

__all__ = ["PHOTOS", "OPENCV_URL", "DEBIAN_DIR", "WINDOWS", "VIEWS", "SCALE", "VERSION", "opencv_photos",
           "build_other"]

VERSION = 2  # of the generator: bumped whenever its output changes
WINDOWS, VIEWS, SCALE = 17, 4, 0.6
OPENCV_URL = "https://raw.githubusercontent.com/opencv/opencv/4.6.0/samples/data/"
DEBIAN_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
# name -> SHA256, of the files of Debian's opencv-doc 4.6.0+dfsg-12 (OpenCV's samples/data at 4.6.0)
PHOTOS = {
    "aero1.jpg": "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef",
    "aloeL.jpg": "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee",
    "apple.jpg": "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd",
    "baboon.jpg": "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f",
    "basketball1.png": "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
    "board.jpg": "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f",
    "box.png": "1094629c1e2ebbc8a9ae2c9c63e18c1dff0f5f1481146e02f3b11a3d30feb20a",
    "box_in_scene.png": "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51",
    "building.jpg": "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
    "butterfly.jpg": "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8",
    "chicky_512.png": "4d2cf040de084fd3f34d5e3f96f1251faaa4787c1ac3b548fec5809a0d01854e",
    "ela_original.jpg": "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f",
    "fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
    "graf1.png": "1504b769303c7bde00fa578eeaad3c68e02aceabeb1242e556f1f8d19e4bdea5",
    "home.jpg": "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2",
    "leuvenA.jpg": "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
    "licenseplate_motion.jpg": "ea6fa9cea75df91bec656d1d3b903111a9c0708c6a3b88f405a5156de38ff9d6",
    "messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
    "orange.jpg": "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079",
    "rubberwhale1.png": "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796",
    "smarties.png": "ad3f751c053fdcf432687c1bc0e56a61a9119d2bb2ae29365f8aa6534fc77417",
    "squirrel_cls.jpg": "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b",
    "starry_night.jpg": "accda7a19a90f22a4a922fdc8c230167d7abf5f80882171e2cee125c5f12481d",
    "stuff.jpg": "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5",
    "HappyFish.jpg": "ade5b67347d7f89b1539c93843f3f7178782a7e34eb1fe586f4a785c3e60a432",
    "ml.png": "b399decce0001d5077ac5822abbb3ea7f1fad492f0d42b3455dfce54fc6aa968",
    "Blender_Suzanne1.jpg": "bc3330e78e3456688e22b62fe033b8b2444fd016df567b1782bcc9baaead8e02",
    "sudoku.png": "000cf81b7ce795013ae02bc9dfb0952aa34153c8c0e7fc99c81918e0738d1f09",
    "cards.png": "3721e83d1d54b1c2867cc9924f06112dba28cb7a54149938ad065999dec39235",
}


def opencv_photos(root: str | os.PathLike, progress: bool = True) -> dict[str, Path]:
    """The path of each photo of :data:`PHOTOS`: Debian's copy in :data:`DEBIAN_DIR` when its SHA256
    matches, else ``root/opencv-samples/<name>``, downloaded from :data:`OPENCV_URL` if missing
    (:func:`retrievalkit.datasets.download.fetch`: atomic, hash-checked)."""
    out = {}
    for name, sha in PHOTOS.items():
        system = DEBIAN_DIR / name
        if system.is_file() and pooch.file_hash(str(system)) == sha:
            out[name] = system
        else:
            out[name] = dl.fetch(OPENCV_URL + name, Path(root) / "opencv-samples" / name, f"sha256:{sha}",
                                 progress=progress)
    return out


def build_other(root: str | os.PathLike, seed: int = 0, windows: int | None = None, views: int | None = None,
                workers: int | None = None) -> Path:
    """Write the other collection to ``root/mini-other`` (module docstring) and return that path.

    A set already there with the same ``seed``, ``windows``, ``views`` and :data:`VERSION` is
    returned as it is; the build is atomic as :func:`retrievalkit.datasets.mini.build_mini`'s.
    ``windows`` and ``views`` default to :data:`WINDOWS` and :data:`VIEWS`; ``workers`` drawing
    threads (default: the CPUs, at most 4); the files do not depend on it.
    """
    windows = WINDOWS if windows is None else windows
    views = VIEWS if views is None else views
    for value, name, low in ((seed, "seed", 0), (windows, "windows", 1), (views, "views", 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    root = Path(root)
    key = {"seed": int(seed), "version": VERSION, "windows": int(windows), "views": int(views)}
    return mini.build_atomically(root, "mini-other", key, lambda out: _build(out, key, root, workers))


def _build(out: Path, key: dict[str, int], root: Path, workers: int) -> int:
    """Draw the set into ``out``; the photos are found (or downloaded) only now, when a build is needed, and a
    failed download leaves nothing behind (``out`` is a temporary folder)."""
    paths = opencv_photos(root)
    (out / "jpg").mkdir()
    jobs = [(out / "jpg", key, p, str(paths[name])) for p, name in enumerate(PHOTOS)]
    _texture_photos()  # loaded once, before the threads share it
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:  # PIL's warps and JPEG coding release the GIL
        names = list(ex.map(_draw_photo, *zip(*jobs)))
    imlist = [n for photo in names for n in photo]
    data = {"imlist": imlist, "qimlist": [], "gnd": [],
            "objects": [p * key["windows"] + w for p in range(len(PHOTOS)) for w in range(key["windows"])
                        for _ in range(key["views"])],
            "photos": list(PHOTOS)}
    with open(out / "gnd_mini-other.pkl", "wb") as f:
        pickle.dump(data, f, protocol=mini.PICKLE_PROTOCOL)
    return len(imlist)


def _draw_photo(folder: Path, key: dict[str, int], p: int, path: str) -> list[str]:
    """Draw and save the views of photo ``p``; return their names."""
    rng = np.random.default_rng([key["seed"], p])
    photos = dict(_texture_photos())
    name = f"opencv_{p:02d}"
    with Image.open(path) as im:
        photos[name] = im.convert("RGB")
    pool = [(t, (0.0, 0.0, 1.0, 1.0)) for t in photos if t != name]
    saved = []
    for w in range(key["windows"]):
        fw, fh = rng.uniform(0.3, 0.8, 2)
        x, y = rng.uniform(0, 1 - fw), rng.uniform(0, 1 - fh)
        for v in range(key["views"]):
            level = "strong" if rng.random() < 1 / 3 else "mild"
            size = tuple(round(SCALE * s) for s in mini.CANVASES[int(rng.integers(len(mini.CANVASES)))])
            img = mini._view(rng, photos, pool, name, (x, y, x + fw, y + fh), mini._params(rng, level), size)[0]
            saved.append(f"{name}_w{w:02d}_v{v}")
            mini.save_jpeg(img, folder / f"{saved[-1]}.jpg")
    return saved


@functools.lru_cache(maxsize=1)
def _texture_photos() -> dict[str, Image.Image]:
    """The mini benchmark's textures and training photos (backgrounds, occluders and clutter here), loaded once."""
    photos = mini.load_photos()
    return {t: photos[t] for t in mini.TEXTURES + mini.TRAINING_PHOTOS}
