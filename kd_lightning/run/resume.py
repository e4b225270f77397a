"""What a run folder already holds decides what a run does, before it trains a single step.

A finished run (metrics.json) of the same settings is skipped; an unfinished one resumes from its
last good checkpoint; a run of other settings is refused with the differing keys named. Broken
files never block a rerun: an unreadable metrics.json counts as unfinished, an unusable last.ckpt
(cut, a field missing, weights that do not fit the network) falls back to best.ckpt, and then to a
fresh start; a lost best.ckpt is restored from last.ckpt when that is the best epoch's, else the run
starts afresh: each with a warning.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kd_lightning.run.callbacks import best_record, read_checkpoint, stored_settings
from kd_lightning.run.files import RunFolderError, atomic_path, file_sha256, is_locked
from kd_lightning.run.integrity import checkpoint_problem
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


class Unusable(Exception):
    """Why a checkpoint of the run folder cannot restore the run: missing, unreadable, or broken."""


def own_checkpoint(path: Path, settings: dict[str, Any], weights: dict | None, run_dir: Path) -> Any:
    """The checkpoint at `path` when it is this run's and can restore it; Unusable saying why not (missing, cut,
    a field missing, weights that do not fit); RunFolderError when it was written by a run of other settings."""
    if not path.exists():
        raise Unusable("is missing")
    try:
        ckpt = read_checkpoint(path)
    except Exception as err:  # torch.load raises many types for a cut or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise Unusable(f"cannot be read ({type(err).__name__}: {first.split('. ')[0]})") from None
    check_same_settings(f"the checkpoint {path.name}", stored_settings(ckpt), settings, run_dir)
    problem = checkpoint_problem(ckpt, weights)
    if problem is not None:
        raise Unusable(problem)
    return ckpt


def resume_checkpoint(run_dir: Path, settings: dict[str, Any], weights: dict | None = None) -> Path | None:
    """The checkpoint to resume from: last.ckpt, else best.ckpt when last cannot be used, else none.

    A readable checkpoint of other settings is refused (RunFolderError). best.ckpt is the one the run tests at its
    end, so it must be whole too: when it is not, but last.ckpt is the best epoch's, best.ckpt is restored from it;
    when the best epoch's weights are lost with it, the run starts afresh. Whenever the run starts afresh, the old
    checkpoints and curves are removed so that it does not mix with them. `weights`: weight_shapes of the module.
    """
    folder = RunFolder(run_dir)
    usable, why = {}, {}
    for path in (folder.last, folder.best):
        try:
            usable[path] = own_checkpoint(path, settings, weights, run_dir)
        except Unusable as err:
            why[path] = f"{path} {err}"
    last = usable.get(folder.last)
    if last is None and folder.last.exists():
        log.warning("%s; trying an earlier checkpoint", why[folder.last])
    if last is not None and folder.best in usable:
        return folder.last
    if last is not None:  # best.ckpt missing or broken
        best = best_record(last)
        if not best.get("best_model_path"):  # the first epoch has not ended: there is no best checkpoint yet
            return folder.last
        if best.get("best_epoch") == last["epoch"]:
            with atomic_path(folder.best) as tmp:
                shutil.copyfile(folder.last, tmp)
            log.warning("%s; last.ckpt is the best epoch's, so best.ckpt is restored from it", why[folder.best])
            return folder.last
        log.warning("%s, and with it the best epoch's weights: the run starts afresh", why[folder.best])
    elif folder.best in usable:
        return folder.best
    elif not (folder.last.exists() or folder.best.exists()):
        return None  # nothing was saved yet
    else:
        also = f" ({why[folder.best]})" if folder.best.exists() else ""
        log.warning("no usable checkpoint in %s%s; the run starts afresh", folder.checkpoints, also)
    clear_run(run_dir)
    return None


def check_tested(run_dir: Path, settings: dict[str, Any], weights: dict | None) -> tuple[Path, int]:
    """best.ckpt, the checkpoint whose test accuracy becomes the run's result, and its epoch (1-based), after
    checking that it is this run's and whole; RunFolderError (nothing recorded) when it is not."""
    best = RunFolder(run_dir).best
    try:
        ckpt = own_checkpoint(best, settings, weights, run_dir)
    except Unusable as err:
        raise RunFolderError(
            f"{best} {err}, so it cannot be tested as this run's result; rerun the same command (it restores or "
            "retrains it)"
        ) from None
    return best, int(ckpt["epoch"]) + 1


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
