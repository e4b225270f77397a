"""Comparison 7 (on request: `--only compile`): the Lightning step of ResNet-4 eager and under torch.compile modes.

Per mode: the seconds from `fit` to the end of the first step (the compile, paid once per process
unless inductor's cache holds it; see build.compile_models) and the training rate after warm-up.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from kd_lightning.bench.harness import Pair, Sizes, StepTimer, cover, per_step, step_trainer, sync
from kd_lightning.data import CIFAR10DataModule
from kd_lightning.modules import BaselineModule

MODES = ("default", "reduce-overhead")  # max-autotune searches kernels for minutes: ask for it by name


class _FirstStep(L.Callback):
    def __init__(self, device: torch.device):
        self.device, self.seconds = device, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            sync(self.device)
            self.seconds = time.perf_counter() - self.t0


def compiled_step(mode: str | None, train: Pair, sizes: Sizes, device: torch.device) -> dict:
    """First-step seconds and images/s of BaselineModule(4) through the Trainer, compiled with `mode` (None: eager)."""
    torch.manual_seed(0)
    warmup = max(sizes.warmup, 3)  # a compiled step settles after a few calls (CUDA graphs record on the third)
    timer, first = StepTimer(warmup, warmup + sizes.steps - 1, device), _FirstStep(device)
    trainer = step_trainer(device, max_steps=warmup + sizes.steps, callbacks=[timer, first])
    module = BaselineModule(4, width=sizes.width)
    if mode is not None:
        module.model.compile(mode=mode)
    train = cover(train, (warmup + sizes.steps) * sizes.batch)
    trainer.fit(module, datamodule=CIFAR10DataModule.from_tensors(train, train, batch_size=sizes.batch))
    return {"first_step_s": first.seconds, "img_s": sizes.batch / per_step(timer.stamps, device)}


def bench_compile(train: Pair, sizes: Sizes, device: torch.device, modes: tuple[str, ...] = MODES) -> dict:
    """Eager, then each mode; each mode's speed-up over eager."""
    eager = compiled_step(None, train=train, sizes=sizes, device=device)
    out = {"eager": eager}
    for mode in modes:
        out[mode] = compiled_step(mode, train=train, sizes=sizes, device=device)
        out[mode]["speedup"] = out[mode]["img_s"] / eager["img_s"]
    return out
