"""The on-disk cache of :mod:`retrievalkit.extract`: one ``.pt`` file per result, named by a hash of
a stable description of everything it depends on (images, model weights, pooling, settings)."""
from __future__ import annotations

import functools
import hashlib
import os
import re
import types
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

VERSION = "retrievalkit.extract/2"  # bumped whenever cached results would change


def tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return f"{t.dtype}{tuple(t.shape)}:{hashlib.sha1(data).hexdigest()}"


def code_digest(code: types.CodeType) -> str:
    consts = ",".join(code_digest(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return f"{code.co_code.hex()}|{code.co_names}|{consts}"


def describe(obj: Any) -> str:
    """A description of a model, pooling function or setting that is stable across sessions."""
    if isinstance(obj, functools.partial):
        kw = ", ".join(f"{k}={describe(v)}" for k, v in sorted(obj.keywords.items()))
        return f"partial({describe(obj.func)}; {', '.join(map(describe, obj.args))}; {kw})"
    if isinstance(obj, nn.Module):
        state = hashlib.sha1("".join(f"{k}={tensor_digest(t)};" for k, t in obj.state_dict().items()).encode())
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}[{getattr(obj, 'name', '')}]"
        return f"{kind}({obj.extra_repr()}; state {state.hexdigest()})"
    if isinstance(obj, torch.Tensor):
        return tensor_digest(obj)
    if isinstance(obj, types.MethodType):
        return f"{describe(obj.__self__)}.{obj.__func__.__name__}"
    if isinstance(obj, types.FunctionType):
        desc = f"{obj.__module__}.{obj.__qualname__}"
        if "<" in obj.__qualname__:  # a lambda or local function: its code and what it closes over
            cells = [c.cell_contents for c in obj.__closure__ or ()]
            desc += f"({code_digest(obj.__code__)}; defaults {describe(obj.__defaults__)}; closure {[describe(c) for c in cells]})"
        return desc
    if isinstance(obj, (types.BuiltinFunctionType, type)):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, (tuple, list)):
        return "(" + ", ".join(map(describe, obj)) + ")"
    if isinstance(obj, Image.Image):
        return f"PIL:{obj.mode}{obj.size}:{hashlib.sha1(obj.tobytes()).hexdigest()}"
    return repr(obj)


def file_key(path: Any) -> str:
    """A path with its size and modification time, so that a rewritten image misses the cache."""
    try:
        st = os.stat(path)
    except OSError:
        return str(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


def cache_path(cache: str | os.PathLike, label: str, parts: list[str]) -> Path:
    """The one on-disk cache of this module: ``<folder>/<label>-<hash of parts>.pt`` (``torch.save``).

    ``cache`` is a folder or ``"default"`` (``<data root>/features``, i.e. ``data/cache/features`` in
    the course checkout). ``parts`` describe everything the result depends on.
    """
    if isinstance(cache, str) and cache == "default":
        from .datasets import resolve_root

        cache = resolve_root() / "features"
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1("\x00".join([VERSION, *parts]).encode()).hexdigest()[:20]
    return folder / f"{label}-{digest}.pt"
