"""Input checks shared by every module: bad input raises ``ValueError`` naming the argument."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def check_float_tensor(x: Any, name: str, ndims: tuple[int, ...], shape: str) -> torch.Tensor:
    """A non-empty, finite, floating-point tensor with one of the ranks ``ndims`` (``shape`` names them)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have shape {shape}, got {x.dim()} dimensions {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_maps(x: Any, name: str = "x", nonnegative: bool = False) -> tuple[torch.Tensor, bool]:
    """Return ``x`` as a 4-D ``(N, C, H, W)`` tensor and whether a batch axis was added.

    Accepts ``(C, H, W)`` or ``(N, C, H, W)`` floating-point tensors; rejects anything else,
    empty maps, NaN, and (with ``nonnegative``) negative values.
    """
    check_float_tensor(x, name, (3, 4), "(N, C, H, W) or (C, H, W)")
    if nonnegative and bool((x < 0).any()):
        raise ValueError(f"{name} must be non-negative (e.g. post-ReLU activations), got a minimum of {x.min().item():g}")
    squeezed = x.dim() == 3
    return (x.unsqueeze(0) if squeezed else x), squeezed


def check_map_list(maps: Any, name: str = "maps", nonnegative: bool = False) -> list[torch.Tensor]:
    """A non-empty list (or tuple) of ``(C, H, W)`` feature maps of any sizes, all with the same ``C``
    (an ``(N, C, H, W)`` tensor is taken as its N maps), each checked as :func:`check_maps` does."""
    if isinstance(maps, torch.Tensor) and maps.dim() == 4:
        maps = list(maps)
    if isinstance(maps, torch.Tensor) or not isinstance(maps, (list, tuple)) or len(maps) == 0:
        raise ValueError(f"{name} must be a non-empty list of (C, H, W) feature maps, got {type(maps).__name__}")
    out = []
    for i, m in enumerate(maps):
        if isinstance(m, torch.Tensor) and m.dim() != 3:
            raise ValueError(f"{name}[{i}] must have shape (C, H, W), got {m.dim()} dimensions {tuple(m.shape)}")
        out.append(check_maps(m, f"{name}[{i}]", nonnegative)[0][0])
    if len({m.shape[0] for m in out}) > 1:
        raise ValueError(f"{name} must all have the same number of channels, got {sorted({m.shape[0] for m in out})}")
    return out


def unbatch(out: torch.Tensor, squeezed: bool) -> torch.Tensor:
    """Drop the batch axis added by :func:`check_maps`."""
    return out.squeeze(0) if squeezed else out


def check_finite(x: Any, name: str) -> None:
    """Reject NaN (and infinity) in a tensor or array."""
    # One sum is far cheaper than an elementwise test and is finite whenever every value is
    # (NaN and infinity propagate); only an overflowing or non-finite sum needs the full test.
    if isinstance(x, torch.Tensor):
        if x.numel() == 0 or bool(torch.isfinite(x.detach().sum())) or bool(torch.isfinite(x).all()):
            return
    else:
        a = np.asarray(x, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            if a.size == 0 or np.isfinite(a.sum()) or np.isfinite(a).all():
                return
    raise ValueError(f"{name} must not contain NaN or infinity")


def positive_number(value: Any, name: str) -> float:
    """A finite number > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_rows(x: Any, name: str = "X") -> torch.Tensor | np.ndarray:
    """Check a 2-D ``(N, D)`` array or tensor of finite floats (returned unchanged, 1-D promoted)."""
    if isinstance(x, torch.Tensor):
        arr = x
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise ValueError(f"{name} must be a numpy.ndarray or torch.Tensor of shape (N, D), got {type(x).__name__}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(arr.shape)}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one dimension per row, got shape {tuple(arr.shape)}")
    check_finite(arr, name)
    return arr


def bounded_int(value: Any, largest: int, name: str, what: str) -> int:
    """An integer in ``[1, largest]``; ``what`` says what ``largest`` is ("the database size")."""
    v = positive_int(value, name)
    if v > largest:
        raise ValueError(f"{name} must be at most {what} ({largest}), got {v}")
    return v


def nonnegative_number(value: Any, name: str) -> float:
    """A finite number >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_row_pair(A: Any, B: Any, names: tuple[str, str]) -> tuple[Any, Any]:
    """Two non-empty descriptor sets of the same kind (numpy or torch) and dimension."""
    a, b = check_rows(A, names[0]), check_rows(B, names[1])
    if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
        raise ValueError(f"{names[0]} and {names[1]} must be the same kind (both numpy or both torch), got "
                         f"{type(a).__name__} and {type(b).__name__}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError(f"{names[0]} and {names[1]} must not be empty, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same dimension D, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def check_region_sets(sets: Any, name: str) -> list[torch.Tensor]:
    """One checked ``(M_i, D)`` tensor of region descriptors per image, all of one dimension."""
    if isinstance(sets, (np.ndarray, torch.Tensor)) or not isinstance(sets, (list, tuple)) or len(sets) == 0:
        raise ValueError(f"{name} must be a non-empty list with one (M_i, D) array of region descriptors per image")
    rows = [torch.as_tensor(check_rows(r, f"{name}[{i}]")) for i, r in enumerate(sets)]
    for i, r in enumerate(rows):
        if r.shape[0] == 0 or r.shape[1] != rows[0].shape[1]:
            raise ValueError(f"{name}[{i}] must be (M, {rows[0].shape[1]}) with M >= 1, got {tuple(r.shape)}")
    return rows
