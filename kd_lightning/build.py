"""Config -> objects: the data module, the LightningModule and the Trainer a run is made of."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from kd_lightning.config import Mode, network
from kd_lightning.data import CIFAR10DataModule, DataError
from kd_lightning.gpu.hardware import choose_precision, prepare_backends, uses_cuda
from kd_lightning.modules import BaselineModule, DistillModule
from kd_lightning.run.callbacks import (
    MONITOR,
    AtomicCheckpointIO,
    CheckpointOnStop,
    EpochTimes,
    RunCheckpoint,
    RunClock,
    RunSettings,
)
from kd_lightning.run.record import RunFolder


def build_datamodule(cfg: DictConfig) -> CIFAR10DataModule:
    d = cfg.data
    dm = CIFAR10DataModule(
        d.source,
        d.root,
        split_seed=d.split_seed,
        subset=d.subset,
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        num_workers=d.num_workers,
        synthetic_size=(d.synthetic_train, d.synthetic_test),
        seed=cfg.seed,
    )
    dm.setup()  # load and split now, so data errors surface before anything is trained
    n_train = dm.sizes()["n_train"]
    if d.batch_size > n_train:  # one short batch an epoch would not be the batch size the run records
        raise DataError(
            f"data.batch_size={d.batch_size} is larger than the {n_train} training images of this data; "
            f"choose at most {n_train}"
        )
    return dm


def build_module(cfg: DictConfig, dm: CIFAR10DataModule) -> BaselineModule:
    net = network(cfg, "teacher" if cfg.mode == Mode.teacher else "student")
    common = dict(
        num_classes=dm.num_classes,
        reading=net.reading,
        plan=net.plan,
        optim=OmegaConf.to_container(cfg.optim),
        split_hash=dm.split_hash,
        val_hash=dm.val_hash,
        data_source=str(cfg.data.source),
        content_id=dm.content_id,
    )
    if cfg.mode != Mode.kd:
        module = BaselineModule(net.depth, net.width, role=cfg.mode.value, **common)
    else:
        kd = OmegaConf.to_container(cfg.kd)
        module = DistillModule(net.depth, cfg.teacher.ckpt, kd=kd, width=net.width, **common)
    if (mode := compile_mode(cfg.compile)) is not None:
        compile_models(module, mode, Path(cfg.paths.root))
    return module


def compile_mode(value: Any) -> str | None:
    """The torch.compile mode the `compile` key asks for (None: off); `compile=true` is the default mode."""
    if value is True:
        return "default"
    return None if value in (False, None) else str(value)


def compile_models(module: BaselineModule, mode: str, root: Path) -> None:
    """Compile the student (and a KD run's teacher) in place; state-dict keys stay as they are.

    Inductor's cache goes to one folder under paths.root unless TORCHINDUCTOR_CACHE_DIR is set, so the
    runs of a sweep compile each graph once between them, not once per process.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or Path(current) == Path(default_cache_dir()).resolve():  # importing lightning sets this one
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root.resolve() / "cache" / "inductor")
    options = {} if mode == "default" else {"mode": mode}
    module.model.compile(**options)
    if isinstance(module, DistillModule):
        module.teacher.compile(**options)


def build_trainer(cfg: DictConfig, run_dir: Path, settings: RunSettings | None = None) -> L.Trainer:
    t, folder = cfg.trainer, RunFolder(run_dir)
    prepare_backends(t.accelerator)
    callbacks: list[Callback] = [
        EpochTimes(),  # first: its validation-end clock stops before the checkpoints are written
        RunCheckpoint(
            dirpath=folder.checkpoints,
            filename=folder.best.stem,
            monitor=MONITOR,
            mode="max",
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        # last.ckpt every trainer.checkpoint_every epochs and at the last; save_last=True above would skip the
        # epochs that do not improve val/acc
        RunCheckpoint(
            dirpath=folder.checkpoints,
            filename=folder.last.stem,
            enable_version_counter=False,
            every=t.checkpoint_every,
        ),
        RunClock(),
        settings or RunSettings({}),
        CheckpointOnStop(folder.last),
    ]
    if t.enable_progress_bar:
        callbacks.append(RichProgressBar(refresh_rate=10, leave=True))
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=choose_precision(t.accelerator, t.precision),
        benchmark=uses_cuda(t.accelerator),  # cudnn autotuning: the shapes never change within a run
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks,
        # async: the write (atomic still) leaves the training thread; its error surfaces at the next save or at the end
        plugins=[AsyncCheckpointIO(AtomicCheckpointIO()) if t.async_checkpoint else AtomicCheckpointIO()],
        logger=TensorBoardLogger(save_dir=str(run_dir), name=folder.tb.name, version="", default_hp_metric=False),
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
