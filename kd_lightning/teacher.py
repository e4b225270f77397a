"""Teachers from checkpoints: any finished run's network (a teacher, a baseline, a kd student) rebuilt as the
frozen teacher of a kd run, refused when it cannot fit the run, and described by what the run record keeps
of it: architecture, file hash and lineage (every ancestor's run name and sha256)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kd_lightning.config import Mode, values
from kd_lightning.models import resnet
from kd_lightning.plans import net_plan, plan_depth
from kd_lightning.run.files import file_sha256
from kd_lightning.run.record import CHECKPOINT_KEY, RunFolder


class TeacherError(ValueError):
    """The teacher checkpoint is missing, unreadable, or not a teacher that fits this run."""


TEACHER_HINT = (
    "train one with `make teacher` (mode=teacher) or point teacher.ckpt=PATH at a finished run's checkpoints/best.ckpt"
)


def require_teacher_file(path: str | Path) -> Path:
    """Fail before any data is loaded when the teacher checkpoint is not there."""
    path = Path(path)
    if path.is_dir():
        inside = RunFolder(path).best
        example = inside if inside.is_file() else path / inside.name
        raise TeacherError(f"teacher.ckpt={path} is a folder; point it at a checkpoint file, e.g. {example}")
    if path.exists() and not path.is_file():
        raise TeacherError(f"teacher.ckpt={path} is not a regular file; point it at a checkpoint file")
    if not path.is_file():
        raise TeacherError(f"teacher.ckpt={path} does not exist; {TEACHER_HINT}")
    return path


def load_teacher(path: str | Path, num_classes: int, split_hash: str | None) -> tuple[nn.Module, dict]:
    """Rebuild the network of any finished run's checkpoint (a teacher, a baseline, a kd student) as a teacher.

    Returns the network and what the run record keeps of it: depth, width, plan, path, sha256, and its
    lineage (the run that trained it, after that run's own ancestors), read from the checkpoint.
    """
    path = require_teacher_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        hp, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    except Exception as err:
        raise TeacherError(
            f"teacher.ckpt={path} is not a readable checkpoint ({type(err).__name__}); {TEACHER_HINT}"
        ) from None
    if hp.get("role") not in values(Mode):
        raise TeacherError(f"teacher.ckpt={path} is not a checkpoint of this project's runs; {TEACHER_HINT}")
    if hp.get("num_classes") != num_classes:
        raise TeacherError(
            f"teacher.ckpt={path} predicts {hp.get('num_classes')} classes but the data has {num_classes}; "
            + TEACHER_HINT
        )
    if split_hash is not None and hp.get("split_hash") != split_hash:
        raise TeacherError(
            f"teacher.ckpt={path} was trained on another train/val split (hash {hp.get('split_hash')}, this run's "
            f"is {split_hash}): this run's validation images would be the teacher's training images. "
            "Use the teacher's data.split_seed or train a teacher on this split"
        )
    plan = net_plan(hp["depth"], plan=hp.get("plan"))
    teacher = resnet(num_classes=hp["num_classes"], width=hp["width"], plan=plan)
    teacher.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    sha256, run = file_sha256(path), ckpt.get(CHECKPOINT_KEY, {})
    lineage = [*run.get("lineage", []), {"run_name": run.get("run_name"), "sha256": sha256}]
    info = {"depth": plan_depth(plan), "width": hp["width"], "plan": plan, "role": hp["role"], "path": str(path)}
    return teacher, {**info, "sha256": sha256, "lineage": lineage}
