"""``python -m retrievalkit bench --speed``: where the time of a descriptor goes, stage by stage, and
the pipeline end to end against the per-image reference loop.

For each backbone (:data:`MODELS`; random weights when the ImageNet ones are absent, said in the
``weights`` column), on the same images:

* **stages**, each timed alone over every image (synchronised on CUDA): ``decode`` (read the file,
  ``torchvision.io.decode_jpeg``: in this process on the CPU, or batched on the GPU with
  ``decoder="cuda"``), ``resize`` (to the longest side ``size``, bilinear, antialiased, on the
  decoder's device), ``h2d`` (a same-size batch stacked, pinned and copied with ``non_blocking``; 0
  on the CPU, where nothing moves), ``network`` (the last conv maps of each scale, channels-last,
  bf16 autocast on CUDA, ``torch.inference_mode``), ``pooling`` (each method on the model's device)
  and ``search`` (the first ``queries`` images against all, top ``k`` by :func:`retrievalkit.search.rank`
  on the model's device);
* **end to end**: the fast path, images to descriptors of every method and their search, one pass
  per scale setting: DataLoader workers decode (``decoder="workers"``: :func:`retrievalkit.extract.image_batches`,
  same-size batches with no padding, pinned memory, non-blocking copies) or the GPU decodes
  batched (``decoder="cuda"``), then the network and every pooling on the device;
* **baseline**: the per-image reference loop: PIL load, PIL resize, float32, batch 1, no
  channels-last and no autocast, each method pooled, then the same search.

Single scale and cirtorch's three scales ``(1, 1/sqrt(2), 1/2)`` (fused by
:func:`retrievalkit.extract.combine_scales` with GeM's ``p`` as power, 1 for the others). A row per
model, method and scales; ``ratio`` is end-to-end images/s over the baseline's.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from .. import extract, models, search
from .._validate import positive_int, positive_number
from ..normalization import l2n
from .methods import METHODS, Pooled

__all__ = ["MODELS", "SPEED_METHODS", "SCALES", "SPEED_COLUMNS", "DECODERS", "speed", "end_to_end", "baseline"]

MODELS = ("efficientnet_lite0", "resnet50", "vgg16")
SPEED_METHODS = ("GeM", "R-MAC", "CroW")
SCALES = {"1": (1.0,), "1, 1/√2, 1/2": (1.0, 1 / math.sqrt(2), 0.5)}  # cirtorch's multi-scale
DECODERS = ("workers", "cuda")
SPEED_COLUMNS = ("model", "weights", "method", "scales", "decoder", "images", "decode img/s", "resize img/s",
                 "h2d img/s", "network img/s", "pooling img/s", "search q/s", "end-to-end s", "end-to-end img/s",
                 "baseline s", "baseline img/s", "ratio", "device")
"""Rates are images per second of each stage alone (search: queries per second); ``ratio`` is
end-to-end images/s divided by the per-image baseline's."""

Pools = dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]]  # method -> (pool, multi-scale power)


def _synced(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _pools(methods: Sequence[str]) -> Pools:
    """Each method's pooling and cirtorch's multi-scale power (GeM: its p; others 1)."""
    out: Pools = {}
    for m in methods:
        d = METHODS[m].describer if m in METHODS else None
        if not isinstance(d, Pooled):
            raise ValueError(f"methods must be poolings of {', '.join(n for n, x in METHODS.items() if isinstance(x.describer, Pooled))}"
                             f"; got {m!r}")
        out[m] = (d.pool, float(getattr(d.pool, "keywords", {}).get("p", 1.0)))
    return out


def _read(path: str) -> torch.Tensor:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return read_file(path)


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes -> uint8 ``(3, H, W)``: batched on the GPU when ``device`` is CUDA."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        if device.type == "cuda":
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        return [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]


def _plan(images: Sequence[str], size: float) -> list[list[int]]:
    """Indices grouped by the resized ``(h, w)`` (headers only): batches that need no padding."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(images):
        with Image.open(p) as im:
            groups.setdefault(models.resized_hw(im.height, im.width, size), []).append(i)
    return list(groups.values())


def _describe(net: models.Backbone, x: torch.Tensor, pools: Pools, scales: tuple[float, ...],
              t: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Every method's multi-scale descriptor of the normalised batch ``x``; ``t`` accumulates
    ``network`` and ``pooling <method>`` seconds when given."""
    device = x.device
    per_scale: dict[str, list[torch.Tensor]] = {m: [] for m in pools}
    now = _synced(device)
    for s in scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        maps = extract.forward_maps(net, xs)
        start, now = now, _synced(device)
        if t is not None:
            t["network"] += now - start
        for m, (pool, _) in pools.items():
            per_scale[m].append(l2n(pool(maps).float()))
            start, now = now, _synced(device)
            if t is not None:
                t[f"pooling {m}"] += now - start
    return {m: extract.combine_scales(v, pools[m][1]) for m, v in per_scale.items()}


def _search(X: dict[str, torch.Tensor], queries: int, k: int) -> None:
    for V in X.values():
        search.rank(V[:queries], V, k=min(k, V.shape[0]))


def stages(net: models.Backbone, images: Sequence[str], pools: Pools, size: float, batch_size: int,
           decoder: str, queries: int, k: int, progress: bool) -> dict[str, dict[str, float]]:
    """Seconds of each stage alone over ``images`` (module docstring): ``{scales: {stage: s}}``."""
    device = next(net.parameters()).device
    where = device if decoder == "cuda" else torch.device("cpu")
    out = {name: dict.fromkeys(["decode", "resize", "h2d", "network", *(f"pooling {m}" for m in pools), "search"], 0.0)
           for name in SCALES}
    kept: dict[str, dict[str, list[torch.Tensor]]] = {name: {m: [] for m in pools} for name in SCALES}
    batches = [idx[j: j + batch_size] for idx in _plan(images, size) for j in range(0, len(idx), batch_size)]
    with torch.inference_mode(), tqdm(total=len(images), desc=f"stages {net.name}", unit="img",
                                      disable=not progress) as bar:
        for idx in batches:
            t = out["1"]
            start = _synced(where)
            decoded = _decode([_read(images[i]) for i in idx], where)
            now = _synced(where)
            t["decode"] += now - start
            h, w = models.resized_hw(*decoded[0].shape[-2:], size)
            batch = torch.stack([TF.resize(x, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
                                 for x in decoded])
            start, now = now, _synced(where)
            t["resize"] += now - start
            if device.type == "cuda" and batch.device.type == "cpu":
                batch = batch.pin_memory().to(device, non_blocking=True)
            start, now = now, _synced(device)
            t["h2d"] += now - start
            x = net.transform(batch)
            for name, scales in SCALES.items():
                for m, v in _describe(net, x, pools, scales, out[name]).items():
                    kept[name][m].append(v)
            bar.update(len(idx))
    for name in SCALES:
        X = {m: torch.cat(v) for m, v in kept[name].items()}
        start = _synced(device)
        _search(X, queries, k)
        out[name]["search"] = _synced(device) - start
        for stage in ("decode", "resize", "h2d"):
            out[name][stage] = out["1"][stage]
    return out


def end_to_end(net: models.Backbone, images: Sequence[str], pools: Pools, size: float, scales: tuple[float, ...],
               batch_size: int = 8, num_workers: int | None = None, decoder: str = "workers", queries: int = 70,
               k: int = 100, progress: bool = True) -> tuple[dict[str, torch.Tensor], float]:
    """The fast path (module docstring) -> (``{method: (N, D)}`` descriptors on the CPU, seconds)."""
    device = next(net.parameters()).device
    rows: dict[str, dict[int, torch.Tensor]] = {m: {} for m in pools}
    start = _synced(device)
    if decoder == "cuda":
        groups = [idx[j: j + batch_size] for idx in _plan(images, size) for j in range(0, len(idx), batch_size)]

        def gpu_batches():
            for idx in groups:
                decoded = _decode([_read(images[i]) for i in idx], device)
                h, w = models.resized_hw(*decoded[0].shape[-2:], size)
                yield idx, torch.stack([TF.resize(x, [h, w], antialias=True) for x in decoded])

        batches: Any = tqdm(gpu_batches(), total=len(groups), desc="end to end", disable=not progress)
    else:
        batches = extract.image_batches(images, size, None, batch_size, num_workers, device, progress, "end to end")
    with torch.inference_mode():
        for idx, batch in batches:
            for m, v in _describe(net, net.transform(batch), pools, scales).items():
                rows[m].update(zip(idx, v.cpu()))
        X = {m: torch.stack([r[i] for i in range(len(images))]) for m, r in rows.items()}
        _search({m: v.to(device) for m, v in X.items()}, queries, k)
    return X, _synced(device) - start


def baseline(net: models.Backbone, images: Sequence[str], pools: Pools, size: float, scales: tuple[float, ...],
             queries: int = 70, k: int = 100, progress: bool = True) -> tuple[dict[str, torch.Tensor], float]:
    """The per-image reference loop (module docstring) -> (descriptors on the CPU, seconds)."""
    device = next(net.parameters()).device
    mean = torch.tensor(net.mean, device=device)[:, None, None]
    std = torch.tensor(net.std, device=device)[:, None, None]
    rows: dict[str, list[torch.Tensor]] = {m: [] for m in pools}
    start = _synced(device)
    with torch.inference_mode():
        for path in tqdm(images, desc="baseline", unit="img", disable=not progress):
            with Image.open(path) as im:
                im = models.resize_longest(im.convert("RGB"), size)
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1).to(device)
            x = ((x - mean) / std)[None]
            per_scale: dict[str, list[torch.Tensor]] = {m: [] for m in pools}
            for s in scales:
                xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
                maps = net.features(xs)
                for m, (pool, _) in pools.items():
                    per_scale[m].append(l2n(pool(maps)))
            for m, v in per_scale.items():
                rows[m].append(extract.combine_scales(v, pools[m][1]).cpu())
        X = {m: torch.cat(v) for m, v in rows.items()}
        _search({m: v.to(device) for m, v in X.items()}, queries, k)
    return X, _synced(device) - start


def _load(name: str, device: torch.device) -> tuple[models.Backbone, str]:
    try:
        return models.backbone(name, device=device), "ImageNet"
    except FileNotFoundError:
        return models.backbone(name, pretrained=False, device=device), "random (ImageNet weights absent)"


def speed(images: Sequence[str], model_names: Sequence[str] = MODELS, methods: Sequence[str] = SPEED_METHODS,
          size: float = 1024, batch_size: int = 8, num_workers: int | None = None, device: str | None = None,
          decoders: Sequence[str] | None = None, queries: int = 70, k: int = 100,
          progress: bool = True) -> list[dict[str, Any]]:
    """The speed table (module docstring): one row (:data:`SPEED_COLUMNS`) per model, method, scales and
    decoder. ``decoders`` default to ``("workers", "cuda")`` on a GPU, ``("workers",)`` otherwise."""
    images = [str(p) for p in images]
    if not images:
        raise ValueError("images must be a non-empty list of JPEG paths")
    bad = [m for m in model_names if m not in MODELS]
    if not model_names or bad:
        raise ValueError(f"model_names must be a non-empty list of {', '.join(MODELS)}; got {bad or model_names!r}")
    pools = _pools(methods)
    size, batch_size = positive_number(size, "size"), positive_int(batch_size, "batch_size")
    queries, k = min(positive_int(queries, "queries"), len(images)), positive_int(k, "k")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    decoders = tuple(decoders or (DECODERS if dev.type == "cuda" else ("workers",)))
    if any(d not in DECODERS for d in decoders) or ("cuda" in decoders and dev.type != "cuda"):
        raise ValueError(f"decoders must be among {DECODERS} ('cuda' on a CUDA device only), got {decoders!r}")
    rows = []
    for name in model_names:
        net, weights = _load(name, dev)
        alone = {d: stages(net, images, pools, size, batch_size, d, queries, k, progress) for d in decoders}
        for label, scales in SCALES.items():
            _, base = baseline(net, images, pools, size, scales, queries, k, progress)
            for d in decoders:
                _, total = end_to_end(net, images, pools, size, scales, batch_size, num_workers, d, queries, k, progress)
                t = alone[d][label]
                for m in pools:
                    rows.append({
                        "model": name, "weights": weights, "method": m, "scales": label, "decoder": d,
                        "images": len(images), "device": str(dev),
                        **{f"{s} img/s": len(images) / max(t[s], 1e-9) for s in ("decode", "resize", "network")},
                        "h2d img/s": len(images) / t["h2d"] if dev.type == "cuda" else "",
                        "pooling img/s": len(images) / max(t[f"pooling {m}"], 1e-9),
                        "search q/s": queries * len(pools) / max(t["search"], 1e-9),
                        "end-to-end s": total, "end-to-end img/s": len(images) / total,
                        "baseline s": base, "baseline img/s": len(images) / base, "ratio": base / total})
        del net
    return rows
