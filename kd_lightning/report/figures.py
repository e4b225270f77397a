"""Every PNG of the report: loss curves per run and per model, validation curves per depth, accuracy vs depth,
the KD sweep heatmap.

With curves.py (which holds the data these draw), the only modules of the package that touch matplotlib,
here with the Agg backend: reports are made on machines without a display. Each figure is written through
`atomic_path`, so a reader never sees half a PNG; nothing in a figure depends on the time or the machine,
so the same runs give the same bytes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from kd_lightning.report.curves import (  # noqa: E402
    COMPARED,
    Band,
    Curves,
    comparison_bands,
    cross_entropies,
    distillation_term,
    loss_curves,
)
from kd_lightning.report.stats import Row, kd_settings, pct  # noqa: E402
from kd_lightning.run.files import atomic_path
from kd_lightning.run.record import Run, RunFolder  # noqa: E402

log = logging.getLogger(__name__)


def _epochs_axis(ax: plt.Axes, ylabel: str) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)


def _loss_axis(ax: plt.Axes, ylabel: str) -> None:
    """A log-scale loss axis with plain tick labels (0.5, 1, 2, 5): one spiking validation epoch (a CE of 13
    beside 1) then leaves the rest of the curves readable, and equal ratios look equal."""
    _epochs_axis(ax, f"{ylabel} (log scale)")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _draw_curves(ax: plt.Axes, curves: Curves, color: str = "C0", seed: str = "") -> None:
    """Training (solid) and validation (dashed) cross-entropy on one axis: like with like (curves.cross_entropies).

    With `seed` ('s0'), only the training line carries a legend entry, the seed: a grid of seeds then has one
    entry per colour, and its title says which style is which.
    """
    for name, series in cross_entropies(curves).items():
        x, y = zip(*series)
        label = name if not seed else (seed if name == "train" else "_nolegend_")
        ax.plot(x, y, "-" if name == "train" else "--", color=color, marker="o", ms=3, label=label)
    _loss_axis(ax, "cross-entropy")


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write the PNG atomically, then free the figure."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def _run_figure(run: Run, curves: Curves) -> plt.Figure:
    """Training and validation cross-entropy of one run; a KD run's distillation term in a panel of its own on the
    right (its scale is the objective's, not a cross-entropy's). Titled by run name, which tells methods apart."""
    kd, record = distillation_term(curves), run.record
    fig, axes = plt.subplots(1, 2 if kd else 1, figsize=(9, 3.5) if kd else (5, 3.5), squeeze=False)
    # fixed margins: no layout pass per run
    fig.subplots_adjust(left=0.08 if kd else 0.14, right=0.98 if kd else 0.97, bottom=0.14, top=0.84, wspace=0.25)
    fig.suptitle(f"{record.run_name}: test {100 * record.test_acc:.1f}%", fontsize=9)
    _draw_curves(axes[0][0], curves)
    axes[0][0].set_title("training and validation cross-entropy", fontsize=9)
    axes[0][0].legend(fontsize=8)
    if kd:
        x, y = zip(*kd)
        axes[0][1].plot(x, y, "-", color="C2", marker="o", ms=3)
        _loss_axis(axes[0][1], "training loss term")
        term = "a·TCKD + b·NCKD" if record.method == "dkd" else "T²·KL, before alpha"
        axes[0][1].set_title(f"distillation term ({term})", fontsize=9)
    return fig


def plot_runs(runs: list[Run], curves_dir: Path) -> dict[str, Curves]:
    """One loss-curve PNG per run with TensorBoard events; returns each run's curves by run name.

    PNGs of runs no longer present are removed: a stale curve would describe a run the table lacks.
    """
    curves_dir.mkdir(parents=True, exist_ok=True)
    all_curves, written = {}, set()
    for run in runs:
        name = run.record.run_name
        curves = loss_curves(RunFolder(run.dir).tb)
        if not curves:
            log.warning("no loss curves in %s", RunFolder(run.dir).tb)
            continue
        all_curves[name] = curves
        fig = _run_figure(run, curves)
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
    fig.suptitle("Cross-entropy per seed: solid = training, dashed = validation", fontsize=10)
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
                _draw_curves(ax, curves[record.run_name], color=f"C{i}", seed=f"s{record.seed}")
            extra = "" if kind != "KD" else f" a={row.setting[0]:g} T={row.setting[1]:g}"
            ax.set_title(f"{row.model.replace(' (teacher)', '')} {kind}{extra}", fontsize=9)
            ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_depth_comparison(rows: list[Row], curves: dict[str, Curves], path: Path) -> bool:
    """Per student network, validation loss and accuracy over epochs, baseline vs plain KD at the chosen setting:
    the mean over seeds with a min-max band, so a gain can be told from the seed spread epoch by epoch."""
    drawn = [(row, comparison_bands(row, curves)) for row in rows if row.role == "student"]
    drawn = [(row, bands) for row, bands in drawn if bands]
    if not drawn:
        return False
    fig, axes = plt.subplots(len(drawn), 2, figsize=(9, 2.7 * len(drawn)), squeeze=False, layout="constrained")
    fig.suptitle("Validation curves: line = mean over seeds, band = min-max over seeds", fontsize=10)
    for ax_row, (row, bands) in zip(axes, drawn):
        for ax, (tag, ylabel, _) in zip(ax_row, COMPARED):
            for arm, color in (("baseline", "C0"), ("KD", "C1")):
                band: Band | None = bands.get(tag, {}).get(arm)
                if band is None:
                    continue
                setting = f" a={row.setting[0]:g} T={row.setting[1]:g}" if arm == "KD" else ""
                ax.plot(band.epochs, band.mean, color=color, lw=1.5, label=f"{arm}{setting} (n={band.n})")
                ax.fill_between(band.epochs, band.low, band.high, color=color, alpha=0.25, lw=0)
            (_loss_axis if tag.endswith("loss") else _epochs_axis)(ax, ylabel)
            ax.set_title(f"{row.model}: {ylabel}", fontsize=9)
            if ax.has_data():
                ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_accuracy_vs_depth(rows: list[Row], path: Path) -> bool:
    """Baseline and KD test accuracy per student depth (seed std as error bars), the study's beside them.

    One line per family (width, reading, variant): a line never joins a 'stages' row to a blocks row.
    """
    students = [r for r in rows if r.role == "student"]
    if not students:
        return False
    families = sorted({r.family for r in students}, key=lambda f: (f != "", f))  # the default network's line first
    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    for attr, label, color in (("base", "baseline", "C0"), ("kd", "KD", "C1")):
        for i, family in enumerate(families):
            pts = [(r.depth, getattr(r, attr)) for r in students if r.family == family and getattr(r, attr).n]
            if pts:
                ax.errorbar(
                    [d for d, _ in pts],
                    [s.mean for _, s in pts],
                    yerr=[s.std or 0.0 for _, s in pts],
                    marker="o^sDv"[i % 5],
                    ls="-" if i == 0 else (0, (5, 2 + i)),
                    capsize=4,
                    color=color,
                    label=f"{label}{family} (ours)",
                )
        study = sorted({(r.depth, r.study[0 if attr == "base" else 1]) for r in students})
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


def plot_sweep(rows: list[Row], path: Path) -> bool:
    """alpha x T heatmap of mean validation accuracy (plain KD) for every student network with several settings."""
    swept = {row.model: kd_settings(row.plain_kd) for row in rows if len(kd_settings(row.plain_kd)) > 1}
    if not swept:
        return False
    fig, axes = plt.subplots(1, len(swept), figsize=(4.2 * len(swept), 3.6), squeeze=False, layout="constrained")
    for ax, (model, settings) in zip(axes[0], swept.items()):
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
        ax.set_title(f"{model}: val acc %", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    save_figure(fig, path)
    return True
