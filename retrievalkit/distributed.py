"""Extraction past one machine: the images sharded over processes or GPUs with ``torch.distributed``.

Launched by ``torchrun`` (one process per GPU, or per CPU slot), each rank describes one contiguous
shard of the image list (:func:`shard`) with the benchmark's one streaming pass
(:func:`retrievalkit.bench.stream.stream`: batches pooled on the rank's device, only descriptors kept)
and the shards are put back together in input order (:func:`gather`), so the result is the one a
single process would give. gloo on CPU, NCCL on GPUs (``LOCAL_RANK`` picks the GPU)::

    torchrun --standalone --nproc-per-node 2 -m retrievalkit.distributed IMAGES.txt --out OUT \\
        --model resnet50 --method GeM --size 1024

writes ``OUT/<method>.pt`` (``(N, D)`` float32, rows in the order of ``IMAGES.txt``, one path per line).
``--no-gather`` instead has each rank write its own rows, ``OUT/<method>.rank<r>-of-<w>.pt``, and
nothing is gathered: the way for a million images (R1M), whose descriptors need not fit one process;
:func:`read_shards` reads them back in order, one shard at a time (README: R1M with faiss IVF-PQ).
Methods that learn from the data first (VLAD) are not sharded.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from . import models
from ._atomic import write_atomic
from .bench import METHODS, VLAD, stream

__all__ = ["shard", "gather", "describe", "read_shards", "main"]


def shard(n: int, rank: int, world: int) -> range:
    """The indices of rank ``rank`` of ``world``: contiguous blocks, sizes differing by at most one."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an integer >= 1, got {world!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"rank must be an integer in [0, {world}), got {rank!r}")
    return range(n * rank // world, n * (rank + 1) // world)


def gather(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's ``local`` rows (its :func:`shard` of ``n``) -> all ``(n, D)`` rows in order, on every rank.

    Shards are padded to the largest for ``all_gather`` (NCCL needs equal sizes, on the GPU)."""
    world = dist.get_world_size()
    sizes = [len(shard(n, r, world)) for r in range(world)]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(max(sizes), local.shape[1], dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).cpu()


def _local_rows(net: models.Backbone, images: Sequence[str], methods: Sequence[str], size: float | None,
                batch_size: int, num_workers: int | None, progress: bool) -> dict[str, torch.Tensor]:
    """This rank's shard of ``images`` described by each method (the whole list without a process group)."""
    unknown = [m for m in methods if m not in METHODS]
    learnt = [m for m in methods if m in METHODS and isinstance(METHODS[m].describer, VLAD)]
    if unknown or learnt or not methods:
        raise ValueError(f"methods must be a non-empty list of {', '.join(m for m in METHODS if m != 'VLAD')} "
                         f"(VLAD learns a codebook first and is not sharded); got {unknown or learnt or methods!r}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    mine = [images[i] for i in shard(len(images), rank, world)]
    s = stream.stream(net, [METHODS[m] for m in methods], [stream.Part(f"shard {rank}/{world}", mine)], size,
                      batch_size=batch_size, num_workers=num_workers, progress=progress)
    return {m: s.descriptors[m][f"shard {rank}/{world}"] for m in methods}


def describe(net: models.Backbone, images: Sequence[str], methods: Sequence[str], size: float | None = None,
             batch_size: int = 8, num_workers: int | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """``{method: (N, D)}`` descriptors of every image, in input order: each rank of the process group
    describes its :func:`shard`, then :func:`gather` (no process group: this process describes all)."""
    rows = _local_rows(net, images, methods, size, batch_size, num_workers, progress)
    return {m: gather(v, len(images)) if dist.is_initialized() else v for m, v in rows.items()}


def read_shards(out: str | os.PathLike, method: str) -> Iterator[torch.Tensor]:
    """The ``--no-gather`` files of ``method`` in ``out``, rank order: one ``(n_r, D)`` tensor at a time."""
    files = sorted(Path(out).glob(f"{method}.rank*-of-*.pt"), key=lambda p: int(p.name.split(".rank")[1].split("-")[0]))
    if not files:
        raise FileNotFoundError(f"no shard files {method}.rank<r>-of-<w>.pt in {out}")
    world = int(files[0].name.split("-of-")[1].split(".")[0])
    if len(files) != world:
        raise FileNotFoundError(f"{out} holds {len(files)} of the {world} shards of {method}")
    for f in files:
        yield torch.load(f)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m retrievalkit.distributed",
                                description="Describe a list of images, sharded over the ranks of torchrun.")
    p.add_argument("images", type=Path, help="a text file, one image path per line")
    p.add_argument("--out", type=Path, required=True, help="the folder the descriptors are written to")
    p.add_argument("--model", default="efficientnet_lite0", help="the backbone (default: %(default)s)")
    p.add_argument("--random-weights", action="store_true", help="random weights instead of ImageNet's")
    p.add_argument("--method", action="append", help="GeM, MAC, ...; repeatable (default: GeM)")
    p.add_argument("--size", type=float, default=1024, help="longest image side (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes per rank (default: min(4, cpus - 1))")
    p.add_argument("--no-gather", action="store_true", help="each rank writes its own rows (R1M)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``torchrun`` entry point (module docstring)."""
    args = _parser().parse_args(argv)
    images = [line.strip() for line in args.images.read_text().splitlines() if line.strip()]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        net = models.backbone(args.model, pretrained=not args.random_weights,
                              device=f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
        methods = args.method or ["GeM"]
        if args.no_gather:
            for m, v in _local_rows(net, images, methods, args.size, args.batch_size, args.workers, rank == 0).items():
                write_atomic(args.out / f"{m}.rank{rank}-of-{world}.pt", lambda f, v=v: torch.save(v, f))
        else:
            for m, v in describe(net, images, methods, args.size, args.batch_size, args.workers, rank == 0).items():
                if rank == 0:
                    write_atomic(args.out / f"{m}.pt", lambda f, v=v: torch.save(v, f))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
