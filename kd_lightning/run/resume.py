"""What a run folder already holds decides what a run does, before it trains a single step.

A finished run (metrics.json) of the same settings is skipped; an unfinished one resumes from its
last good checkpoint; a run of other settings is refused with the differing keys named. Broken
files never block a rerun: an unreadable metrics.json counts as unfinished, an unreadable
last.ckpt falls back to best.ckpt, and then to a fresh start, each with a warning.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kd_lightning.run.callbacks import checkpoint_settings
from kd_lightning.run.files import RunFolderError, atomic_path, file_sha256, is_locked
from kd_lightning.run.record import RunFolder, RunRecord, RunRecordError, check_same_settings, load_record

log = logging.getLogger(__name__)


def finished_record(run_dir: Path, settings: dict[str, Any]) -> RunRecord | None:
    """The record of a finished run of these settings; None when there is none or it cannot be read."""
    if not RunFolder(run_dir).metrics.exists():
        return None
    try:
        record = load_record(run_dir)
    except RunRecordError as err:
        log.warning("%s; the run counts as unfinished and resumes", err)
        return None
    check_same_settings("the finished run", record.settings, settings, run_dir)
    return record


def resume_checkpoint(run_dir: Path, settings: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from: last.ckpt, else best.ckpt when last cannot be read, else none.

    A readable checkpoint of other settings is refused (RunFolderError); when every checkpoint is
    unreadable, the old checkpoints and curves are removed so the fresh start does not mix with them.
    """
    unreadable = []
    folder = RunFolder(run_dir)
    for path in (folder.last, folder.best):
        name = path.name
        if not path.exists():
            continue
        try:
            stored = checkpoint_settings(path)
        except Exception as err:  # torch.load raises many types for a cut or foreign file
            log.warning("%s cannot be read (%s: %s); trying an earlier checkpoint", path, type(err).__name__, err)
            unreadable.append(path)
            continue
        check_same_settings(f"the checkpoint {name}", stored, settings, run_dir)
        return path
    if unreadable:
        log.warning("no readable checkpoint in %s; the run starts afresh", folder.checkpoints)
        clear_run(run_dir)
    return None


def clear_run(run_dir: Path) -> None:
    """Remove what a training wrote (checkpoints, curves, record); the folder, its log and lock stay."""
    folder = RunFolder(run_dir)
    shutil.rmtree(folder.checkpoints, ignore_errors=True)
    shutil.rmtree(folder.tb, ignore_errors=True)
    folder.metrics.unlink(missing_ok=True)


def export_teacher(best: Path, dest: Path) -> str:
    """Copy a teacher run's best checkpoint to where KD runs look for it (teacher.ckpt); return its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(best, tmp)
    return file_sha256(dest)


def restore_teacher_export(run_dir: Path, dest: Path, sha256: str | None) -> None:
    """A finished teacher run whose export was deleted: copy it again from the run's best checkpoint.
    An export that another teacher run has since replaced is left as it is, with a warning."""
    if dest.exists():
        if sha256 is not None and file_sha256(dest) != sha256:
            log.warning(
                "teacher.ckpt=%s is not this run's export (another teacher run replaced it); KD runs that read "
                "it distil from that teacher, and record its sha256",
                dest,
            )
        return
    best = RunFolder(run_dir).best
    if not best.exists():
        raise RunFolderError(
            f"the teacher run in {run_dir} is finished, but its export teacher.ckpt={dest} and its "
            f"{best} are both gone; retrain it with overwrite=true"
        )
    export_teacher(best, dest)
    log.info("restored teacher.ckpt=%s from %s", dest, best)


def save_run_config(run_dir: Path, cfg: DictConfig) -> None:
    """.hydra/: the config (and, under Hydra, its overrides) of the run as it trains. Written here, once the
    run is known to train, so a skipped or refused command never rewrites the config of a finished run."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"config.yaml": cfg}
    if HydraConfig.initialized():
        files |= {"hydra.yaml": {"hydra": HydraConfig.get()}, "overrides.yaml": HydraConfig.get().overrides.task}
    for name, node in files.items():
        with atomic_path(folder / name) as tmp:
            OmegaConf.save(node if isinstance(node, DictConfig) else OmegaConf.create(node), tmp)


def discard_unstarted(run_dir: Path) -> None:
    """Remove the folder of a run that failed before training (no half-written results), unless another
    process is training in it."""
    folder = RunFolder(run_dir)
    started = any(p.exists() for p in (folder.checkpoints, folder.tb, folder.metrics))
    if run_dir.is_dir() and not started and not is_locked(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
