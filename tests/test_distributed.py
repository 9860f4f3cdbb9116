"""Sharded extraction with torch.distributed: two gloo processes launched by torchrun give the
descriptors of one process, in order; each rank's own files (--no-gather) read back in order."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import retrievalkit as rk
from retrievalkit import distributed
from retrievalkit.bench import METHODS, stream


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(64, 48), (48, 64), (64, 48), (64, 48), (48, 64), (64, 48), (64, 40)]):
        paths.append(str(folder / f"{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    (folder / "list.txt").write_text("\n".join(paths) + "\n")
    return folder / "list.txt", paths


@pytest.fixture(scope="module")
def single(images):
    """One process, all images, batches of 1 and one thread (as each rank below)."""
    _, paths = images
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = stream.stream(rk.models.backbone(), [METHODS["GeM"], METHODS["CroW"]], [stream.Part("all", paths)], 64,
                          batch_size=1, num_workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    return {m: s.descriptors[m]["all"] for m in ("GeM", "CroW")}


def test_shards_are_contiguous_in_order_and_balanced():
    for n, world in ((7, 2), (10, 3), (2, 4), (0, 1)):
        blocks = [distributed.shard(n, r, world) for r in range(world)]
        assert [i for b in blocks for i in b] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    for kwargs, blamed in (({"rank": 2, "world": 2}, "rank"), ({"rank": 0, "world": 0}, "world"), ({"n": -1}, "n")):
        with pytest.raises(ValueError, match=blamed):
            distributed.shard(**{"n": 5, "rank": 0, "world": 2, **kwargs})


def test_two_gloo_processes_give_the_single_process_descriptors(images, single, tmp_path):
    listing, _ = images
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "retrievalkit.distributed", str(listing), "--out", str(tmp_path), "--method", "GeM",
                           "--method", "CroW", "--size", "64", "--batch-size", "1", "--workers", "0"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for m in ("GeM", "CroW"):
        got = torch.load(tmp_path / f"{m}.pt")
        assert got.shape == (7, 1280) and torch.equal(got, single[m]), m  # rank 0 had images 0-2, rank 1 3-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CroW.pt", "GeM.pt"]


def test_no_gather_writes_each_ranks_rows_and_read_shards_puts_them_in_order(images, single, tmp_path, monkeypatch):
    listing, _ = images
    with socket.socket() as s:  # a free port for the one-process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert distributed.main([str(listing), "--out", str(tmp_path), "--size", "64", "--batch-size", "1",
                                 "--workers", "0", "--no-gather"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in tmp_path.iterdir()] == ["GeM.rank0-of-1.pt"]
    assert torch.equal(torch.cat(list(distributed.read_shards(tmp_path, "GeM"))), single["GeM"])
    (tmp_path / "GeM.rank0-of-1.pt").rename(tmp_path / "GeM.rank0-of-2.pt")
    with pytest.raises(FileNotFoundError, match="1 of the 2 shards"):
        list(distributed.read_shards(tmp_path, "GeM"))


def test_methods_that_learn_first_are_not_sharded(images):
    _, paths = images
    with pytest.raises(ValueError, match="VLAD"):
        distributed.describe(rk.models.backbone(), paths, ["GeM", "VLAD"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL); run on a GPU machine")
def test_nccl_on_one_gpu_gives_the_cpu_descriptors_closely(images, single, tmp_path):
    listing, _ = images
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                           "-m", "retrievalkit.distributed", str(listing), "--out", str(tmp_path), "--size", "64",
                           "--batch-size", "1", "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "GeM.pt"), single["GeM"], atol=2e-2, rtol=0)  # bf16 on the GPU
