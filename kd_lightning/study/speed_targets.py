"""The speed targets (speed_targets.yaml beside this file) and how a measured figure is judged against one.

The benchmark's table asks `check` for a figure's limit and verdict; the study summary turns
bench.json and its own measures into `Reading`s and gets every target's row from `rows`: met,
not met, or not measured (with the reason). A target whose limit is relative to the published
bundle is judged against that bundle's own measure, read from its files.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kd_lightning.report.tables import text_table

TABLE = Path(__file__).with_name("speed_targets.yaml")
REPO = Path(__file__).resolve().parents[2]
MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


@dataclass(frozen=True)
class SpeedTarget:
    """One entry of speed_targets.yaml (its header says what each field means)."""

    figure: str
    measure: str
    format: str
    at_least: float | None = None
    at_most: float | None = None
    gpu_only: bool = False
    times_published: bool = False

    def matches(self, path: str) -> tuple[str, ...] | None:
        """What each '*' of `measure` matched in `path`, or None when `path` is not this target's."""
        pattern = "\\.".join("([^.]+)" if part == "*" else re.escape(part) for part in self.measure.split("."))
        found = re.fullmatch(pattern, path)
        return None if found is None else found.groups()

    def limit(self, published: float | None = None) -> float | None:
        value = self.at_least if self.at_least is not None else self.at_most
        if self.times_published:
            return None if published is None else value * published
        return value

    def limit_text(self, published: float | None = None) -> str:
        sign = ">=" if self.at_least is not None else "<="
        limit = self.limit(published)
        if self.times_published:
            factor = f"{self.at_least if self.at_least is not None else self.at_most:g}x the published"
            if published is None:
                return f"{sign} {factor} figure"
            return f"{sign} {self.format.format(limit)} ({factor} {self.format.format(published)})"
        return f"{sign} {self.format.format(limit)}"

    def meets(self, value: float, published: float | None = None) -> bool:
        limit = self.limit(published)
        return value >= limit if self.at_least is not None else value <= limit


@dataclass(frozen=True)
class Reading:
    """A measured figure: its value (None: not measured, `note` says why), how a row shows it ('': the
    target's format), and whether it is only a lower bound (runs still unfinished)."""

    value: float | None
    text: str = ""
    lower_bound: bool = False
    note: str = ""


@dataclass
class Row:
    figure: str
    measured: str
    target: str
    status: str


@functools.cache
def load(path: Path = TABLE) -> tuple[tuple[SpeedTarget, ...], Path]:
    """The targets, typed, and the published bundle's folder; an entry with a wrong key or type is refused."""
    raw = OmegaConf.load(path)
    targets = []
    for i, entry in enumerate(raw.targets):
        try:
            target = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SpeedTarget), entry))
        except Exception as err:
            raise ValueError(f"{path}: target {i + 1} is malformed: {err}") from None
        if (target.at_least is None) == (target.at_most is None):
            raise ValueError(f"{path}: target {i + 1} ({target.figure}) needs exactly one of at_least, at_most")
        targets.append(target)
    return tuple(targets), REPO / raw.published


def flatten(tree: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON tree by its dotted path: {'trainer.resnet4.ratio': 0.59, ...}."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out |= flatten(value, f"{prefix}{key}.")
        return out
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix[:-1]: float(tree)}
    return {}


def bench_readings(bench: dict) -> dict[str, Reading]:
    """bench.json's numbers as readings under 'bench.<path>'."""
    return {f"bench.{path}": Reading(value) for path, value in flatten(bench).items()}


def check(path: str, value: float, *, gpu: bool) -> tuple[str, str]:
    """The benchmark's (target, met) cells for the figure at bench.json `path`: ('-', '-') without a target."""
    for target in load()[0]:
        if target.matches(f"bench.{path}") is not None and not target.times_published:
            if target.gpu_only and not gpu:
                return "-", "-"
            return target.limit_text(), "yes" if target.meets(value) else "NO"
    return "-", "-"


def rows(readings: dict[str, Reading], published: dict[str, Reading], *, dry_run: bool) -> list[Row]:
    """One row per target and figure it matches (one 'not measured' row when none does)."""
    out = []
    for target in load()[0]:
        found = [(path, r, target.matches(path)) for path, r in readings.items()]
        found = [(path, r, groups) for path, r, groups in found if groups is not None]
        if not found:
            figure = target.figure.replace("{}", "*")
            out.append(Row(figure, "-", target.limit_text(_published(target, published)), NOT_MEASURED))
        for _, reading, groups in found:
            figure = target.figure.replace("{}", " ".join(groups))
            out.append(_row(target, figure, reading, _published(target, published), dry_run))
    return out


def _published(target: SpeedTarget, published: dict[str, Reading]) -> float | None:
    return published.get(target.measure, Reading(None)).value if target.times_published else None


def _row(target: SpeedTarget, figure: str, r: Reading, published: float | None, dry_run: bool) -> Row:
    measured = "-" if r.value is None else (r.text or target.format.format(r.value))
    row = Row(figure, measured, target.limit_text(published), NOT_MEASURED)
    if r.value is None:
        row.status += f" ({r.note})" if r.note else ""
    elif dry_run:
        row.status += " (CPU dry run)"
    elif target.times_published and published is None:
        row.status += " (no published figure to compare with)"
    elif not r.lower_bound:
        row.status = MET if target.meets(r.value, published) else NOT_MET
    elif target.meets(r.value, published) == (target.at_least is not None):  # a bound that decides already
        row.status = MET if target.at_least is not None else NOT_MET
    else:
        row.status += f" ({r.note})" if r.note else ""
    return row


def render(table: list[Row]) -> str:
    """The rows as a fixed-width table."""
    cells = [("figure", "measured", "target", "met?")]
    cells += [(r.figure, r.measured, r.target, r.status) for r in table]
    return text_table(cells, "llll") + "\n"


def as_dicts(table: list[Row]) -> list[dict[str, str]]:
    return [dataclasses.asdict(r) for r in table]
