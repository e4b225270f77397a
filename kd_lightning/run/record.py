"""The run record: what a finished run writes to `metrics.json`, and the one way to write, read and list it.

`train.py` writes a `RunRecord` when a run ends; the report, the timing summary and the tests read
run folders through `load_record` and `iter_runs`. The settings fingerprint that decides whether a
run folder may be reused lives here too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, NamedTuple

from kd_lightning.run.files import RunFolderError, write_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CHECKPOINT_KEY = "kd_lightning_settings"  # what a checkpoint keeps of its run: settings, run name, lineage


class RunFolder(NamedTuple):
    """The files of one run folder, named in one place: `RunFolder(path).best` is its best checkpoint."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        """The best-validation checkpoint: test accuracy is measured on it, and it teaches."""
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        """The latest checkpoint: where an unfinished run resumes."""
        return self.checkpoints / "last.ckpt"

    @property
    def tb(self) -> Path:
        """TensorBoard events."""
        return self.path / "tb"


def checkpoint_run_name(path: str | PurePath) -> str | None:
    """The run whose checkpoint `path` is (RUNS/<run>/checkpoints/best.ckpt -> '<run>'); None for any other file."""
    path = PurePath(path)
    return path.parent.parent.name if path.parent.name == RunFolder(Path()).checkpoints.name else None


class RunRecordError(ValueError):
    """A metrics.json that is not JSON, lacks a field, or holds a value of the wrong type."""


@dataclass(frozen=True)
class TimeSplit:
    """Where the last training process of a run spent its time in fit (callbacks.EpochTimes), in seconds."""

    setup_s: float  # before the first step, sanity check included
    steps_s: float
    validation_s: float
    between_epochs_s: float  # checkpoints, logging, the next loader
    epochs: int  # epochs this process trained (a resumed run's last attempt)
    first_step_at: float  # Unix time of the first step: set against the process's start, the launch cost


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its settings, its split, its results, and where it ran (all of metrics.json)."""

    mode: str  # teacher | baseline | kd
    run_name: str
    depth: int  # the trained network (the teacher's in a teacher run)
    width: int
    seed: int
    best_val_acc: float  # fractions in [0, 1]; the checkpoint is chosen on this
    best_epoch: int  # 1-based
    test_acc: float  # measured once, on the best-validation checkpoint
    epochs: int
    max_epochs: int
    reading: str | None = None  # how the depth became a stage plan (blocks | stages), or 'plan' when given
    plan: list[list[int]] | None = None  # the trained network's conv count per unit per stage
    teacher_depth: int | None = None  # teacher and kd runs
    teacher_width: int | None = None
    teacher_plan: list[list[int]] | None = None
    teacher_ckpt: str | None = None
    teacher_sha256: str | None = None  # kd: the teacher file distilled from; teacher: the file exported
    method: str | None = None  # kd runs: kd | dkd
    divergence: str | None = None  # kd method: forward | reverse
    alpha: float | None = None  # kd: the KL weight; dkd: the TCKD weight
    beta: float | None = None  # dkd: the NCKD weight
    warmup_epochs: int | None = None  # dkd
    temperature: float | None = None
    lineage: list[dict[str, Any]] | None = None  # kd runs: the teacher's ancestors, then the teacher (run name, sha256)
    split_seed: int | None = None
    split_hash: str | None = None  # the full validation set of the split: equal for every subset of it
    val_hash: str | None = None  # the validation images this run used
    data_source: str | None = None
    data_root: str | None = None
    subset: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    test_loss: float | None = None
    test_agreement: float | None = None  # kd runs: share of test images where student and teacher agree
    test_ece: float | None = None  # expected calibration error, 15 bins (Guo et al., 2017)
    test_nll: float | None = None  # negative log-likelihood (mean cross-entropy)
    wall_seconds: float | None = None  # training time, summed over resumed attempts
    train_images_per_second: float | None = None
    device: str | None = None
    precision: str | None = None
    versions: dict[str, str] | None = None
    code: dict[str, Any] | None = None  # the git commit the run trained with, and whether the tree had changes
    variant: str | None = None  # the run name's tags for settings that differ from the defaults ('' for none)
    settings: dict[str, Any] | None = None  # everything that changes the result (see run_settings in train.py)
    fingerprint: str | None = None  # fingerprint(settings): a rerun is skipped or resumed only when it matches
    time_split: TimeSplit | None = None

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """Check every field's presence and type; keys this version does not know are ignored."""
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / METRICS_FILE, self.to_dict())

    def summary_line(self, note: str = "") -> str:
        """The one line printed when a run ends (or is skipped)."""
        what = f"{self.mode:8s} ResNet-{self.depth} w{self.width}"
        if self.mode == "kd":
            what += f" a={self.alpha:g} T={self.temperature:g}"
        return (
            f"{what} seed {self.seed}: val {100 * self.best_val_acc:.2f}% (epoch {self.best_epoch}), "
            f"test {100 * self.test_acc:.2f}%, {self.wall_seconds or 0:.0f} s{note}"
        )

    def title(self) -> str:
        """A figure title: 'kd ResNet-4 a=0.5 T=4 s0: test 71.9%', 'dkd ResNet-4 a=1 b=8 T=4 ...', 'kd reverse ...'."""
        kd = ""
        if self.mode == "kd":
            beta = f" b={self.beta:g}" if self.beta is not None else ""
            kd = f" a={self.alpha:g}{beta} T={self.temperature:g}"
        what = {"dkd": "dkd", None: self.mode}.get(self.method, self.mode)
        what += " reverse" if self.divergence == "reverse" else ""
        return f"{what} ResNet-{self.depth}{kd} s{self.seed}: test {100 * self.test_acc:.1f}%"


def _from_dict(cls: type, data: Any) -> Any:
    """An instance of the dataclass `cls` from a JSON object, each field checked against its annotation."""
    if not isinstance(data, dict):
        raise RunRecordError(f"holds a {type(data).__name__}, not a JSON object")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING:
                raise RunRecordError(f"lacks the field {f.name!r}")
            continue
        values[f.name] = _checked(f.name, data[f.name], hints[f.name])
    return cls(**values)


def _checked(name: str, value: Any, hint: Any) -> Any:
    """`value` if it fits the annotation `hint` (int, float, str, dict, list, a dataclass, or an optional of
    one), else an error."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in allowed:
        base = typing.get_origin(t) or t
        if value is None and t is type(None):
            return value
        if dataclasses.is_dataclass(base) and isinstance(value, dict):
            try:
                return _from_dict(base, value)
            except RunRecordError as err:
                raise RunRecordError(f"field {name!r} {err}") from None
        if isinstance(value, bool) and base is not bool:
            continue
        if base is float and isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise RunRecordError(f"field {name!r} is {value}, not a finite number")
            return float(value)
        if base is not float and isinstance(value, base):
            return value
    names = " or ".join("null" if t is type(None) else (typing.get_origin(t) or t).__name__ for t in allowed)
    raise RunRecordError(f"field {name!r} is {value!r}; it must be {names}")


class Run(NamedTuple):
    """A finished run as the report sees it: its folder and its record."""

    dir: Path
    record: RunRecord


def load_record(run_dir: Path) -> RunRecord:
    """The record in run_dir/metrics.json; RunRecordError (naming the file) when it is unreadable or malformed."""
    path = Path(run_dir) / METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunRecordError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    try:
        return RunRecord.from_dict(data)
    except RunRecordError as err:
        raise RunRecordError(f"{path} {err}") from None


def iter_runs(runs_dir: Path) -> Iterator[Run]:
    """Every finished run under runs_dir in name order; an unreadable metrics.json is skipped with a warning."""
    for path in sorted(Path(runs_dir).glob(f"*/{METRICS_FILE}")):
        try:
            yield Run(path.parent, load_record(path.parent))
        except RunRecordError as err:
            log.warning("skipping a run: %s", err)


# ----------------------------------------------------------------------------- settings


def fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of a run's settings: equal settings, equal fingerprint, whatever the key order."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def setting_differences(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """'optim.lr 0.2 -> 0.1, trainer.max_epochs 30 -> 60': every key whose value differs, old -> new."""
    if old is None:
        return "its settings were not recorded (it was written by an older version)"

    def shown(settings: dict[str, Any], key: str) -> str:
        return "(none)" if key not in settings else json.dumps(settings[key], default=str).strip('"')

    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))
    return ", ".join(f"{k} {shown(old, k)} -> {shown(new, k)}" for k in keys)


def check_same_settings(what: str, stored: dict[str, Any] | None, settings: dict[str, Any], run_dir: Path) -> None:
    """RunFolderError naming each differing setting when `what` (a finished run, a checkpoint) has other settings."""
    if stored is not None and fingerprint(stored) == fingerprint(settings):
        return
    raise RunFolderError(
        f"{what} in {run_dir} was trained with other settings ({setting_differences(stored, settings)}); "
        "rerun with overwrite=true to replace it, or give this run another paths.root"
    )
