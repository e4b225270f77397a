"""The data behind the curve figures: per-epoch scalars read from a run's TensorBoard events, which of them a
loss axis may compare, and the mean and band over seeds; without matplotlib, so the choices can be tested.

A KD run's `train/loss` is its whole objective, alpha * T^2 * KL + (1 - alpha) * CE (about 8 at the
start on CIFAR-10), while `val/loss` is a cross-entropy (about 2): drawn on one axis they suggest a gap
that is not there. So a loss axis shows cross-entropies only (training `train/ce`, or the `train/loss`
of a hard-label run, which is its cross-entropy, beside `val/loss`), and the distillation term gets an
axis of its own.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from kd_lightning.report.stats import Row

Series = list[tuple[int, float]]  # [(epoch, value), ...], 1-based epochs
Curves = dict[str, Series]  # tag -> series
TAGS = ("train/loss", "train/ce", "train/kd", "val/loss", "val/acc")


def loss_curves(tb_dir: Path) -> Curves:
    """{'train/loss': [(epoch, value), ...], 'val/loss': [...], ...}: every tag of TAGS a run's events hold.

    Epochs come from the 'epoch' scalar Lightning logs at each step that logs (1-based here).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
    curves = {}
    for tag in TAGS:
        if tag in tags:
            by_epoch = {epoch_at.get(e.step, i) + 1: e.value for i, e in enumerate(acc.Scalars(tag))}
            curves[tag] = sorted(by_epoch.items())
    return curves


def cross_entropies(curves: Curves) -> dict[str, Series]:
    """{'train': training CE, 'val': validation CE}: what a loss axis draws (each only when logged).

    The training CE is `train/ce`; a run without it is a hard-label run when it logged no `train/kd`, and
    then its `train/loss` is the CE. A KD run without `train/ce` shows no training curve rather than its
    objective.
    """
    train = curves.get("train/ce") or (curves.get("train/loss") if "train/kd" not in curves else None)
    return {name: s for name, s in (("train", train), ("val", curves.get("val/loss"))) if s}


def distillation_term(curves: Curves) -> Series:
    """The KD term of the objective per epoch (`train/kd`: T^2 * KL before alpha; DKD: alpha*TCKD + beta*NCKD)."""
    return curves.get("train/kd", [])


@dataclass(frozen=True)
class Band:
    """Mean and min-max over seeds of one series, at the epochs every seed reached."""

    epochs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    n: int  # seeds


def seed_band(series: list[Series], scale: float = 1.0) -> Band | None:
    """The band of `series` (one per seed) times `scale`; None when no seed has the series.

    Only epochs every seed reached count, so a seed that stopped early never moves the mean by leaving it.
    """
    by_epoch = [dict(s) for s in series if s]
    if not by_epoch:
        return None
    epochs = sorted(set.intersection(*(set(s) for s in by_epoch)))
    values = [[scale * s[e] for s in by_epoch] for e in epochs]
    return Band(
        epochs=epochs,
        mean=[statistics.fmean(v) for v in values],
        low=[min(v) for v in values],
        high=[max(v) for v in values],
        n=len(by_epoch),
    )


# the panels of depth_comparison.png: tag, axis label, scale
COMPARED = (("val/loss", "validation CE", 1.0), ("val/acc", "validation accuracy %", 100.0))


def comparison_bands(row: Row, curves: dict[str, Curves]) -> dict[str, dict[str, Band]]:
    """{tag: {'baseline': Band, 'KD': Band}} of a student row (plain KD at its chosen setting); arms without curves
    are left out, and so is a tag neither arm logged."""
    out: dict[str, dict[str, Band]] = {}
    for tag, _, scale in COMPARED:
        bands = {}
        for arm, runs in (("baseline", row.base_runs), ("KD", row.kd_runs)):
            band = seed_band([curves.get(r.record.run_name, {}).get(tag, []) for r in runs], scale=scale)
            if band is not None:
                bands[arm] = band
        if bands:
            out[tag] = bands
    return out
