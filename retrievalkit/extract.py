"""Batched extraction of feature maps and descriptors from image files, with an on-disk cache.

The pipeline of cirtorch's ``extract_vectors`` (``networks/imageretrievalnet.py``), batched:

1. **Read and size.** Each image (a path, or a PIL image) is decoded with ``torchvision.io`` in
   ``DataLoader`` workers, cropped to its box if one is given, and resized (bilinear,
   antialiased) so that its longest side is ``size`` (``None``: kept as is). A query crop is
   resized to ``size * max(crop) / max(full image)``, cirtorch's ``ImagesFromList`` rule: the
   crop keeps the scale it has in the full image resized to ``size``. Boxes are
   ``[x1, y1, x2, y2]`` in pixels of the original image; like PIL's ``crop`` (cirtorch), the
   coordinates are rounded to the nearest integer, then clipped to the image.
2. **Batch.** Images of the same resized size go through the network together (no padding,
   so a descriptor does not depend on its batch: BatchNorm is in eval mode), at most
   ``batch_size`` at a time, in ``torch.inference_mode``, channels-last, with bf16 autocast
   on CUDA only (maps and descriptors are returned as float32 on the CPU).
3. **Pool, multi-scale** (:func:`descriptors`), exactly cirtorch's ``extract_ms``: for each
   scale ``s`` the normalised input is resized by ``s`` (``F.interpolate``, bilinear,
   ``align_corners=False``, no antialiasing) and described by ``f_s = l2n(pool(features))``
   (cirtorch's network ends with ``L2N``; here :func:`retrievalkit.normalization.l2n`); then
   ``v = (mean_s f_s^power)^(1/power)`` and ``v / ||v||``. ``power`` is the GeM ``p`` for GeM
   networks in cirtorch, 1 otherwise; scales ``(1, 1/sqrt(2), 1/2)`` are its usual choice.

Differences from cirtorch: ``size`` is reached exactly, enlarging when needed (cirtorch's
``imresize`` uses PIL ``thumbnail``, which only shrinks), and the resize uses torchvision's
antialiased bilinear kernel instead of PIL's removed ``ANTIALIAS`` filter.

One on-disk cache serves :func:`descriptors` and :func:`dataset_maps`: ``cache="default"`` (their
default) is ``<data root>/features`` (``data/cache/features`` in the course checkout), a folder
may be given, None turns it off. Each result is one ``.pt`` file named by a hash of everything
that determines it (images with their sizes and modification times, boxes, the model's name and
weights, the pooling function and its parameters, ``size``, ``scales``, ``power``, the layer)
and is loaded on the next call.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as _TorchDataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from ._atomic import write_atomic
from ._cache import cache_path, describe, file_key, slug
from ._batching import rows_by_shape
from ._validate import check_map_list, positive_int, positive_number
from .models import resized_hw
from .normalization import l2n

__all__ = ["feature_maps", "descriptors", "dataset_descriptors", "dataset_maps", "pool_maps", "pool_dataset_maps",
           "decode", "forward_maps", "image_batches", "combine_scales"]

Pool = Callable[[torch.Tensor], torch.Tensor]
Plan = list[tuple[tuple[int, int, int, int] | None, tuple[int, int]]]  # per image: integer crop or None, (h, w)


def _default_workers() -> int:
    """Decoding processes: none on two CPUs or fewer, where a worker only competes with the network's threads
    (measured on 2 cores: 194 images 7.0 s in-process against 8.6 s with one worker), else up to 4."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(4, cpus - 1)


def _check_images(images: Any) -> list[str | Image.Image]:
    if isinstance(images, (str, os.PathLike, Image.Image)) or not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of image paths or PIL images, got {type(images).__name__}")
    out: list[str | Image.Image] = []
    for i, im in enumerate(images):
        if isinstance(im, Image.Image):
            out.append(im)
        elif isinstance(im, (str, os.PathLike)):
            if not Path(im).is_file():
                raise FileNotFoundError(f"images[{i}]: no such file {str(im)!r}")
            out.append(str(im))
        else:
            raise ValueError(f"images[{i}] must be a path or a PIL image, got {type(im).__name__}")
    return out


def _full_size(image: str | Image.Image) -> tuple[int, int]:
    """``(height, width)`` of the stored image, read from the file header only."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    with Image.open(image) as im:
        return im.height, im.width


def _check_boxes(boxes: Any, n: int) -> list[list[float] | None]:
    if boxes is None:
        return [None] * n
    if isinstance(boxes, (str, bytes)) or not isinstance(boxes, Sequence) and not isinstance(boxes, np.ndarray):
        raise ValueError(f"boxes must be None or one [x1, y1, x2, y2] box (or None) per image, got {type(boxes).__name__}")
    if len(boxes) != n:
        raise ValueError(f"boxes must hold one box (or None) per image: {n} images, got {len(boxes)} boxes")
    out: list[list[float] | None] = []
    for i, b in enumerate(boxes):
        if b is None:
            out.append(None)
            continue
        try:
            v = [float(c) for c in b]
        except (TypeError, ValueError):
            raise ValueError(f"boxes[{i}] must be [x1, y1, x2, y2], got {b!r}") from None
        if len(v) != 4 or not all(np.isfinite(v)):
            raise ValueError(f"boxes[{i}] must be four finite numbers [x1, y1, x2, y2], got {b!r}")
        out.append(v)
    return out


def _plan(images: list[str | Image.Image], boxes: list[list[float] | None], size: float | None) -> Plan:
    """Per image: the integer crop ``(x1, y1, x2, y2)`` (or None) and the ``(h, w)`` fed to the network."""
    plan = []
    for i, (image, box) in enumerate(zip(images, boxes)):
        H, W = _full_size(image)
        crop = None
        h, w = H, W
        if box is not None:
            x1, y1, x2, y2 = (round(c) for c in box)  # as PIL's Image.crop
            x1, x2 = max(0, x1), min(W, x2)
            y1, y2 = max(0, y1), min(H, y2)
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"boxes[{i}] = {box} leaves nothing of the {W}x{H} image (x1 < x2, y1 < y2 inside it expected)")
            crop = (x1, y1, x2, y2)
            h, w = y2 - y1, x2 - x1
        if size is not None:
            h, w = resized_hw(h, w, size * max(h, w) / max(H, W))
        plan.append((crop, (h, w)))
    return plan


class _Decoded(_TorchDataset):
    """uint8 ``(3, h, w)`` images: decoded (torchvision.io), cropped, resized to the planned size."""

    def __init__(self, images: list[str | Image.Image], plan: Plan) -> None:
        self.images = images
        self.plan = plan

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i]
        if isinstance(image, Image.Image):
            x = TF.pil_to_tensor(image.convert("RGB"))
        else:
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
                warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
                x = decode_image(read_file(image), mode=ImageReadMode.RGB)
        crop, hw = self.plan[i]
        if crop is not None:
            x1, y1, x2, y2 = crop
            x = x[:, y1:y2, x1:x2]
        if tuple(x.shape[-2:]) != hw:
            x = TF.resize(x, list(hw), interpolation=InterpolationMode.BILINEAR, antialias=True)
        return x


def _device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batches(
    images: list[str | Image.Image], size: Any, boxes: Any, batch_size: Any, num_workers: Any, device: torch.device,
    progress: bool, desc: str,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(indices, uint8 batch on device)``, one batch per group of equal-sized images."""
    size = None if size is None else positive_number(size, "size")
    batch_size = positive_int(batch_size, "batch_size")
    num_workers = _default_workers() if num_workers is None else num_workers
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    plan = _plan(images, _check_boxes(boxes, len(images)), size)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_, hw) in enumerate(plan):
        groups.setdefault(hw, []).append(i)
    batches = [idx[j : j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]
    loader = DataLoader(
        _Decoded(images, plan),
        batch_sampler=batches,
        num_workers=int(num_workers),
        collate_fn=torch.stack,
        pin_memory=device.type == "cuda",
    )
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for idx, batch in zip(batches, loader):
            yield idx, batch.to(device, non_blocking=True)
            bar.update(len(idx))


def image_batches(
    images: Sequence[str | os.PathLike | Image.Image], size: float | None = None,
    boxes: Sequence[Sequence[float] | None] | None = None, batch_size: int = 8, num_workers: int | None = None,
    device: torch.device | str = "cpu", progress: bool = True, desc: str = "images",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(indices, uint8 batch (B, 3, h, w) on device)`` per group of equal-sized images, decoded, cropped
    and resized as :func:`feature_maps` does (module docstring, steps 1-2), for callers that consume the
    batches as they come (the benchmark's one-pass streaming)."""
    return _batches(_check_images(images), size, boxes, batch_size, num_workers, torch.device(device), progress, desc)


def decode(
    images: Sequence[str | os.PathLike | Image.Image], boxes: Sequence[Sequence[float] | None] | None = None,
    size: float | None = None,
) -> list[torch.Tensor]:
    """Each image as the network receives it: uint8 ``(3, h, w)``, decoded, cropped to its box and
    resized exactly as :func:`feature_maps` does (module docstring, step 1), one at a time in this
    process (what a benchmark times as "decode")."""
    images = _check_images(images)
    size = None if size is None else positive_number(size, "size")
    decoder = _Decoded(images, _plan(images, _check_boxes(boxes, len(images)), size))
    return [decoder[i] for i in range(len(images))]


def forward_maps(model: nn.Module, x: torch.Tensor, layer: str = "last") -> torch.Tensor:
    """``model.features`` (``layer="penultimate"``: ``model.multi_layer(x)[0]``) on a normalised
    batch: channels-last, bf16 autocast on CUDA only."""
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        maps = model.features(x) if layer == "last" else model.multi_layer(x)[0]
        return maps.float()


def feature_maps(
    model: nn.Module,
    images: Sequence[str | os.PathLike | Image.Image],
    size: float | None = None,
    boxes: Sequence[Sequence[float] | None] | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    layer: str = "last",
) -> list[torch.Tensor]:
    """The last convolutional maps of each image, ``[(K, h, w), ...]`` float32 on the CPU, in input order.

    ``layer="penultimate"`` gives the maps one stride up instead (``model.multi_layer``), for the
    multi-layer descriptors of Seddati et al. (ICCVW 2017).

    ``model`` is a :class:`retrievalkit.models.Backbone` (anything with ``features`` and
    ``transform``). ``size`` is the longest side fed to the network (None: the image as stored);
    ``boxes`` one ``[x1, y1, x2, y2]`` (or None) per image: the crop, resized with the query rule
    of the module docstring. ``num_workers`` decoding processes (default ``min(4, cpus - 1)``, 0 on two CPUs or fewer; 0
    decodes in this process); ``device`` defaults to the model's.
    """
    if layer not in ("last", "penultimate"):
        raise ValueError(f"layer must be 'last' or 'penultimate', got {layer!r}")
    images = _check_images(images)
    dev = _device(model, device)
    out: list[torch.Tensor] = [torch.empty(0)] * len(images)
    with torch.inference_mode():
        for idx, batch in _batches(images, size, boxes, batch_size, num_workers, dev, progress, "feature maps"):
            maps = forward_maps(model, model.transform(batch), layer).cpu().contiguous()
            for j, i in enumerate(idx):
                out[i] = maps[j]
    return out


def _check_scales(scales: Any) -> tuple[float, ...]:
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or len(scales) == 0:
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    return tuple(positive_number(s, "scales") for s in scales)


def _multiscale(model: nn.Module, x: torch.Tensor, pool: Pool, scales: tuple[float, ...], power: float) -> torch.Tensor:
    """cirtorch's ``extract_ms`` on a normalised batch ``x`` -> ``(B, D)`` float32, unit rows."""
    vectors = []
    for s in scales:
        if math.floor(min(x.shape[-2:]) * s) < 1:
            raise ValueError(f"scales: scale {s} shrinks a {tuple(x.shape[-2:])} input to nothing")
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        v = pool(forward_maps(model, xs))
        if not isinstance(v, torch.Tensor) or v.dim() != 2 or v.shape[0] != x.shape[0]:
            raise ValueError(f"pool must map (N, K, H, W) maps to (N, D) descriptors, got {getattr(v, 'shape', type(v))}")
        v = l2n(v.float())
        if power != 1 and bool((v < 0).any()):
            raise ValueError(f"power = {power} needs non-negative descriptors (e.g. GeM), but pool gave negative values")
        vectors.append(v)
    return combine_scales(vectors, power)


def combine_scales(vectors: Sequence[torch.Tensor], power: float = 1.0) -> torch.Tensor:
    """cirtorch's ``extract_ms`` fusion of per-scale unit descriptors ``(B, D)``:
    ``l2n((mean_s v_s^power)^(1/power))`` (module docstring, step 3)."""
    v = sum(v if power == 1 else v.pow(power) for v in vectors) / len(vectors)
    return l2n(v if power == 1 else v.pow(1.0 / power))


def descriptors(
    model: nn.Module,
    images: Sequence[str | os.PathLike | Image.Image],
    pool: Pool,
    size: float | None = None,
    scales: Sequence[float] = (1,),
    power: float = 1.0,
    boxes: Sequence[Sequence[float] | None] | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    cache: str | os.PathLike | None = "default",
    key: str | None = None,
) -> torch.Tensor:
    """One L2-normalised descriptor per image -> ``(N, D)`` float32 on the CPU, rows in input order.

    ``pool`` maps feature maps ``(N, K, H, W)`` to ``(N, D)`` (``pooling.gem``,
    ``functools.partial(regions.rmac, L=3)``, ``crow.crow``, a ``pooling.GeM()``...). Multi-scale
    with ``scales`` and ``power`` exactly as cirtorch's ``extract_ms`` (module docstring):
    ``v = l2n((mean_s l2n(pool(features(resize_s(x))))^power)^(1/power))``; ``scales=(1,)``
    is single-scale. ``size``, ``boxes``, ``batch_size``, ``num_workers``, ``device``: as in
    :func:`feature_maps`. ``cache``: where the result is stored and looked up first (module
    docstring; ``key``, e.g. ``"roxford5k/database"``, names the file and enters its hash).
    """
    scales = _check_scales(scales)
    power = positive_number(power, "power")
    if not callable(pool):
        raise ValueError(f"pool must be a callable mapping (N, K, H, W) maps to (N, D), got {type(pool).__name__}")
    images = _check_images(images)
    path = None
    if cache is not None:  # describing the model hashes its weights: only when caching
        pool_desc = describe(pool)
        if " at 0x" in pool_desc:
            raise ValueError(f"pool {pool_desc} has no stable description for the cache: pass a function, "
                             "a functools.partial or an nn.Module")
        pool_name = getattr(pool, "__name__", None) or getattr(getattr(pool, "func", None), "__name__", None)
        label = "-".join(slug(p) for p in (key or "images", getattr(model, "name", type(model).__name__),
                                           pool_name or type(pool).__name__))
        path = cache_path(cache, label, [
            "descriptors", repr(key), describe(model), pool_desc, repr(None if size is None else positive_number(size, "size")),
            repr(scales), repr(power), repr(_check_boxes(boxes, len(images))),
            *(describe(im) if isinstance(im, Image.Image) else file_key(im) for im in images)])
    if path is not None and path.is_file():
        stored = torch.load(path)
        if stored.shape[0] == len(images):
            return stored
    dev = _device(model, device)
    rows: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for idx, batch in _batches(images, size, boxes, batch_size, num_workers, dev, progress, "descriptors"):
            v = _multiscale(model, model.transform(batch), pool, scales, power).cpu()
            rows.update(zip(idx, v))
    X = torch.stack([rows[i] for i in range(len(rows))])
    if path is not None:
        write_atomic(path, lambda f: torch.save(X, f))
    return X


def dataset_descriptors(model: nn.Module, dataset: Any, pool: Pool, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, X)``: query and database descriptors of a dataset (duck-typed), by :func:`descriptors`.

    ``dataset.images`` are the database paths. ``dataset.queries`` are either database indices
    (Holidays, UKBench: ``Q = X[queries]``) or paths of the full query images, cropped with
    ``dataset.gnd[i]["bbx"]`` when present (the revisited / Oxford protocol, at the query scale
    rule); otherwise the crops ``dataset.query_image(i)`` are used as they are. ``kwargs`` go to
    :func:`descriptors`; with ``cache``, the keys are ``"<dataset.name>/database"`` and
    ``"<dataset.name>/queries"``.
    """
    name = str(getattr(dataset, "name", "dataset"))
    X = descriptors(model, list(dataset.images), pool, key=f"{name}/database", **kwargs)
    indices, query_images, boxes = _query_inputs(dataset)
    if indices is not None:
        return X[torch.as_tensor(indices)], X
    Q = descriptors(model, query_images, pool, boxes=boxes, key=f"{name}/queries", **kwargs)
    return Q, X


def _query_inputs(dataset: Any) -> tuple[list[int] | None, list, list | None]:
    """How a dataset's queries are described: ``(indices, [], None)`` when they are database images
    (Holidays, UKBench), else ``(None, images, boxes)``: the full query images with their boxes
    (the Oxford / revisited protocol) or, failing that, the crops ``dataset.query_image(i)``."""
    queries = list(dataset.queries)
    if queries and all(isinstance(q, (int, np.integer)) and not isinstance(q, bool) for q in queries):
        return [int(q) for q in queries], [], None
    if queries and all(isinstance(q, (str, os.PathLike)) and Path(q).is_file() for q in queries):
        gnd = getattr(dataset, "gnd", None) or [{}] * len(queries)
        return None, [str(q) for q in queries], [g.get("bbx") for g in gnd]
    return None, [dataset.query_image(i) for i in range(len(queries))], None


def pool_maps(maps: Sequence[torch.Tensor], pool: Pool, batch_size: int = 64) -> torch.Tensor:
    """Pool a list of ``(K, h, w)`` maps of any sizes -> ``(N, D)``, each row L2-normalised.

    Maps of one size are pooled together, ``batch_size`` at a time, so that trying several
    poolings on maps extracted once (:func:`dataset_maps`) costs no network pass.
    """
    maps = check_map_list(maps)
    if not callable(pool):
        raise ValueError(f"pool must be a callable mapping (N, K, H, W) maps to (N, D), got {type(pool).__name__}")
    batch_size = positive_int(batch_size, "batch_size")
    with torch.inference_mode():
        return l2n(rows_by_shape([m.float() for m in maps], pool, batch_size, "pool").float())


def dataset_maps(
    model: nn.Module,
    dataset: Any,
    size: float | None = None,
    cache: str | os.PathLike | None = "default",
    layer: str = "last",
    **kwargs: Any,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(query_maps, database_maps)``: the feature maps of a dataset's queries (cropped to their
    boxes with the query scale rule; the database's own maps where the queries are database images,
    as in Holidays and UKBench) and database images, as lists of ``(K, h, w)`` tensors; no query
    maps for a collection without queries (``mini-other``).

    Cached as float16 in the module's cache (``cache``, module docstring), so the notebooks
    extract the mini benchmark once. ``layer`` and ``kwargs`` go to :func:`feature_maps`.
    """
    name = str(getattr(dataset, "name", "dataset"))
    indices, queries, boxes = _query_inputs(dataset)
    images = [str(p) for p in dataset.images]
    size = None if size is None else positive_number(size, "size")
    if cache is None:
        xmaps = feature_maps(model, images, size=size, layer=layer, **kwargs)
        if indices is not None:
            qmaps = [xmaps[i] for i in indices]
        else:  # a collection without queries (mini-other) has none to extract
            qmaps = feature_maps(model, queries, size=size, boxes=boxes, layer=layer, **kwargs) if queries else []
        return qmaps, xmaps
    label = f"{slug(name)}-{slug(getattr(model, 'name', 'model'))}-maps"
    path = cache_path(cache, label, [
        "maps", name, describe(model), repr(size), layer, repr(indices), repr(boxes),
        *(describe(im) if isinstance(im, Image.Image) else file_key(im) for im in queries + images)])
    if path.is_file():
        stored = torch.load(path)
    else:
        qmaps, xmaps = dataset_maps(model, dataset, size, cache=None, layer=layer, **kwargs)
        stored = {"queries": [m.half() for m in qmaps], "database": [m.half() for m in xmaps]}
        write_atomic(path, lambda f: torch.save(stored, f))
    # float16-rounded values whether they come from the cache or not
    return [m.float() for m in stored["queries"]], [m.float() for m in stored["database"]]


def pool_dataset_maps(query_maps: Sequence[torch.Tensor], database_maps: Sequence[torch.Tensor],
                      pool: Pool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, X)``: the maps of :func:`dataset_maps` pooled by ``pool`` with :func:`pool_maps`, one
    L2-normalised descriptor per query crop and per database image, ready for ``search.rank(Q, X)``."""
    return pool_maps(query_maps, pool), pool_maps(database_maps, pool)
