"""What every comparison shares: the sizes, the data, and how a step is timed.

Kept apart from the comparisons so that each of them reads as the two sides it measures and
nothing else, and so that all four time and synchronise in the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from kd_lightning.data import MEAN, STD, load_folder, split_indices, synthetic_cifar
from kd_lightning.gpu.hardware import choose_precision

Pair = tuple[torch.Tensor, torch.Tensor]  # (uint8 images NCHW, labels)

SECTIONS = ("many", "pipeline", "trainer", "kd", "epoch", "checkpoint", "compile")  # in the order they run


@dataclass
class Sizes:
    width: int  # base width of every ResNet measured
    batch: int  # training batch of comparisons 2-4
    n_train: int  # training images (the study's split, first n)
    n_val: int  # validation images of comparison 4 (the study's split, first n)
    warmup: int  # untimed steps before each timed window
    steps: int  # timed steps
    repeats: int  # alternating measurements; the best of each is kept
    workers: int  # torchvision DataLoader processes
    epoch_depth: int  # the network of the end-to-end epoch (the teacher's depth)
    pipeline_images: int  # images per timed pass of comparison 1 (batches of the study's size)
    many: int = 0  # processes of comparison 5 (many runs on one device); 0 skips it
    many_steps: int = 0  # timed training steps of each of them


# fmt: off
SIZES = {
    "gpu": Sizes(width=64, batch=512, n_train=40_000, n_val=10_000, warmup=15, steps=50, repeats=2,
                 workers=min(8, os.cpu_count() or 1), epoch_depth=10, pipeline_images=40_000, many=4, many_steps=200),
    "cpu": Sizes(width=16, batch=128, n_train=896, n_val=192, warmup=1, steps=6, repeats=3,
                 workers=min(2, os.cpu_count() or 1), epoch_depth=10, pipeline_images=2_048, many_steps=20),
    # width 8: at width 4 a channels_last ResNet-10 backward never returned on a CPU (torch 2.14.1)
    "tiny": Sizes(width=8, batch=32, n_train=128, n_val=64, warmup=1, steps=2, repeats=1,
                  workers=1, epoch_depth=4, pipeline_images=256, many_steps=4),
}
# fmt: on


# ----------------------------------------------------------------------------- device


def accelerator(device: torch.device) -> str:
    """The Trainer's name for `device`."""
    return "gpu" if device.type == "cuda" else "cpu"


def sync(device: torch.device) -> None:
    """Wait for the device, so that a clock read after it covers the work queued before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The precision a training run would use on `device`, for the loops that run without a Trainer."""
    if choose_precision(accelerator(device)) == "bf16-mixed":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- timing


def per_step(stamps: list[float], device: torch.device) -> float:
    """Seconds per step from timestamps taken before the first timed step and after each one.

    On a CPU the fastest step (noise from a shared machine only ever adds time); on a GPU the
    window's mean, since its steps run asynchronously and only the window's two ends are synced.
    """
    if device.type == "cpu":
        return min(b - a for a, b in zip(stamps, stamps[1:]))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def time_ms(fn: Callable[[], Any], sizes: Sizes, device: torch.device) -> float:
    """Milliseconds per call of `fn`: `sizes.warmup` untimed calls, then `sizes.steps` timed ones."""
    for _ in range(sizes.warmup):
        fn()
    sync(device)
    stamps = [time.perf_counter()]
    for i in range(sizes.steps):
        fn()
        if i == sizes.steps - 1:
            sync(device)
        stamps.append(time.perf_counter())
    return 1000 * per_step(stamps, device)


def step_trainer(device: torch.device, max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    """A Trainer that only trains, at the study's precision: no validation, logger, checkpoints or bar."""
    return L.Trainer(
        accelerator=accelerator(device),
        devices=1,
        precision=choose_precision(accelerator(device)),
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


class StepTimer(L.Callback):
    """Timestamps from the end of step warmup-1 to the end of step `last` (each interval holds one
    whole step: fetch, augmentation, forward, backward, optimiser, hooks); on CUDA it also counts
    host-device syncs in that window."""

    def __init__(self, warmup: int, last: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, last, device
        self.stamps: list[float] = []
        self.syncs: int | None = None
        self._caught: warnings.catch_warnings | None = None
        self._records: list[warnings.WarningMessage] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup - 1:
            sync(self.device)
            if self.device.type == "cuda":
                self._caught = warnings.catch_warnings(record=True)
                self._records = self._caught.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
        elif batch_idx == self.last and self._caught is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            self.syncs = sum("synchroniz" in str(w.message) for w in self._records)
        if batch_idx == self.last:
            sync(self.device)
        if self.warmup - 1 <= batch_idx <= self.last:
            self.stamps.append(time.perf_counter())


# ----------------------------------------------------------------------------- data


def load_data(root: Path, sizes: Sizes) -> tuple[Pair, Pair, str]:
    """(train images, labels), (val images, labels) from the study's split; real data when `root` has it.

    The training part holds max(n_train, pipeline_images) images; comparisons 2-4 use the first n_train.
    """
    n_train = max(sizes.n_train, sizes.pipeline_images)
    if (root / "train").is_dir():
        x, y, _ = load_folder(root, "train", workers=min(8, os.cpu_count() or 1))
        source = f"CIFAR-10 JPEG copy ({root})"
    else:  # enough images that the 80/20 split holds n_train and n_val
        x, y = synthetic_cifar(max(5 * n_train // 4 + 1, 5 * sizes.n_val + 1), seed=1)
        source = "synthetic (no data under --data-root)"
    train_idx, val_idx = split_indices(len(y), split_seed=0)
    train_idx, val_idx = train_idx[:n_train], val_idx[: sizes.n_val]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), source


def cover(data: Pair, images: int) -> Pair:
    """`data` repeated until it holds `images` images: a timed window of many steps stays inside one epoch
    (StepTimer counts batches within an epoch)."""
    reps = -(-images // len(data[1]))
    return (data[0].repeat(reps, 1, 1, 1), data[1].repeat(reps)) if reps > 1 else data


class _PILImages(torch.utils.data.Dataset):
    """uint8 images served the way torchvision's CIFAR10 serves them: one PIL image at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, train: bool):
        from torchvision import transforms as T

        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # (N, H, W, C)
        self.labels = labels.tolist()
        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
        self.transform = T.Compose([*steps, T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def torchvision_loader(
    data: Pair, *, batch: int, workers: int, device: torch.device, train: bool, **kw: Any
) -> torch.utils.data.DataLoader:
    """The usual CIFAR-10 pipeline: per-image transforms on PIL images in a DataLoader's worker processes."""
    return torch.utils.data.DataLoader(
        _PILImages(*data, train=train),
        batch_size=batch,
        shuffle=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        **kw,
    )
