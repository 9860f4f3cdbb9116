"""``synthetic-oxford``: a full-size benchmark in the rOxford5k on-disk format, drawn offline.

``build_synthetic(root)`` writes 5,063 JPEGs of about 1024x768 (4,993 database images + 70
queries, rOxford5k's counts) so that real mode runs end to end at full scale with no download::

    root/synthetic-oxford/jpg/<name>.jpg            database db_NNNNN, queries query_NNN
    root/synthetic-oxford/gnd_synthetic-oxford.pkl  revisitop's form (below)
    root/synthetic-oxford/meta.json                 the parameters: the cache key

The images are the mini benchmark's (:mod:`retrievalkit.datasets.mini`): the same photos, objects,
views (warp, occluders, clutter, photometric changes), labels (easy / hard / junk measured on each
view) and drawing code, at a larger size and in larger numbers:

- **queries**: ``queries`` (70) spread round-robin over the eight test objects; an object's first
  query is its source photo (long side ``long_side``), the next ones mild views; each a full image
  with ``bbx`` around the object, not in the database (revisitop style);
- **database**: ``OBJECT_SHARE`` of it are views of the test objects (mild, strong, extreme in the
  mini set's 4 : 7 : 2; a third of the motorcycle's show the other stereo image, hence hard),
  ``CONTEXT_SHARE`` views of a test photo beside its object (negatives), ``TRAIN_SHARE`` the
  ``"train"`` split (training-object views and distractors: what whitening and codebooks learn on,
  as in the mini set), the rest distractors (textures and clutter only);
- canvases ``long_side`` x 3/4 (landscape and portrait) or x 2/3, as Oxford's Flickr photos.

``gnd_synthetic-oxford.pkl`` holds ``imlist``, ``qimlist``, ``gnd`` (per query ``bbx``, ``easy``,
``hard``, ``junk``) as rOxford5k's, plus the mini set's ``objects``, ``qobjects``,
``object_names``, ``split`` and ``views``.

Deterministic for a ``seed``: the plan comes from ``default_rng(seed)`` and image ``i`` is drawn
from ``default_rng([seed, i])``, so the files do not depend on ``workers`` (processes drawing in
parallel). Full size: about 450 MB; the build time is in the README.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import mini
from .drawing import Photos, Pool

__all__ = ["NAME", "VERSION", "build_synthetic", "OBJECT_SHARE", "CONTEXT_SHARE", "TRAIN_SHARE"]

NAME = "synthetic-oxford"
VERSION = 1  # of the generator: bumped whenever its output changes
OBJECT_SHARE, CONTEXT_SHARE, TRAIN_SHARE, TRAIN_VIEW_SHARE = 0.15, 0.01, 0.2, 0.05
_LEVELS = ("mild", "strong", "extreme")
_LEVEL_P = np.array(mini._TEST_VIEWS) / sum(mini._TEST_VIEWS)  # 4 : 7 : 2
_TEST = [(i, src) for i, (_, split, src) in enumerate(mini._OBJECTS) if split == "test"]
_TRAIN = [(i, src) for i, (_, split, src) in enumerate(mini._OBJECTS) if split == "train"]
_ASPECTS = ((4, 3), (3, 4), (3, 2))  # width : height

# Task: (kind, object label, level, source index, (w, h), split); kind in view, context, distractor, photo, query
Task = tuple[str, int, str, int, tuple[int, int], str]


def _count(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _plan(images: int, queries: int, long_side: int, rng: np.random.Generator) -> tuple[list[Task], list[Task]]:
    """The database tasks (in their final, shuffled order) and the query tasks."""
    n_db = images - queries
    n_views = max(2 * len(_TEST), round(OBJECT_SHARE * n_db))
    n_context = round(CONTEXT_SHARE * n_db)
    n_train_views = max(len(_TRAIN), round(TRAIN_VIEW_SHARE * n_db))
    n_train = max(n_train_views, round(TRAIN_SHARE * n_db))
    n_rest = n_db - n_views - n_context - n_train
    if n_rest < 1:
        least = 2 * len(_TEST) + len(_TRAIN) + 1 + queries
        raise ValueError(f"images must leave at least one test distractor: at least {least} for {queries} queries, "
                         f"got {images}")

    def canvas() -> tuple[int, int]:
        w, h = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
        return (long_side, round(long_side * h / w)) if w > h else (round(long_side * w / h), long_side)

    db: list[Task] = []
    for j in range(n_views):
        label, sources = _TEST[j % len(_TEST)]
        other = len(sources) > 1 and rng.random() < 1 / 3
        db.append(("view", label, str(rng.choice(_LEVELS, p=_LEVEL_P)), int(other), canvas(), "test"))
    with_strip = [label for label, src in _TEST if mini._context_strip(src[0][1])]
    db += [("context", with_strip[j % len(with_strip)], "mild", 0, canvas(), "test") for j in range(n_context)]
    for j in range(n_train_views):
        level = str(rng.choice(_LEVELS, p=np.array(mini._TRAIN_VIEWS) / sum(mini._TRAIN_VIEWS)))
        db.append(("view", _TRAIN[j % len(_TRAIN)][0], level, 0, canvas(), "train"))
    db += [("distractor", -1, "mild", 0, canvas(), "train") for _ in range(n_train - n_train_views)]
    db += [("distractor", -1, "mild", 0, canvas(), "test") for _ in range(n_rest)]
    db = [db[j] for j in rng.permutation(len(db))]
    qs: list[Task] = []
    for q in range(queries):
        label = _TEST[q % len(_TEST)][0]
        qs.append(("photo" if q < len(_TEST) else "query", label, "mild", 0, canvas(), "test"))
    return db, qs


_PHOTOS: Photos = {}


def _pools(photos: Photos) -> dict[str, Pool]:
    """The mini set's backgrounds: textures in the training split; in the test split also the
    training objects and the test photos' context strips (never a test object)."""
    plain: Pool = [(name, (0.0, 0.0, 1.0, 1.0)) for name in mini.TEXTURES]
    strips = [(src[0][0], mini._context_strip(src[0][1])) for _, src in _TEST]
    return {"train": plain, "test": plain + [src[0] for _, src in _TRAIN] + [(n, s) for n, s in strips if s]}


def _draw(job: tuple[int, int, Task, str]) -> tuple[dict[str, Any] | None, list[int] | None]:
    """Draw task ``i`` from ``default_rng([seed, i])``, save it as ``path`` -> (view measurements, bbx)."""
    seed, i, (kind, label, level, source, size, split), path = job
    if not _PHOTOS:
        _PHOTOS.update(mini.load_photos())
    rng = np.random.default_rng([seed, i])
    pool = _pools(_PHOTOS)[split]
    name, frac_box = mini._OBJECTS[label][2][source] if label >= 0 else ("", ())
    info, bbx = None, None
    if kind == "view":
        img, info, _ = mini._view(rng, _PHOTOS, pool, name, frac_box, mini._params(rng, level), size)
        info["other_view"] = source > 0
    elif kind == "context":
        strip = mini._context_strip(frac_box)
        img = mini._view(rng, _PHOTOS, pool, name, strip, mini._params(rng, "mild"), size)[0]
    elif kind == "distractor":
        img = mini._distractor(rng, _PHOTOS, pool, size)
    elif kind == "photo":  # the source photo itself, long side as the canvases'
        photo = _PHOTOS[name]
        s = max(size) / max(photo.size)
        wh = (round(photo.width * s), round(photo.height * s))
        img = photo.resize(wh, Image.Resampling.LANCZOS)
        x1, y1, x2, y2 = np.array(frac_box) * [wh[0], wh[1], wh[0], wh[1]]
        bbx = [math.floor(x1), math.floor(y1), min(math.ceil(x2), wh[0]), min(math.ceil(y2), wh[1])]
    else:  # a mild, unoccluded view covering a fifth to nearly half of the picture
        p = mini._params(rng, "mild")
        p.update(area=rng.uniform(0.2, 0.45), occlusion=0.0)
        img, _, obj = mini._view(rng, _PHOTOS, pool, name, frac_box, p, size)
        ys, xs = np.nonzero(obj)
        bbx = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    mini.save_jpeg(img, Path(path))
    return info, bbx


def _is_built(target: Path, meta: dict[str, Any]) -> bool:
    try:
        found = json.loads((target / "meta.json").read_text())
        n_jpg = sum(1 for _ in (target / "jpg").glob("*.jpg"))
    except (OSError, ValueError):
        return False
    return found == meta and n_jpg == meta["images"] and (target / f"gnd_{NAME}.pkl").is_file()


def built_meta(target: str | os.PathLike) -> dict[str, Any] | None:
    """The parameters of the complete set of this :data:`VERSION` in ``target``, or None."""
    try:
        meta = json.loads((Path(target) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("version") == VERSION and _is_built(Path(target), meta) else None


def build_synthetic(root: str | os.PathLike, images: int = 5063, queries: int = 70, long_side: int = 1024,
                    seed: int = 0, workers: int | None = None, progress: bool = True) -> Path:
    """Write ``synthetic-oxford`` (module docstring) to ``root/synthetic-oxford`` and return that path.

    ``images``: JPEGs in all (database + ``queries``); ``long_side``: pixels of the long side;
    ``workers``: drawing processes (default: the usable cores; 0 draws in this process). A set with
    the same parameters already there is returned as is; any other one is replaced. Built in a
    temporary folder under ``root`` and renamed into place: an interrupted build leaves nothing.
    """
    queries = _count(queries, "queries", 1)
    images = _count(images, "images", queries + 1)
    long_side = _count(long_side, "long_side", 32)
    seed = _count(seed, "seed", 0)
    workers = len(os.sched_getaffinity(0)) if workers is None else _count(workers, "workers", 0)
    meta = {"images": images, "queries": queries, "long_side": long_side, "seed": seed, "version": VERSION}
    target = Path(root) / NAME
    if _is_built(target, meta):
        return target
    db, qs = _plan(images, queries, long_side, np.random.default_rng(seed))  # bad counts fail before any work
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-build-", dir=target.parent))
    try:
        imlist = [f"db_{i:05d}" for i in range(len(db))]
        qimlist = [f"query_{i:03d}" for i in range(len(qs))]
        (tmp / "jpg").mkdir()
        jobs = [(seed, i, task, str(tmp / "jpg" / f"{name}.jpg")) for i, (task, name) in enumerate(zip(db + qs, imlist + qimlist))]
        if workers == 0:
            drawn = [_draw(j) for j in tqdm(jobs, desc=NAME, unit="img", disable=not progress)]
        else:  # spawn: a forked child of a process that ran torch / OpenMP may hang
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                drawn = list(tqdm(pool.map(_draw, jobs, chunksize=8), total=len(jobs), desc=NAME, unit="img",
                                  disable=not progress))
        _write_gnd(tmp, db, qs, imlist, qimlist, drawn)
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # mkdtemp made it private
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_gnd(out: Path, db: Sequence[Task], qs: Sequence[Task], imlist: list[str], qimlist: list[str],
               drawn: Sequence[tuple[dict[str, Any] | None, list[int] | None]]) -> None:
    views = [info for info, _ in drawn[: len(db)]]
    labels = [None if v is None else mini._difficulty(v) for v in views]
    gnd = [{"bbx": bbx, **{k: [i for i, (t, lab) in enumerate(zip(db, labels)) if t[1] == q[1] and lab == k]
                           for k in ("easy", "hard", "junk")}} for q, (_, bbx) in zip(qs, drawn[len(db):])]
    data = json.loads(json.dumps({  # plain types only
        "imlist": imlist, "qimlist": qimlist, "gnd": gnd, "objects": [t[1] if t[0] == "view" else -1 for t in db], "qobjects": [q[1] for q in qs],
        "object_names": list(mini.OBJECT_NAMES), "split": [t[5] for t in db], "views": views}))
    with open(out / f"gnd_{NAME}.pkl", "wb") as f:
        pickle.dump(data, f, protocol=mini.PICKLE_PROTOCOL)
