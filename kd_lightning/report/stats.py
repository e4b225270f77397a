"""The report's numbers: per-seed statistics and one table row per model, without matplotlib.

Kept apart from rendering and plotting so the statistics (and the choice of KD setting, made on
validation accuracy only) can be imported and tested cheaply.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from kd_lightning.runs import Run

# the study's test accuracy (%): depth -> (baseline, KD); its teacher is a ResNet-10
STUDY = {10: (90, None), 3: (64, 67), 4: (70, 76), 5: (82, 84), 6: (87, 87)}
STUDY_TEACHER_DEPTH = 10

Setting = tuple[float, float]  # (alpha, temperature) of a KD run


@dataclass
class Stat:
    """Mean, sample standard deviation (None for one value) and count of percentages."""

    values: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    def cell(self, signed: bool = False) -> str:
        """'62.00 ± 2.00 (n=3)', '70.00 (n=1)' for one value, '-' for none."""
        if not self.values:
            return "-"
        text = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        return text + (f" ± {self.std:.2f}" if self.std is not None else "") + f" (n={self.n})"


def pct(runs: list[Run], key: str) -> Stat:
    """The record field `key` (a fraction) of every run that has it, in percent."""
    values = (getattr(r.record, key) for r in runs)
    return Stat([100 * v for v in values if v is not None])


def paired_difference(kd: list[Run], base: list[Run]) -> Stat:
    """KD minus baseline test accuracy of the same seed, over the seeds both have."""
    by_seed = {r.record.seed: r.record.test_acc for r in base}
    return Stat(
        [
            100 * (r.record.test_acc - by_seed[r.record.seed])
            for r in sorted(kd, key=lambda r: r.record.seed)
            if r.record.seed in by_seed
        ]
    )


def kd_settings(kd_runs: list[Run]) -> dict[Setting, list[Run]]:
    """KD runs grouped by (alpha, temperature), in increasing order of the setting."""
    groups: dict[Setting, list[Run]] = defaultdict(list)
    for r in kd_runs:
        groups[(float(r.record.alpha), float(r.record.temperature))].append(r)
    return dict(sorted(groups.items()))


def best_on_validation(settings: dict[Setting, list[Run]]) -> Setting:
    """The (alpha, T) of highest mean best_val_acc; ties go to more seeds, then the smaller alpha and T."""
    return max(settings, key=lambda s: (pct(settings[s], "best_val_acc").mean, len(settings[s]), -s[0], -s[1]))


@dataclass
class Row:
    """One line of the table: a teacher, or a student depth with its baseline and its chosen KD runs."""

    model: str
    role: str  # teacher | student
    depth: int
    width: int
    base: Stat
    kd: Stat = field(default_factory=Stat)
    paired: Stat = field(default_factory=Stat)
    agreement: Stat = field(default_factory=Stat)
    setting: Setting | None = None
    base_runs: list[Run] = field(default_factory=list)
    kd_runs: list[Run] = field(default_factory=list)

    @property
    def delta(self) -> float | None:
        return self.kd.mean - self.base.mean if self.kd.n and self.base.n else None

    @property
    def study(self) -> tuple[int | None, int | None]:
        """The study's (baseline, KD) test accuracy at this depth; (None, None) where it has none."""
        if self.role == "teacher":
            return (STUDY[10][0], None) if self.depth == STUDY_TEACHER_DEPTH else (None, None)
        return STUDY.get(self.depth, (None, None)) if self.depth != STUDY_TEACHER_DEPTH else (None, None)


def build_rows(runs: list[Run], alpha: float, temperature: float, select: str) -> list[Row]:
    """Teacher rows first, then one row per student (depth, width).

    The KD column uses (alpha, temperature), or with select="val" the setting of best validation
    accuracy; a depth with a single KD setting uses that one.
    """
    by: dict[tuple[str, int, int], list[Run]] = defaultdict(list)
    for r in runs:
        by[(r.record.mode, r.record.depth, r.record.width)].append(r)
    widths = {r.record.width for r in runs}

    def label(d: int, w: int) -> str:
        return f"ResNet-{d}" + (f" w{w}" if len(widths) > 1 else "")

    rows = [
        Row(
            model=label(d, w) + " (teacher)",
            role="teacher",
            depth=d,
            width=w,
            base=pct(rs, "test_acc"),
            base_runs=rs,
        )
        for (mode, d, w), rs in sorted(by.items())
        if mode == "teacher"
    ]
    students = sorted({(d, w) for (mode, d, w) in by if mode != "teacher"})
    for d, w in students:
        base = by.get(("baseline", d, w), [])
        row = Row(model=label(d, w), role="student", depth=d, width=w, base=pct(base, "test_acc"), base_runs=base)
        settings = kd_settings(by.get(("kd", d, w), []))
        if select == "val" and settings:
            row.setting = best_on_validation(settings)
        elif (alpha, temperature) in settings:
            row.setting = (alpha, temperature)
        elif len(settings) == 1:  # a single setting that is not the default: still the only KD result
            row.setting = next(iter(settings))
        if row.setting is not None:
            row.kd_runs = settings[row.setting]
            row.kd, row.agreement = pct(row.kd_runs, "test_acc"), pct(row.kd_runs, "test_agreement")
            row.paired = paired_difference(row.kd_runs, base)
        rows.append(row)
    return rows
