"""Fine-tuning a retrieval head on a frozen backbone: tuples, hard negatives, the training loop.

The head is cirtorch's (Radenović, Tolias & Chum, TPAMI 2018) without the backbone: GeM pooling
with a learnable ``p``, L2, a fully connected "whitening" layer initialised to the identity (so an
untrained head *is* off-the-shelf GeM), L2. Training data are feature maps of training images
(never the evaluation queries) with integer labels: equal labels show the same object;
a negative label marks a distractor (never an anchor or a positive, always a possible negative).

Two ways of tuning (the lecture slides of Wei ("Deep Image Retrieval", PolyU COMP4423)):

* **verification**: tuples ``(anchor, positive, n hardest negatives)`` re-mined every epoch
  with the current head (:func:`retrievalkit.losses.hard_negatives`), and the contrastive loss
  over the pairs ``(a, p)`` (``y = 1``) and ``(a, n_i)`` (``y = 0``), or the triplet loss over
  ``(a, p, n_i)``; cirtorch sums its loss over a tuple, so the loss of an epoch is the mean over
  anchors of the sum over their pairs (or triplets);
* **classification**: a linear classifier over the labels on top of the head, cross-entropy;
  the classifier is thrown away and the head's vector is the descriptor.

Full-batch Adam: the frozen backbone leaves a few hundred small maps, one step per epoch. The
number of epochs is chosen on a *validation* set of training objects (:func:`validation_map`),
never on the evaluation queries: :func:`train` keeps the head of the best validation epoch.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from PIL import Image

from . import evaluate, extract, losses, search
from .datasets import mini
from ._atomic import write_atomic
from ._batching import ShapeBatches, rows_by_shape
from ._cache import cache_path, describe, slug
from ._validate import check_map_list, nonnegative_number, positive_int, positive_number
from .normalization import l2n
from .pooling import GeM

__all__ = ["GeMHead", "TrainingSet", "mini_training_set", "embed", "mine_tuples", "validation_map", "train"]

LOSSES = ("contrastive", "triplet", "classification")


class GeMHead(nn.Module):
    """``l2n(W l2n(GeM_p(x)))`` with ``W`` ``(channels, channels)`` initialised to the identity and
    ``p`` learnable (initial 3): at initialisation exactly the off-the-shelf GeM descriptor."""

    def __init__(self, channels: int, p: float = 3.0) -> None:
        super().__init__()
        self.gem = GeM(p=p, learnable=True)
        self.whiten = nn.Linear(positive_int(channels, "channels"), channels, bias=False)
        with torch.no_grad():
            self.whiten.weight.copy_(torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.whiten(l2n(self.gem(x))))


@dataclass
class TrainingSet:
    """Maps and labels to train on (``images`` are the matching pictures), and a validation set."""

    maps: list[torch.Tensor]
    labels: np.ndarray
    images: list[Image.Image]
    val_maps: list[torch.Tensor]
    val_labels: np.ndarray


def mini_training_set(
    net: nn.Module, dataset: Any, database_maps: Sequence[torch.Tensor], n_objects: int = 48, views: int = 4,
    held_out: int = 12, seed: int = 1,
) -> TrainingSet:
    """The mini benchmark's fine-tuning data, none of it a test object or a query.

    Training: the database images of the training split (``info["split"] == "train"``: the four
    training objects keep their object index, distractors -1), with their maps from
    ``database_maps`` (:func:`retrievalkit.extract.dataset_maps`), and the first
    ``n_objects - held_out`` pseudo-objects of :func:`retrievalkit.datasets.mini.training_views` (labels
    ``100 + k``), whose maps ``net`` computes (kept in the extraction cache, ``data/cache/features``).
    Validation: the last ``held_out`` pseudo-objects.
    """
    if not 1 <= held_out < n_objects:
        raise ValueError(f"held_out must be in [1, n_objects - 1] = [1, {n_objects - 1}], got {held_out}")
    train = dataset.split("train")
    pictures, labels = mini.training_views(n_objects=n_objects, views=views, seed=seed)
    maps = _picture_maps(net, pictures)
    fit = labels < n_objects - held_out
    images = []
    for i in train:
        with Image.open(dataset.images[i]) as im:
            images.append(im.convert("RGB"))
    return TrainingSet(
        maps=[database_maps[i] for i in train] + [m for m, f in zip(maps, fit) if f],
        labels=np.concatenate([np.asarray(dataset.info["objects"])[train], 100 + labels[fit]]),
        images=images + [p for p, f in zip(pictures, fit) if f],
        val_maps=[m for m, f in zip(maps, fit) if not f],
        val_labels=labels[~fit],
    )


def _picture_maps(net: nn.Module, pictures: list[Image.Image]) -> list[torch.Tensor]:
    """:func:`retrievalkit.extract.feature_maps` of ``pictures``, kept in the extraction cache (float32, so a
    cached run trains on exactly the same maps), keyed by the network and every picture's pixels."""
    path = cache_path("default", f"training-views-{slug(getattr(net, 'name', 'model'))}-maps",
                      ["picture maps", describe(net), *(describe(p) for p in pictures)])
    if path.is_file():
        return torch.load(path)
    maps = extract.feature_maps(net, pictures, progress=False)
    write_atomic(path, lambda f: torch.save(maps, f))
    return maps


def embed(head: nn.Module, maps: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """``head`` on a list of ``(K, h, w)`` maps of any sizes -> ``(N, D)``; same-size maps are
    batched together. Keeps the autograd graph (call it under ``torch.no_grad()`` to evaluate)."""
    return rows_by_shape([m.float() for m in check_map_list(maps)], head, positive_int(batch_size, "batch_size"), "head")


def _check_labels(labels: Any, n: int) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be {n} integers (one per map), got {getattr(arr, 'shape', None)} of {arr.dtype}")
    return arr.astype(np.int64)


def mine_tuples(
    descriptors: torch.Tensor, labels: Any, n_negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training tuples: ``(anchors (A,), positives (A,), negatives (A, n))`` as row indices.

    Every item whose label (>= 0) is shared by another item is an anchor; its positive is one of
    the others of its label, drawn from ``rng``; its negatives are the ``n_negatives`` items of
    other labels (distractors included) nearest to it, hardest first.
    """
    labels = _check_labels(labels, descriptors.shape[0])
    same = labels[:, None] == labels[None, :]
    anchors = np.flatnonzero((labels >= 0) & (same.sum(axis=1) > 1))
    if anchors.size == 0:
        raise ValueError("labels must give at least one object two items (an anchor and its positive)")
    others = [np.flatnonzero(same[a] & (np.arange(len(labels)) != a)) for a in anchors]
    positives = np.array([rng.choice(o) for o in others])
    negatives = losses.hard_negatives(descriptors[anchors], descriptors, [np.flatnonzero(same[a]) for a in anchors],
                                      positive_int(n_negatives, "n_negatives"))
    return anchors, positives, np.asarray(negatives.cpu() if isinstance(negatives, torch.Tensor) else negatives)


def validation_map(head: nn.Module, maps: Sequence[torch.Tensor], labels: Any) -> float:
    """mAP (%) of ``head`` on held-out training objects: each item queries all the others, the
    items of its label (>= 0) are its positives, itself is ignored (junk); trapezoid AP as
    :func:`retrievalkit.evaluate.mean_average_precision`."""
    labels = _check_labels(labels, len(maps))
    with torch.no_grad():
        E = embed(head, maps)
    gnd = [{"ok": np.flatnonzero((labels == lab) & (np.arange(len(labels)) != i)).tolist() if lab >= 0 else [], "junk": [i]}
           for i, lab in enumerate(labels)]
    return 100 * evaluate.mean_average_precision(search.rank(E, E), gnd)[0]


def _verification_loss(E: torch.Tensor, tuples: tuple[np.ndarray, np.ndarray, np.ndarray], loss: str, margin: float) -> torch.Tensor:
    a, p, n = (torch.from_numpy(t) for t in tuples)
    k = n.shape[1]
    if loss == "contrastive":
        pairs = torch.cat([losses.contrastive_loss(E[a], E[p], torch.ones(len(a)), margin, reduction="none")[:, None],
                           losses.contrastive_loss(E[a].repeat_interleave(k, 0), E[n.reshape(-1)], torch.zeros(len(a) * k),
                                               margin, reduction="none").view(-1, k)], dim=1)
    else:
        pairs = losses.triplet_loss(E[a].repeat_interleave(k, 0), E[p].repeat_interleave(k, 0), E[n.reshape(-1)], margin,
                                    reduction="none").view(-1, k)
    return pairs.sum(dim=1).mean()


def train(
    head: nn.Module,
    maps: Sequence[torch.Tensor],
    labels: Any,
    loss: str = "contrastive",
    *,
    epochs: int = 30,
    lr: float = 1e-4,
    margin: float = 0.7,
    n_negatives: int = 5,
    scale: float = 16.0,
    seed: int = 0,
    time_limit: float | None = None,
    validate: Callable[[nn.Module], float] | None = None,
) -> dict[str, list[float]]:
    """Train ``head`` in place on ``maps`` with ``labels``.

    Returns ``{"loss": [...], "val": [...]}``: the loss of each epoch and, with ``validate`` (a
    score of the head, higher is better, e.g. :func:`validation_map` on held-out objects), its
    score before training and after each epoch; the head is then left at its best epoch
    (early stopping; the untrained head if no epoch beats it).

    ``loss``: ``"contrastive"`` (the slides' form, ``margin`` on the squared distance),
    ``"triplet"`` (``margin`` on the difference of squared distances) or ``"classification"``
    (cross-entropy over the non-negative labels of ``scale * cos(e, w_c)``: a cosine classifier,
    thrown away after training). Adam, one full-batch step per epoch, the GeM exponents at ten
    times ``lr`` (as cirtorch's ``train.py``: with one small step per epoch, ``p`` would
    otherwise hardly move) and kept at ``p >= 1`` (between average and max pooling); tuples are
    re-mined with the current head before each step. Stops once ``time_limit`` seconds have passed.
    Deterministic for a ``seed`` (torch's generator for the classifier, numpy's for positives).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    labels = _check_labels(labels, len(maps))
    epochs, lr, margin = positive_int(epochs, "epochs"), positive_number(lr, "lr"), nonnegative_number(margin, "margin")
    limit = None if time_limit is None else positive_number(time_limit, "time_limit")
    rng = np.random.default_rng(seed)
    gem = [q for m in head.modules() if isinstance(m, GeM) for q in m.parameters()]
    rest = [q for q in head.parameters() if all(q is not g for g in gem)]
    groups = [{"params": rest}, {"params": gem, "lr": 10 * lr}]
    if loss == "classification":
        known = labels >= 0
        classes, target = np.unique(labels[known], return_inverse=True)
        if classes.size < 2:
            raise ValueError("labels must hold at least two classes (>= 0) for classification")
        with torch.no_grad():
            dim = embed(head, maps[:1]).shape[1]
        generator = torch.Generator().manual_seed(seed)
        classifier = nn.Parameter(l2n(torch.randn(classes.size, dim, generator=generator)))
        groups[0]["params"].append(classifier)
        target_t = torch.from_numpy(target)
        rows = torch.from_numpy(np.flatnonzero(known))
    optimiser = torch.optim.Adam([g for g in groups if g["params"]], lr=lr)
    history: dict[str, list[float]] = {"loss": [], "val": []}
    if validate is not None:
        history["val"].append(float(validate(head)))
        best = copy.deepcopy(head.state_dict())
    batches = ShapeBatches([m.float() for m in check_map_list(maps)], 64)  # checked and stacked once, as embed would each epoch
    start = time.monotonic()
    for _ in range(epochs):
        E = batches.apply(head, "head")
        if loss == "classification":
            value = F.cross_entropy(positive_number(scale, "scale") * E[rows] @ l2n(classifier).T, target_t)
        else:
            value = _verification_loss(E, mine_tuples(E.detach(), labels, n_negatives, rng), loss, margin)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        with torch.no_grad():
            for q in gem:
                q.clamp_(min=1.0)
        history["loss"].append(float(value.detach()))
        if validate is not None:
            history["val"].append(float(validate(head)))
            if history["val"][-1] > max(history["val"][:-1]):
                best = copy.deepcopy(head.state_dict())
        if limit is not None and time.monotonic() - start > limit:
            break
    if validate is not None:
        head.load_state_dict(best)
    return history
