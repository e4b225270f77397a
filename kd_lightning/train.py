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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from kd_lightning.build import build_datamodule, build_module, build_trainer
from kd_lightning.checks import check_config
from kd_lightning.config import ConfigError, Method, Mode, Source, network, register, variant, world_size
from kd_lightning.data import CIFAR10DataModule, DataError
from kd_lightning.gpu import lease
from kd_lightning.gpu.hardware import (
    choose_precision,
    code_version,
    device_label,
    is_launch_rank_zero,
    software_versions,
)
from kd_lightning.modules import BaselineModule, DistillModule, NonFiniteLossError
from kd_lightning.plans import blocks_plan, net_plan
from kd_lightning.run import command
from kd_lightning.run.callbacks import EpochTimes, RunClock, RunSettings
from kd_lightning.run.files import RunFolderError, run_lock
from kd_lightning.run.integrity import check_run_folder, disk_error, full_disk_error, weight_shapes
from kd_lightning.run.record import RunRecord, RunRecordError, fingerprint
from kd_lightning.run.resume import (
    check_tested,
    clear_run,
    discard_unstarted,
    export_teacher,
    finished_record,
    restore_teacher_export,
    resume_checkpoint,
    save_run_config,
)
from kd_lightning.teacher import TeacherError, require_teacher_file

log = logging.getLogger(__name__)
# the frozen teacher is in eval mode on purpose; Lightning warns about any such module
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
USER_ERRORS = (ConfigError, DataError, TeacherError, NonFiniteLossError, RunRecordError, RunFolderError)
register()
lease.register()


def run_record(
    cfg: DictConfig,
    dm: CIFAR10DataModule,
    module: BaselineModule,
    trainer: L.Trainer,
    results: dict[str, Any],
) -> RunRecord:
    """What metrics.json records: the run's settings, its split, its results, and where and with what code it
    ran. `results`: the test metrics, best_epoch, settings, code, and a teacher run's exported sha256."""
    hp, kd = module.hparams, cfg.mode == Mode.kd
    teacher = module.teacher_info if kd else None
    clock = next(c for c in trainer.callbacks if isinstance(c, RunClock))
    split = next((c.split() for c in trainer.callbacks if isinstance(c, EpochTimes)), None)
    sizes, test, method = dm.sizes(), results["test"], cfg.kd.method
    dkd = kd and method == Method.dkd
    net = network(cfg, "teacher" if cfg.mode == Mode.teacher else "student")
    return RunRecord(
        mode=cfg.mode.value,
        run_name=cfg.run_name,
        depth=hp.depth,
        width=hp.width,
        seed=cfg.seed,
        best_val_acc=float(trainer.checkpoint_callback.best_model_score),
        best_epoch=results["best_epoch"],
        test_acc=test["test/acc"],
        epochs=trainer.current_epoch,
        max_epochs=cfg.trainer.max_epochs,
        reading="plan" if net.plan is not None else net.reading,
        plan=hp.plan,
        teacher_depth=teacher["depth"] if kd else (hp.depth if cfg.mode == Mode.teacher else None),
        teacher_width=teacher["width"] if kd else (hp.width if cfg.mode == Mode.teacher else None),
        teacher_plan=teacher["plan"] if kd else None,
        teacher_ckpt=str(cfg.teacher.ckpt) if cfg.mode != Mode.baseline else None,
        teacher_sha256=teacher["sha256"] if kd else results["exported"],
        method=method if kd else None,
        divergence=cfg.kd.divergence if kd and not dkd else None,
        alpha=(cfg.kd.dkd.alpha if dkd else cfg.kd.alpha) if kd else None,
        beta=cfg.kd.dkd.beta if dkd else None,
        warmup_epochs=cfg.kd.dkd.warmup_epochs if dkd else None,
        temperature=cfg.kd.temperature if kd else None,
        lineage=teacher["lineage"] if kd else None,
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
        test_ece=test["test/ece"],
        test_nll=test["test/nll"],
        wall_seconds=round(clock.seconds, 2),
        train_images_per_second=round(trainer.current_epoch * sizes["n_train"] / max(clock.seconds, 1e-9), 1),
        device=device_label(trainer.strategy.root_device),
        precision=str(trainer.precision),
        versions=software_versions(),
        code=results["code"],
        variant=variant(cfg),
        settings=results["settings"],
        fingerprint=fingerprint(results["settings"]),
        time_split=split,
    )


def run_settings(cfg: DictConfig, dm: CIFAR10DataModule, module: BaselineModule) -> dict[str, Any]:
    """Every setting that changes the result, as `key: value` (keys named as in the config, or named for what they
    are: the data's content, the world size, the teacher's file and data); paths, launchers, logging and device
    placement are left out. Stored in metrics.json and every checkpoint (docs/reliability.md lists them)."""
    key, hp = ("teacher" if cfg.mode == Mode.teacher else "student"), module.hparams
    settings = {
        "mode": cfg.mode.value,
        f"{key}.depth": hp.depth,
        f"{key}.width": hp.width,
        f"{key}.plan": hp.plan,
        "seed": cfg.seed,
        "data.source": cfg.data.source,
        "data.content_id": dm.content_id,
        "data.split_seed": cfg.data.split_seed,
        "data.subset": cfg.data.subset,
        "data.batch_size": cfg.data.batch_size,
        **{f"optim.{k}": v for k, v in hp.optim.items()},
        "trainer.max_epochs": cfg.trainer.max_epochs,
        "trainer.precision": choose_precision(cfg.trainer.accelerator, cfg.trainer.precision),
        "trainer.world_size": world_size(cfg.trainer),  # processes, each taking data.batch_size images a step
    }
    if cfg.data.source == Source.synthetic:  # named beside the content id, so a refusal says which changed
        settings |= {"data.synthetic_train": cfg.data.synthetic_train, "data.synthetic_test": cfg.data.synthetic_test}
    if cfg.mode == Mode.kd:
        kd = hp.kd
        used = (
            ("method", "temperature", "dkd")
            if kd["method"] == Method.dkd
            else ("method", "alpha", "temperature", "divergence")
        )
        teacher = module.teacher_info
        settings |= {f"kd.{k}": kd[k] for k in used}
        settings |= {"teacher.sha256": teacher["sha256"], "teacher.content_id": teacher["content_id"]}
    return settings


def log_hparams(trainer: L.Trainer, record: RunRecord) -> None:
    """The run's settings beside its final accuracies, for TensorBoard's HParams view of a sweep."""
    keys = ("mode", "depth", "width", "reading", "method", "divergence", "alpha", "beta", "temperature", "seed")
    params = {k: getattr(record, k) for k in keys} | {"plan": str(record.plan), "epochs": record.max_epochs}
    metrics = {"hparams/best_val_acc": record.best_val_acc, "hparams/test_acc": record.test_acc}
    trainer.logger.log_hyperparams({k: "-" if v is None else v for k, v in params.items()}, metrics)


def check_teacher_architecture(cfg: DictConfig, info: dict[str, Any]) -> None:
    """The teacher's depth, width and plan come from its checkpoint (`info`); a teacher.* value given in the config
    that says otherwise is refused, so the run name and metrics.json never describe a teacher the run did not use.
    A null value (the default) asks nothing."""
    want, plan = cfg.teacher, info["plan"]
    if want.plan is not None:
        agrees = OmegaConf.to_container(want.plan) == plan
    elif want.reading is not None:
        agrees = net_plan(want.depth if want.depth is not None else info["depth"], want.reading) == plan
    else:
        agrees = want.depth is None or want.depth == info["depth"]
    if agrees and want.width in (None, info["width"]):
        return
    given = " ".join(f"teacher.{k}={want[k]}" for k in ("depth", "width", "reading", "plan") if want[k] is not None)
    fix = f"teacher.depth={info['depth']} teacher.width={info['width']}"
    fix += "" if info["plan"] == blocks_plan(info["depth"]) else f" teacher.plan={info['plan']}"
    raise TeacherError(
        f"teacher.ckpt={want.ckpt} holds a ResNet-{info['depth']} of width {info['width']} (plan {plan}), but "
        f"{given} say otherwise; leave them out (they are read from the checkpoint) or set {fix}"
    )


def train(cfg: DictConfig) -> RunRecord:
    """Run (or skip, or resume) the run `cfg` describes; return what it wrote to metrics.json."""
    run_dir = Path(cfg.paths.run_dir)
    try:
        check_config(cfg)
        check_run_folder(run_dir)
        with run_lock(run_dir) if is_launch_rank_zero() else contextlib.nullcontext():
            return _train(cfg, run_dir)
    except Exception as err:
        discard_unstarted(run_dir)  # a run that never started training leaves no folder behind
        full = None if isinstance(err, USER_ERRORS) else disk_error(err)
        if full is not None:  # wherever it struck: a checkpoint, TensorBoard, metrics.json, the teacher export
            raise full_disk_error(full, run_dir) from None
        raise


def _train(cfg: DictConfig, run_dir: Path) -> RunRecord:
    if cfg.mode == Mode.kd:
        require_teacher_file(cfg.teacher.ckpt)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    if isinstance(module, DistillModule):
        check_teacher_architecture(cfg, module.teacher_info)
    settings, weights = run_settings(cfg, dm, module), weight_shapes(module)

    record = None if cfg.overwrite else finished_record(run_dir, settings)
    if record is not None:
        if cfg.mode == Mode.teacher:
            restore_teacher_export(run_dir, Path(cfg.teacher.ckpt), record.teacher_sha256)
        log.info(record.summary_line(" (already done; skipped, overwrite=true retrains)"))
        return record
    if cfg.overwrite:  # only now: a bad override must not cost the user the finished run
        clear_run(run_dir)
    resume = resume_checkpoint(run_dir, settings, weights)
    save_run_config(run_dir, cfg)
    code = code_version()  # the code that trains, read before the first step
    lineage = module.teacher_info["lineage"] if isinstance(module, DistillModule) else []
    trainer = build_trainer(cfg, run_dir, RunSettings(settings, run_name=cfg.run_name, lineage=lineage))
    assert trainer.world_size == settings["trainer.world_size"], "world_size() disagrees with Lightning's"
    if resume is not None:
        log.info("resuming from %s", resume)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        best_ckpt, best_epoch = check_tested(run_dir, settings, weights)  # this run's, whole: or nothing recorded
        test = trainer.test(module, datamodule=dm, ckpt_path=str(best_ckpt), verbose=False)[0]
    except SIGTERMException:  # Lightning's exit code would be 0, a success to any scheduler
        sys.exit(128 + signal.SIGTERM)  # the shell's code for "killed by SIGTERM"

    exported = export_teacher(best_ckpt, Path(cfg.teacher.ckpt)) if cfg.mode == Mode.teacher else None
    results = {"test": test, "best_epoch": best_epoch, "settings": settings, "code": code, "exported": exported}
    record = run_record(cfg, dm, module, trainer, results)
    log_hparams(trainer, record)
    if trainer.is_global_zero:
        record.write(run_dir)
        log.info(record.summary_line())
    return record


# an absolute path: the same conf/ whether this file runs as __main__ or is imported by a launcher
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    logging.raiseExceptions = False  # a full disk that stops train.log costs log lines, not a traceback on stderr
    try:
        with lease.run_lease(cfg) as gpu:
            if gpu is not None:  # this job's own GPU for its lifetime, shared with no other job
                cfg.trainer.devices = [gpu]
            record = train(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", err)
        discard_unstarted(Path(cfg.paths.run_dir))
        if command.in_multirun() and command.record_failure(cfg.run_name, str(err)):
            print(f"error: {err}", file=sys.stderr)
            return math.nan  # the sweep goes on; it lists this run and exits non-zero at its end
        command.fail(str(err))
    return record.best_val_acc  # what a sweeper maximises: validation, never test


if __name__ == "__main__":
    # run the importable copy: process launchers (joblib, submitit) then pickle `main` by reference
    # instead of cloudpickling this __main__ module by value, which fails on torch.backends.cudnn
    from kd_lightning.train import main as entry_point

    entry_point()
