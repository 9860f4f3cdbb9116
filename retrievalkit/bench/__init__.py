"""The benchmark: every descriptor of the course, three post-processings, one table.

For each dataset, :func:`run` extracts the last convolutional maps once (:func:`benchmark_maps`,
cached on disk), describes the queries and the database with every method of :data:`METHODS`
(:func:`describe`), post-processes them with each variant of :data:`VARIANTS`, ranks exactly
(:func:`retrievalkit.search.rank`) and evaluates with the dataset's protocol: the old one (mAP over
the 55 queries) for Oxford5k / Paris6k, Medium and Hard for rOxford5k / rParis6k and the mini
benchmark (:func:`variant_row`). Each row also holds the published number of :data:`PUBLISHED` for
the same dataset, method, variant and backbone (blank where none exists) and the time of each stage:

* **decode**: read, decode, crop (queries) and resize every image, one process, one image at a time
  (the exact decode of :mod:`retrievalkit.extract`);
* **network**: the backbone on the decoded images, batched by size (batches of 8) as the extraction
  does, on the model's device (synchronised on CUDA);
* **pooling**: the method's descriptors of the queries and the database from the maps;
* **search**: the variant's steps applied to queries and database, then the exact ranking (the
  least of three runs).

**Mini** describes the cached maps (the float16 maps every lecture reads, so the mini numbers are the
lectures' numbers); decode and network are therefore timed on a **separate fresh pass**
(:func:`timed_pass`) over ``timing_images`` images (default 100, evenly spaced over queries +
database), never read from the cache: the ``timed`` column says how many. **Every other dataset**
(the real ones, ``synthetic-oxford``) is described in one streaming pass (:mod:`.stream`): each batch
of maps is pooled by every method on the model's device and only descriptors are kept, so host memory
does not grow with the dataset beyond the descriptors; ``timed`` is then queries + database, ``decode``
the time the pass waited for its decoding workers and ``network`` its forward passes. Learning (whitening, the
VLAD codebook and its local PCA) happens offline on another set and is not part of any stage. Images
per second is ``timed / seconds`` for decode and network, ``(queries + database) / seconds`` for
pooling and ``queries / seconds`` for search (queries answered per second).

Whitening and codebooks are learnt on another set, as the papers do: Paris6k for Oxford5k and vice
versa (rParis6k for rOxford5k and vice versa), its other collection ``mini-other`` for the mini
benchmark (:mod:`retrievalkit.datasets.other`), the training split for ``synthetic-oxford``. The parts
are data: a method (:mod:`.methods`) is a describer whose parameters are its setting (its repr); a
variant (:mod:`.variants`) is a named tuple of steps (:class:`PCAw`, :class:`AlphaQE`), each learnt
on the training descriptors and applied in order; :mod:`.published` holds the published numbers and
their papers. Every method is whitened after pooling, the same way; Jimenez et al. (BMVC 2017)
whiten each class vector of CAM before the sum instead (its published row says so).

CAM needs a global-average-pooling -> FC classifier: VGG16 has none, so with VGG16 the table has a CAM
row that says so (``note``) instead of numbers; ResNet50 and Lite0 have CAM rows.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .. import datasets, evaluate, extract, models, search
from .._atomic import write_atomic
from .._batching import rows_by_shape
from .methods import CAM_CLASSES, METHODS, VLAD, VLAD_K, VLAD_LOCAL_DIM, CAMOffline, Method, Pooled
from .published import PAPERS, PUBLISHED, REFERENCES, Paper
from . import stream
from .stream import Part
from .variants import VARIANTS, AlphaQE, Apply, Descriptors, PCAw, Step, Variant

__all__ = ["BENCHMARKS", "METHODS", "VARIANTS", "PAPERS", "Paper", "PUBLISHED", "REFERENCES", "COLUMNS", "PROTOCOLS", "Method", "Pooled",
           "CAMOffline", "VLAD", "Variant", "Step", "PCAw", "AlphaQE", "Maps", "Described", "load_datasets",
           "benchmark_maps", "timed_pass", "describe", "variant_row", "dataset_rows", "run", "markdown", "write_table",
           "CAM_CLASSES", "VLAD_K", "VLAD_LOCAL_DIM", "REAL_SIZE", "streamed_rows", "NO_CAM"]

REAL_SIZE = 1024  # longest side of the real benchmarks' images (cirtorch, Seddati et al., Jimenez et al.)
BENCHMARKS = ("mini", "oxford5k", "paris6k", "roxford5k", "rparis6k", "synthetic-oxford")
TRAIN_SPLIT = ("synthetic-oxford",)  # learns on its own training split
OTHER = {"mini": "mini-other", "oxford5k": "paris6k", "paris6k": "oxford5k", "roxford5k": "rparis6k", "rparis6k": "roxford5k"}

PROTOCOLS = {"original": "old", "medium": "M", "hard": "H"}
COLUMNS = ("dataset", "model", "method", "variant", "dim", "old", "M", "H", "published old", "published M",
           "published H", "published setting", "timed", "decode s", "decode img/s", "network s", "network img/s",
           "pooling s", "pooling img/s", "search s", "search img/s", "setting", "note")
"""The columns of a row; mAP in %, blank where the dataset has no such protocol; ``setting``: the
method's and the variant's parameters; ``note``: why a row has no numbers."""
NO_CAM = ("no CAM: {model} has no global-average-pooling -> FC classifier to weight its maps by (the CAM paper "
          "trains one on VGG16; torchvision ships none); CAM runs with resnet50 or efficientnet_lite0")


# --------------------------------------------------------------------------------------------
# The stages of run()


class Maps(NamedTuple):
    """A dataset's maps: queries, database, and the training maps methods and whitening learn from."""

    queries: list[torch.Tensor]
    database: list[torch.Tensor]
    train: list[torch.Tensor]


class Described(NamedTuple):
    """A method's descriptors of queries ``Q``, database ``X`` and training set ``T``, and the seconds
    that describing the queries and the database took."""

    Q: Descriptors
    X: Descriptors
    T: Descriptors
    seconds: float


def load_datasets(names: Sequence[str], root: Any = None, download: bool = False
                  ) -> list[tuple[datasets.Dataset, datasets.Dataset | None]]:
    """Each benchmark and the set its whitening is learnt on (None for synthetic-oxford: its training split), all
    loaded first so that a missing one raises :class:`retrievalkit.datasets.DatasetNotFoundError` at once."""
    pairs = [(datasets.load(n, root=root, download=download), n) for n in names]
    return [(ds, None if n in TRAIN_SPLIT else datasets.load(OTHER[n], root=root, download=download)) for ds, n in pairs]


def benchmark_maps(net: models.Backbone, ds: datasets.Dataset, other: datasets.Dataset | None,
                   size: float | None) -> Maps:
    """The cached maps (:func:`retrievalkit.extract.dataset_maps`) of ``ds``; the training maps are its
    training split when ``other`` is None, else ``other``'s database."""
    qmaps, xmaps = extract.dataset_maps(net, ds, size=size, progress=False)
    if other is None:
        return Maps(qmaps, xmaps, [xmaps[i] for i in ds.split("train")])
    return Maps(qmaps, xmaps, extract.dataset_maps(net, other, size=size, progress=False)[1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(net: models.Backbone, ds: datasets.Dataset, size: float | None, n: int | None) -> dict[str, float]:
    """Decode, then the network, on a fresh pass over ``n`` images (all when None) evenly spaced over
    queries + database: ``{"timed", "decode s", "network s"}``."""
    images = [str(p) for p in [*ds.queries, *ds.images]]
    boxes = [ds.bbx(i) for i in range(len(ds.queries))] + [None] * len(ds.images)
    if n is not None and n < len(images):
        pick = [round(i * (len(images) - 1) / max(n - 1, 1)) for i in range(n)]
        images, boxes = [images[i] for i in pick], [boxes[i] for i in pick]
    start = time.perf_counter()
    decoded = extract.decode(images, boxes, size)
    decode = time.perf_counter() - start
    device = next(net.parameters()).device

    def forward(batch: torch.Tensor) -> torch.Tensor:  # the maps' mean keeps the batch's work from being skipped
        return extract.forward_maps(net, net.transform(batch.to(device))).mean(dim=(1, 2, 3))[:, None]

    with torch.inference_mode():
        forward(decoded[0][None])  # warm-up (first-call allocations, CUDA context), not timed
        _sync(device)
        start = time.perf_counter()
        rows_by_shape(decoded, forward, 8, "network")
        _sync(device)
    return {"timed": len(images), "decode s": decode, "network s": time.perf_counter() - start}


def describe(method: Method, net: models.Backbone, maps: Maps) -> Described:
    """The method learnt on the training maps, then its descriptors; only queries + database are timed."""
    fn = method.build(net, maps.train)
    with torch.inference_mode():
        start = time.perf_counter()
        Q, X = fn(maps.queries), fn(maps.database)
        seconds = time.perf_counter() - start
        return Described(Q, X, fn(maps.train), seconds)


def _best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[Any, float]:
    """``fn()`` and the least of ``repeat`` timings: a sub-millisecond stage is otherwise mostly
    first-call warm-up and scheduling noise."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, min(times)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else math.inf


def _search(apply: Apply, Q: Descriptors, X: Descriptors) -> tuple[torch.Tensor, int]:
    """The fitted variant on queries and database, then the exact ranking -> (ranks, descriptor dim)."""
    Q, X = apply(Q, X)
    return search.rank(Q, X), X.shape[1]


def variant_row(ds: datasets.Dataset, model: str, method: Method, described: Described, variant: Variant,
                stage: dict[str, float]) -> dict[str, Any]:
    """The row (:data:`COLUMNS`) of one variant: fitted on ``described.T`` (not timed), applied to
    ``(Q, X)`` and ranked (timed), evaluated; ``stage`` is :func:`timed_pass`'s decode and network timing."""
    Q, X, T, pool_s = described
    apply = variant.fit(T)
    (ranks, dim), search_s = _best_of(lambda: _search(apply, Q, X))
    table = evaluate.evaluate(ranks, ds)
    published, source = PUBLISHED.get((ds.name, method.name, variant.name, model), ({}, ""))
    row: dict[str, Any] = {c: "" for c in COLUMNS}
    row.update({"dataset": ds.name, "model": model, "method": method.name, "variant": variant.name, "dim": dim,
                "published setting": source, **stage,
                "decode img/s": _rate(stage["timed"], stage["decode s"]),
                "network img/s": _rate(stage["timed"], stage["network s"]),
                "pooling s": pool_s, "pooling img/s": _rate(Q.shape[0] + X.shape[0], pool_s),
                "search s": search_s, "search img/s": _rate(Q.shape[0], search_s),
                "setting": f"{method.setting} → {variant.setting}"})
    row.update({column: table[protocol]["mAP"] for protocol, column in PROTOCOLS.items() if protocol in table})
    row.update({f"published {column}": value for column, value in published.items()})
    return row


def dataset_rows(net: models.Backbone, model: str, ds: datasets.Dataset, other: datasets.Dataset | None,
                 methods: Sequence[Method], variants: Sequence[Variant], size: float | None,
                 timing_images: int | None) -> list[dict[str, Any]]:
    """The rows of the mini set: its cached maps and timed pass once, each method described once, a row per variant."""
    maps, stage = benchmark_maps(net, ds, other, size), timed_pass(net, ds, size, timing_images)
    described = [(method, describe(method, net, maps)) for method in methods]
    return [variant_row(ds, model, method, d, variant, stage) for method, d in described for variant in variants]


def streamed_rows(net: models.Backbone, model: str, ds: datasets.Dataset, other: datasets.Dataset | None,
                  methods: Sequence[Method], variants: Sequence[Variant], size: float | None, batch_size: int = 8,
                  num_workers: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """The rows of a real (or synthetic) dataset, described in one streaming pass (:func:`.stream.stream`):
    the training set (``other``'s database, or ``ds``'s training split when ``other`` is None), the
    queries cropped to their boxes, the database."""
    parts = [Part("queries", [str(q) for q in ds.queries], [ds.bbx(i) for i in range(len(ds.queries))]),
             Part("database", [str(p) for p in ds.images])]
    if other is None:
        split = ds.split("train")
        learn = [parts[1].images[i] for i in split]
    else:
        learn = [str(p) for p in other.images]
        parts.append(Part("train", learn))
    s = stream.stream(net, methods, parts, size, learn, batch_size, num_workers, progress)
    stage = {"timed": len(ds.queries) + len(ds.images),
             **{f"{k} s": s.seconds["queries"][k] + s.seconds["database"][k] for k in ("decode", "network")}}
    rows = []
    for method in methods:
        d = s.descriptors[method.name]
        T = d["train"] if other is not None else d["database"][torch.as_tensor(split)]
        pool = sum(s.seconds[p][f"pool {method.name}"] for p in ("queries", "database"))
        rows += [variant_row(ds, model, method, Described(d["queries"], d["database"], T, pool), v, stage)
                 for v in variants]
    return rows


def _check_names(values: Any, allowed: Sequence[str], name: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{name} must be a non-empty list of {', '.join(allowed)}; got {bad or values!r}")
    return values


def _check_variants(values: Any) -> list[Variant]:
    """Names of :data:`VARIANTS` or :class:`Variant` objects -> variants."""
    values = [values] if isinstance(values, (str, Variant)) else list(values)
    bad = [v for v in values if not isinstance(v, Variant) and (not isinstance(v, str) or v not in VARIANTS)]
    if not values or bad:
        raise ValueError(f"variants must be a non-empty list of Variant objects or of {', '.join(VARIANTS)}; "
                         f"got {bad or values!r}")
    return [v if isinstance(v, Variant) else VARIANTS[v] for v in values]


def _check_methods(names: list[str] | None, net: models.Backbone, model: str) -> list[Method]:
    """The methods named (all that the backbone supports when None): CAM needs a GAP -> FC classifier."""
    if names is None:
        return [m for m in METHODS.values() if not isinstance(m.describer, CAMOffline) or net.supports_cam]
    if "CAM" in names and not net.supports_cam:
        raise ValueError(f"methods: 'CAM' needs a GAP -> FC classifier; model {model!r} has none "
                         f"(use efficientnet_lite0 or resnet50)")
    return [METHODS[m] for m in names]


def _no_cam_row(ds: datasets.Dataset, model: str) -> dict[str, Any]:
    """The row that says why a backbone without a GAP -> FC classifier (VGG16) has no CAM numbers."""
    return {**{c: "" for c in COLUMNS}, "dataset": ds.name, "model": model, "method": "CAM",
            "setting": METHODS["CAM"].setting, "note": NO_CAM.format(model=model)}


def _image_size(name: str, size: float | None) -> float | None:
    """``size`` when given, else the images as stored for mini (as the lectures), :data:`REAL_SIZE` otherwise."""
    return size if size is not None else (None if name == "mini" else REAL_SIZE)


def run(
    dataset_names: Sequence[str] | str = ("mini",),
    model: str = "efficientnet_lite0",
    methods: Sequence[str] | str | None = None,
    variants: Sequence[str | Variant] | str | Variant = tuple(VARIANTS),
    root: str | os.PathLike | None = None,
    download: bool = False,
    size: float | None = None,
    device: str | None = None,
    timing_images: int | None = 100,
    database_images: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The benchmark: one row (a dict with :data:`COLUMNS`) per dataset, method and variant.

    ``methods`` default to all of :data:`METHODS` the backbone supports (CAM needs a GAP -> FC
    classifier, which VGG16 lacks). ``variants``: names of :data:`VARIANTS` or :class:`Variant`
    objects. ``size``: longest image side (default: the images as stored for mini, as the lectures;
    1024 for the real benchmarks). ``device`` defaults to CUDA when available. Every dataset (and the
    set its whitening is learnt on) is loaded before any work (:func:`load_datasets`); ``download=True``
    fetches a missing one. ``timing_images``: mini's fresh timed pass (the others time their one pass).
    ``database_images``: only the first that many database images of each dataset (all its queries,
    the ground truth renumbered: :meth:`retrievalkit.datasets.Dataset.subset`; a whitening set of
    another dataset is used whole). ``batch_size``: images
    per forward pass of the streaming pass; ``progress``: its progress bars.
    """
    names = _check_names(dataset_names, BENCHMARKS, "dataset_names")
    _check_names([model], models.BACKBONES, "model")
    method_names = None if methods is None else _check_names(methods, list(METHODS), "methods")
    chosen = _check_variants(variants)
    if timing_images is not None and (isinstance(timing_images, bool) or not isinstance(timing_images, int)
                                      or timing_images < 1):
        raise ValueError(f"timing_images must be None or an integer >= 1, got {timing_images!r}")
    if database_images is not None and (isinstance(database_images, bool) or not isinstance(database_images, int)
                                        or database_images < 1):
        raise ValueError(f"database_images must be None or an integer >= 1, got {database_images!r}")
    loaded = load_datasets(names, root, download)
    if database_images is not None:
        loaded = [(ds.subset(range(len(ds.queries)), range(min(database_images, len(ds)))), other)
                  for ds, other in loaded]
    net = models.backbone(model, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    chosen_methods = _check_methods(method_names, net, model)
    rows = []
    for ds, other in loaded:
        size_ds = _image_size(ds.name, size)
        if ds.name == "mini":
            rows += dataset_rows(net, model, ds, other, chosen_methods, chosen, size_ds, timing_images)
        else:
            rows += streamed_rows(net, model, ds, other, chosen_methods, chosen, size_ds, batch_size, progress=progress)
        if method_names is None and not net.supports_cam:
            rows.append(_no_cam_row(ds, model))
    return rows


def _text(value: Any, column: str) -> str:
    if not isinstance(value, float):
        return str(value)
    if column.endswith(" s"):
        return f"{value:.3f}"
    return f"{value:.1f}" if column.endswith(("img/s", "q/s")) else f"{value:.2f}"


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """The rows as a Markdown table of ``columns`` (mAP with 2 decimals, seconds with 3, img/s with 1)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_text(r.get(c, ""), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, columns: Sequence[str] = COLUMNS,
                name: str = "bench") -> tuple[Path, Path]:
    """Write ``<name>.csv`` (every column, full precision) and ``<name>.md`` (:func:`markdown`) into
    ``out_dir`` (created), each atomically (a temporary file, then ``os.replace``) -> their paths.
    ``columns``: :data:`COLUMNS`, or :data:`.speed.SPEED_COLUMNS` for the speed table."""
    if not rows:
        raise ValueError("rows must hold at least one row of run()")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    write_atomic(csv_path, buffer.getvalue().encode("utf-8"))
    write_atomic(md_path, markdown(rows, columns).encode("utf-8"))
    return csv_path, md_path
