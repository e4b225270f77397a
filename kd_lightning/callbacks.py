"""Run bookkeeping around Lightning's own callbacks: wall time, checkpoints that survive a moved
folder, and a checkpoint on SIGTERM/Ctrl-C so the same command resumes where the run stopped."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("kd_lightning")


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


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps its best score when the run folder has moved since the checkpoint
    was written (Lightning drops the score then, and the next epoch would count as best)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            moved = {k: v.replace(old, new, 1) if isinstance(v, str) else v for k, v in state_dict.items()}
            moved["best_k_models"] = {p.replace(old, new, 1): v for p, v in state_dict.get("best_k_models", {}).items()}
            state_dict = moved
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
