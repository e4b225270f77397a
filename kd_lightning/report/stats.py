"""The report's numbers: per-seed statistics and one table row per network, without matplotlib.

Kept apart from rendering and plotting so the statistics (and the choice of KD setting, made on
validation accuracy only) can be imported and tested cheaply. A row is one network under one set of
conditions: runs of another reading, plan or variant (a longer schedule, another learning rate), or that
differ in anything else that changes a result (the data's content, the precision, the world size, the
teacher a kd run distilled from) get a row of their own, labelled by what differs, and are never averaged
as seeds of one. A cell averages runs that differ by their seed alone.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from kd_lightning.plans import reading_tag
from kd_lightning.run.record import Run, RunRecord, checkpoint_run_name

log = logging.getLogger(__name__)

# the study's test accuracy (%): depth -> (baseline, KD); its teacher is a ResNet-10
STUDY = {10: (90, None), 3: (64, 67), 4: (70, 76), 5: (82, 84), 6: (87, 87)}
STUDY_TEACHER_DEPTH = 10

Setting = tuple[float, float]  # (alpha, temperature) of a KD run


@dataclass
class Stat:
    """Mean, sample standard deviation (None for one value) and count of a list of numbers."""

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

    def cell(self, signed: bool = False, digits: int = 2) -> str:
        """'62.00 ± 2.00 (n=3)', '70.00 (n=1)' for one value, '-' for none."""
        if not self.values:
            return "-"
        text = f"{self.mean:{'+' if signed else ''}.{digits}f}"
        return text + (f" ± {self.std:.{digits}f}" if self.std is not None else "") + f" (n={self.n})"


def stat(runs: list[Run], key: str, scale: float = 1.0) -> Stat:
    """The record field `key` of every run that has it, times `scale`."""
    values = (getattr(r.record, key) for r in runs)
    return Stat([scale * v for v in values if v is not None])


def pct(runs: list[Run], key: str) -> Stat:
    """The record field `key` (a fraction) of every run that has it, in percent."""
    return stat(runs, key, scale=100.0)


def paired_difference(kd: list[Run], base: list[Run]) -> Stat:
    """KD (or any method) minus baseline test accuracy of the same seed, over the seeds both have."""
    by_seed = {r.record.seed: r.record.test_acc for r in base}
    return Stat(
        [
            100 * (r.record.test_acc - by_seed[r.record.seed])
            for r in sorted(kd, key=lambda r: r.record.seed)
            if r.record.seed in by_seed
        ]
    )


def warn_repeated_seeds(cell: str, runs: list[Run]) -> None:
    """A warning when a cell would average two runs of one seed: they differ in something its row does not tell
    apart (another teacher, say), so the cell's mean and its n would mislead."""
    seeds = [r.record.seed for r in runs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        names = ", ".join(sorted(r.record.run_name for r in runs if r.record.seed in repeated))
        log.warning("%s averages several runs of one seed: %s", cell, names)


# ----------------------------------------------------------------------------- what a record is


def record_reading(record: RunRecord) -> str:
    """'' (the default blocks reading), 'stages' or 'p1_1_1_1' (a plan): the net tag config.net_tag gives the name.

    Old records lack `reading`: they were all trained with the blocks reading.
    """
    return reading_tag(record.reading, record.plan if record.reading == "plan" else None)


def teacher_run_name(record: RunRecord) -> str | None:
    """The run that trained a kd run's teacher: the lineage's last entry, else the run folder of a run checkpoint.

    None for an old record's teacher export (teachers/r10-w64-s0.ckpt): the teacher run of the study.
    """
    if record.lineage and record.lineage[-1].get("run_name"):
        return str(record.lineage[-1]["run_name"])
    return checkpoint_run_name(record.teacher_ckpt) if record.teacher_ckpt else None


def via_assistant(record: RunRecord) -> bool:
    """Whether a kd run's teacher is itself a student (an assistant), not a teacher run.

    A lineage of two or more runs is a chain; so is a teacher taken from a baseline or kd run's checkpoint.
    """
    name = teacher_run_name(record)
    return len(record.lineage or []) >= 2 or (name is not None and not name.startswith("teacher-"))


def kd_kind(record: RunRecord) -> str:
    """'kd' (plain: forward KL from a teacher run), 'reverse', 'dkd', 'assistant' (plain KD from an assistant)
    or 'other' (reverse KD or DKD from an assistant, or a method this report does not know).

    Old records lack method and divergence: they were plain forward KD.
    """
    method, reverse = record.method or "kd", record.divergence == "reverse"
    chain = via_assistant(record)
    if method == "dkd":
        return "other" if chain else "dkd"
    if method != "kd":
        return "other"
    if chain:
        return "other" if reverse else "assistant"
    return "reverse" if reverse else "kd"


# ----------------------------------------------------------------------------- choosing a setting


def settings_of(runs: list[Run], key: Callable[[RunRecord], Hashable]) -> dict:
    """Runs grouped by their setting `key(record)`, in increasing order of the setting."""
    groups: dict = defaultdict(list)
    for r in runs:
        groups[key(r.record)].append(r)
    return dict(sorted(groups.items()))


def kd_settings(kd_runs: list[Run]) -> dict[Setting, list[Run]]:
    """KD runs grouped by (alpha, temperature), in increasing order of the setting."""
    return settings_of(kd_runs, key=lambda r: (float(r.alpha), float(r.temperature)))


def best_on_validation(settings: dict) -> Hashable:
    """The setting of highest mean best_val_acc; ties go to more seeds, then the smaller setting (alpha, then T).

    `settings` is in increasing order (settings_of), and max keeps the first of equal keys.
    """
    return max(settings, key=lambda s: (pct(settings[s], "best_val_acc").mean, len(settings[s])))


@dataclass
class Row:
    """One line of the table: a teacher, or a student network with its baseline and its chosen plain KD runs."""

    model: str
    role: str  # teacher | student
    depth: int
    width: int
    base: Stat
    reading: str = ""  # the reading tag: '' | 'stages' | 'p1_1_1_1'
    variant: str = ""  # the run name's tags of non-default settings, e.g. 'e60'
    differs: str = ""  # what sets this row apart from rows of the same network: 'trainer.precision=32-true'
    kd: Stat = field(default_factory=Stat)
    paired: Stat = field(default_factory=Stat)
    agreement: Stat = field(default_factory=Stat)
    setting: Setting | None = None
    chosen: str = ""  # how the setting was chosen: default | only setting | best of k on validation
    base_runs: list[Run] = field(default_factory=list)
    kd_runs: list[Run] = field(default_factory=list)  # plain KD at the chosen setting
    plain_kd: list[Run] = field(default_factory=list)  # plain KD at every setting (the sweep)
    distilled: list[Run] = field(default_factory=list)  # every kd-mode run of this network, of any method

    @property
    def delta(self) -> float | None:
        return self.kd.mean - self.base.mean if self.kd.n and self.base.n else None

    @property
    def family(self) -> str:
        """The label without 'ResNet-d': which rows of different depths a figure may join with one line."""
        return self.model.replace(" (teacher)", "").removeprefix(f"ResNet-{self.depth}")

    @property
    def study(self) -> tuple[int | None, int | None]:
        """The study's (baseline, KD) test accuracy at this depth; (None, None) where it has none."""
        if self.role == "teacher":
            return (STUDY[10][0], None) if self.depth == STUDY_TEACHER_DEPTH else (None, None)
        return STUDY.get(self.depth, (None, None)) if self.depth != STUDY_TEACHER_DEPTH else (None, None)


RowKey = tuple[str, int, int, str, str]  # mode, depth, width, reading tag, variant
LABELLED = 3  # at most this many differing settings name a row


def row_key(record: RunRecord) -> RowKey:
    return (record.mode, record.depth, record.width, record_reading(record), record.variant or "")


def without_seed(run_name: str) -> str:
    """'kd-r6-w64-t10-a0.5-T4': a run name without its '-s0' seed tag, the same for every seed of a setting."""
    return re.sub(r"-s\d+(?=-|$)", "", run_name)


def conditions(record: RunRecord) -> dict[str, Any]:
    """What a run's result depends on beyond its network, its seed and how it distilled: the data (its content),
    the split, the optimiser, the epochs, the precision, the world size: its settings without the network, seed,
    mode, kd and teacher keys. A record without settings (an older version's) gives the fields it has."""
    if record.settings:
        skip = ("student.", "teacher.", "kd.")
        return {k: v for k, v in record.settings.items() if k not in ("seed", "mode") and not k.startswith(skip)}
    return {
        "data.source": record.data_source,
        "data.subset": record.subset,
        "data.split": record.split_hash,
        "data.images": [record.n_train, record.n_val, record.n_test],
        "trainer.max_epochs": record.max_epochs,
        "trainer.precision": record.precision,
    }


def teacher_identity(entry: dict[str, Any]) -> dict[str, Any]:
    """What the teachers of one lineage step share across seeds: the run's settings without its seed and its own
    teacher's file hash (that teacher is the step before), else its run name without the seed tag."""
    if isinstance(entry.get("settings"), dict):
        return {k: v for k, v in entry["settings"].items() if k not in ("seed", "teacher.sha256")}
    if entry.get("run_name"):
        return {"run": without_seed(str(entry["run_name"]))}
    return {"sha256": entry.get("sha256")}  # a file of no run: only its own seed's runs share it


def teacher_root(record: RunRecord) -> dict[str, Any]:
    """The identity of the teacher at the root of a kd run's lineage (the teacher run, for a chain through an
    assistant too); a record without lineage gives its teacher's depth, width and plan. {} for other runs."""
    if record.mode != "kd":
        return {}
    if record.lineage:
        return teacher_identity(record.lineage[0])
    return {"depth": record.teacher_depth, "width": record.teacher_width, "plan": record.teacher_plan}


def _frozen(facts: dict[str, Any]) -> str:
    return json.dumps(facts, sort_keys=True, default=str)


def _differing(facts: list[dict[str, Any]]) -> list[str]:
    """For each of several rows' facts, 'key=value' for the keys whose values are not the same in all of them."""
    keys = sorted({k for f in facts for k in f if len({_frozen({"v": g.get(k)}) for g in facts}) > 1})
    shown = keys[:LABELLED]

    def value(v: Any) -> str:
        return "-" if v is None else v if isinstance(v, str) else json.dumps(v, default=str)

    more = ", ..." if len(keys) > LABELLED else ""
    return [", ".join(f"{k}={value(f.get(k))}" for k in shown) + more for f in facts]


def build_rows(runs: list[Run], alpha: float, temperature: float, select: str) -> list[Row]:
    """Teacher rows first, then one row per student network (depth, width, reading, variant), its conditions
    (the data, precision, world size, ...) and, for kd runs, the teacher at the root of their lineage.

    The KD column uses plain KD runs only (kd_kind 'kd') at (alpha, temperature), or with select="val"
    the setting of best validation accuracy; a network with a single KD setting uses that one. Rows that
    share a network but differ in their conditions or teacher are labelled with what differs.
    """
    by: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        by[(*row_key(r.record), _frozen(conditions(r.record)))].append(r)
    widths = {r.record.width for r in runs}
    # a variant tag labels a row only where teachers (or students) of several variants need telling apart
    variants = {
        role: {key[4] for key in by if (key[0] == "teacher") == (role == "teacher")} for role in ("teacher", "student")
    }

    def new_row(role: str, net: tuple, base: list[Run]) -> Row:
        d, w, tag, var, _ = net
        model = f"ResNet-{d}" + (f" w{w}" if len(widths) > 1 else "") + (f" {tag}" if tag else "")
        model += f" [{var}]" if var and len(variants[role]) > 1 else ""
        return Row(
            model=model,
            role=role,
            depth=d,
            width=w,
            base=pct(base, "test_acc"),
            reading=tag,
            variant=var,
            base_runs=base,
        )

    rows = [new_row("teacher", key[1:], by[key]) for key in sorted(by) if key[0] == "teacher"]
    for net in sorted({key[1:] for key in by if key[0] != "teacher"}):
        distilled = by.get(("kd", *net), [])
        teachers: dict[str, list[Run]] = defaultdict(list)
        for r in distilled:
            teachers[_frozen(teacher_root(r.record))].append(r)
        for teacher in sorted(teachers) or [""]:
            row = new_row("student", net, by.get(("baseline", *net), []))
            row.distilled = teachers.get(teacher, [])
            row.plain_kd = [r for r in row.distilled if kd_kind(r.record) == "kd"]
            rows.append(row)
    label(rows)
    for row in rows:
        if row.role == "teacher":
            row.model += " (teacher)"
        else:
            choose_kd(row, alpha, temperature, select)
    return rows


def label(rows: list[Row]) -> None:
    """Rows that would read alike (one network, one variant) get what else differs between them in brackets: their
    conditions first ('[trainer.precision=32-true]'), then, between rows of the same conditions, their teachers
    ('[teacher trainer.max_epochs=60]')."""
    alike: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        alike[(row.role, row.model)].append(row)
    for group in (g for g in alike.values() if len(g) > 1):
        conds = {id(row): conditions((row.base_runs or row.distilled)[0].record) for row in group}
        distinct = {_frozen(c): c for c in conds.values()}
        said = dict(zip(distinct, _differing(list(distinct.values())))) if len(distinct) > 1 else {}
        parts: dict[int, list[str]] = {id(row): [said.get(_frozen(conds[id(row)]), "")] for row in group}
        for cond in distinct:
            same = [row for row in group if _frozen(conds[id(row)]) == cond and row.distilled]
            if len(same) > 1:
                teachers = [{f"teacher {k}": v for k, v in teacher_root(r.distilled[0].record).items()} for r in same]
                for row, text in zip(same, _differing(teachers)):
                    parts[id(row)].append(text)
        for row in group:
            row.differs = ", ".join(p for p in parts[id(row)] if p)
            row.model += f" [{row.differs}]" if row.differs else ""


def choose_kd(row: Row, alpha: float, temperature: float, select: str) -> None:
    """The row's KD column: plain KD at (alpha, temperature), else the best setting on validation or the only one."""
    settings = kd_settings(row.plain_kd)
    if select == "val" and settings:
        row.setting, row.chosen = best_on_validation(settings), f"best of {len(settings)} on validation"
    elif (alpha, temperature) in settings:
        row.setting, row.chosen = (alpha, temperature), "default"
    elif len(settings) == 1:  # a single setting that is not the default: still the only KD result
        row.setting, row.chosen = next(iter(settings)), "only setting"
    warn_repeated_seeds(f"{row.model} baseline", row.base_runs)
    if row.setting is not None:
        row.kd_runs = settings[row.setting]
        warn_repeated_seeds(f"{row.model} KD", row.kd_runs)
        row.kd, row.agreement = pct(row.kd_runs, "test_acc"), pct(row.kd_runs, "test_agreement")
        row.paired = paired_difference(row.kd_runs, row.base_runs)
