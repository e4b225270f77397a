"""Run bookkeeping around Lightning's own callbacks: wall time and where it goes, the run's settings in every
checkpoint, checkpoints written atomically (and as often as asked), checkpoints that survive a moved
folder, and a checkpoint on SIGTERM/Ctrl-C so the same command resumes where the run stopped."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from kd_lightning.run.files import RunFolderError, atomic_path
from kd_lightning.run.integrity import free_space
from kd_lightning.run.record import CHECKPOINT_KEY, TimeSplit, fingerprint

log = logging.getLogger(__name__)


MONITOR = "val/acc"  # what the best checkpoint is chosen on


def read_checkpoint(path: Path) -> Any:
    """A checkpoint's contents, its tensors mapped from the file rather than read; any read error propagates."""
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def stored_settings(ckpt: Any) -> dict[str, Any] | None:
    """The run settings a checkpoint holds (None when it has none)."""
    run = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    return run.get("settings") if isinstance(run, dict) else None


def checkpoint_settings(path: Path) -> dict[str, Any] | None:
    """The settings stored in a checkpoint (None when it has none); any read error propagates."""
    return stored_settings(read_checkpoint(path))


def best_record(ckpt: Any) -> dict[str, Any]:
    """What a checkpoint says of the run's best checkpoint so far: the state of the RunCheckpoint that monitors
    val/acc (best_model_path, best_model_score, best_epoch); {} when it holds none."""
    states = ckpt.get("callbacks") if isinstance(ckpt, dict) else None
    found = [s for s in (states or {}).values() if isinstance(s, dict) and s.get("monitor") == MONITOR]
    return found[0] if found else {}


class RunSettings(Callback):
    """Stores the run's settings in every checkpoint, so a resume can refuse a checkpoint of other settings,
    and its name and lineage, so a run that distils from the checkpoint records where its teacher came from."""

    def __init__(self, settings: dict[str, Any], run_name: str = "", lineage: list | None = None) -> None:
        self.settings, self.run_name, self.lineage = settings, run_name, lineage or []

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "settings": self.settings,
            "fingerprint": fingerprint(self.settings),
            "run_name": self.run_name,
            "lineage": self.lineage,
        }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target, then renamed into place: a full disk or a kill in the
    middle of a write leaves the previous checkpoint whole, never a cut one that breaks every resume."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as err:  # torch's zip writer reports a failed write as a RuntimeError
            why = (err.strerror or str(err)) if isinstance(err, OSError) else "torch could not finish writing it"
            free = free_space(path.parent)
            raise RunFolderError(
                f"could not write the checkpoint {path} ({why}{'; ' + free if free else ''}); free some space or "
                "choose another paths.root, then rerun the same command to resume"
            ) from None


class RunClock(Callback):
    """Training wall time, carried through checkpoints so a resumed run reports its total."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        self.seconds, self._start = self.seconds + now - self._start, now

    def state_dict(self) -> dict[str, float]:
        # checkpoints are written before this on_train_epoch_end (or mid-epoch): count up to now
        return {"seconds": self.seconds + time.perf_counter() - self._start}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.seconds, self._start = state_dict["seconds"], time.perf_counter()


class EpochTimes(Callback):
    """Where a run's time goes: set-up before the first step (sanity check included), the training steps,
    validation, and what lies between epochs (checkpoints, logging, the next loader). The run record keeps
    it (`split`, RunRecord.time_split) and fit's end logs it. On a GPU the clock is read after a device
    sync: three per epoch, none per step."""

    PHASES = ("set-up", "steps", "validation", "between epochs")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self._phase, self._last, self._epochs, self._first_step = "set-up", 0.0, 0, None

    def _switch(self, trainer: L.Trainer, phase: str) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        now = time.perf_counter()
        self.seconds[self._phase] += now - self._last
        self._phase, self._last = phase, now

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._switch(trainer, "steps")
        self._epochs += 1
        if self._first_step is None:  # Unix time: the study summary sets it against the process's start
            self._first_step = time.time()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._switch(trainer, "validation")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._switch(trainer, "between epochs")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._switch(trainer, "set-up")
        parts = ", ".join(f"{name} {self.seconds[name]:.1f} s" for name in self.PHASES)
        log.info("time split: %s (%d epochs)", parts, self._epochs)

    def split(self) -> TimeSplit:
        s = {name: round(v, 2) for name, v in self.seconds.items()}
        return TimeSplit(
            setup_s=s["set-up"],
            steps_s=s["steps"],
            validation_s=s["validation"],
            between_epochs_s=s["between epochs"],
            epochs=self._epochs,
            first_step_at=round(self._first_step or 0.0, 2),
        )


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps its best score when the run folder has moved since the checkpoint
    was written (Lightning drops the score then, and the next epoch would count as best).

    `every`: write only every N epochs, and always at the final epoch (last.ckpt with
    trainer.checkpoint_every): fewer writes for the training thread to wait on. A SIGTERM still saves
    through CheckpointOnStop, so only a hard kill loses more than the current epoch (up to N).
    """

    def __init__(self, *, every: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every = every
        self.best_epoch: int | None = None  # the epoch of the best checkpoint (0-based), in every later checkpoint

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return self.every <= 1 or epoch % self.every == 0 or epoch >= (trainer.max_epochs or 0) or trainer.should_stop

    def _save_if_due(self, trainer: L.Trainer, save: Any) -> None:
        if self._due(trainer):
            before = self.best_model_score
            save()
            if self.best_model_score is not before:  # a new best was written this epoch
                self.best_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_due(trainer, lambda: super(RunCheckpoint, self).on_train_epoch_end(trainer, pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_due(trainer, lambda: super(RunCheckpoint, self).on_validation_end(trainer, pl_module))

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            moved = {k: v.replace(old, new, 1) if isinstance(v, str) else v for k, v in state_dict.items()}
            moved["best_k_models"] = {p.replace(old, new, 1): v for p, v in state_dict.get("best_k_models", {}).items()}
            state_dict = moved
        self.best_epoch = state_dict.get("best_epoch")
        super().load_state_dict(state_dict)


class CheckpointOnStop(Callback):
    """SIGTERM (a scheduler's preemption) and Ctrl-C stop Lightning after the current batch: save
    last.ckpt there, so the same command resumes from that batch rather than the last epoch end."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)
            log.warning("stopped; saved %s, the same command resumes from it", self.path)
