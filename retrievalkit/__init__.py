"""retrievalkit: the methods of Deep Image Retrieval, hands-on, exact to their papers.

Submodules are named after the concept they teach and load on first use, so
``import retrievalkit as rk; rk.pooling.gem(x)`` works without importing faiss or
scikit-learn until they are needed.
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
    "regions",
    "crow",
    "cam",
    "fusion",
    "multipass",
    "encoding",
    "postprocess",
    "losses",
    "finetune",
    "salient",
    "evaluate",
    "search",
    "datasets",
    "models",
    "extract",
    "plot",
    "bench",
    "teaching",
)
__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
