"""retrievalkit: the methods of Deep Image Retrieval, hands-on, exact to their papers.

What a student meets, in the order of the lectures (one module per idea, pure functions with
thin ``nn.Module`` wrappers beside them):

- ``pooling``: MAC, SPoC, GeM (lecture 1); ``normalization``: ``l2n``, the L2 normalisation all share;
- ``models``, ``extract``: a pretrained CNN as a feature extractor; ``search``, ``evaluate``:
  ranking, AP / mAP and the benchmarks' protocols (lecture 2);
- ``encoding``: BoW, VLAD, Fisher vectors (lecture 3);
- ``regions``: R-MAC and regional pooling; ``fusion``, ``multipass`` (lecture 4);
- ``crow``: CroW; ``salient``: the regional aggregation of Jeong et al. (lecture 5);
- ``cam``: class-weighted features (lecture 6);
- ``postprocess``: whitening, query expansion, re-ranking, diffusion (lecture 7);
- ``losses``, ``finetune``: fine-tuning (lecture 8); ``manifold``: kNN graphs (lecture 9);
- ``bench``: every descriptor on a benchmark (lecture 10); ``plot``: the lectures' pictures.

Machinery lives in sub-packages named for their job: ``datasets`` (loading, ground-truth
formats, downloads, the offline mini benchmark) and ``teaching`` (checks, the exercise
generator, grading). Submodules load on first use, so ``import retrievalkit as rk;
rk.pooling.gem(x)`` works without importing faiss or scikit-learn until they are needed.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# torch and faiss each bring their own OpenMP runtime (two libgomp copies). With the default
# wait policy, faiss's idle threads spin on the cores torch needs: on a 2-core CPU the
# network and pooling ran 5-10x slower once faiss had been used (notebook 10: 102 s -> 8 s).
# Idle threads that sleep cost nothing here. Read when faiss (imported lazily) loads; a value
# the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_SUBMODULES = (
    "pooling",
    "normalization",
    "models",
    "extract",
    "search",
    "evaluate",
    "encoding",
    "regions",
    "fusion",
    "multipass",
    "crow",
    "salient",
    "cam",
    "postprocess",
    "losses",
    "finetune",
    "manifold",
    "bench",
    "plot",
    "datasets",
    "teaching",
)
__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
