"""Comparison 4: one epoch (train + validation) end to end, ours vs a naive Lightning + torchvision script.

Ours is the GPU script's path (build.build_trainer, our data module); the naive side is what a
first Lightning script does: per-image transforms in a DataLoader, fp32, NCHW, the default TQDM bar
with the loss logged to it every step, and the Trainer's default cudnn.benchmark=False.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from torch.nn import functional as F

from kd_lightning.bench.harness import Pair, Sizes, accelerator, sync, torchvision_loader
from kd_lightning.build import build_trainer
from kd_lightning.config import Config, OptimConfig, filled
from kd_lightning.data import CIFAR10DataModule
from kd_lightning.models import resnet
from kd_lightning.modules import BaselineModule, build_optimizer


class _NaiveModule(L.LightningModule):
    """What a first Lightning script does: NCHW tensors, the loss logged to the progress bar every step."""

    def __init__(self, depth: int, width: int):
        super().__init__()
        self.model = resnet(depth, 10, width)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches)
        opt, sched = build_optimizer(self.model.parameters(), filled(OptimConfig), total)
        config = {"optimizer": opt}
        if sched is not None:  # none for runs of two steps or fewer (build_optimizer)
            config["lr_scheduler"] = {"scheduler": sched, "interval": "step"}
        return config


def epoch_ours(train: Pair, val: Pair, sizes: Sizes, device: torch.device, folder: Path) -> float:
    """Seconds for one epoch as the GPU script runs it: build.build_trainer, progress bar off."""
    cfg = OmegaConf.structured(Config)
    cfg.trainer.max_epochs, cfg.trainer.accelerator, cfg.trainer.enable_progress_bar = 1, accelerator(device), False
    torch.manual_seed(0)
    module = BaselineModule(sizes.epoch_depth, width=sizes.width, role="teacher")
    data = CIFAR10DataModule.from_tensors(train, val, batch_size=sizes.batch, eval_batch_size=cfg.data.eval_batch_size)
    trainer = build_trainer(cfg, folder)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    sync(device)
    return time.perf_counter() - t0


def epoch_naive(train: Pair, val: Pair, sizes: Sizes, device: torch.device, folder: Path) -> float:
    """Seconds for one epoch of the usual script: torchvision DataLoader, fp32, default Trainer."""
    torch.manual_seed(0)
    module = _NaiveModule(sizes.epoch_depth, sizes.width)
    trainer = L.Trainer(
        accelerator=accelerator(device),
        devices=1,
        max_epochs=1,
        default_root_dir=folder,
        logger=TensorBoardLogger(folder),
        callbacks=[TQDMProgressBar(refresh_rate=1)],
        enable_model_summary=False,
        benchmark=False,  # the Trainer's default when cudnn.benchmark was never set
    )
    loaders = [
        torchvision_loader(data, batch=sizes.batch, workers=sizes.workers, device=device, train=is_train)
        for data, is_train in ((train, True), (val, False))
    ]
    t0 = time.perf_counter()
    sink = io.StringIO()  # the progress bar draws every step, but not on the console
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        trainer.fit(module, *loaders)
    sync(device)
    return time.perf_counter() - t0


def bench_epoch(train: Pair, val: Pair, sizes: Sizes, device: torch.device, tmp: Path) -> dict:
    """Each side once: an epoch is long enough to time."""
    naive = epoch_naive(train=train, val=val, sizes=sizes, device=device, folder=tmp / "naive")
    ours = epoch_ours(train=train, val=val, sizes=sizes, device=device, folder=tmp / "ours")
    speedup = naive / ours
    images = len(train[1]) + len(val[1])
    return {
        "depth": sizes.epoch_depth,
        "ours_s": ours,
        "naive_s": naive,
        "speedup": speedup,
        "ours_img_s": images / ours,
        "naive_img_s": images / naive,
    }
