"""Hydra callbacks around a whole command (conf/config.yaml registers them).

- paths.root is checked before Hydra makes any folder under it: an empty value would put run
  folders at the filesystem root, an unwritable one would fail inside Hydra with a traceback. So is
  a single run's folder (run/integrity.py): Hydra would fail on a file where the folder belongs, or a
  folder where its train.log belongs.
- A multirun carries on past a job with a user error: the job records its message in a folder
  named by the KD_LIGHTNING_SWEEP_FAILURES variable (under paths.root, so SLURM jobs on other
  nodes reach it), the other jobs run, and the command ends with exit code 2 and the list of
  failed runs. Each job stays a plain Hydra job, so every launcher (joblib, submitit) behaves alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kd_lightning.run.files import RunFolderError, write_text
from kd_lightning.run.integrity import check_run_folder

FAILURES_ENV = "KD_LIGHTNING_SWEEP_FAILURES"


def fail(message: str) -> None:
    """Stop the command with one `error:` line and exit code 2 (HYDRA_FULL_ERROR=1 raises instead)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise ValueError(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_root(config: DictConfig) -> None:
    """paths.root must name a folder this process can create and write to."""
    root = OmegaConf.select(config, "paths.root")
    if not isinstance(root, str) or not root.strip():
        fail(f"paths.root={root or ''} is not allowed; it must be a non-empty path (default: outputs)")
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        fail(f"paths.root={root} cannot be written ({err.strerror or err}); choose a folder you can write to")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(run_name: str, message: str) -> bool:
    """In a multirun, note this job's user error for the end-of-sweep summary; False when nothing collects it."""
    folder = os.environ.get(FAILURES_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    write_text(Path(folder) / f"{run_name}.txt", message)
    return True


class CommandChecks(Callback):
    """paths.root before any folder is made; in a multirun, the failed jobs listed at the end."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_root(config)
        try:  # before Hydra makes the run folder and opens its train.log
            check_run_folder(Path(config.hydra.run.dir))
        except RunFolderError as err:
            fail(str(err))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_root(config)
        folder = Path(config.paths.root) / ".sweeps" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[FAILURES_ENV] = str(folder.resolve())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(os.environ.pop(FAILURES_ENV, ""))
        if not folder.name or not folder.is_dir():
            return
        failures = sorted(folder.glob("*.txt"))
        lines = [f"  {path.stem}: {path.read_text().strip()}" for path in failures]
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # .sweeps/ itself, once no other sweep uses it
            folder.parent.rmdir()
        if lines:
            head = f"error: {len(lines)} run(s) of this sweep failed; the others ran:"
            print(head, *lines, sep="\n", file=sys.stderr)
            sys.exit(2)
