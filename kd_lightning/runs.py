"""The run record: what a finished run writes to `metrics.json`, and the one way to write, read and list it.

`train.py` writes a `RunRecord` when a run ends; the report, the timing summary and the tests read
run folders through `load_record` and `iter_runs`. Every file the project writes goes through
`atomic_path`: a temporary file beside the target, then one rename, so a reader or a killed writer
never leaves half a file behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


class RunRecordError(ValueError):
    """A metrics.json that is not JSON, lacks a field, or holds a value of the wrong type."""


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
    teacher_depth: int | None = None  # teacher and kd runs
    teacher_width: int | None = None
    teacher_ckpt: str | None = None
    teacher_sha256: str | None = None  # kd runs: the teacher file distilled from
    alpha: float | None = None  # kd runs
    temperature: float | None = None
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
    wall_seconds: float | None = None  # training time, summed over resumed attempts
    train_images_per_second: float | None = None
    device: str | None = None
    precision: str | None = None
    versions: dict[str, str] | None = None

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """Check every field's presence and type; keys this version does not know are ignored."""
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
        """A figure title: 'kd ResNet-4 a=0.5 T=4 s0: test 71.9%'."""
        kd = f" a={self.alpha:g} T={self.temperature:g}" if self.mode == "kd" else ""
        return f"{self.mode} ResNet-{self.depth}{kd} s{self.seed}: test {100 * self.test_acc:.1f}%"


def _checked(name: str, value: Any, hint: Any) -> Any:
    """`value` if it fits the annotation `hint` (int, float, str, dict, or an optional of one), else an error."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in allowed:
        base = typing.get_origin(t) or t
        if value is None and t is type(None):
            return value
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


# ----------------------------------------------------------------------------- atomic files


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; when the block ends without an error it replaces `path`.

    On an error (a full disk, a killed writer's next start) `path` keeps its old content and the
    temporary file is removed. The temporary name keeps the suffix, so format-guessing writers work.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    """JSON with an indent; NaN and infinity are refused (ValueError): they are not results."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
