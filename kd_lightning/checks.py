"""Start-up checks of a run's config, before anything is loaded or written.

Hydra's types already refuse unknown keys and wrong types. These checks cover the rest: every
key's range, finite numbers, relations between keys, trainer settings against this machine, and
whether the networks fit in its memory (estimated from the architecture, before building it).
Each failure is one ConfigError sentence naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, ListConfig, OmegaConf

from kd_lightning.config import (
    COMPILE_MODES,
    ConfigError,
    Divergence,
    Method,
    Mode,
    Schedule,
    Source,
    allowed,
    network,
    values,
)
from kd_lightning.gpu.hardware import gpu_count, memory_bytes, uses_cuda
from kd_lightning.models import estimate
from kd_lightning.plans import Reading, net_plan
from kd_lightning.teacher import file_network

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeding take 32-bit seeds
MAX_TEMPERATURE = 100.0  # beyond it softened probabilities differ by less than float32 resolves
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")  # the batches are normalised to float32 after transfer
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
MEMORY_SHARE = 0.9  # of the device's memory a run may plan to use
MAX_DKD_WEIGHT = 1000.0  # beyond it the distillation terms swamp the cross-entropy in any precision


def _int(lo: int, hi: int | None = None) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v and (hi is None or v <= hi)

    return ok, f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"


def _number(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> tuple[Callable, str]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)

    if hi == math.inf:
        return ok, f"a finite number {'>' if lo_open else '>='} {lo:g}"
    return ok, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _one_of(choices: set[str] | tuple[str, ...], text: str) -> tuple[Callable, str]:
    return (lambda v: v in choices), text


def _optional(rule: tuple[Callable, str]) -> tuple[Callable, str]:
    ok, text = rule
    return (lambda v: v is None or ok(v)), f"null or {text}"


def _path(what: str) -> tuple[Callable, str]:
    return (lambda v: isinstance(v, str) and v.strip() != ""), f"a non-empty path to {what}"


def _shown(value: Any) -> str:
    """A value as the user typed it: 1000 rather than 1000.0, null rather than None."""
    return f"{value:g}" if isinstance(value, float) else "null" if value is None else str(value)


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int(0, MAX_SEED),
    "student.depth": _int(3),
    "student.width": _int(1),
    "student.reading": _one_of(values(Reading), allowed(Reading)),
    "teacher.depth": _optional(_int(3)),  # null: the checkpoint's (kd), TEACHER_RUN's (a teacher run)
    "teacher.width": _optional(_int(1)),
    "teacher.reading": _optional(_one_of(values(Reading), allowed(Reading))),
    "teacher.ckpt": _path("a finished run's checkpoint"),
    "kd.method": _one_of(values(Method), allowed(Method)),
    "kd.alpha": _number(0, 1),
    "kd.temperature": _number(0, MAX_TEMPERATURE, lo_open=True),
    "kd.divergence": _one_of(values(Divergence), allowed(Divergence)),
    "kd.dkd.alpha": _number(0, MAX_DKD_WEIGHT),
    "kd.dkd.beta": _number(0, MAX_DKD_WEIGHT),
    "kd.dkd.warmup_epochs": _int(0),
    "data.source": _one_of(values(Source), allowed(Source)),
    "data.root": _path("the data folder"),
    "data.split_seed": _int(0, MAX_SEED),
    "data.subset": _optional(_int(1)),
    "data.batch_size": _int(1),
    "data.eval_batch_size": _int(1),
    "data.num_workers": _int(0),
    "optim.lr": _number(0, math.inf, lo_open=True),
    "optim.momentum": _number(0, 1, hi_open=True),
    "optim.weight_decay": _number(0, math.inf),
    "optim.schedule": _one_of(values(Schedule), allowed(Schedule)),
    "optim.label_smoothing": _number(0, 1, hi_open=True),
    "trainer.max_epochs": _int(1),
    "trainer.accelerator": _one_of(ACCELERATORS, "one of " + ", ".join(ACCELERATORS)),
    "trainer.precision": _optional(_one_of(PRECISIONS, "one of " + ", ".join(PRECISIONS))),
    "trainer.log_every_n_steps": _int(1),
    "paths.root": _path("the output folder"),
    "gpu_pool.jobs_per_gpu": _int(1),
    "compile": (
        lambda v: isinstance(v, bool) or v in COMPILE_MODES,
        "false, true or one of " + ", ".join(COMPILE_MODES),
    ),
    "trainer.checkpoint_every": _int(1),
}


def check_values(section: str, values: Mapping[str, Any]) -> None:
    """RULES for one config section given as a plain dict (a module built in Python rather than by Hydra):
    ConfigError naming `section.key` for the first value that is not allowed; keys without a rule pass."""
    for key, (ok, what) in RULES.items():
        if not key.startswith(section + "."):
            continue
        value: Any = values
        for part in key.split(".")[1:]:
            value = value.get(part) if isinstance(value, Mapping) else None
        if not ok(value):
            raise ConfigError(f"{key}={_shown(value)} is not allowed; it must be {what}")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key whose value is not allowed or that this machine cannot run."""
    for key, (ok, what) in RULES.items():
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}={_shown(value)} is not allowed; it must be {what}")
    if cfg.optim.nesterov and cfg.optim.momentum == 0:
        raise ConfigError(
            "optim.momentum=0 is not allowed with optim.nesterov=true: Nesterov momentum needs "
            "optim.momentum > 0 (or set optim.nesterov=false)"
        )
    for key in ("student", "teacher"):
        net = network(cfg, key)
        try:
            net_plan(net.depth, net.reading, net.plan)
        except ValueError as err:
            raise ConfigError(f"{key}.{err}") from None
    check_devices(cfg.trainer)
    check_memory(cfg)


def check_devices(trainer: DictConfig) -> None:
    """trainer.accelerator, devices and precision against the GPUs torch sees."""
    accelerator, devices = str(trainer.accelerator), trainer.devices
    gpus = gpu_count()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} is not possible: torch sees no CUDA GPU on this machine; "
            "use trainer.accelerator=cpu, or auto (a GPU when there is one)"
        )
    on_gpu = uses_cuda(accelerator)
    if isinstance(devices, (list, ListConfig)):
        ids = list(devices)
        if not on_gpu:  # Lightning's CPU accelerator takes a number of processes only
            raise ConfigError(
                f"trainer.devices={ids} is not allowed on the CPU: a list names GPU ids; "
                "give a number of processes >= 1 or auto"
            )
        if not ids or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < gpus for i in ids):
            raise ConfigError(
                f"trainer.devices={ids} is not allowed; it must be a list of GPU ids below {gpus}, a number >= 1 "
                f"or auto (this machine has {gpus} GPU(s))"
            )
    elif devices != "auto":
        if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
            raise ConfigError(f"trainer.devices={devices} is not allowed; it must be a number >= 1, a list or auto")
        if on_gpu and devices > gpus:
            raise ConfigError(f"trainer.devices={devices} is not possible: this machine has {gpus} GPU(s)")
    if on_gpu and str(trainer.precision).startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision={trainer.precision} is not possible on this GPU (no bfloat16); use 16-mixed or 32-true"
        )
    if not on_gpu and trainer.precision == "16-mixed":  # Lightning would quietly train bf16-mixed instead
        raise ConfigError(
            "trainer.precision=16-mixed is not possible on the CPU (float16 autocast runs on GPUs); "
            "use bf16-mixed or 32-true"
        )
    if trainer.strategy != "auto" and trainer.strategy not in StrategyRegistry.available_strategies():
        raise ConfigError(
            f"trainer.strategy={trainer.strategy} is unknown; use auto, ddp, ddp_spawn, fsdp or another name "
            "Lightning's StrategyRegistry lists"
        )


def check_memory(cfg: DictConfig) -> None:
    """Refuse a network whose parameters, optimiser state and activations cannot fit in memory."""
    budget, where = memory_bytes(cfg.trainer.accelerator)
    key = "teacher" if cfg.mode == Mode.teacher else "student"
    net, batch = network(cfg, key), cfg.data.batch_size
    params, acts, _ = estimate(net_plan(net.depth, net.reading, net.plan), net.width)
    # weights, gradients, momentum and a mixed-precision copy; the activations kept for the backward pass
    need = 16 * params + 4 * acts * batch
    if cfg.mode == Mode.kd:  # the frozen teacher's weights, as its file describes it when it can be read
        teacher = file_network(cfg.teacher.ckpt) or network(cfg, "teacher")
        need += 4 * estimate(net_plan(teacher.depth, teacher.reading, teacher.plan), teacher.width)[0]
    if need > MEMORY_SHARE * budget:
        raise ConfigError(
            f"{key}.depth={net.depth} {key}.width={net.width} with data.batch_size={batch} needs about "
            f"{need / 2**30:,.1f} GiB of memory ({params:,} parameters), more than {where} "
            f"({budget / 2**30:,.1f} GiB); choose a smaller depth, width or data.batch_size"
        )
