"""The descriptors of the benchmark: a method's setting is the repr of its describer's parameters."""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import cam, crow, encoding, extract, models, pooling, postprocess, regions
from .published import PAPERS, Paper

__all__ = ["Describe", "Pooled", "CAMOffline", "VLAD", "Method", "METHODS", "CAM_CLASSES", "VLAD_K", "VLAD_LOCAL_DIM"]

Describe = Callable[[list[torch.Tensor]], torch.Tensor]  # maps -> (N, D) unit rows

CAM_CLASSES = 64  # Jimenez et al.: N_c = 64 class maps, offline aggregation
VLAD_K, VLAD_LOCAL_DIM = 32, 64  # 32 visual words on 64-D PCA-reduced positions, as lecture 3


def _call(fn: Callable[..., Any]) -> str:
    """``module.name(k=v, ...)`` of a function or of a ``functools.partial`` of one."""
    keywords = fn.keywords if isinstance(fn, functools.partial) else {}
    f = fn.func if isinstance(fn, functools.partial) else fn
    return f"{f.__module__.rsplit('.', 1)[-1]}.{f.__name__}({', '.join(f'{k}={v!r}' for k, v in keywords.items())})"


@dataclass(frozen=True, repr=False)
class Pooled:
    """A pooling applied to each map on its own (:func:`retrievalkit.extract.pool_maps`): nothing learnt."""

    pool: Callable[[torch.Tensor], torch.Tensor]

    def build(self, net: models.Backbone, train: list[torch.Tensor]) -> Describe:
        return functools.partial(extract.pool_maps, pool=self.pool)

    def __repr__(self) -> str:
        return _call(self.pool)


@dataclass(frozen=True)
class CAMOffline:
    """Jimenez et al. (BMVC 2017), offline aggregation: ``l2n(sum_{c in top-N} l2n(w * sum_ij x_ij cam_c,ij))``
    over the ``classes`` best-scored classes of the backbone's classifier."""

    classes: int = CAM_CLASSES

    def build(self, net: models.Backbone, train: list[torch.Tensor]) -> Describe:
        return lambda maps: cam.aggregate_classes(cam.class_vectors(net, maps, n=self.classes))


@dataclass(frozen=True)
class VLAD:
    """VLAD (Jégou et al., CVPR 2010) of the map positions: positions PCA-reduced to ``local_dim``
    (``power=0``) and a k-means codebook of ``k`` words (``seed``, ``n_iter`` iterations), both learnt
    on at most ``positions`` positions of the training maps (drawn with ``seed``); plain VLAD -> ``k * local_dim``."""

    k: int = VLAD_K
    local_dim: int = VLAD_LOCAL_DIM
    positions: int = 20_000  # 625 per word; PCA of C <= 2048 dims from 20,000 rows: a 330 MB float64 copy at most
    seed: int = 0
    n_iter: int = 10

    def build(self, net: models.Backbone, train: list[torch.Tensor]) -> Describe:
        return self.fit(torch.cat([encoding.local_descriptors(m) for m in train]))

    def fit(self, local: torch.Tensor) -> Describe:
        """The describer, its PCA and codebook learnt on the rows of ``local`` ``(n, C)`` (at most
        ``positions`` of them, drawn with ``seed``); the streaming benchmark gives a bounded sample."""
        if local.shape[0] > self.positions:
            draw = torch.randperm(local.shape[0], generator=torch.Generator().manual_seed(self.seed))
            local = local[draw[: self.positions]]
        pca = postprocess.PCAWhitening(dim=self.local_dim, power=0).fit(local)
        centers = encoding.Codebook(k=self.k, seed=self.seed, n_iter=self.n_iter).fit(pca.transform(local)).centers

        def describe(maps: list[torch.Tensor]) -> torch.Tensor:
            return encoding.vlad([pca.transform(encoding.local_descriptors(m)) for m in maps], centers)

        return describe


@dataclass(frozen=True)
class Method:
    """A descriptor of the course: ``describer.build(net, training_maps)`` returns ``maps -> (N, D)`` unit
    rows; ``setting`` is the describer's repr (its parameters), ``paper`` the source."""

    name: str
    describer: Pooled | CAMOffline | VLAD
    paper: Paper

    @property
    def setting(self) -> str:
        return repr(self.describer)

    def build(self, net: models.Backbone, train: list[torch.Tensor]) -> Describe:
        return self.describer.build(net, train)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("MAC", Pooled(pooling.mac), PAPERS["Tolias"]),
    Method("SPoC", Pooled(functools.partial(pooling.spoc, center_prior=True)), PAPERS["Babenko"]),
    Method("GeM", Pooled(functools.partial(pooling.gem, p=3.0)), PAPERS["Radenović"]),
    Method("R-MAC", Pooled(functools.partial(regions.rmac, L=3, global_term=False)), PAPERS["Tolias"]),
    Method("OS-RMAC", Pooled(functools.partial(regions.os_rmac, L=3)), PAPERS["Seddati"]),
    Method("CroW", Pooled(functools.partial(crow.crow, a=2, b=2)), PAPERS["Kalantidis"]),
    Method("CAM", CAMOffline(classes=CAM_CLASSES), PAPERS["Jimenez"]),
    Method("VLAD", VLAD(k=VLAD_K, local_dim=VLAD_LOCAL_DIM), PAPERS["Jégou"]),
)}
"""The descriptors, by name, at their paper's setting (one resolution, the last layer)."""

