"""The methods table's numbers: per student network, the baseline, plain KD, reverse KD, DKD and KD via an
assistant, each at one chosen setting, with its paired difference against the baseline; no matplotlib.

The plain KD column is the main table's (its setting chosen there). Every other method takes its default
setting when runs at it exist, else the only setting run, else the setting of best mean validation
accuracy: a method is never chosen, nor tuned, on test accuracy. The defaults come from cli (the config's),
so this module does not load Hydra.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from kd_lightning.report.stats import (
    Row,
    Stat,
    best_on_validation,
    kd_kind,
    paired_difference,
    pct,
    settings_of,
    teacher_identity,
    teacher_run_name,
    warn_repeated_seeds,
)
from kd_lightning.run.record import Run, RunRecord

# the methods table's columns after the baseline, in order: kd_kind -> column title
METHODS = {"kd": "KD", "reverse": "Reverse KD", "dkd": "DKD", "assistant": "KD via an assistant"}
ARMS = {"baseline": "Baseline", **METHODS}
DKDSetting = tuple[float, float, float, int]  # alpha (TCKD), beta (NCKD), temperature, warm-up epochs


@dataclass(frozen=True)
class Defaults:
    """The setting each method's column takes when runs at it exist (cli passes the config's defaults)."""

    kd: tuple[float, float]  # alpha, temperature: plain KD, reverse KD, KD via an assistant
    dkd: DKDSetting


@dataclass
class Arm:
    """One cell of the methods table: a method's runs at its chosen setting for one network, and how it was chosen."""

    kind: str  # baseline | kd | reverse | dkd | assistant
    runs: list[Run] = field(default_factory=list)
    setting: str = ""  # 'a=0.5 T=4'
    chosen: str = ""  # default | only setting | best of 3 on validation
    chain: str = ""  # assistant: 'teacher-r10-w64-s0 → kd-r6-w64-t10-a0.5-T4-s0 → ResNet-3'

    @property
    def acc(self) -> Stat:
        return pct(self.runs, "test_acc")


@dataclass
class MethodRow:
    """A student network's arms, and the paired difference of each method against the baseline."""

    row: Row
    arms: dict[str, Arm]

    def paired(self, kind: str) -> Stat:
        return paired_difference(self.arms[kind].runs, self.arms["baseline"].runs)


def lineage_names(record: RunRecord) -> list[str]:
    """The teacher's ancestors, then the teacher, by run name (a short sha256 where a checkpoint had no name)."""
    names = [str(e.get("run_name") or f"sha256 {str(e.get('sha256'))[:8]}") for e in record.lineage or []]
    return names or [teacher_run_name(record) or record.teacher_ckpt or "an unrecorded teacher"]


def chain_name(record: RunRecord, student: str) -> str:
    """'teacher-r10-w64-s0 → kd-r6-w64-t10-a0.5-T4-s0 → ResNet-3': who taught whom, ending at the student."""
    return " → ".join([*lineage_names(record), student])


def kd_setting_label(alpha: float, temperature: float) -> str:
    return f"a={alpha:g} T={temperature:g}"


def dkd_setting_label(s: DKDSetting) -> str:
    return f"a={s[0]:g} b={s[1]:g} T={s[2]:g} warm-up {s[3]}"


def choose(runs: list[Run], key: Callable[[RunRecord], Hashable], is_default: Callable[[Hashable], bool]) -> tuple:
    """(setting, its runs, how it was chosen): the default setting when present, else the only one, else the best
    on validation (among the default ones when several share it, e.g. two assistants at alpha 0.5, T 4)."""
    settings = settings_of(runs, key=key)
    if not settings:
        return None, [], ""
    candidates = {s: rs for s, rs in settings.items() if is_default(s)}
    if len(candidates) == 1:
        setting = next(iter(candidates))
        return setting, candidates[setting], "default"
    if len(settings) == 1:
        setting = next(iter(settings))
        return setting, settings[setting], "only setting"
    pool = candidates or settings
    setting = best_on_validation(pool)
    return setting, pool[setting], f"best of {len(pool)} on validation"


def method_arms(row: Row, defaults: Defaults) -> dict[str, Arm]:
    """The baseline, the row's plain KD, and each other method at its chosen setting (empty arms where none ran)."""
    of_kind = {kind: [r for r in row.distilled if kd_kind(r.record) == kind] for kind in METHODS}
    arms = {"baseline": Arm("baseline", row.base_runs)}
    kd_label = kd_setting_label(*row.setting) if row.setting else ""
    arms["kd"] = Arm("kd", runs=row.kd_runs, setting=kd_label, chosen=row.chosen)

    def alpha_t(r: RunRecord) -> tuple[float, float]:
        return (float(r.alpha), float(r.temperature))

    setting, runs, how = choose(of_kind["reverse"], key=alpha_t, is_default=lambda s: s == defaults.kd)
    arms["reverse"] = Arm("reverse", runs=runs, setting=kd_setting_label(*setting) if runs else "", chosen=how)

    def dkd_key(r: RunRecord) -> DKDSetting:
        return (float(r.alpha), float(r.beta), float(r.temperature), int(r.warmup_epochs or 0))

    setting, runs, how = choose(of_kind["dkd"], key=dkd_key, is_default=lambda s: s == defaults.dkd)
    arms["dkd"] = Arm("dkd", runs=runs, setting=dkd_setting_label(setting) if runs else "", chosen=how)

    def chain_key(r: RunRecord) -> tuple:  # the same chain: teachers that differ by their seeds alone
        return (json.dumps([teacher_identity(e) for e in r.lineage or []], sort_keys=True, default=str), *alpha_t(r))

    setting, runs, how = choose(of_kind["assistant"], key=chain_key, is_default=lambda s: s[1:] == defaults.kd)
    first = min(runs, key=lambda r: r.record.seed).record if runs else None
    arms["assistant"] = Arm(
        "assistant",
        runs=runs,
        setting=kd_setting_label(*setting[1:]) if runs else "",
        chosen=how,
        chain=chain_name(first, row.model) if first else "",
    )
    return arms


def others(rows: list[Row]) -> list[Run]:
    """Distilled runs no column takes: reverse KD or DKD via an assistant, or an unknown method."""
    return [r for row in rows for r in row.distilled if kd_kind(r.record) == "other"]


def method_rows(rows: list[Row], defaults: Defaults) -> list[MethodRow]:
    """One methods-table row per student network; [] when every distilled run is plain KD (no table then)."""
    students = [row for row in rows if row.role == "student"]
    if not any(kd_kind(r.record) != "kd" for row in students for r in row.distilled):
        return []
    out = [MethodRow(row, method_arms(row, defaults)) for row in students]
    for m in out:
        for kind in ("reverse", "dkd", "assistant"):
            warn_repeated_seeds(f"{m.row.model} {METHODS[kind]}", m.arms[kind].runs)
    return out
