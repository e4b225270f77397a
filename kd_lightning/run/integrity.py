"""What a run checks of its folder before it trusts it, and how a full disk is told apart from other failures.

- Every path of a run folder's layout is the kind the run expects (a file, a folder), no dangling link, and
  readable and writable: anything else stops the run with one sentence naming the path and the way out, before
  the run takes its lock, instead of a traceback from deep inside Hydra, Lightning or TensorBoard.
- A checkpoint holds what Lightning restores and weights that fit the run's network (`checkpoint_problem`), so a
  checkpoint whose header disagrees with its weights counts as broken, like a cut one.
- A write that fails for lack of space (or quota) surfaces wherever it happens: in torch's
  writer as a RuntimeError, in the TensorBoard logger as a ValueError. `disk_error` finds the OSError behind it.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from kd_lightning.run.files import LOCK_FILE, RunFolderError
from kd_lightning.run.record import METRICS_FILE

FILE, FOLDER = "file", "folder"
# every path a run reads or writes in its folder, and what it must be
LAYOUT = {
    LOCK_FILE: FILE,
    METRICS_FILE: FILE,
    "train.log": FILE,
    ".hydra": FOLDER,
    "tb": FOLDER,
    "checkpoints": FOLDER,
    "checkpoints/last.ckpt": FILE,
    "checkpoints/best.ckpt": FILE,
}
RESUME_FIELDS = ("epoch", "global_step", "state_dict", "optimizer_states", "loops", "callbacks")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left, or no quota left
WAY_OUT = "then rerun the same command"


def _path_problem(path: Path, kind: str) -> str | None:
    """What is wrong with one path of the layout (None when it is absent or fine)."""
    try:
        if path.is_symlink() and not path.exists():
            target = os.readlink(path)
            return f"{path} is a link to {target}, which does not exist; restore its target or remove the link"
        if not path.exists():
            return None
        is_dir = path.is_dir()
    except OSError as err:  # a parent folder that cannot be searched
        return f"{path} cannot be looked at ({err.strerror or err}); fix the permissions of its folder"
    if is_dir != (kind == FOLDER):
        found, wanted = ("a folder", "file") if is_dir else ("a file", "folder")
        return f"{path} is {found} where the run keeps a {wanted}; move it away"
    if not os.access(path, os.R_OK | os.W_OK | (os.X_OK if is_dir else 0)):
        return f"{path} cannot be read or written by this user; fix its permissions"
    return None


def check_run_folder(run_dir: Path) -> None:
    """RunFolderError naming the first path of the run folder's layout that the run could not use as it must."""
    run_dir = Path(run_dir)
    problem = _path_problem(run_dir, FOLDER)
    for rel, kind in LAYOUT.items():
        if problem is not None or not run_dir.is_dir():
            break
        problem = _path_problem(run_dir / rel, kind)
    if problem is not None:
        raise RunFolderError(f"{problem}, {WAY_OUT} (or give this run another paths.root)")


def weight_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a checkpoint of this LightningModule holds (a kd run's teacher is not saved)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith("teacher.")}


def weights_mismatch(weights: dict[str, tuple[int, ...]], state: Any) -> str | None:
    """How a state dict differs from the tensor shapes a network expects ('fc.weight is [10, 16], the network's is
    [10, 8]', '2 tensors missing, 0 unexpected, e.g. ...'); None when it fits."""
    found = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")} if isinstance(state, dict) else {}
    if found == weights:
        return None
    absent, extra = sorted(weights.keys() - found.keys()), sorted(found.keys() - weights.keys())
    shaped = sorted(k for k in weights.keys() & found.keys() if weights[k] != found[k])
    if shaped:
        return f"{shaped[0]} is {list(found[shaped[0]])}, the network's is {list(weights[shaped[0]])}"
    return f"{len(absent)} tensors missing, {len(extra)} unexpected, e.g. {(absent or extra)[0]}"


def checkpoint_problem(ckpt: Any, weights: dict[str, tuple[int, ...]] | None) -> str | None:
    """Why a checkpoint cannot restore this run ('lacks the field ...', 'holds weights that do not fit ...'), or None.

    `weights`: weight_shapes of the run's module; None skips the comparison."""
    if not isinstance(ckpt, dict):
        return f"holds a {type(ckpt).__name__}, not a checkpoint"
    missing = [f for f in RESUME_FIELDS if f not in ckpt]
    if missing:
        return f"lacks the field {missing[0]!r}"
    detail = None if weights is None else weights_mismatch(weights, ckpt["state_dict"])
    return None if detail is None else f"holds weights that do not fit this run's network ({detail})"


def disk_error(err: BaseException) -> OSError | None:
    """The OSError of a full disk, a quota or a read-only disk behind `err` (its causes and contexts), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return err
        err = err.__cause__ or err.__context__
    return None


def free_space(path: Path) -> str:
    """'1.2 MiB free' on the disk that holds `path` (its nearest existing folder), or '' when it cannot be told."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            try:
                return f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB free"
            except OSError:
                return ""
    return ""


def full_disk_error(err: OSError, run_dir: Path) -> RunFolderError:
    """The sentence for a write that failed for lack of space: what, where, and that the same command resumes."""
    free = free_space(run_dir)
    return RunFolderError(
        f"could not write to the run folder {run_dir} ({err.strerror or err}{'; ' + free if free else ''}); free "
        "some space or choose another paths.root, then rerun the same command to resume"
    )
