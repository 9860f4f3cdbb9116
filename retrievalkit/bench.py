"""The benchmark of notebook 10: every descriptor of the course, three post-processings, one table.

For each dataset, :func:`run` extracts the last convolutional maps once
(:func:`retrievalkit.extract.dataset_maps`, cached on disk), describes the queries and the database
with every method of :data:`METHODS` at its seed paper's setting, post-processes them with each
variant of :data:`VARIANTS`, ranks exactly (:func:`retrievalkit.search.rank`) and evaluates with the
dataset's protocol: the old one (mAP over the 55 queries) for Oxford5k / Paris6k, Medium and Hard for
rOxford5k / rParis6k and the mini benchmark. Each row also holds the published number of
:data:`PUBLISHED` for the same dataset, method, variant and backbone (blank where none exists) and the
time of each stage:

* **decode**: read, decode, crop (queries) and resize every image, one process, one image at a time
  (``extract._Decoded``, the exact decode of the extraction);
* **network**: the backbone on the decoded images, batched by size (batches of 8) as the extraction
  does, on the model's device (synchronised on CUDA);
* **pooling**: the method's descriptors of the queries and the database from the maps;
* **search**: the variant (whitening projection, alpha-QE) applied to queries and database, then the
  exact ranking (the least of three runs).

The maps used for the descriptors come from the cache (the float16 maps every lecture reads, so the
mini numbers are the lectures' numbers); decode and network are therefore timed on a **separate fresh
pass** over ``timing_images`` images (default 100, evenly spaced over queries + database),
never read from the cache: the ``timed`` column says how many. Learning (whitening, the VLAD codebook
and its local PCA) happens offline on another set and is not part of any stage. Images per second is
``timed / seconds`` for decode and network, ``(queries + database) / seconds`` for pooling and
``queries / seconds`` for search (queries answered per second).

Whitening and codebooks are learnt on another set, as the seed papers do: Paris6k for Oxford5k and
vice versa (rParis6k for rOxford5k and vice versa), the training split (``info["split"] == "train"``)
for the mini benchmark; PCA-whitening keeps ``min(D, 512, n_train - 1)`` dimensions (512: the seed
papers' descriptors; ``n_train - 1``: the most a training set of ``n_train`` images can whiten).
alpha-QE uses ``alpha = 3`` (Radenović et al., TPAMI 2018) and ``k = 10`` (PyRetri's ``qe_k``, the
CroW / CAM papers' ``N_QE = 10``). Every method is whitened after pooling, the same way; seed 003
whitens each class vector of CAM before the sum instead (its published row says so).

Real mode holds the maps of a dataset and of its whitening set in memory as float32 (VGG16 at 1024:
about 30 GB each); it is meant for a GPU machine with ample memory.
"""
from __future__ import annotations

import csv
import functools
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import cam, crow, datasets, encoding, evaluate, extract, models, pooling, postprocess, regions, search
from ._atomic import write_atomic
from ._batching import rows_by_shape

__all__ = ["BENCHMARKS", "METHODS", "VARIANTS", "PUBLISHED", "COLUMNS", "run", "markdown", "write_table"]

Describe = Callable[[list[torch.Tensor]], torch.Tensor]  # maps -> (N, D) unit rows

QE_K, QE_ALPHA = 10, 3.0
WHITEN_DIM = 512
CAM_CLASSES = 64  # seed 003: N_c = 64 class maps, offline aggregation
VLAD_K, VLAD_LOCAL_DIM = 32, 64  # lecture 3: 32 visual words on 64-D PCA-reduced positions
REAL_SIZE = 1024  # longest side of the real benchmarks' images (cirtorch, seeds 002 and 003)
BENCHMARKS = ("mini", "oxford5k", "paris6k", "roxford5k", "rparis6k")
OTHER = {"oxford5k": "paris6k", "paris6k": "oxford5k", "roxford5k": "rparis6k", "rparis6k": "roxford5k"}


def _pooled(pool: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[models.Backbone, list[torch.Tensor]], Describe]:
    """A method that pools each map on its own: no network head, nothing learnt."""
    return lambda net, train: functools.partial(extract.pool_maps, pool=pool)


def _cam(net: models.Backbone, train: list[torch.Tensor]) -> Describe:
    """Seed 003, offline aggregation: ``l2n(sum_{c in top-N} l2n(w * sum_ij x_ij cam_c,ij))``, N = 64."""
    W = net.fc_weight.detach()

    def pool(x: torch.Tensor) -> torch.Tensor:
        top = cam.top_classes(net.logits(x), CAM_CLASSES)
        return cam.aggregate_classes(cam.class_weighted(x, cam.class_activation_maps(x, W, top)))

    return functools.partial(extract.pool_maps, pool=pool)


def _vlad(net: models.Backbone, train: list[torch.Tensor]) -> Describe:
    """VLAD (seed 001 slides, Jégou et al. 2010) of the map positions, as lecture 3: positions
    PCA-reduced to 64-D (``power=0``) and k-means with K = 32 (seed 0, 10 iterations), both learnt
    on the training maps (at most 100,000 positions, drawn with seed 0), plain VLAD -> ``K * 64``."""
    local = torch.cat([encoding.local_descriptors(m) for m in train])
    if local.shape[0] > 100_000:
        local = local[torch.randperm(local.shape[0], generator=torch.Generator().manual_seed(0))[:100_000]]
    pca = postprocess.PCAWhitening(dim=VLAD_LOCAL_DIM, power=0).fit(local)
    centers = encoding.Codebook(k=VLAD_K, seed=0, n_iter=10).fit(pca.transform(local)).centers

    def describe(maps: list[torch.Tensor]) -> torch.Tensor:
        return encoding.vlad([pca.transform(encoding.local_descriptors(m)) for m in maps], centers)

    return describe


@dataclass(frozen=True)
class Method:
    """A descriptor of the course: ``build(net, training_maps)`` returns ``maps -> (N, D)`` unit rows."""

    name: str
    setting: str
    build: Callable[[models.Backbone, list[torch.Tensor]], Describe]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("MAC", "global max (Tolias et al. 2016)", _pooled(pooling.mac)),
    Method("SPoC", "sum with centre prior, sigma = min(H, W)/6 (Babenko & Lempitsky 2015)", _pooled(pooling.spoc)),
    Method("GeM", "p = 3 (Radenović et al. 2018)", _pooled(functools.partial(pooling.gem, p=3.0))),
    Method("R-MAC", "L = 3, no global term (Tolias et al. 2016)", _pooled(functools.partial(regions.rmac, L=3))),
    Method("OS-RMAC", "seed 002's R-MAC, L = 3, one resolution, last layer", _pooled(functools.partial(regions.os_rmac, L=3))),
    Method("CroW", "a = 2, b = 2 (Kalantidis et al. 2016)", _pooled(functools.partial(crow.crow, a=2, b=2))),
    Method("CAM", f"offline aggregation of the top {CAM_CLASSES} classes (seed 003)", _cam),
    Method("VLAD", f"K = {VLAD_K} on {VLAD_LOCAL_DIM}-D positions, codebook from the other set (seed 001)", _vlad),
)}
"""The descriptors, by name, with their seed paper's setting."""

VARIANTS = ("raw", "+PCAw", "+PCAw+αQE")
"""Post-processing: none; PCA-whitening learnt on the other set; the same then alpha-QE (k = 10, alpha = 3)."""

_SEEDS = "seeds 002-004 tables"
PUBLISHED: dict[tuple[str, str, str, str], tuple[dict[str, float], str]] = {
    ("oxford5k", "SPoC", "+PCAw", "vgg16"): ({"old": 53.1}, f"256-D, PCAw; Babenko & Lempitsky 2015 ({_SEEDS})"),
    ("oxford5k", "CroW", "+PCAw", "vgg16"): ({"old": 68.2}, f"512-D, PCAw on Paris; Kalantidis et al. 2016 ({_SEEDS})"),
    ("paris6k", "CroW", "+PCAw", "vgg16"): ({"old": 79.6}, f"512-D, PCAw on Oxford; Kalantidis et al. 2016 ({_SEEDS})"),
    ("oxford5k", "CroW", "+PCAw+αQE", "vgg16"): ({"old": 72.2}, "512-D, PCAw + average QE k=10; Kalantidis et al. (seed 004 table)"),
    ("paris6k", "CroW", "+PCAw+αQE", "vgg16"): ({"old": 85.5}, "512-D, PCAw + average QE k=10; Kalantidis et al. (seed 004 table)"),
    ("oxford5k", "R-MAC", "+PCAw", "vgg16"): ({"old": 66.9}, f"512-D, PCAw on Paris; Tolias et al. 2016 ({_SEEDS})"),
    ("paris6k", "R-MAC", "+PCAw", "vgg16"): ({"old": 83.0}, f"512-D, PCAw on Oxford; Tolias et al. 2016 ({_SEEDS})"),
    ("oxford5k", "R-MAC", "raw", "vgg16"): ({"old": 52.15}, "cirtorch R-MAC (+ global term), multi-scale; bkj run.sh re-run"),
    ("paris6k", "R-MAC", "raw", "vgg16"): ({"old": 74.94}, "cirtorch R-MAC (+ global term), multi-scale; bkj run.sh re-run"),
    ("oxford5k", "R-MAC", "+PCAw+αQE", "vgg16"): ({"old": 71.84}, "cirtorch, Lw (rSfM-120k) + αQE, multi-scale; bkj run.sh re-run"),
    ("paris6k", "R-MAC", "+PCAw+αQE", "vgg16"): ({"old": 88.58}, "cirtorch, Lw (rSfM-120k) + αQE, multi-scale; bkj run.sh re-run"),
    ("oxford5k", "CAM", "+PCAw", "vgg16"): ({"old": 71.2}, "64 CAMs, PCA 512 on Paris per class vector; seed 003"),
    ("paris6k", "CAM", "+PCAw", "vgg16"): ({"old": 80.5}, "64 CAMs, PCA 512 on Oxford per class vector; seed 003"),
    ("oxford5k", "CAM", "+PCAw", "resnet50"): ({"old": 69.9}, "64 CAMs, PCA 512 on Paris per class vector; seed 003"),
    ("paris6k", "CAM", "+PCAw", "resnet50"): ({"old": 80.4}, "64 CAMs, PCA 512 on Oxford per class vector; seed 003"),
    ("oxford5k", "OS-RMAC", "raw", "resnet50"): ({"old": 67.77}, "2048-D, 3 resolutions fused (M-R l_j); seed 002 table 4"),
    ("paris6k", "OS-RMAC", "raw", "resnet50"): ({"old": 82.0}, "2048-D, 3 resolutions fused (M-R l_j); seed 002 table 4"),
}
"""Published mAP (%) by (dataset, method, variant, backbone) -> ({protocol: mAP}, setting and source),
transcribed from the course design's ``PUBLISHED.md`` (its sources named in each setting) and the seed
papers' tables. No source reports an off-the-shelf
MAC / SPoC / GeM / CroW / CAM / VLAD on rOxford5k / rParis6k, so those rows stay blank."""

PROTOCOLS = {"original": "old", "medium": "M", "hard": "H"}
COLUMNS = ("dataset", "model", "method", "variant", "dim", "old", "M", "H", "published old", "published M",
           "published H", "published setting", "timed", "decode s", "decode img/s", "network s", "network img/s",
           "pooling s", "pooling img/s", "search s", "search img/s")
"""The columns of a row; mAP in %, blank where the dataset has no such protocol."""


def _check_names(values: Any, allowed: Sequence[str], name: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{name} must be a non-empty list of {', '.join(allowed)}; got {bad or values!r}")
    return values


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_pass(net: models.Backbone, ds: datasets.Dataset, size: float | None, n: int | None) -> dict[str, float]:
    """Decode, then the network, on a fresh pass over ``n`` images (all when None) evenly spaced over
    queries + database: ``{"timed", "decode s", "network s"}``."""
    images = [str(p) for p in [*ds.queries, *ds.images]]
    boxes = [ds.bbx(i) for i in range(len(ds.queries))] + [None] * len(ds.images)
    if n is not None and n < len(images):
        pick = [round(i * (len(images) - 1) / max(n - 1, 1)) for i in range(n)]
        images, boxes = [images[i] for i in pick], [boxes[i] for i in pick]
    decoder = extract._Decoded(images, extract._plan(images, boxes, size))
    start = time.perf_counter()
    decoded = [decoder[i] for i in range(len(decoder))]
    decode = time.perf_counter() - start
    device = next(net.parameters()).device

    def forward(batch: torch.Tensor) -> torch.Tensor:  # the maps' mean keeps the batch's work from being skipped
        return extract._maps(net, net.transform(batch.to(device))).mean(dim=(1, 2, 3))[:, None]

    with torch.inference_mode():
        forward(decoded[0][None])  # warm-up (first-call allocations, CUDA context), not timed
        _sync(device)
        start = time.perf_counter()
        rows_by_shape(decoded, forward, 8, "network")
        _sync(device)
    return {"timed": len(images), "decode s": decode, "network s": time.perf_counter() - start}


def _training_maps(net: models.Backbone, ds: datasets.Dataset, xmaps: list[torch.Tensor], root: Any, download: bool,
                   size: float | None) -> list[torch.Tensor]:
    """The maps that whitening and codebooks are learnt on: mini's training split, else the other dataset."""
    if ds.name == "mini":
        return [m for m, s in zip(xmaps, ds.info["split"]) if s == "train"]
    other = datasets.load(OTHER[ds.name], root=root, download=download)
    return extract.dataset_maps(net, other, size=size, progress=False)[1]


def _search(variant: str, Q: torch.Tensor, X: torch.Tensor, whiten: postprocess.PCAWhitening) -> torch.Tensor:
    """The variant applied to queries and database, then the exact ranking."""
    if variant != "raw":
        Q, X = whiten.transform(Q), whiten.transform(X)
    if variant == "+PCAw+αQE":
        Q = postprocess.alpha_query_expansion(Q, X, QE_K, QE_ALPHA)
    return search.rank(Q, X)


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


def run(
    dataset_names: Sequence[str] | str = ("mini",),
    model: str = "efficientnet_lite0",
    methods: Sequence[str] | str | None = None,
    variants: Sequence[str] | str = VARIANTS,
    root: str | os.PathLike | None = None,
    download: bool = False,
    size: float | None = None,
    device: str | None = None,
    timing_images: int | None = 100,
) -> list[dict[str, Any]]:
    """The benchmark: one row (a dict with :data:`COLUMNS`) per dataset, method and variant.

    ``methods`` default to all of :data:`METHODS` the backbone supports (CAM needs a GAP -> FC
    classifier, which VGG16 lacks). ``size``: longest image side (default: the images as stored for
    mini, as the lectures; 1024 for the real benchmarks). ``device`` defaults to CUDA when available.
    Every dataset (and the set its whitening is learnt on) is loaded before any work, so a missing
    one raises :class:`retrievalkit.datasets.DatasetNotFoundError` at once; ``download=True`` fetches it.
    """
    names = _check_names(dataset_names, BENCHMARKS, "dataset_names")
    _check_names([model], models.BACKBONES, "model")
    method_names = None if methods is None else _check_names(methods, list(METHODS), "methods")
    variants = _check_names(variants, VARIANTS, "variants")
    if timing_images is not None and (isinstance(timing_images, bool) or not isinstance(timing_images, int)
                                      or timing_images < 1):
        raise ValueError(f"timing_images must be None or an integer >= 1, got {timing_images!r}")
    loaded = [datasets.load(n, root=root, download=download) for n in names]
    for n in names:
        if n != "mini":
            datasets.load(OTHER[n], root=root, download=download)
    net = models.backbone(model, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if method_names is None:
        method_names = [m for m in METHODS if m != "CAM" or net.supports_cam]
    elif "CAM" in method_names and not net.supports_cam:
        raise ValueError(f"methods: 'CAM' needs a GAP -> FC classifier; model {model!r} has none "
                         f"(use efficientnet_lite0 or resnet50)")
    rows = []
    for ds in loaded:
        sz = size if size is not None else (None if ds.name == "mini" else REAL_SIZE)
        qmaps, xmaps = extract.dataset_maps(net, ds, size=sz, progress=False)
        train = _training_maps(net, ds, xmaps, root, download, sz)
        stage = _timed_pass(net, ds, sz, timing_images)
        n_all = len(qmaps) + len(xmaps)
        for name in method_names:
            describe = METHODS[name].build(net, train)
            start = time.perf_counter()
            with torch.inference_mode():
                Q, X = describe(qmaps), describe(xmaps)
            pool_s = time.perf_counter() - start
            with torch.inference_mode():
                T = describe(train)
            whiten = postprocess.PCAWhitening(dim=min(X.shape[1], WHITEN_DIM, T.shape[0] - 1)).fit(T)
            for variant in variants:
                ranks, search_s = _best_of(lambda: _search(variant, Q, X, whiten))
                table = evaluate.evaluate(ranks, ds)
                published, setting = PUBLISHED.get((ds.name, name, variant, model), ({}, ""))
                row: dict[str, Any] = {c: "" for c in COLUMNS}
                row.update({"dataset": ds.name, "model": model, "method": name, "variant": variant,
                            "dim": X.shape[1] if variant == "raw" else whiten.P_.shape[0],
                            "published setting": setting, **stage,
                            "decode img/s": _rate(stage["timed"], stage["decode s"]),
                            "network img/s": _rate(stage["timed"], stage["network s"]),
                            "pooling s": pool_s, "pooling img/s": _rate(n_all, pool_s),
                            "search s": search_s, "search img/s": _rate(len(qmaps), search_s)})
                for protocol, column in PROTOCOLS.items():
                    if protocol in table:
                        row[column] = table[protocol]["mAP"]
                    if column in published:
                        row[f"published {column}"] = published[column]
                rows.append(row)
    return rows


def _text(value: Any, column: str) -> str:
    if not isinstance(value, float):
        return str(value)
    if column.endswith(" s"):
        return f"{value:.3f}"
    return f"{value:.1f}" if column.endswith("img/s") else f"{value:.2f}"


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """The rows as a Markdown table of ``columns`` (mAP with 2 decimals, seconds with 3, img/s with 1)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_text(r.get(c, ""), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``bench.csv`` (every column, full precision) and ``bench.md`` (:func:`markdown`) into
    ``out_dir`` (created), each atomically (a temporary file, then ``os.replace``) -> their paths."""
    if not rows:
        raise ValueError("rows must hold at least one row of run()")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, md_path = folder / "bench.csv", folder / "bench.md"
    write_atomic(csv_path, buffer.getvalue().encode("utf-8"))
    write_atomic(md_path, markdown(rows).encode("utf-8"))
    return csv_path, md_path
