"""Real mode in one pass and bounded memory: images -> feature maps -> every method's descriptors.

:func:`stream` decodes the images of each part (training set, queries, database) in DataLoader
workers (:func:`retrievalkit.extract.image_batches`: same-size batches, no padding, pinned memory and
non-blocking copies on CUDA), runs the network once per batch (:func:`retrievalkit.extract.forward_maps`:
channels-last, bf16 autocast on CUDA, ``torch.inference_mode``) and pools that batch with every
requested method **on the model's device**; only the descriptors come back to the host. Host memory
is therefore one batch of images and maps plus ``images x sum of descriptor dims`` floats, whatever
the dataset's size.

VLAD learns its PCA and codebook from local descriptors (map positions) of the training set before
the pass: :func:`local_sample` runs the network over at most ``SAMPLE_IMAGES`` training images, drawn
with the method's ``seed``, and keeps ``ceil(positions / images)`` positions of each (drawn with the
same seed); :meth:`VLAD.fit` keeps at most ``positions`` of them. That pre-pass is the only image seen twice.

Timings per part, summed over batches and synchronised on CUDA: ``decode`` is the time the pass
waited for its workers (they decode while the network runs, so this is the part of decoding that
was not hidden), ``network`` the forward passes, ``pool <method>`` each method's pooling (with
the copy of its rows to the host).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .. import encoding, extract, models
from .methods import VLAD, Method

__all__ = ["Part", "Streamed", "SAMPLE_IMAGES", "local_sample", "stream"]

SAMPLE_IMAGES = 500  # training images VLAD's codebook sample is drawn from


class Part(NamedTuple):
    """A list of images described together: ``boxes`` one ``[x1, y1, x2, y2]`` (or None) per image, or None."""

    name: str
    images: list[str]
    boxes: list[list[float] | None] | None = None


class Streamed(NamedTuple):
    """``descriptors[method][part]`` ``(n, D)`` float32 on the CPU, and ``seconds[part][stage]``
    (``"decode"``, ``"network"``, ``"pool <method>"``)."""

    descriptors: dict[str, dict[str, torch.Tensor]]
    seconds: dict[str, dict[str, float]]


def _synced(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _device(net: models.Backbone) -> torch.device:
    return next(net.parameters()).device


def local_sample(net: models.Backbone, images: Sequence[str], size: float | None, vlad: VLAD,
                 batch_size: int = 8, num_workers: int | None = None, progress: bool = True) -> torch.Tensor:
    """A bounded, seeded sample of the local descriptors of ``images`` -> ``(n, C)`` float32 on the CPU,
    ``n <= vlad.positions + len(images)`` (module docstring)."""
    g = torch.Generator().manual_seed(vlad.seed)
    if len(images) > SAMPLE_IMAGES:
        images = [images[i] for i in sorted(torch.randperm(len(images), generator=g)[:SAMPLE_IMAGES].tolist())]
    per_image = math.ceil(vlad.positions / len(images))
    device = _device(net)
    rows: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for idx, batch in extract.image_batches(images, size, None, batch_size, num_workers, device, progress,
                                                "VLAD sample"):
            for i, local in zip(idx, encoding.local_descriptors(extract.forward_maps(net, net.transform(batch)))):
                if local.shape[0] > per_image:  # a generator per image: the same rows whatever the batching
                    draw = torch.randperm(local.shape[0], generator=torch.Generator().manual_seed((vlad.seed << 32) + i))
                    local = local[draw[:per_image].to(local.device)]
                rows[i] = local.float().cpu()
    return torch.cat([rows[i] for i in range(len(images))])  # VLAD.fit keeps at most vlad.positions


def stream(net: models.Backbone, methods: Sequence[Method], parts: Sequence[Part], size: float | None,
           learn: Sequence[str] = (), batch_size: int = 8, num_workers: int | None = None,
           progress: bool = True) -> Streamed:
    """Every method's descriptors of every part, in one pass over the images (module docstring).

    ``learn``: the training images VLAD's sample is drawn from (needed when a method is VLAD);
    ``size``: longest side fed to the network (None: as stored). Each part's rows are in its order.
    """
    if any(isinstance(m.describer, VLAD) for m in methods) and not learn:
        raise ValueError("learn must name the training images when a method is VLAD (its codebook is learnt on them)")
    describers = {}
    for m in methods:
        if isinstance(m.describer, VLAD):
            describers[m.name] = m.describer.fit(local_sample(net, list(learn), size, m.describer, batch_size,
                                                              num_workers, progress))
        else:
            describers[m.name] = m.build(net, [])  # nothing learnt from maps
    device = _device(net)
    out: dict[str, dict[str, torch.Tensor]] = {m.name: {} for m in methods}
    seconds: dict[str, dict[str, float]] = {}
    for part in parts:
        kept: dict[str, torch.Tensor] = {}  # method -> (n, D), allocated at its first batch
        t = dict.fromkeys(["decode", "network", *(f"pool {m.name}" for m in methods)], 0.0)
        with torch.inference_mode():
            batches = extract.image_batches(part.images, size, part.boxes, batch_size, num_workers, device,
                                            progress, part.name)
            start = _synced(device)
            for idx, batch in batches:
                now = _synced(device)
                t["decode"] += now - start
                maps = extract.forward_maps(net, net.transform(batch))
                start, now = now, _synced(device)
                t["network"] += now - start
                for name, describe in describers.items():  # pooling, and its rows copied home
                    v = describe(list(maps)).float()
                    if name not in kept:
                        kept[name] = torch.empty(len(part.images), v.shape[1])
                    kept[name][torch.as_tensor(idx)] = v.cpu()
                    start, now = now, _synced(device)
                    t[f"pool {name}"] += now - start
                del maps, batch
                start = _synced(device)
        for name in describers:
            out[name][part.name] = kept[name]
        seconds[part.name] = t
    return Streamed(out, seconds)

