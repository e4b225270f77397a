"""Teachers from checkpoints: any finished run's network (a teacher, a baseline, a kd student) rebuilt as the
frozen teacher of a kd run, refused when it cannot fit the run, and described by what the run record keeps
of it: architecture, data, file hash and lineage (every ancestor's run name, sha256 and settings).

Reading a file, checking its facts against the run and rebuilding the network are separate steps: the facts
(`teacher_facts`) are what the file says about itself, `check_teacher` compares them with the run's data.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from kd_lightning.config import Mode, Net, values
from kd_lightning.models import resnet
from kd_lightning.plans import net_plan, plan_depth, reading_of
from kd_lightning.run.files import file_sha256
from kd_lightning.run.integrity import weights_mismatch
from kd_lightning.run.record import CHECKPOINT_KEY, RunFolder


class TeacherError(ValueError):
    """The teacher checkpoint is missing, unreadable, or not a teacher that fits this run."""


TEACHER_HINT = (
    "train one with `make teacher` (mode=teacher) or point teacher.ckpt=PATH at a finished run's checkpoints/best.ckpt"
)
REQUIRED = ("depth", "width", "num_classes")  # the hyper-parameters a teacher is rebuilt from


class RunData(NamedTuple):
    """What a kd run's teacher must share with the run: the classes, and (when known) the data and its split."""

    num_classes: int
    split_hash: str | None = None
    source: str | None = None
    content_id: str | None = None


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


def read_teacher_file(path: Path) -> dict:
    """The checkpoint's contents; TeacherError when the file is not a readable checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise TeacherError(
            f"teacher.ckpt={path} is not a readable checkpoint ({type(err).__name__}); {TEACHER_HINT}"
        ) from None
    return ckpt if isinstance(ckpt, dict) else {}


def teacher_facts(ckpt: dict) -> dict[str, Any]:
    """What a checkpoint says about its network and its run: role, classes, depth, width, plan (None where the
    file lacks them), the split, the data it was trained on (its run's data.source and data.content_id), the
    run's name, settings and lineage."""
    hp = ckpt.get("hyper_parameters")
    hp = hp if isinstance(hp, dict) else {}
    run = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt.get(CHECKPOINT_KEY), dict) else {}
    settings = run.get("settings") if isinstance(run.get("settings"), dict) else {}
    facts = {k: hp.get(k) for k in ("role", *REQUIRED, "split_hash")}
    plan = None
    if isinstance(hp.get("depth"), int):
        try:
            plan = net_plan(hp["depth"], plan=hp.get("plan"))
        except ValueError:
            plan = None
    return facts | {
        "depth": plan_depth(plan) if plan is not None else hp.get("depth"),
        "plan": plan,
        "data_source": settings.get("data.source"),
        "content_id": settings.get("data.content_id"),
        "run_name": run.get("run_name"),
        "settings": settings or None,
        "lineage": list(run.get("lineage") or []),
    }


def check_teacher(path: Path, facts: dict[str, Any], run: RunData) -> None:
    """TeacherError when the file is not one of this project's run checkpoints, lacks a field it is rebuilt from,
    or was trained for other classes, on other data or on another train/val split than this run."""
    if facts["role"] not in values(Mode):
        raise TeacherError(f"teacher.ckpt={path} is not a checkpoint of this project's runs; {TEACHER_HINT}")
    missing = [k for k in REQUIRED if not isinstance(facts[k], int) or isinstance(facts[k], bool)]
    if missing or facts["plan"] is None:
        what = f"the field {missing[0]!r}" if missing else "a valid plan"
        raise TeacherError(f"teacher.ckpt={path} lacks {what} in its hyper-parameters; {TEACHER_HINT}")
    if facts["num_classes"] != run.num_classes:
        raise TeacherError(
            f"teacher.ckpt={path} predicts {facts['num_classes']} classes but the data has {run.num_classes}; "
            + TEACHER_HINT
        )
    if run.content_id is not None and facts["content_id"] != run.content_id:
        if facts["content_id"] is None:
            raise TeacherError(
                f"teacher.ckpt={path} does not record the data it was trained on (a checkpoint of an older version "
                "or of another program), so it may have trained on this run's validation or test images; "
                "train a teacher on this data"
            )
        raise TeacherError(
            f"teacher.ckpt={path} was trained on other data (data.source={facts['data_source']}, content "
            f"{facts['content_id']}) than this run (data.source={run.source}, content {run.content_id}): its "
            "training images may be this run's validation or test images. Use the teacher's data, or train a "
            "teacher on this data"
        )
    if run.split_hash is not None and facts["split_hash"] != run.split_hash:
        raise TeacherError(
            f"teacher.ckpt={path} was trained on another train/val split (hash {facts['split_hash']}, this run's "
            f"is {run.split_hash}): this run's validation images would be the teacher's training images. "
            "Use the teacher's data.split_seed or train a teacher on this split"
        )


def build_teacher(path: Path, facts: dict[str, Any], state: Any) -> nn.Module:
    """The network the facts describe, with the checkpoint's weights; TeacherError when they do not fit it."""
    teacher = resnet(num_classes=facts["num_classes"], width=facts["width"], plan=facts["plan"])
    state = state if isinstance(state, dict) else {}
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    detail = weights_mismatch({k: tuple(v.shape) for k, v in teacher.state_dict().items()}, weights)
    if detail is not None:
        raise TeacherError(
            f"teacher.ckpt={path} holds weights that do not fit the network its hyper-parameters describe "
            f"(ResNet-{facts['depth']} of width {facts['width']}, plan {facts['plan']}: {detail}); {TEACHER_HINT}"
        )
    teacher.load_state_dict(weights)
    return teacher


def load_teacher(
    path: str | Path,
    num_classes: int,
    split_hash: str | None = None,
    *,
    source: str | None = None,
    content_id: str | None = None,
) -> tuple[nn.Module, dict]:
    """Rebuild the network of any finished run's checkpoint (a teacher, a baseline, a kd student) as a teacher.

    Returns the network and what the run record keeps of it: depth, width, plan, the data it was trained on,
    path, sha256, and its lineage (the run that trained it, after that run's own ancestors).
    """
    path = require_teacher_file(path)
    ckpt = read_teacher_file(path)
    facts = teacher_facts(ckpt)
    check_teacher(path, facts, RunData(num_classes, split_hash, source, content_id))
    teacher = build_teacher(path, facts, ckpt.get("state_dict"))
    sha256 = file_sha256(path)
    lineage = [*facts["lineage"], {"run_name": facts["run_name"], "sha256": sha256, "settings": facts["settings"]}]
    info = {k: facts[k] for k in ("depth", "width", "plan", "role", "content_id")} | {"path": str(path)}
    return teacher, {**info, "sha256": sha256, "lineage": lineage}


def file_network(path: str | Path) -> Net | None:
    """The network in a teacher file (depth, width, reading or plan), for a run name; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return _file_network(str(path), (st.st_mtime_ns, st.st_size, st.st_ino))


@functools.lru_cache(maxsize=16)
def _file_network(path: str, stamp: tuple[int, int, int]) -> Net | None:  # stamp: a changed file is read again
    try:
        facts = teacher_facts(read_teacher_file(Path(path)))
    except TeacherError:
        return None
    if facts["plan"] is None or not isinstance(facts["width"], int):
        return None
    reading = reading_of(facts["plan"])
    return Net(facts["depth"], facts["width"], reading or "blocks", None if reading else facts["plan"])
