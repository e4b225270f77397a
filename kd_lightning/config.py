"""Typed schema of `conf/`: Hydra merges every YAML file onto these dataclasses, so an unknown key
or a value of the wrong type stops the run at start-up with Hydra's own message. Value ranges,
relations between keys and what the machine can run are checked by `kd_lightning.checks` before
anything is written. The run name is derived from the config here."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from kd_lightning.plans import Reading, plan_depth, reading_tag
from kd_lightning.run.record import checkpoint_run_name


class Mode(Enum):
    """What a run trains: the teacher, a student on hard labels, or a student distilled from the teacher."""

    teacher = "teacher"
    baseline = "baseline"
    kd = "kd"


class Method(str, Enum):
    """How a kd run distils (kd_lightning/losses.py)."""

    kd = "kd"  # Hinton et al.: alpha * T^2 * KL + (1 - alpha) * CE
    dkd = "dkd"  # decoupled KD (Zhao et al., 2022): CE + alpha * TCKD + beta * NCKD


class Divergence(str, Enum):
    """Which KL direction plain KD takes."""

    forward = "forward"  # KL(teacher || student): Hinton's form, the PyTorch tutorial's computation
    reverse = "reverse"  # KL(student || teacher): the study's formula read literally


class Source(str, Enum):
    """Where CIFAR-10 comes from (kd_lightning/data.py)."""

    torchvision = "torchvision"  # torchvision.datasets.CIFAR10, downloaded if missing
    folder = "folder"  # an ImageFolder copy: root/{train,test}/<class>/*.jpg
    synthetic = "synthetic"  # generated class patterns: no files


class Schedule(str, Enum):
    """The learning-rate schedule, stepped every batch (kd_lightning/modules.py)."""

    onecycle = "onecycle"
    cosine = "cosine"
    constant = "constant"


def allowed(values: type[Enum]) -> str:
    """'torchvision, folder or synthetic': an enum's values as a message lists them."""
    names = [str(v.value) for v in values]
    return ", ".join(names[:-1]) + " or " + names[-1]


def values(enum: type[Enum]) -> set[str]:
    return {str(v.value) for v in enum}


@dataclass
class StudentConfig:
    depth: int = 4  # weighted layers, He et al.'s count (ResNet-18 = 18)
    width: int = 64  # channels of the first stage; stages use w, 2w, 4w, 8w
    reading: str = Reading.blocks.value  # a Reading: how the depth becomes a stage plan (blocks | stages)
    plan: list[list[int]] | None = None  # conv count of each unit per stage, e.g. [[1],[1],[1],[1]]; sets depth


@dataclass
class TeacherConfig:
    # null: a kd run reads them from teacher.ckpt (a value given is checked against it); a teacher run trains
    # TEACHER_RUN's network where they are null
    depth: int | None = None
    width: int | None = None
    reading: str | None = None
    plan: list[list[int]] | None = None
    # a teacher run writes its best checkpoint here; a kd run reads it (any finished run's best.ckpt works)
    ckpt: str = "${paths.root}/teachers/${kd_teacher_file:}"


@dataclass
class DKDConfig:
    """Decoupled KD's weights, the paper's CIFAR defaults (Zhao et al., 2022)."""

    alpha: float = 1.0  # weight of TCKD, the target-vs-rest part
    beta: float = 8.0  # weight of NCKD, the part among the non-target classes
    warmup_epochs: int = 20  # the distillation weight ramps up linearly over these first epochs


@dataclass
class KDConfig:
    method: str = Method.kd.value  # a Method: kd | dkd
    alpha: float = 0.5  # kd: weight of the T^2 * KL term; 1 - alpha weighs the cross-entropy
    temperature: float = 4.0  # both methods
    divergence: str = Divergence.forward.value  # kd: a Divergence, forward | reverse
    dkd: DKDConfig = field(default_factory=DKDConfig)


@dataclass
class DataConfig:
    source: str = Source.torchvision.value  # a Source: torchvision | folder | synthetic
    root: str = "data/cifar10"
    split_seed: int = 0  # seeds the 80/20 train/val permutation, nothing else
    subset: int | None = None  # cap on training images (validation shrinks in proportion)
    batch_size: int = 512
    eval_batch_size: int = 2048
    num_workers: int = 0  # processes that decode JPEG/PNG files the first time (then cached)
    synthetic_train: int = 2000  # sizes of the synthetic source
    synthetic_test: int = 500


@dataclass
class OptimConfig:
    lr: float = 0.2  # peak learning rate of the schedule
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = Schedule.onecycle.value  # a Schedule: onecycle | cosine | constant
    label_smoothing: float = 0.0  # hard-label runs only; a smoothed teacher distils worse


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: Any = 1  # number of devices, a list of ids, or "auto"
    strategy: str = "auto"  # auto | ddp | ...
    precision: str | None = None  # null: bf16-mixed on a GPU that has bf16, else 32-true
    deterministic: bool = False
    enable_progress_bar: bool = True
    log_every_n_steps: int = 50
    checkpoint_every: int = 1  # last.ckpt every N epochs; the final epoch and a SIGTERM always write it
    async_checkpoint: bool = False  # write checkpoints in a background thread (AsyncCheckpointIO, still atomic)


@dataclass
class PathsConfig:
    root: str = "outputs"  # every run folder and teacher checkpoint lives under it
    run_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class GpuPoolConfig:
    """How the runs of one machine share its GPUs (kd_lightning/gpus.py, hydra/launcher=gpus)."""

    jobs_per_gpu: int = 1  # runs packed onto one GPU at once (small students leave a GPU idle)
    lease: bool | None = None  # null: lease a GPU when a one-device run sees several; true/false: always/never
    lock_dir: str = "${oc.env:TMPDIR,/tmp}/kd-lightning-gpu-locks"  # one lock file per GPU slot; machine-local


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes, for `compile`


@dataclass
class Config:
    mode: Mode = Mode.kd
    seed: int = 0  # training seed (initialisation, batch order, augmentation)
    run_name: str = "${kd_run_name:}"  # the run folder's name, derived from the config
    overwrite: bool = False  # retrain a run whose metrics.json already exists
    # torch.compile the student and the teacher: false, or a COMPILE_MODES mode (true means default)
    compile: Any = False
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    gpu_pool: GpuPoolConfig = field(default_factory=GpuPoolConfig)


# what a teacher run trains where teacher.depth, width and reading are null: the study's ResNet-10 of width 64
TEACHER_RUN = {"depth": 10, "width": 64, "reading": Reading.blocks.value}


class Net(NamedTuple):
    """A network as the config describes it: depth, base width, reading and an explicit plan (or None)."""

    depth: int
    width: int
    reading: str
    plan: list[list[int]] | None


def network(cfg: DictConfig, key: str) -> Net:
    """student.* or teacher.* as a Net; the teacher's null keys take TEACHER_RUN's values (what a teacher run
    trains, and the name of its export)."""
    net = cfg[key]
    given = {k: net[k] for k in Net._fields}
    if key == "teacher":
        given = {k: TEACHER_RUN[k] if v is None and k in TEACHER_RUN else v for k, v in given.items()}
    plan = given["plan"]
    return Net(**(given | {"plan": OmegaConf.to_container(plan) if isinstance(plan, ListConfig) else plan}))


def world_size(trainer: DictConfig) -> int:
    """How many processes share a run's batches: trainer.devices as a count (a list of GPU ids, `auto`: every
    GPU the run would use, one process on the CPU). Each takes data.batch_size images a step, so this changes
    the steps per epoch and the result."""
    devices = trainer.devices
    if isinstance(devices, (list, ListConfig)):
        return len(devices)
    if devices == "auto":
        from kd_lightning.gpu.hardware import gpu_count, uses_cuda  # torch: only when the machine decides

        return gpu_count() if uses_cuda(trainer.accelerator) else 1
    return int(devices)


def filled(section: type, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A config section as a plain dict: the schema's defaults with `values` over them (modules built in Python)."""
    return {**dataclasses.asdict(section()), **(values or {})}


class ConfigError(ValueError):
    """A config value outside its allowed range, or one this machine cannot run."""


# settings that change a result but not the base of the run name: when one differs from the schema's
# default, its tag joins the name (baseline-r4-w64-s0-lr0.1-e60), so runs of a sweep over it never
# share a folder and the report never averages them as seeds
VARIANT_TAGS = {
    "data.split_seed": "split",
    "data.subset": "n",
    "data.batch_size": "b",
    "optim.lr": "lr",
    "optim.momentum": "m",
    "optim.nesterov": "nesterov",
    "optim.weight_decay": "wd",
    "optim.schedule": "",
    "optim.label_smoothing": "ls",
    "trainer.max_epochs": "e",
}


@functools.cache
def _defaults() -> DictConfig:
    return OmegaConf.structured(Config)


def _default(key: str) -> Any:
    return OmegaConf.select(_defaults(), key)


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def variant(cfg: DictConfig) -> str:
    """'lr0.1-e60': the tags of the VARIANT_TAGS settings that differ from the defaults ('' when none do)."""
    tags = []
    for key, tag in VARIANT_TAGS.items():
        value = OmegaConf.select(cfg, key)
        if value != _default(key):
            tags.append(tag + _tag_value(value))
    if (processes := world_size(cfg.trainer)) != 1:  # DDP: another number of steps per epoch, another batch
        tags.append(f"ws{processes}")
    return "-".join(tags)


def _depth_and_reading(net: DictConfig | Net) -> tuple[int, str]:
    """(depth, '' | 'stages' | 'p1_1_1_1'): a plan sets the depth; a default reading adds nothing."""
    if net.plan is not None:
        return plan_depth(net.plan), reading_tag("plan", net.plan)
    return net.depth, reading_tag(str(net.reading), None)


def net_tag(net: DictConfig | Net) -> str:
    """'r6-w64', 'r6-w64-stages' or 'r6-w64-p1_1_1_1'."""
    depth, tag = _depth_and_reading(net)
    return f"r{depth}-w{net.width}" + (f"-{tag}" if tag else "")


def teacher_file(_root_: DictConfig) -> str:
    """The teacher export's file name under paths.root/teachers: r10-w64-s0.ckpt."""
    return f"{net_tag(network(_root_, 'teacher'))}-s{_root_.seed}.ckpt"


def teacher_tag(cfg: DictConfig) -> str:
    """'t10' for the teacher export, 'tkd6' for a kd run's checkpoint (an assistant), 't6x1a2b3c' for another file.

    The depth and layout are the teacher file's own; the config's (or TEACHER_RUN's) only while it cannot be read.
    """
    from kd_lightning.teacher import file_network  # teacher.py imports this module

    ckpt = Path(str(cfg.teacher.ckpt))
    depth, tag = _depth_and_reading(file_network(ckpt) or network(cfg, "teacher"))
    if ckpt == Path(str(cfg.paths.root)) / "teachers" / teacher_file(cfg):
        return f"t{depth}{tag}"
    if (run := checkpoint_run_name(ckpt)) is not None:  # a run folder's checkpoint: name the run's mode
        return f"t{run.split('-')[0]}{depth}{tag}"
    return f"t{depth}{tag}x{hashlib.sha256(str(ckpt).encode()).hexdigest()[:6]}"


def kd_tag(kd: DictConfig) -> str:
    """'a0.5-T4', 'rev-a0.5-T4' or 'dkd-a1-b8-T4': what sets one distillation apart from another."""
    if kd.method == Method.dkd:
        warmup = "" if kd.dkd.warmup_epochs == DKDConfig.warmup_epochs else f"-wu{kd.dkd.warmup_epochs}"
        return f"dkd-a{kd.dkd.alpha:g}-b{kd.dkd.beta:g}-T{kd.temperature:g}{warmup}"
    rev = "rev-" if kd.divergence == Divergence.reverse else ""
    return f"{rev}a{kd.alpha:g}-T{kd.temperature:g}"


def run_name(_root_: DictConfig) -> str:
    """teacher-r10-w64-s0, baseline-r4-w64-s0, kd-r4-w64-t10-a0.5-T4-s0; then any variant tags."""
    mode = _root_.mode.value if isinstance(_root_.mode, Mode) else str(_root_.mode)
    name = f"{mode}-{net_tag(network(_root_, 'teacher' if mode == Mode.teacher.value else 'student'))}"
    if mode == Mode.kd.value:
        name += f"-{teacher_tag(_root_)}-{kd_tag(_root_.kd)}"
    name += f"-s{_root_.seed}"
    tags = variant(_root_)
    return f"{name}-{tags}" if tags else name


def register() -> None:
    """Put the schema in Hydra's ConfigStore (conf/config.yaml extends it) and the run-name resolver in OmegaConf."""
    ConfigStore.instance().store(name="schema", node=Config)
    if not OmegaConf.has_resolver("kd_run_name"):
        OmegaConf.register_new_resolver("kd_run_name", run_name)
    if not OmegaConf.has_resolver("kd_teacher_file"):
        OmegaConf.register_new_resolver("kd_teacher_file", teacher_file)
