"""Every PNG of the report: loss curves read from TensorBoard events, accuracy vs depth, the KD sweep heatmap.

The only module of the package that imports matplotlib (with the Agg backend: reports are made
on machines without a display). Each figure is written through `atomic_path`, so a reader never
sees half a PNG.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kd_lightning.report.stats import Row, kd_settings, pct  # noqa: E402
from kd_lightning.runs import Run, atomic_path  # noqa: E402

log = logging.getLogger(__name__)

Curves = dict[str, list[tuple[int, float]]]  # tag -> [(epoch, value), ...]


def loss_curves(tb_dir: Path) -> Curves:
    """{'train/loss': [(epoch, value), ...], 'val/loss': [...]} from a run's TensorBoard events (1-based epochs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
    curves = {}
    for tag in ("train/loss", "val/loss"):
        if tag in tags:
            by_epoch = {epoch_at.get(e.step, i) + 1: e.value for i, e in enumerate(acc.Scalars(tag))}
            curves[tag] = sorted(by_epoch.items())
    return curves


def _draw_curves(ax: plt.Axes, curves: Curves, color: str = "C0", label: str = "") -> None:
    for tag, style in (("train/loss", "-"), ("val/loss", "--")):
        if curves.get(tag):
            x, y = zip(*curves[tag])
            ax.plot(x, y, style, color=color, marker="o", ms=3, label=f"{label}{tag.split('/')[0]}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write the PNG atomically, then free the figure."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def plot_runs(runs: list[Run], curves_dir: Path) -> dict[str, Curves]:
    """One loss-curve PNG per run with TensorBoard events; returns each run's curves by run name.

    PNGs of runs no longer present are removed: a stale curve would describe a run the table lacks.
    """
    curves_dir.mkdir(parents=True, exist_ok=True)
    all_curves, written = {}, set()
    for run in runs:
        name = run.record.run_name
        curves = loss_curves(run.dir / "tb")
        if not curves:
            log.warning("no loss curves in %s", run.dir / "tb")
            continue
        all_curves[name] = curves
        fig, ax = plt.subplots(figsize=(5, 3.5))
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.9)  # fixed margins: no layout pass per run
        _draw_curves(ax, curves)
        ax.set_title(run.record.title(), fontsize=9)
        ax.legend()
        save_figure(fig, curves_dir / f"{name}.png")
        written.add(f"{name}.png")
    for stale in curves_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    return all_curves


def plot_overview(rows: list[Row], curves: dict[str, Curves], path: Path) -> bool:
    """Grid of loss curves: a row per model, baseline (or teacher) left, KD right; every seed drawn."""
    if not curves:
        return False
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 2.6 * len(rows)), squeeze=False, layout="constrained")
    for ax_row, row in zip(axes, rows):
        for ax, runs, kind in (
            (ax_row[0], row.base_runs, row.role if row.role == "teacher" else "baseline"),
            (ax_row[1], row.kd_runs, "KD"),
        ):
            drawn = [r.record for r in sorted(runs, key=lambda r: r.record.seed) if r.record.run_name in curves]
            if not drawn:
                ax.set_axis_off()
                if row.role != "teacher":
                    ax.text(
                        0.5,
                        0.5,
                        f"{row.model} {kind}: no loss curves",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                    )
                continue
            for i, record in enumerate(drawn):
                _draw_curves(ax, curves[record.run_name], color=f"C{i}", label=f"s{record.seed} ")
            extra = "" if kind != "KD" else f" a={row.setting[0]:g} T={row.setting[1]:g}"
            ax.set_title(f"{row.model.replace(' (teacher)', '')} {kind}{extra}", fontsize=9)
            ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_accuracy_vs_depth(rows: list[Row], path: Path) -> bool:
    """Baseline and KD test accuracy per student depth (seed std as error bars), the study's beside them."""
    students = [r for r in rows if r.role == "student"]
    if not students:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for attr, label, color in (("base", "baseline", "C0"), ("kd", "KD", "C1")):
        pts = [(r.depth, getattr(r, attr)) for r in students if getattr(r, attr).n]
        if pts:
            ax.errorbar(
                [d for d, _ in pts],
                [s.mean for _, s in pts],
                yerr=[s.std or 0.0 for _, s in pts],
                marker="o",
                capsize=4,
                color=color,
                label=f"{label} (ours)",
            )
        study = [(r.depth, r.study[0 if attr == "base" else 1]) for r in students]
        study = [(d, v) for d, v in study if v is not None]
        if study:
            ax.plot(*zip(*study), ":", marker="s", mfc="none", color=color, alpha=0.6, label=f"{label} (study)")
    for t in (r for r in rows if r.role == "teacher" and r.base.n):
        ax.axhline(t.base.mean, color="grey", ls="--", lw=1, label=f"{t.model}")
    ax.set_xticks(sorted({r.depth for r in students}))
    ax.set_xlabel("student depth (ResNet-d)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("Accuracy vs depth (error bars: std over seeds)", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_sweep(runs: list[Run], path: Path) -> bool:
    """alpha x T heatmap of mean validation accuracy for every student with more than one KD setting."""
    groups: dict[tuple[int, int], list[Run]] = defaultdict(list)
    for r in runs:
        if r.record.mode == "kd":
            groups[(r.record.depth, r.record.width)].append(r)
    swept = {k: kd_settings(v) for k, v in sorted(groups.items()) if len(kd_settings(v)) > 1}
    if not swept:
        return False
    fig, axes = plt.subplots(1, len(swept), figsize=(4.2 * len(swept), 3.6), squeeze=False, layout="constrained")
    for ax, ((depth, width), settings) in zip(axes[0], swept.items()):
        alphas = sorted({a for a, _ in settings})
        temps = sorted({t for _, t in settings})
        grid = [
            [pct(settings[(a, t)], "best_val_acc").mean if (a, t) in settings else math.nan for t in temps]
            for a in alphas
        ]
        im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        lo, hi = im.get_clim()
        for i, line in enumerate(grid):
            for j, v in enumerate(line):
                if not math.isnan(v):  # dark text on the bright end of the colour map
                    color = "k" if v > (lo + hi) / 2 else "w"
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_xlabel("temperature T")
        ax.set_ylabel("alpha")
        ax.set_title(f"ResNet-{depth} w{width}: val acc %", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    save_figure(fig, path)
    return True
