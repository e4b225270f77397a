"""Train one run: `python -m kd_lightning.train mode=teacher|baseline|kd [key=value ...]`, `-m` for sweeps.

config -> data module + LightningModule -> Trainer -> run folder (metrics.json, tb/, checkpoints/).
A run whose metrics.json exists is skipped; an unfinished one resumes from checkpoints/last.ckpt.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
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
from omegaconf import DictConfig, OmegaConf

from kd_lightning import gpus
from kd_lightning.callbacks import CheckpointOnStop, RunCheckpoint, RunClock
from kd_lightning.config import ConfigError, Mode, check_config, register
from kd_lightning.data import CIFAR10DataModule, DataError
from kd_lightning.modules import (
    BaselineModule,
    ClassifierModule,
    DistillModule,
    NonFiniteLossError,
    TeacherError,
    require_teacher_file,
)

log = logging.getLogger("kd_lightning")
# the frozen teacher is in eval mode on purpose; Lightning warns about any such module
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
USER_ERRORS = (ConfigError, DataError, TeacherError, NonFiniteLossError)
register()
gpus.register()


def write_json(path: Path, data: dict) -> None:
    """Write atomically: readers see the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")  # NaN is not a result
    os.replace(tmp, path)


def build_datamodule(cfg: DictConfig) -> CIFAR10DataModule:
    d = cfg.data
    dm = CIFAR10DataModule(
        source=d.source,
        root=d.root,
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


def build_module(cfg: DictConfig, dm: CIFAR10DataModule) -> ClassifierModule:
    optim = OmegaConf.to_container(cfg.optim)
    common = dict(num_classes=dm.num_classes, split_hash=dm.split_hash, val_hash=dm.val_hash, **optim)
    if cfg.mode == Mode.teacher:
        module = BaselineModule(cfg.teacher.depth, cfg.teacher.width, role="teacher", **common)
    elif cfg.mode == Mode.baseline:
        module = BaselineModule(cfg.student.depth, cfg.student.width, role="baseline", **common)
    else:
        module = DistillModule(
            cfg.student.depth, cfg.teacher.ckpt, cfg.kd.alpha, cfg.kd.temperature, cfg.student.width, **common
        )
    if cfg.compile:
        module.model.compile()
        if isinstance(module, DistillModule):
            module.teacher.compile()
    return module


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    t = cfg.trainer
    on_gpu = t.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    precision = t.precision or ("bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true")
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
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
        CheckpointOnStop(run_dir / "checkpoints" / "last.ckpt"),
    ]
    if t.enable_progress_bar:
        callbacks.append(RichProgressBar(refresh_rate=10, leave=True))
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=precision,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False),
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )


def versions() -> dict[str, str]:
    import hydra as hydra_pkg
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": L.__version__,
        "hydra": hydra_pkg.__version__,
    }


def device_name(trainer: L.Trainer) -> str:
    dev = trainer.strategy.root_device
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def summary_line(m: dict, note: str = "") -> str:
    what = f"{m['mode']:8s} ResNet-{m['depth']} w{m['width']}"
    if m["mode"] == "kd":
        what += f" a={m['alpha']:g} T={m['temperature']:g}"
    return (
        f"{what} seed {m['seed']}: val {100 * m['best_val_acc']:.2f}% (epoch {m['best_epoch']}), "
        f"test {100 * m['test_acc']:.2f}%, {m['wall_seconds']:.0f} s{note}"
    )


def run_metrics(
    cfg: DictConfig, dm: CIFAR10DataModule, module: ClassifierModule, trainer: L.Trainer, test: dict, best_epoch: int
) -> dict[str, Any]:
    """What metrics.json records: the run's settings, its split, its results, and where it ran."""
    net = cfg.teacher if cfg.mode == Mode.teacher else cfg.student
    kd = cfg.mode == Mode.kd
    clock = next(c for c in trainer.callbacks if isinstance(c, RunClock))
    ckpt_cb = trainer.checkpoint_callback
    return {
        "mode": cfg.mode.value,
        "run_name": cfg.run_name,
        "depth": net.depth,
        "width": net.width,
        "teacher_depth": cfg.teacher.depth if cfg.mode != Mode.baseline else None,
        "teacher_width": cfg.teacher.width if cfg.mode != Mode.baseline else None,
        "teacher_ckpt": str(cfg.teacher.ckpt) if cfg.mode != Mode.baseline else None,
        "teacher_sha256": module.teacher_info["sha256"] if kd else None,
        "alpha": cfg.kd.alpha if kd else None,
        "temperature": cfg.kd.temperature if kd else None,
        "seed": cfg.seed,
        "split_seed": cfg.data.split_seed,
        "split_hash": dm.split_hash,
        "val_hash": dm.val_hash,
        "data_source": cfg.data.source,
        "data_root": str(cfg.data.root),
        "subset": cfg.data.subset,
        **dm.sizes(),
        "best_val_acc": float(ckpt_cb.best_model_score),
        "best_epoch": best_epoch,
        "test_acc": test["test/acc"],
        "test_loss": test["test/loss"],
        "test_agreement": test.get("test/agreement"),
        "epochs": trainer.current_epoch,
        "max_epochs": cfg.trainer.max_epochs,
        "wall_seconds": round(clock.seconds, 2),
        "train_images_per_second": round(trainer.current_epoch * dm.sizes()["n_train"] / max(clock.seconds, 1e-9), 1),
        "device": device_name(trainer),
        "precision": str(trainer.precision),
        "versions": versions(),
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run (or skip, or resume) the run `cfg` describes; return what it wrote to metrics.json."""
    check_config(cfg)
    run_dir = Path(cfg.paths.run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and not cfg.overwrite:
        metrics = json.loads(metrics_path.read_text())
        log.info(summary_line(metrics, " (already done; skipped, overwrite=true retrains)"))
        return metrics
    if cfg.mode == Mode.kd:
        require_teacher_file(cfg.teacher.ckpt)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    if cfg.overwrite:  # only now: a bad override must not cost the user the finished run
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    trainer = build_trainer(cfg, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        log.info("resuming from %s", last)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        ckpt_cb = trainer.checkpoint_callback  # the first ModelCheckpoint: best.ckpt by val/acc
        best_ckpt = Path(ckpt_cb.best_model_path)
        test = trainer.test(module, datamodule=dm, ckpt_path=str(best_ckpt), verbose=False)[0]
    except SIGTERMException:  # Lightning's exit code would be 0, a success to any scheduler
        sys.exit(128 + signal.SIGTERM)  # the shell's code for "killed by SIGTERM"
    best_epoch = torch.load(best_ckpt, map_location="cpu", weights_only=False)["epoch"] + 1

    if cfg.mode == Mode.teacher:
        dest = Path(cfg.teacher.ckpt)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(best_ckpt, tmp)
        os.replace(tmp, dest)

    metrics = run_metrics(cfg, dm, module, trainer, test, best_epoch)
    if trainer.is_global_zero:
        write_json(metrics_path, metrics)
        log.info(summary_line(metrics))
    return metrics


def _discard_unstarted(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run that failed before training: no half-written results."""
    if run_dir.is_dir() and not any((run_dir / p).exists() for p in ("checkpoints", "tb", "metrics.json")):
        shutil.rmtree(run_dir, ignore_errors=True)


# an absolute path: the same conf/ whether this file runs as __main__ or is imported by a launcher
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        with gpus.run_lease(cfg) as gpu:
            if gpu is not None:  # this job's own GPU for its lifetime, shared with no other job
                cfg.trainer.devices = [gpu]
            metrics = train(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        _discard_unstarted(Path(cfg.paths.run_dir))
        sys.exit(2)
    return metrics["best_val_acc"]  # what a sweeper maximises: validation, never test


if __name__ == "__main__":
    # run the importable copy: process launchers (joblib, submitit) then pickle `main` by reference
    # instead of cloudpickling this __main__ module by value, which fails on torch.backends.cudnn
    from kd_lightning.train import main as entry_point

    entry_point()
