"""Typed schema of `conf/`: Hydra merges every YAML file onto these dataclasses, so an unknown key
or a value of the wrong type stops the run at start-up with Hydra's own message. Value ranges,
relations between keys and what the machine can run are checked by `kd_lightning.checks` before
anything is written. The run name is derived from the config here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


class Mode(Enum):
    """What a run trains: the teacher, a student on hard labels, or a student distilled from the teacher."""

    teacher = "teacher"
    baseline = "baseline"
    kd = "kd"


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


@dataclass
class TeacherConfig:
    depth: int = 10
    width: int = 64
    # a teacher run writes its best checkpoint here; a kd run reads it
    ckpt: str = "${paths.root}/teachers/r${teacher.depth}-w${teacher.width}-s${seed}.ckpt"


@dataclass
class KDConfig:
    alpha: float = 0.5  # weight of the T^2 * KL term; 1 - alpha weighs the cross-entropy
    temperature: float = 4.0


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


@dataclass
class Config:
    mode: Mode = Mode.kd
    seed: int = 0  # training seed (initialisation, batch order, augmentation)
    run_name: str = "${kd_run_name:}"  # the run folder's name, derived from the config
    overwrite: bool = False  # retrain a run whose metrics.json already exists
    compile: bool = False  # torch.compile the student (and the teacher)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    gpu_pool: GpuPoolConfig = field(default_factory=GpuPoolConfig)


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
    return "-".join(tags)


def run_name(_root_: DictConfig) -> str:
    """teacher-r10-w64-s0, baseline-r4-w64-s0, kd-r4-w64-t10-a0.5-T4-s0; then any variant tags."""
    mode = _root_.mode.value if isinstance(_root_.mode, Mode) else str(_root_.mode)
    net = _root_.teacher if mode == Mode.teacher.value else _root_.student
    name = f"{mode}-r{net.depth}-w{net.width}"
    if mode == Mode.kd.value:
        name += f"-t{_root_.teacher.depth}-a{_root_.kd.alpha:g}-T{_root_.kd.temperature:g}"
    name += f"-s{_root_.seed}"
    tags = variant(_root_)
    return f"{name}-{tags}" if tags else name


def register() -> None:
    """Put the schema in Hydra's ConfigStore (conf/config.yaml extends it) and the run-name resolver in OmegaConf."""
    ConfigStore.instance().store(name="schema", node=Config)
    if not OmegaConf.has_resolver("kd_run_name"):
        OmegaConf.register_new_resolver("kd_run_name", run_name)
