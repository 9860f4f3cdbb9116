"""Run a batched function over tensors of mixed shapes: same-shape items go together, no padding."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def rows_by_shape(items: Sequence[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                  name: str) -> torch.Tensor:
    """``fn`` on stacks of same-shape ``items`` (at most ``batch_size`` each) -> ``(len(items), D)``
    in input order. ``fn`` must map ``(B, ...)`` to ``(B, D)``; ``name`` is the argument blamed otherwise."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(tuple(item.shape), []).append(i)
    order: list[int] = []
    outputs = []
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            out = fn(torch.stack([items[i] for i in chunk]))
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(chunk):
                raise ValueError(f"{name} must map a batch of {len(chunk)} to ({len(chunk)}, D), got {getattr(out, 'shape', type(out))}")
            order += chunk
            outputs.append(out)
    stacked = torch.cat(outputs)
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    return stacked[position.to(stacked.device)]
