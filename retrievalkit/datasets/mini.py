"""The offline mini benchmark: a few freely licensed real photos seen through viewpoint-like changes.

``build_mini(root, seed)`` writes ``root/mini/`` in the on-disk format of the revisited Oxford /
Paris benchmarks (revisitop, cirtorch), so loaders, metric and notebooks run one code path::

    root/mini/jpg/<name>.jpg   162 database and 32 query images, long side 320 px
    root/mini/gnd_mini.pkl     the ground truth (below)
    root/mini/meta.json        {"images", "seed", "version"}: the cache key

Photos (``data/SOURCES.md``: origin and licence of each): ``skimage.data``, matplotlib's
``grace_hopper.jpg`` and scikit-learn's ``china.jpg`` / ``flower.jpg``. Eight *test objects*
have queries: astronaut, chelsea (cat), coffee, rocket, grace_hopper, motorcycle (a real stereo
pair: queries come from the left view; views of the right image are always at least hard),
camera, china (a pagoda). Four *training objects* (coins, flower, retina, clock) have database
images and no queries. Textures and unrelated images (brick, grass, gravel, moon, cell, page,
text, horse, colorwheel, logo, hubble_deep_field, immunohistochemistry) are only backgrounds,
clutter, occluders and distractors.

A database view of an object is one projective warp of a window around it (crop, scale,
rotation, perspective) pasted on a background, then occluders, clutter around it, gamma /
contrast / colour cast, a light gradient, Gaussian blur and a JPEG round trip. Each test object
has 4 mild views, 7 strong ones (two changes pushed past the thresholds below: occlusion, small
and off-centre, a zoomed-in detail, perspective, rotation, photometric, a cut-off part) and 2
extreme ones (tiny or mostly hidden); the motorcycle has 9 of the left image and 4 of the right.
Training objects have 6 views. Distractors: 2 views of the widest strip of a test photo beside
its object (when at least 19% of the photo: the same scene without the object), and 24 of
backgrounds and clutter only. A view's label, the same for every query of its object, follows
from what was measured on it (``area``: visible object pixels / image pixels; ``visible``:
visible object pixels / the whole projected object, so cut-offs, borders and occluders count):

- junk: ``area < JUNK_AREA``, or ``visible < JUNK_VISIBLE`` unless ``area >= DETAIL_AREA``
  (a close-up detail filling half the picture is hard, not junk);
- hard: otherwise, if ``visible < HARD_VISIBLE``, ``area < HARD_AREA``, ``|rotation| >
  HARD_ROTATION`` degrees, ``perspective > HARD_PERSPECTIVE``, ``blur > HARD_BLUR`` (Gaussian
  sigma, px), ``jpeg < HARD_JPEG`` (quality), ``gamma`` outside ``HARD_GAMMA``, ``light >
  HARD_LIGHT`` (amplitude of the light gradient), or the view shows the other stereo image;
- easy: everything else.

Queries (revisitop style: not in the database) are full images with ``bbx`` around the object:
per test object its source photo and three mild views. Split: the training objects' views and 10
of the synthetic distractors are ``"train"``, the only images a fine-tuning run may use (their
backgrounds and clutter are textures only); everything else is ``"test"`` (backgrounds and
clutter there may also show the training objects and the test photos' context strips, never a
test object). Evaluation always ranks the whole database.

``gnd_mini.pkl`` (pickle protocol 4, plain Python types only):

- ``imlist``, ``qimlist``: image names without extension (``jpg/<name>.jpg``), the database in
  a random order;
- ``gnd``: per query ``{"bbx": [x1, y1, x2, y2], "easy", "hard", "junk"}``, 0-based indices into
  ``imlist``; ``bbx`` in pixels of the query image, a PIL crop box (right and bottom exclusive);
- ``gnd_original``: the same queries in the original protocol, ``{"bbx", "ok": easy + hard, "junk"}``;
- ``objects``: per database image its object (index into ``object_names``), -1 for a distractor;
  ``qobjects``: per query its object; ``object_names``: the twelve names, test objects first;
- ``split``: per database image ``"train"`` or ``"test"``;
- ``views``: per database image what was measured and done (``area``, ``visible``, ``rotation``,
  ``perspective``, ``blur``, ``jpeg``, ``gamma``, ``light``, ``other_view``), ``None`` for a
  distractor; the labels are computed from these stored (rounded) values.

Everything random comes from ``numpy.random.default_rng(seed)``; images are saved by PIL at a
fixed JPEG quality with no metadata, so one seed gives byte-identical files (with the same
library versions). About 3 MB, built in about 5 s.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from .drawing import (
    Photos,
    Pool,
    apply,
    background,
    clutter,
    corners,
    finish,
    homography,
    occlude,
    polygon_mask,
    shoelace,
    warp,
)

__all__ = ["build_mini", "training_views", "VERSION", "OBJECT_NAMES"]

VERSION = 2  # of the generator: bumped whenever its output changes, so that cached sets are rebuilt
LONG_SIDE = 320
JPEG_QUALITY = 90
PICKLE_PROTOCOL = 4
CANVASES = ((320, 256), (256, 320), (320, 224), (320, 288))  # (width, height) of database images

JUNK_AREA, JUNK_VISIBLE, DETAIL_AREA = 0.05, 0.30, 0.5
HARD_AREA, HARD_VISIBLE = 0.15, 0.60
HARD_ROTATION, HARD_PERSPECTIVE, HARD_BLUR, HARD_JPEG = 20.0, 0.15, 2.0, 20
HARD_GAMMA, HARD_LIGHT = (0.6, 1.6), 0.5

# name, split, [(source, object box as fractions x1, y1, x2, y2 of the source)]; later sources
# are other genuine viewpoints (the right stereo image: disparity about 45 of 741 px)
_OBJECTS = (
    ("astronaut", "test", [("astronaut", (0.02, 0.02, 0.70, 1.0))]),
    ("chelsea", "test", [("chelsea", (0.04, 0.0, 0.91, 1.0))]),
    ("coffee", "test", [("coffee", (0.125, 0.04, 0.80, 0.975))]),
    ("rocket", "test", [("rocket", (0.26, 0.28, 0.75, 1.0))]),
    ("grace_hopper", "test", [("grace_hopper", (0.06, 0.03, 1.0, 1.0))]),
    ("motorcycle", "test", [("motorcycle_left", (0.12, 0.15, 0.93, 0.91)),
                            ("motorcycle_right", (0.06, 0.15, 0.87, 0.91))]),
    ("camera", "test", [("camera", (0.0, 0.12, 0.80, 1.0))]),
    ("china", "test", [("china", (0.09, 0.06, 0.59, 1.0))]),
    ("coins", "train", [("coins", (0.03, 0.0, 1.0, 0.98))]),
    ("flower", "train", [("flower", (0.26, 0.19, 0.70, 0.84))]),
    ("retina", "train", [("retina", (0.0, 0.0, 1.0, 1.0))]),
    ("clock", "train", [("clock", (0.32, 0.22, 0.68, 0.72))]),
)
OBJECT_NAMES = tuple(o[0] for o in _OBJECTS)
TRAINING_PHOTOS = tuple(src[0][0] for _, split, src in _OBJECTS if split == "train")
TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "page", "text", "horse", "colorwheel", "logo",
             "hubble_deep_field", "immunohistochemistry")
# views per object: (mild, strong, extreme) from the first source, then (mild, strong) from the other view
_TEST_VIEWS, _STEREO_VIEWS, _TRAIN_VIEWS = (4, 7, 2), ((3, 5, 1), (2, 2)), (2, 3, 1)
# per test object whose photo leaves a strip of at least _CONTEXT_STRIP beside the object box:
# _CONTEXT views of that strip alone (same photo, object not in view: negatives)
_CONTEXT, _CONTEXT_STRIP = 2, 0.19
_QUERIES = 4  # per test object: the source photo and three mild views
_DISTRACTORS, _TRAIN_DISTRACTORS = 24, 10  # synthetic: textures and clutter only


def build_mini(root: str | os.PathLike, seed: int = 0) -> Path:
    """Write the mini benchmark to ``root/mini`` (see the module docstring) and return that path.

    A set already there with the same ``seed`` and ``VERSION`` (``meta.json``) is returned as it
    is; any other one is replaced. The set is built in a temporary folder under ``root`` and
    renamed into place, so an interrupted build leaves nothing behind.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return build_atomically(Path(root), "mini", {"seed": int(seed), "version": VERSION},
                            lambda out: _build(out, int(seed)))


def build_atomically(root: Path, name: str, key: dict[str, int], build: Callable[[Path], int]) -> Path:
    """``root/name``, built by ``build(folder)`` (which writes ``jpg/`` and ``gnd_<name>.pkl`` into the
    empty ``folder`` and returns the number of images) unless a complete set with this ``key`` is
    there. Built in a temporary folder under ``root`` and renamed into place: an interrupted build
    leaves nothing behind, and of two concurrent builds the first to finish is kept."""
    target = root / name
    if _is_built(target, name, key):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=root))
    try:
        meta = {"images": build(tmp), **key}
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # mkdtemp made it private
        if not _is_built(target, name, key):  # else a concurrent build finished first: keep that one
            if target.exists():  # another seed, version, or an incomplete set: move it aside, drop it
                old = Path(tempfile.mkdtemp(prefix=f".{name}-old-", dir=root))
                target.rename(old / name)
                shutil.rmtree(old)
            try:
                tmp.rename(target)
            except OSError:  # a concurrent build renamed its own set into place meanwhile
                if not _is_built(target, name, key):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_built(target: Path, name: str, key: dict[str, int]) -> bool:
    """Whether ``target`` holds a complete set with this key (``meta.json`` and the files)."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        n_jpg = sum(1 for _ in (target / "jpg").glob("*.jpg"))
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and {k: meta.get(k) for k in key} == key and meta.get("images") == n_jpg
            and (target / f"gnd_{name}.pkl").is_file())


# ----------------------------------------------------------------------------- sources

def load_photos() -> dict[str, Image.Image]:
    """Every photo used: objects as RGB, textures and clutter as they come ("L" when grey);
    the two large ones halved."""
    from matplotlib import cbook
    from skimage import data
    from sklearn.datasets import load_sample_image

    arrays = {name: getattr(data, name)() for name in (
        "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "clock", "retina",
        "immunohistochemistry", "hubble_deep_field", "brick", "grass", "gravel", "moon", "cell",
        "page", "text", "colorwheel")}
    arrays["motorcycle_left"], arrays["motorcycle_right"], _ = data.stereo_motorcycle()
    arrays["horse"] = np.where(data.horse(), 0, 255).astype(np.uint8)  # black on white
    arrays["china"], arrays["flower"] = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    out = {name: Image.fromarray(a) for name, a in arrays.items()}
    out["logo"] = Image.alpha_composite(Image.new("RGBA", (500, 500), (255, 255, 255, 255)),
                                        Image.fromarray(data.logo())).convert("RGB")
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        out["grace_hopper"] = im.convert("RGB")
    for name in ("retina", "hubble_deep_field"):
        out[name] = out[name].reduce(2)
    for name, *_ in (s for o in _OBJECTS for s in o[2]):
        out[name] = out[name].convert("RGB")
    return out


# ----------------------------------------------------------------------------- views

def _params(rng: np.random.Generator, level: str) -> dict[str, Any]:
    """Transform parameters of a ``"mild"`` view; a ``"strong"`` one pushes two changes past the
    hard thresholds, an ``"extreme"`` one makes the object tiny or mostly hidden."""
    p = {"area": rng.uniform(0.16, 0.5), "spread": 0.35, "rotation": rng.uniform(-15, 15),
         "perspective": rng.uniform(0, 0.13), "margin": rng.uniform(0.05, 0.5), "cut": 0.0,
         "occlusion": rng.uniform(0.05, 0.2) if rng.random() < 0.4 else 0.0,
         "gamma": rng.uniform(0.7, 1.45), "blur": rng.uniform(0, 1.6), "jpeg": int(rng.integers(25, 96)),
         "light": rng.uniform(0, 0.4)}
    if level == "strong":
        changes = ["occlusion", "small", "zoom", "perspective", "rotation", "photometric", "cut"]
        for change in rng.permutation(changes)[:2]:
            if change == "occlusion":
                p["occlusion"] = rng.uniform(0.4, 0.65)
            elif change == "small":
                p["area"], p["spread"] = rng.uniform(0.05, 0.12), 0.4
            elif change == "zoom":  # a detail: the object larger than the picture
                p["area"], p["spread"] = rng.uniform(1.8, 3.5), 0.3
            elif change == "perspective":
                p["perspective"] = rng.uniform(0.18, 0.32)
            elif change == "rotation":
                p["rotation"] = rng.choice([-1.0, 1.0]) * rng.uniform(22, 45)
            elif change == "photometric":  # two of: dark or washed out, blurred, blocky, unevenly lit
                for kind in rng.permutation(["gamma", "blur", "jpeg", "light"])[:2]:
                    p[kind] = {"gamma": rng.uniform(0.4, 0.55) if rng.random() < 0.5 else rng.uniform(1.7, 2.2),
                               "blur": rng.uniform(2.2, 3.2), "jpeg": int(rng.integers(8, 18)),
                               "light": rng.uniform(0.55, 0.75)}[kind]
            else:
                p["cut"] = rng.uniform(0.45, 0.6)
    elif level == "extreme":
        if rng.random() < 0.5:
            p["area"], p["spread"] = rng.uniform(0.012, 0.04), 0.4
        else:
            p["occlusion"] = rng.uniform(0.75, 0.9)
    return p


def _window(rng: np.random.Generator, box: np.ndarray, size: tuple[int, int], margin: float, cut: float) -> np.ndarray:
    """The source window shown: the box grown by about ``margin`` on each side, clipped to the
    image; with ``cut``, that fraction of the box taken off one side."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    m = margin * rng.uniform(0.5, 1.5, 4)
    w = np.clip([x1 - m[0] * bw, y1 - m[1] * bh, x2 + m[2] * bw, y2 + m[3] * bh], 0, [size[0], size[1]] * 2)
    if cut > 0:
        side = int(rng.integers(4))
        w[side] = [x1 + cut * bw, y1 + cut * bh, x2 - cut * bw, y2 - cut * bh][side]
    return w


def _view(rng: np.random.Generator, photos: Photos, pool: Pool, source: str, frac_box: tuple[float, ...],
          p: dict[str, Any], size: tuple[int, int]) -> tuple[Image.Image, dict[str, Any], np.ndarray]:
    """One picture of an object: the image, what was measured and done, and the visible-object mask."""
    img = photos[source]
    sw, sh = img.size
    box = np.array(frac_box) * [sw, sh, sw, sh]
    canvas = background(rng, photos, pool, size)
    centre = np.array(size) * (0.5 + rng.uniform(-p["spread"], p["spread"], 2))
    H, k = homography(rng, box, size, p["area"], p["rotation"], p["perspective"], centre)
    window = _window(rng, box, (sw, sh), p["margin"], p["cut"])
    quad = apply(H, corners(box))
    obj = polygon_mask(size, quad) & warp(canvas, img, window, H, k)
    if p["occlusion"] > 0 and obj.any():
        obj &= ~occlude(rng, canvas, photos, pool, obj, p["occlusion"])
    clutter(rng, canvas, photos, pool, keep=obj)
    info = {"area": round(float(obj.sum()) / (size[0] * size[1]), 4),
            "visible": round(min(1.0, float(obj.sum()) / shoelace(quad)), 4),
            "rotation": round(float(p["rotation"]), 2), "perspective": round(float(p["perspective"]), 3),
            "blur": round(float(p["blur"]), 2), "jpeg": int(p["jpeg"]), "gamma": round(float(p["gamma"]), 3),
            "light": round(float(p["light"]), 3)}
    return finish(rng, canvas, p), info, obj


def _difficulty(v: dict[str, Any]) -> str:
    """``"easy"``, ``"hard"`` or ``"junk"`` from a view's stored measurements (module docstring)."""
    if v["area"] < JUNK_AREA or (v["visible"] < JUNK_VISIBLE and v["area"] < DETAIL_AREA):
        return "junk"
    if (v["visible"] < HARD_VISIBLE or v["area"] < HARD_AREA or abs(v["rotation"]) > HARD_ROTATION
            or v["perspective"] > HARD_PERSPECTIVE or v["blur"] > HARD_BLUR or v["jpeg"] < HARD_JPEG
            or not HARD_GAMMA[0] <= v["gamma"] <= HARD_GAMMA[1] or v["light"] > HARD_LIGHT or v["other_view"]):
        return "hard"
    return "easy"


def _context_strip(frac_box: tuple[float, ...]) -> tuple[float, ...] | None:
    """The widest strip of the photo beside the object box (fractions), if wide enough."""
    x1, y1, x2, y2 = frac_box
    width, strip = max([(x1, (0.0, 0.0, x1, 1.0)), (1 - x2, (x2, 0.0, 1.0, 1.0)),
                        (y1, (0.0, 0.0, 1.0, y1)), (1 - y2, (0.0, y2, 1.0, 1.0))])
    return strip if width >= _CONTEXT_STRIP else None


def _distractor(rng: np.random.Generator, photos: Photos, pool: Pool, size: tuple[int, int]) -> Image.Image:
    canvas = background(rng, photos, pool, size)
    clutter(rng, canvas, photos, pool)
    return finish(rng, canvas, _params(rng, "mild"))


def _query(rng: np.random.Generator, photos: Photos, pool: Pool, source: str, frac_box: tuple[float, ...],
           i: int) -> tuple[Image.Image, list[int]]:
    """Query ``i`` of an object and its ``bbx``: 0 is the source photo, the others mild views."""
    if i == 0:
        img = photos[source]
        s = LONG_SIDE / max(img.size)
        size = (round(img.size[0] * s), round(img.size[1] * s))
        x1, y1, x2, y2 = np.array(frac_box) * [size[0], size[1], size[0], size[1]]
        return (img.resize(size, Image.Resampling.LANCZOS),
                [math.floor(x1), math.floor(y1), min(math.ceil(x2), size[0]), min(math.ceil(y2), size[1])])
    p = _params(rng, "mild")
    p.update(area=rng.uniform(0.2, 0.45), occlusion=0.0)
    img, _, obj = _view(rng, photos, pool, source, frac_box, p, CANVASES[int(rng.integers(len(CANVASES)))])
    ys, xs = np.nonzero(obj)
    return img, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# ----------------------------------------------------------------------------- writing

def training_views(n_objects: int = 48, views: int = 4, seed: int = 1) -> tuple[list[Image.Image], np.ndarray]:
    """Fine-tuning data drawn like the benchmark's views, from training photos only.

    Each of ``n_objects`` pseudo-objects is a random window (15-60% of each side) of one of the
    four training objects' photos (coins, flower, retina, clock; never a test photo); ``views``
    pictures of it are drawn exactly as the database views are (warp, background, occluders,
    clutter, photometric changes; one in three strong), on the training split's texture
    backgrounds. (Windows of the textures themselves were tried as objects too: they teach the
    head to match textures, the backgrounds of every test view, and help less.)
    Returns the images and their object labels ``(n_objects * views,)``, object-major.
    Deterministic for a ``seed``.
    """
    for value, name in ((n_objects, "n_objects"), (views, "views")):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < (2 if name == "views" else 1):
            raise ValueError(f"{name} must be an integer >= {2 if name == 'views' else 1}, got {value!r}")
    rng = np.random.default_rng(seed)
    photos = load_photos()
    pool: Pool = [(name, (0.0, 0.0, 1.0, 1.0)) for name in TEXTURES]
    sources = [src[0][0] for _, split, src in _OBJECTS if split == "train"]
    images, labels = [], []
    for label in range(n_objects):
        source = sources[int(rng.integers(len(sources)))]
        w, h = rng.uniform(0.15, 0.6, 2)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        for v in range(views):
            level = "strong" if rng.random() < 1 / 3 else "mild"
            size = CANVASES[int(rng.integers(len(CANVASES)))]
            images.append(_view(rng, photos, pool, source, (x, y, x + w, y + h), _params(rng, level), size)[0])
            labels.append(label)
    return images, np.array(labels)


def save_jpeg(img: Image.Image, path: Path) -> None:
    img.save(path, "JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)


def _build(out: Path, seed: int) -> int:
    """Draw every image from ``default_rng(seed)`` and write the set into the empty folder ``out``."""
    rng = np.random.default_rng(seed)
    photos = load_photos()
    # backgrounds, clutter and occluders: textures in the training split; in the test split also
    # the training objects and the test photos' context strips (never a test object)
    plain: Pool = [(name, (0.0, 0.0, 1.0, 1.0)) for name in TEXTURES]
    strips = {src[0][0]: _context_strip(src[0][1]) for _, split, src in _OBJECTS if split == "test"}
    pools = {"train": plain, "test": plain + [src[0] for _, split, src in _OBJECTS if split == "train"]
             + [(name, strip) for name, strip in strips.items() if strip]}
    db: list[tuple[Image.Image, int, str, dict[str, Any] | None]] = []  # image, object, split, view
    queries: list[tuple[Image.Image, list[int], int]] = []  # image, bbx, object

    def canvas() -> tuple[int, int]:
        return CANVASES[int(rng.integers(len(CANVASES)))]

    for label, (_, split, sources) in enumerate(_OBJECTS):
        pool = pools[split]
        if len(sources) > 1:
            plan = list(enumerate(_STEREO_VIEWS))
        else:
            plan = [(0, _TRAIN_VIEWS if split == "train" else _TEST_VIEWS)]
        for s, counts in plan:
            for level, n in zip(("mild", "strong", "extreme"), counts):
                for _ in range(n):
                    img, info, _ = _view(rng, photos, pool, *sources[s], _params(rng, level), canvas())
                    db.append((img, label, split, {**info, "other_view": s > 0}))
        if split == "test":
            queries += [(*_query(rng, photos, pool, *sources[0], i), label) for i in range(_QUERIES)]
            strip = strips[sources[0][0]]
            for _ in range(_CONTEXT if strip else 0):
                img = _view(rng, photos, pool, sources[0][0], strip, _params(rng, "mild"), canvas())[0]
                db.append((img, -1, "test", None))
    for i in range(_DISTRACTORS):
        split = "train" if i < _TRAIN_DISTRACTORS else "test"
        db.append((_distractor(rng, photos, pools[split], canvas()), -1, split, None))
    db = [db[j] for j in rng.permutation(len(db))]
    imlist = [f"db_{i:04d}" for i in range(len(db))]
    qimlist = [f"query_{i:03d}" for i in range(len(queries))]
    (out / "jpg").mkdir()
    for name, img in zip(imlist + qimlist, [d[0] for d in db] + [q[0] for q in queries]):
        save_jpeg(img, out / "jpg" / f"{name}.jpg")
    labels = [None if v is None else _difficulty(v) for *_, v in db]
    gnd = [{"bbx": bbx, **{k: [i for i, (d, lab) in enumerate(zip(db, labels)) if d[1] == obj and lab == k]
                           for k in ("easy", "hard", "junk")}} for _, bbx, obj in queries]
    data = {
        "imlist": imlist,
        "qimlist": qimlist,
        "gnd": gnd,
        "gnd_original": [{"bbx": g["bbx"], "ok": sorted(g["easy"] + g["hard"]), "junk": g["junk"]} for g in gnd],
        "objects": [d[1] for d in db],
        "qobjects": [q[2] for q in queries],
        "object_names": list(OBJECT_NAMES),
        "split": [d[2] for d in db],
        "views": [d[3] for d in db],
    }
    data = json.loads(json.dumps(data))  # plain types only; object identities (pickle memo) fixed by the text
    with open(out / "gnd_mini.pkl", "wb") as f:
        pickle.dump(data, f, protocol=PICKLE_PROTOCOL)
    return len(imlist) + len(qimlist)
