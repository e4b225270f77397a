"""Comparison 6: what one checkpoint costs the training thread, written in place (atomic) vs from a thread.

A run writes last.ckpt every epoch and best.ckpt whenever validation improves: two writes of the
teacher's weights and momentum per epoch early on. Each side saves the same ResNet-10 checkpoint
(weights and SGD momentum, on the device) `repeats` x 3 times; the figure is the fastest wait of the
training thread, and for the thread the time until every write has landed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from kd_lightning.bench.harness import Sizes, sync
from kd_lightning.models import resnet
from kd_lightning.run.callbacks import AtomicCheckpointIO


def _checkpoint(sizes: Sizes, device: torch.device) -> dict:
    """The bulk of a Lightning checkpoint of the teacher: its weights and its optimiser's momentum."""
    model = resnet(sizes.epoch_depth, 10, sizes.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32, device=device)).sum().backward()
    opt.step()
    return {"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 0}


def bench_checkpoint(sizes: Sizes, device: torch.device, tmp: Path) -> dict:
    """ms the training thread waits per checkpoint: atomic in place vs AsyncCheckpointIO around it."""
    ckpt, saves = _checkpoint(sizes, device), 3 * sizes.repeats
    best = {"sync_ms": float("inf"), "async_wait_ms": float("inf")}
    mb = sum(t.numel() * t.element_size() for t in ckpt["state_dict"].values()) / 2**20
    for _ in range(saves):
        sync(device)
        t0 = time.perf_counter()
        AtomicCheckpointIO().save_checkpoint(ckpt, tmp / "sync.ckpt")
        best["sync_ms"] = min(best["sync_ms"], 1000 * (time.perf_counter() - t0))
    io = AsyncCheckpointIO(AtomicCheckpointIO())
    start = time.perf_counter()
    for _ in range(saves):
        sync(device)
        t0 = time.perf_counter()
        io.save_checkpoint(ckpt, tmp / "async.ckpt")
        sync(device)  # the clone on the caller's thread is device work
        best["async_wait_ms"] = min(best["async_wait_ms"], 1000 * (time.perf_counter() - t0))
    io.teardown()
    return {**best, "async_all_landed_ms": 1000 * (time.perf_counter() - start) / saves, "weights_mb": mb}
