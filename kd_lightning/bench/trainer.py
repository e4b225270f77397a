"""Comparison 2: BaselineModule through the Lightning Trainer vs a plain PyTorch loop.

Both sides train the same ResNet with the same optimiser and schedule (modules.build_optimizer),
batches, augmentation and precision, so the ratio is what the Trainer itself costs per step.
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from kd_lightning.bench.harness import Pair, Sizes, StepTimer, autocast, per_step, step_trainer, sync
from kd_lightning.config import OptimConfig, filled
from kd_lightning.data import BatchLoader, CIFAR10DataModule, augment, normalize
from kd_lightning.models import resnet
from kd_lightning.modules import BaselineModule, build_optimizer


def plain_loop(depth: int, train: Pair, sizes: Sizes, device: torch.device) -> float:
    """Images/s of a hand-written loop: our batches, the same ResNet, SGD + one-cycle, precision."""
    torch.manual_seed(0)
    model = resnet(depth, 10, sizes.width).to(device, memory_format=torch.channels_last)
    total = sizes.warmup + sizes.steps
    opt, sched = build_optimizer(model.parameters(), filled(OptimConfig), total)
    loader = BatchLoader(train[0].to(device), train[1].to(device), batch_size=sizes.batch, shuffle=True, drop_last=True)
    batches = iter(loader)
    stamps = []
    for step in range(total):
        if step == sizes.warmup:
            sync(device)
            stamps.append(time.perf_counter())
        x, y = next(batches)
        x = normalize(augment(x))
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if step == total - 1:
            sync(device)
        if stamps:
            stamps.append(time.perf_counter())
    return sizes.batch / per_step(stamps, device)


def lightning_loop(depth: int, train: Pair, sizes: Sizes, device: torch.device) -> tuple[float, int | None]:
    """Images/s (and CUDA syncs in the timed steps) of BaselineModule through the Trainer."""
    torch.manual_seed(0)
    total = sizes.warmup + sizes.steps
    timer = StepTimer(sizes.warmup, total - 1, device)
    trainer = step_trainer(device, max_steps=total, callbacks=[timer])
    data = CIFAR10DataModule.from_tensors(train, train, batch_size=sizes.batch)
    trainer.fit(BaselineModule(depth, width=sizes.width), datamodule=data)
    return sizes.batch / per_step(timer.stamps, device), timer.syncs


def bench_trainer(train: Pair, sizes: Sizes, device: torch.device) -> dict:
    """ResNet-4 and ResNet-10, each side the best of `sizes.repeats` alternating runs."""
    out = {}
    for depth in (4, 10):
        plain = lightning = 0.0
        for _ in range(sizes.repeats):
            plain = max(plain, plain_loop(depth=depth, train=train, sizes=sizes, device=device))
            img_s, syncs = lightning_loop(depth=depth, train=train, sizes=sizes, device=device)
            lightning = max(lightning, img_s)
        ratio = lightning / plain
        out[f"resnet{depth}"] = {
            "lightning_img_s": lightning,
            "plain_img_s": plain,
            "ratio": ratio,
            "syncs_in_timed_steps": syncs,
        }
    return out
