"""Checks of notebook 6 (CAM): class activation maps, the class-weighted vector and its aggregation over classes."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ...cam import aggregate_classes, class_activation_maps, class_weighted
from ...crow import crow_channel_weights
from ...normalization import l2n
from .core import MAP_AXES, Case, Mistake, Task, run_check, sparse_maps


# ---------------------------------------------------------------- class activation maps
def _cam_cases(rng: np.random.Generator) -> list[Case]:
    def fc_weights(n: int, K: int) -> torch.Tensor:
        return torch.tensor(rng.standard_normal((n, K)), dtype=torch.float32)

    def positive_maps(*shape: int) -> torch.Tensor:  # > 0: no CAM has a maximum of exactly 0 (0/0 in the peer)
        return sparse_maps(rng, *shape) + 0.05

    negative = fc_weights(10, 6)
    negative[4] = -negative[4].abs()  # class 4: every value of its CAM is negative (the maps are > 0)
    return [
        Case("one image", "cam = sum_k W[c, k] A_k, negative values set to 0 and divided by its maximum, shape (N, H, W)",
             (positive_maps(1, 8, 6, 9), fc_weights(12, 8), int(rng.integers(12)))),
        Case("batch", "each image's CAM is divided by its own maximum", (positive_maps(3, 6, 5, 7), fc_weights(10, 6), 3)),
        Case("negative maximum", "a CAM whose maximum is negative: the authors' code (divide, then clip) flips its sign, the "
             "paper's order (clip, then divide, 0/0 giving 0) gives all zeros; either is right", (positive_maps(2, 6, 4, 6), negative, 4)),
        Case("as many classes as channels", "the weights of class c are the row W[c], one per channel",
             (positive_maps(2, 7, 5, 5), fc_weights(7, 7), int(rng.integers(7)))),
    ]


def _cam_ref(features: torch.Tensor, fc_weight: torch.Tensor, c: int) -> torch.Tensor:
    return class_activation_maps(features, fc_weight, [c])[:, 0]


def _cam_variant(
    *, column: bool = False, all_classes: bool = False, normalise: bool = True, clip: str = "after", batch_max: bool = False,
) -> Callable[..., torch.Tensor]:
    """A CAM with one step done wrong (float64). ``clip``: "after" (right), "before" (clip, then divide:
    0/0 is NaN), "before, guarded" (0/0 gives 0), "never"."""
    def f(features: torch.Tensor, fc_weight: torch.Tensor, c: int) -> torch.Tensor:
        W = fc_weight.double()
        w = W.sum(dim=0) if all_classes else (W[:, c] if column else W[c])
        cam = torch.einsum("k,nkhw->nhw", w, features.double())
        if clip.startswith("before"):
            cam = cam.clamp(min=0)
        if normalise:
            peak = cam.amax() if batch_max else cam.amax(dim=(-2, -1), keepdim=True)
            cam = cam / (torch.where(peak == 0, torch.ones_like(peak), peak) if clip == "before, guarded" else peak)
        return cam.clamp(min=0) if clip == "after" else cam
    return f


# ---------------------------------------------------------------- the class-weighted vector
def _weighted_cases(rng: np.random.Generator) -> list[Case]:
    def cams(x: torch.Tensor) -> torch.Tensor:  # like a CAM: >= 0, peak 1, zero where the class is absent
        c = np.maximum(rng.standard_normal((x.shape[0], *x.shape[2:])) + 0.3, 0)
        return torch.tensor(c / c.max(axis=(1, 2), keepdims=True), dtype=torch.float32)

    batch, dead = sparse_maps(rng, 2, 6, 5, 7), sparse_maps(rng, 1, 5, 6, 6)
    dead[0, 1] = 0
    one = sparse_maps(rng, 1, 7, 4, 8)
    return [
        Case("batch", "d_k = w_k sum_ij x_kij cam_ij with w the CroW channel weights of x, then d / ||d||, shape (N, C)",
             (batch, cams(batch))),
        Case("all-zero channel", "an all-zero channel has CroW weight 0, so its value is 0", (dead, cams(dead))),
        Case("uniform CAM", "with a CAM of ones the vector is CroW's channel-weighted sum pooling, L2-normalised",
             (one, torch.ones(1, 4, 8))),
    ]


def _weighted_ref(features: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    return class_weighted(features, cam[:, None])[:, 0]


def _weighted_variant(
    *, channel: bool = True, l2: bool = True, maximum: bool = False, weights_of_weighted: bool = False, weights_after_l2: bool = False,
) -> Callable[..., torch.Tensor]:
    """The class-weighted vector with one step done wrong (float64) on the package's CroW channel weights."""
    def f(features: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        x = features.double()
        xw = x * cam.double()[:, None]
        d = xw.amax(dim=(-2, -1)) if maximum else xw.sum(dim=(-2, -1))
        w = crow_channel_weights(xw if weights_of_weighted else x)
        if weights_after_l2:
            return l2n(d) * w
        d = d * w if channel else d
        return l2n(d) if l2 else d
    return f


# ---------------------------------------------------------------- aggregation over classes: offline and online
def _aggregate_cases(rng: np.random.Generator) -> list[Case]:
    def fc_weights(n: int, K: int) -> torch.Tensor:  # channel 0 weighs positively: every CAM has a positive maximum
        W = rng.uniform(-0.5, 1.0, size=(n, K))
        W[:, 0] = 1 + np.abs(W[:, 0])
        return torch.tensor(W, dtype=torch.float32)

    def maps(*shape: int) -> torch.Tensor:
        return sparse_maps(rng, *shape) + 0.05

    def own(N: int, n: int, n_classes: int) -> torch.Tensor:  # each image its own n classes (its top n)
        return torch.tensor(np.stack([rng.choice(n_classes, size=n, replace=False) for _ in range(N)]))

    return [
        Case("offline", "classes (N, n): image i is described with its own classes classes[i]; the sum of the n unit "
             "class-weighted vectors, L2-normalised, shape (N, K)", (maps(3, 6, 5, 7), fc_weights(10, 6), own(3, 3, 10))),
        Case("online", "classes (n,): every image is described with the same classes (the query's)",
             (maps(3, 5, 6, 6), fc_weights(8, 5), torch.tensor(rng.choice(8, size=3, replace=False)))),
        Case("one class", "with one class per image the descriptor is that class's class-weighted vector",
             (maps(2, 7, 4, 6), fc_weights(9, 7), own(2, 1, 9))),
    ]


def _aggregate_ref(features: torch.Tensor, fc_weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return aggregate_classes(class_weighted(features, class_activation_maps(features, fc_weight, classes)))


def _aggregate_variant(
    *, unit: bool = True, first: bool = False, ith: bool = False, combine: str = "sum", l2: bool = True,
) -> Callable[..., torch.Tensor]:
    """The aggregated class-weighted descriptor with one step done wrong (float64) on the package's CAMs;
    ``combine`` "sum" (right) or "max" over the classes; ``ith``: classes (n,) read as one class per image."""
    def f(features: torch.Tensor, fc_weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        x = features.double()
        if classes.dim() == 2:
            c = classes
        else:
            c = classes[: x.shape[0], None] if ith else classes.expand(x.shape[0], -1)
        cams = class_activation_maps(x, fc_weight.double(), c[:, :1] if first else c)  # (N, n, H, W)
        d = torch.einsum("nkhw,nchw->nck", x, cams) * crow_channel_weights(x).unsqueeze(1)
        d = l2n(d) if unit else d
        v = d.sum(dim=1) if combine == "sum" else d.amax(dim=1)
        return l2n(v) if l2 else v
    return f


TASKS: dict[str, Task] = {
    "class_activation_map": Task(
        "class_activation_map", _cam_cases, _cam_ref,
        [
            Mistake("clips negative values, then divides 0 by 0 where the whole CAM is negative (NaN): give such a map all "
                    "zeros, or divide before clipping as the authors' code does", _cam_variant(clip="before")),
            Mistake("is not divided by its maximum", _cam_variant(normalise=False)),
            Mistake("keeps negative values: set them to 0 after dividing", _cam_variant(clip="never")),
            Mistake("uses the column W[:, c]: the weights of class c are the row W[c]", _cam_variant(column=True)),
            Mistake("sums the weights of all classes: use class c's row only", _cam_variant(all_classes=True)),
            Mistake("divides by the maximum over the whole batch: each image by its own maximum", _cam_variant(batch_max=True)),
        ],
        axes=MAP_AXES,
        accepted=[_cam_variant(clip="before, guarded")],  # the paper's order: ReLU, then divide (0/0 -> 0)
    ),
    "class_weighted_vector": Task(
        "class_weighted_vector", _weighted_cases, _weighted_ref,
        [
            Mistake("has no channel weights: multiply by the CroW channel weights of the features", _weighted_variant(channel=False)),
            Mistake("is not L2-normalised", _weighted_variant(l2=False)),
            Mistake("takes the maximum of x * cam instead of the sum over positions", _weighted_variant(maximum=True)),
            Mistake("computes the channel weights on the CAM-weighted maps: they come from the features themselves",
                    _weighted_variant(weights_of_weighted=True)),
            Mistake("applies the channel weights after the L2 normalisation: weight, then normalise",
                    _weighted_variant(weights_after_l2=True)),
        ],
        axes=MAP_AXES,
    ),
    "cam_descriptor": Task(
        "cam_descriptor", _aggregate_cases, _aggregate_ref,
        [
            Mistake("sums the class vectors before L2-normalising each (or sums the CAMs first, the same thing): "
                    "every class counts as one unit vector", _aggregate_variant(unit=False)),
            Mistake("uses the first class only: sum over all n classes", _aggregate_variant(first=True)),
            Mistake("describes image i with the i-th class only: classes of shape (n,) are the same n classes for every image",
                    _aggregate_variant(ith=True)),
            Mistake("takes the maximum over the classes: the vectors are summed", _aggregate_variant(combine="max")),
            Mistake("is not L2-normalised at the end", _aggregate_variant(l2=False)),
        ],
        axes=MAP_AXES,
    ),
}


def check_class_activation_map(class_activation_map: Callable) -> None:
    """Check a student's ``class_activation_map`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("class_activation_map", class_activation_map)


def check_class_weighted_vector(class_weighted_vector: Callable) -> None:
    """Check a student's ``class_weighted_vector`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("class_weighted_vector", class_weighted_vector)


def check_cam_descriptor(cam_descriptor: Callable) -> None:
    """Check a student's ``cam_descriptor`` on fresh inputs; a CheckFailed names the mistake."""
    run_check("cam_descriptor", cam_descriptor)
