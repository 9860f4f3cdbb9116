"""Run a batched function over tensors of mixed shapes: same-shape items go together, no padding."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


class ShapeBatches:
    """``items`` grouped by shape and stacked once (at most ``batch_size`` per stack), so that a batched
    function can be applied to them many times (a training loop) without re-stacking."""

    def __init__(self, items: Sequence[torch.Tensor], batch_size: int) -> None:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(item.shape), []).append(i)
        chunks = [members[start : start + batch_size] for members in groups.values()
                  for start in range(0, len(members), batch_size)]
        self.stacks = [torch.stack([items[i] for i in chunk]) for chunk in chunks]
        order = torch.tensor([i for chunk in chunks for i in chunk], dtype=torch.long)
        self.position = torch.empty_like(order)
        self.position[order] = torch.arange(len(order))  # row of each item in the concatenated outputs

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> torch.Tensor:
        """``fn`` on every stack -> ``(len(items), D)`` in input order. ``fn`` must map ``(B, ...)`` to
        ``(B, D)``; ``name`` is the argument blamed otherwise."""
        outputs = []
        for stack in self.stacks:
            out = fn(stack)
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(stack):
                raise ValueError(f"{name} must map a batch of {len(stack)} to ({len(stack)}, D), got {getattr(out, 'shape', type(out))}")
            outputs.append(out)
        stacked = torch.cat(outputs)
        return stacked[self.position.to(stacked.device)]


def rows_by_shape(items: Sequence[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                  name: str) -> torch.Tensor:
    """``fn`` on stacks of same-shape ``items`` (at most ``batch_size`` each) -> ``(len(items), D)``
    in input order (:class:`ShapeBatches`, applied once)."""
    return ShapeBatches(items, batch_size).apply(fn, name)
