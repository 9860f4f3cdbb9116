"""retrievalkit: the methods of Deep Image Retrieval, hands-on, exact to their papers.

Submodules are named after the concept they teach and load on first use, so
``import retrievalkit as rk; rk.pooling.gem(x)`` works without importing faiss or
scikit-learn until they are needed.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

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
    "salient",
    "evaluate",
    "search",
    "datasets",
    "download",
    "models",
    "extract",
    "mini",
    "checks",
    "plot",
    "notebooks",
)
__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
