"""Train one run: `python -m kd_lightning.train mode=teacher|baseline|kd [key=value ...]`, `-m` for sweeps.

config -> data module + LightningModule -> Trainer -> run folder (metrics.json, tb/, checkpoints/).
A run whose metrics.json exists is skipped; an unfinished one resumes from checkpoints/last.ckpt.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from kd_lightning import gpus, launch
from kd_lightning.callbacks import AtomicCheckpointIO, CheckpointOnStop, RunCheckpoint, RunClock, RunSettings
from kd_lightning.checks import check_config
from kd_lightning.config import ConfigError, Mode, Source, register, variant
from kd_lightning.data import CIFAR10DataModule, DataError
from kd_lightning.hardware import (
    choose_precision,
    device_label,
    is_launch_rank_zero,
    prepare_backends,
    software_versions,
    uses_cuda,
)
from kd_lightning.modules import BaselineModule, DistillModule, NonFiniteLossError, TeacherError, require_teacher_file
from kd_lightning.resume import (
    clear_run,
    discard_unstarted,
    export_teacher,
    finished_record,
    restore_teacher_export,
    resume_checkpoint,
    save_run_config,
)
from kd_lightning.runs import RunFolderError, RunRecord, RunRecordError, fingerprint, run_lock

log = logging.getLogger("kd_lightning")
# the frozen teacher is in eval mode on purpose; Lightning warns about any such module
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
USER_ERRORS = (ConfigError, DataError, TeacherError, NonFiniteLossError, RunRecordError, RunFolderError)
register()
gpus.register()


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
    return dm


def build_module(cfg: DictConfig, dm: CIFAR10DataModule) -> BaselineModule:
    common = dict(num_classes=dm.num_classes, optim=dict(cfg.optim), split_hash=dm.split_hash, val_hash=dm.val_hash)
    if cfg.mode == Mode.teacher:
        module = BaselineModule(cfg.teacher.depth, cfg.teacher.width, role=Mode.teacher.value, **common)
    elif cfg.mode == Mode.baseline:
        module = BaselineModule(cfg.student.depth, cfg.student.width, role=Mode.baseline.value, **common)
    else:
        module = DistillModule(
            cfg.student.depth,
            cfg.teacher.ckpt,
            alpha=cfg.kd.alpha,
            temperature=cfg.kd.temperature,
            width=cfg.student.width,
            **common,
        )
    if cfg.compile:
        module.model.compile()
        if isinstance(module, DistillModule):
            module.teacher.compile()
    return module


def build_trainer(cfg: DictConfig, run_dir: Path, settings: dict[str, Any] | None = None) -> L.Trainer:
    t = cfg.trainer
    prepare_backends(t.accelerator)
    callbacks: list[Callback] = [
        RunCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/acc",
            mode="max",
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        # last.ckpt after every epoch; save_last=True above would skip the epochs that do not improve val/acc
        RunCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
        RunClock(),
        RunSettings(settings or {}),
        CheckpointOnStop(run_dir / "checkpoints" / "last.ckpt"),
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
        plugins=[AtomicCheckpointIO()],
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False),
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )


def run_record(
    cfg: DictConfig,
    dm: CIFAR10DataModule,
    module: BaselineModule,
    trainer: L.Trainer,
    test: dict,
    best_epoch: int,
    settings: dict[str, Any],
) -> RunRecord:
    """What metrics.json records: the run's settings, its split, its results, and where it ran."""
    net = cfg.teacher if cfg.mode == Mode.teacher else cfg.student
    kd = cfg.mode == Mode.kd
    has_teacher = cfg.mode != Mode.baseline
    clock = next(c for c in trainer.callbacks if isinstance(c, RunClock))
    sizes = dm.sizes()
    return RunRecord(
        mode=cfg.mode.value,
        run_name=cfg.run_name,
        depth=net.depth,
        width=net.width,
        seed=cfg.seed,
        best_val_acc=float(trainer.checkpoint_callback.best_model_score),
        best_epoch=best_epoch,
        test_acc=test["test/acc"],
        epochs=trainer.current_epoch,
        max_epochs=cfg.trainer.max_epochs,
        teacher_depth=(module.teacher_info["depth"] if kd else cfg.teacher.depth) if has_teacher else None,
        teacher_width=(module.teacher_info["width"] if kd else cfg.teacher.width) if has_teacher else None,
        teacher_ckpt=str(cfg.teacher.ckpt) if has_teacher else None,
        teacher_sha256=module.teacher_info["sha256"] if kd else None,
        alpha=cfg.kd.alpha if kd else None,
        temperature=cfg.kd.temperature if kd else None,
        split_seed=cfg.data.split_seed,
        split_hash=dm.split_hash,
        val_hash=dm.val_hash,
        data_source=cfg.data.source,
        data_root=str(cfg.data.root),
        subset=cfg.data.subset,
        n_train=sizes["n_train"],
        n_val=sizes["n_val"],
        n_test=sizes["n_test"],
        test_loss=test["test/loss"],
        test_agreement=test.get("test/agreement"),
        wall_seconds=round(clock.seconds, 2),
        train_images_per_second=round(trainer.current_epoch * sizes["n_train"] / max(clock.seconds, 1e-9), 1),
        device=device_label(trainer.strategy.root_device),
        precision=str(trainer.precision),
        versions=software_versions(),
        variant=variant(cfg),
        settings=settings,
        fingerprint=fingerprint(settings),
    )


def run_settings(cfg: DictConfig, dm: CIFAR10DataModule, module: BaselineModule) -> dict[str, Any]:
    """Every setting that changes the result, as `key: value` (keys named as in the config); paths,
    launchers, logging and device placement are left out. Stored in metrics.json and every checkpoint."""
    key = "teacher" if cfg.mode == Mode.teacher else "student"
    settings = {
        "mode": cfg.mode.value,
        f"{key}.depth": cfg[key].depth,
        f"{key}.width": cfg[key].width,
        "seed": cfg.seed,
        "data.source": cfg.data.source,
        "data.content_id": dm.content_id,
        "data.split_seed": cfg.data.split_seed,
        "data.subset": cfg.data.subset,
        "data.batch_size": cfg.data.batch_size,
        **{f"optim.{k}": v for k, v in module.hparams.optim.items()},
        "trainer.max_epochs": cfg.trainer.max_epochs,
        "trainer.precision": choose_precision(cfg.trainer.accelerator, cfg.trainer.precision),
    }
    if cfg.data.source == Source.synthetic:  # named beside the content id, so a refusal says which changed
        settings |= {"data.synthetic_train": cfg.data.synthetic_train, "data.synthetic_test": cfg.data.synthetic_test}
    if cfg.mode == Mode.kd:
        settings |= {
            "kd.alpha": cfg.kd.alpha,
            "kd.temperature": cfg.kd.temperature,
            "teacher.sha256": module.teacher_info["sha256"],
        }
    return settings


def check_teacher_architecture(cfg: DictConfig, module: DistillModule) -> None:
    """The teacher's depth and width come from its checkpoint; a config that says otherwise is refused,
    so the run name and metrics.json never describe a teacher the run did not use."""
    info = module.teacher_info
    if (info["depth"], info["width"]) != (cfg.teacher.depth, cfg.teacher.width):
        raise TeacherError(
            f"teacher.ckpt={cfg.teacher.ckpt} holds a ResNet-{info['depth']} of width {info['width']}, but "
            f"teacher.depth={cfg.teacher.depth} teacher.width={cfg.teacher.width} say otherwise; "
            f"set teacher.depth={info['depth']} teacher.width={info['width']}"
        )


def train(cfg: DictConfig) -> RunRecord:
    """Run (or skip, or resume) the run `cfg` describes; return what it wrote to metrics.json."""
    check_config(cfg)
    run_dir = Path(cfg.paths.run_dir)
    try:
        with run_lock(run_dir) if is_launch_rank_zero() else contextlib.nullcontext():
            return _train(cfg, run_dir)
    except Exception:
        discard_unstarted(run_dir)  # a run that never started training leaves no folder behind
        raise


def _train(cfg: DictConfig, run_dir: Path) -> RunRecord:
    if cfg.mode == Mode.kd:
        require_teacher_file(cfg.teacher.ckpt)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    if isinstance(module, DistillModule):
        check_teacher_architecture(cfg, module)
    settings = run_settings(cfg, dm, module)

    record = None if cfg.overwrite else finished_record(run_dir, settings)
    if record is not None:
        if cfg.mode == Mode.teacher:
            restore_teacher_export(run_dir, Path(cfg.teacher.ckpt))
        log.info(record.summary_line(" (already done; skipped, overwrite=true retrains)"))
        return record
    if cfg.overwrite:  # only now: a bad override must not cost the user the finished run
        clear_run(run_dir)
    resume = resume_checkpoint(run_dir, settings)
    save_run_config(run_dir, cfg)
    trainer = build_trainer(cfg, run_dir, settings)
    if resume is not None:
        log.info("resuming from %s", resume)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        best_ckpt = Path(trainer.checkpoint_callback.best_model_path)  # the first ModelCheckpoint: by val/acc
        test = trainer.test(module, datamodule=dm, ckpt_path=str(best_ckpt), verbose=False)[0]
    except SIGTERMException:  # Lightning's exit code would be 0, a success to any scheduler
        sys.exit(128 + signal.SIGTERM)  # the shell's code for "killed by SIGTERM"
    best_epoch = torch.load(best_ckpt, map_location="cpu", weights_only=False)["epoch"] + 1

    if cfg.mode == Mode.teacher:
        export_teacher(best_ckpt, Path(cfg.teacher.ckpt))
    record = run_record(cfg, dm, module, trainer, test, best_epoch, settings)
    if trainer.is_global_zero:
        record.write(run_dir)
        log.info(record.summary_line())
    return record


# an absolute path: the same conf/ whether this file runs as __main__ or is imported by a launcher
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        with gpus.run_lease(cfg) as gpu:
            if gpu is not None:  # this job's own GPU for its lifetime, shared with no other job
                cfg.trainer.devices = [gpu]
            record = train(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        discard_unstarted(Path(cfg.paths.run_dir))
        if launch.in_multirun() and launch.record_failure(cfg.run_name, str(err)):
            return math.nan  # the sweep goes on; it lists this run and exits non-zero at its end
        sys.exit(2)
    return record.best_val_acc  # what a sweeper maximises: validation, never test


if __name__ == "__main__":
    # run the importable copy: process launchers (joblib, submitit) then pickle `main` by reference
    # instead of cloudpickling this __main__ module by value, which fails on torch.backends.cudnn
    from kd_lightning.train import main as entry_point

    entry_point()
