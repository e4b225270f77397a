"""The study's table and figures, regenerated from run folders: `python -m kd_lightning.report [RUNS_DIR]`.

RUNS_DIR (default outputs/runs) holds one folder per run with metrics.json and tb/ (a paths.root
folder that contains runs/ is accepted too). The report goes next to the runs it describes, into
RUNS_DIR/../report/ (outputs/report/, outputs/mini/report/, ...; --out DIR to choose), and is
rewritten whole each time:

- results.md and results.csv: test accuracy (%) of the teacher, then of each student depth without
  and with distillation, mean ± sample std over seeds with n; the KD delta; the paired KD-minus-
  baseline difference over the seeds both have (is the gain larger than the seed spread?); the
  teacher-student test agreement; the study's own numbers beside ours; and, when several alpha/T
  settings were run, the best one per depth on validation accuracy. Missing cells are "-" in
  results.md and empty in results.csv.
- curves/<run>.png (train and val loss per epoch of each run) and curves_overview.png.
- accuracy_vs_depth.png (baseline and KD with seed std as error bars) and, when a sweep exists,
  kd_sweep_val_acc.png (alpha x T heatmap of mean validation accuracy per depth).

Models are chosen on validation accuracy only: the KD column uses the runs at alpha/T given by
--alpha/--temperature (the config default), or with --kd-select val the setting of best mean
validation accuracy per depth. Test accuracy is reported, never used to choose.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kd_lightning.config import KDConfig  # noqa: E402

log = logging.getLogger(__name__)

# the study's test accuracy (%): depth -> (baseline, KD); its teacher is a ResNet-10
STUDY = {10: (90, None), 3: (64, 67), 4: (70, 76), 5: (82, 84), 6: (87, 87)}
STUDY_TEACHER_DEPTH = 10
DATA_NAMES = {
    "torchvision": "CIFAR-10 (torchvision)",
    "folder": "CIFAR-10, image-folder copy at {root}",
    "synthetic": "synthetic class patterns (not CIFAR-10)",
}


# ----------------------------------------------------------------------------- runs and statistics


def load_runs(runs_dir: Path) -> list[dict]:
    """Every finished run under runs_dir (its metrics.json plus `dir`); unreadable files are skipped with a warning."""
    runs = []
    for path in sorted(runs_dir.glob("*/metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            log.warning("skipping %s: %s", path, err)
            continue
        m["dir"] = path.parent
        runs.append(m)
    return runs


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
        if not self.values:
            return "-"
        text = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        return text + (f" ± {self.std:.2f}" if self.std is not None else "") + f" (n={self.n})"


def pct(runs: list[dict], key: str) -> Stat:
    return Stat([100 * r[key] for r in runs if r.get(key) is not None])


def paired_difference(kd: list[dict], base: list[dict]) -> Stat:
    """KD minus baseline test accuracy of the same seed, over the seeds both have."""
    by_seed = {r["seed"]: r["test_acc"] for r in base}
    return Stat(
        [
            100 * (r["test_acc"] - by_seed[r["seed"]])
            for r in sorted(kd, key=lambda r: r["seed"])
            if r["seed"] in by_seed
        ]
    )


def kd_settings(kd_runs: list[dict]) -> dict[tuple[float, float], list[dict]]:
    groups: dict[tuple[float, float], list[dict]] = defaultdict(list)
    for r in kd_runs:
        groups[(float(r["alpha"]), float(r["temperature"]))].append(r)
    return dict(sorted(groups.items()))


def best_on_validation(settings: dict[tuple[float, float], list[dict]]) -> tuple[float, float]:
    """The (alpha, T) of highest mean best_val_acc; ties go to more seeds, then the smaller alpha and T."""
    return max(settings, key=lambda s: (pct(settings[s], "best_val_acc").mean, len(settings[s]), -s[0], -s[1]))


# ----------------------------------------------------------------------------- the table


@dataclass
class Row:
    model: str
    role: str  # teacher | student
    depth: int
    width: int
    base: Stat
    kd: Stat = field(default_factory=Stat)
    paired: Stat = field(default_factory=Stat)
    agreement: Stat = field(default_factory=Stat)
    setting: tuple[float, float] | None = None
    base_runs: list[dict] = field(default_factory=list)
    kd_runs: list[dict] = field(default_factory=list)

    @property
    def delta(self) -> float | None:
        return self.kd.mean - self.base.mean if self.kd.n and self.base.n else None

    @property
    def study(self) -> tuple[int | None, int | None]:
        if self.role == "teacher":
            return (STUDY[10][0], None) if self.depth == STUDY_TEACHER_DEPTH else (None, None)
        return STUDY.get(self.depth, (None, None)) if self.depth != STUDY_TEACHER_DEPTH else (None, None)


def build_rows(runs: list[dict], alpha: float, temperature: float, select: str) -> list[Row]:
    """Teacher rows first, then one row per student (depth, width)."""
    by = defaultdict(list)
    for r in runs:
        by[(r["mode"], r["depth"], r["width"])].append(r)
    widths = {r["width"] for r in runs}

    def label(d: int, w: int) -> str:
        return f"ResNet-{d}" + (f" w{w}" if len(widths) > 1 else "")

    rows = [
        Row(label(d, w) + " (teacher)", "teacher", d, w, pct(rs, "test_acc"), base_runs=rs)
        for (mode, d, w), rs in sorted(by.items())
        if mode == "teacher"
    ]
    students = sorted({(d, w) for (mode, d, w) in by if mode != "teacher"})
    for d, w in students:
        base = by.get(("baseline", d, w), [])
        row = Row(label(d, w), "student", d, w, pct(base, "test_acc"), base_runs=base)
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


def num(x: float | int | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


MD_HEADER = [
    "Model",
    "Baseline test acc %",
    "KD test acc % (delta)",
    "KD - baseline, paired by seed %",
    "Teacher agreement %",
    "KD alpha / T",
    "Study baseline %",
    "Study KD % (delta)",
]


def md_row(row: Row) -> list[str]:
    kd = row.kd.cell() + (f" ({row.delta:+.2f})" if row.delta is not None else "")
    sb, sk = row.study
    study_kd = "-" if sk is None else f"{sk} ({sk - sb:+d})"
    setting = "-" if row.setting is None else f"{row.setting[0]:g} / {row.setting[1]:g}"
    return [
        row.model,
        row.base.cell(),
        kd,
        row.paired.cell(signed=True),
        row.agreement.cell(),
        setting,
        num(sb, "{}"),
        study_kd,
    ]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def describe(runs: list[dict]) -> list[str]:
    """Lines naming the data, widths, epochs and seeds the runs used."""
    sources = sorted(
        {(r["data_source"], r.get("data_root", ""), r.get("n_train"), r.get("n_val"), r.get("n_test")) for r in runs},
        key=str,
    )
    lines = []
    for src, root, n_tr, n_val, n_te in sources:
        name = DATA_NAMES.get(src, src).format(root=root)
        lines.append(f"- Data: {name}; {n_tr} train / {n_val} validation / {n_te} test images")
    if len(sources) > 1:
        lines.append("- Warning: these runs mix data settings; compare rows with care")
    for role, modes in (("teacher", {"teacher"}), ("students", {"baseline", "kd"})):
        eps = sorted({r.get("max_epochs") for r in runs if r["mode"] in modes} - {None})
        if eps:
            lines.append(f"- Epochs ({role}): {', '.join(map(str, eps))}")
    lines.append(f"- Base widths: {', '.join(str(w) for w in sorted({r['width'] for r in runs}))}")
    lines.append(f"- Seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in runs}))}")
    return lines


def sweep_table(rows: list[Row], runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per student: the alpha/T of best mean validation accuracy and what it scored."""
    header = [
        "Model",
        "Best alpha",
        "Best T",
        "Val acc %",
        "Test acc %",
        "KD - baseline, paired by seed %",
        "Settings tried",
    ]
    out = []
    for row in rows:
        kd = [r for r in runs if r["mode"] == "kd" and (r["depth"], r["width"]) == (row.depth, row.width)]
        if row.role != "student" or not kd:
            continue
        settings = kd_settings(kd)
        a, t = best_on_validation(settings)
        best = settings[(a, t)]
        out.append(
            [
                row.model,
                f"{a:g}",
                f"{t:g}",
                pct(best, "best_val_acc").cell(),
                pct(best, "test_acc").cell(),
                paired_difference(best, row.base_runs).cell(signed=True),
                str(len(settings)),
            ]
        )
    return header, out


def render_markdown(rows: list[Row], runs: list[dict], select: str, alpha: float, temperature: float) -> str:
    how = (
        f"alpha={alpha:g}, T={temperature:g} (or a depth's only setting)"
        if select == "default"
        else "per depth, the alpha/T of best mean validation accuracy"
    )
    parts = [
        "# Results\n",
        "Test accuracy (%), mean ± sample std over seeds (n = seeds). delta = KD mean - baseline mean; the paired "
        "column is KD minus baseline of the same seed. Checkpoints and KD settings are chosen on validation "
        "accuracy only; test accuracy is reported, never used to choose.\n",
        "\n".join(
            describe(runs)
            + [f"- KD column: {how}", "- Study columns: the study's reported test accuracy at the same depth"]
        )
        + "\n",
        md_table(MD_HEADER, [md_row(r) for r in rows]),
    ]
    header, sweep = sweep_table(rows, runs)
    if any(row[-1] != "1" for row in sweep):  # only when some depth tried several settings
        parts += ["## KD settings chosen on validation accuracy\n", md_table(header, sweep)]
    return "\n".join(parts)


CSV_HEADER = [
    "model",
    "role",
    "depth",
    "width",
    "baseline_mean",
    "baseline_std",
    "baseline_n",
    "kd_mean",
    "kd_std",
    "kd_n",
    "kd_delta",
    "paired_mean",
    "paired_std",
    "paired_n",
    "agreement_mean",
    "agreement_std",
    "kd_alpha",
    "kd_temperature",
    "study_baseline",
    "study_kd",
    "data_source",
]


def render_csv(rows: list[Row], runs: list[dict]) -> str:
    def r4(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    source = ";".join(sorted({r["data_source"] for r in runs}))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for row in rows:
        sb, sk = row.study
        w.writerow(
            [
                row.model,
                row.role,
                row.depth,
                row.width,
                r4(row.base.mean),
                r4(row.base.std),
                row.base.n,
                r4(row.kd.mean),
                r4(row.kd.std),
                row.kd.n,
                r4(row.delta),
                r4(row.paired.mean),
                r4(row.paired.std),
                row.paired.n,
                r4(row.agreement.mean),
                r4(row.agreement.std),
                "" if row.setting is None else f"{row.setting[0]:g}",
                "" if row.setting is None else f"{row.setting[1]:g}",
                "" if sb is None else sb,
                "" if sk is None else sk,
                source,
            ]
        )
    return buf.getvalue()


# ----------------------------------------------------------------------------- figures


def loss_curves(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
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


def _draw_curves(ax: plt.Axes, curves: dict, color: str = "C0", label: str = "") -> None:
    for tag, style in (("train/loss", "-"), ("val/loss", "--")):
        if curves.get(tag):
            x, y = zip(*curves[tag])
            ax.plot(x, y, style, color=color, marker="o", ms=3, label=f"{label}{tag.split('/')[0]}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write the PNG atomically, then free the figure."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def run_title(r: dict) -> str:
    kd = f" a={r['alpha']:g} T={r['temperature']:g}" if r["mode"] == "kd" else ""
    return f"{r['mode']} ResNet-{r['depth']}{kd} s{r['seed']}: test {100 * r['test_acc']:.1f}%"


def plot_runs(runs: list[dict], curves_dir: Path) -> dict[str, dict]:
    """One loss-curve PNG per run with TensorBoard events; returns each run's curves by run name."""
    curves_dir.mkdir(parents=True, exist_ok=True)
    all_curves, written = {}, set()
    for r in runs:
        curves = loss_curves(Path(r["dir"]) / "tb")
        if not curves:
            log.warning("no loss curves in %s", Path(r["dir"]) / "tb")
            continue
        all_curves[r["run_name"]] = curves
        fig, ax = plt.subplots(figsize=(5, 3.5))
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.9)  # fixed margins: no layout pass per run
        _draw_curves(ax, curves)
        ax.set_title(run_title(r), fontsize=9)
        ax.legend()
        save_figure(fig, curves_dir / f"{r['run_name']}.png")
        written.add(f"{r['run_name']}.png")
    for stale in curves_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    return all_curves


def plot_overview(rows: list[Row], curves: dict[str, dict], path: Path) -> bool:
    """Grid of loss curves: a row per model, baseline (or teacher) left, KD right; every seed drawn."""
    if not curves:
        return False
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 2.6 * len(rows)), squeeze=False, layout="constrained")
    for ax_row, row in zip(axes, rows):
        for ax, runs, kind in (
            (ax_row[0], row.base_runs, row.role if row.role == "teacher" else "baseline"),
            (ax_row[1], row.kd_runs, "KD"),
        ):
            drawn = [r for r in sorted(runs, key=lambda r: r["seed"]) if r["run_name"] in curves]
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
            for i, r in enumerate(drawn):
                _draw_curves(ax, curves[r["run_name"]], color=f"C{i}", label=f"s{r['seed']} ")
            extra = "" if kind != "KD" else f" a={row.setting[0]:g} T={row.setting[1]:g}"
            ax.set_title(f"{row.model.replace(' (teacher)', '')} {kind}{extra}", fontsize=9)
            ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_accuracy_vs_depth(rows: list[Row], path: Path) -> bool:
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


def plot_sweep(runs: list[dict], path: Path) -> bool:
    """alpha x T heatmap of mean validation accuracy for every student with more than one KD setting."""
    groups = defaultdict(list)
    for r in runs:
        if r["mode"] == "kd":
            groups[(r["depth"], r["width"])].append(r)
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


# ----------------------------------------------------------------------------- entry point


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_report(
    runs_dir: Path,
    out_dir: Path | None = None,
    select: str = "default",
    alpha: float = KDConfig.alpha,
    temperature: float = KDConfig.temperature,
    figures: bool = True,
) -> tuple[str, Path]:
    """Write the report for runs_dir; return results.md's text and the report folder.

    Raises FileNotFoundError when runs_dir holds no finished run.
    """
    runs_dir = Path(runs_dir)
    if (runs_dir / "runs").is_dir() and not any(runs_dir.glob("*/metrics.json")):
        runs_dir = runs_dir / "runs"  # given paths.root instead of its runs/ folder
    runs = load_runs(runs_dir)
    if not runs:
        raise FileNotFoundError(
            f"no finished runs (*/metrics.json) under {runs_dir}; train some first (make reproduce)"
        )
    out_dir = Path(out_dir) if out_dir is not None else runs_dir.resolve().parent / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(runs, float(alpha), float(temperature), select)
    text = render_markdown(rows, runs, select, alpha, temperature)
    write_text(out_dir / "results.md", text)
    write_text(out_dir / "results.csv", render_csv(rows, runs))
    if not figures:
        return text, out_dir
    curves = plot_runs(runs, out_dir / "curves")
    for name, made in (
        ("curves_overview.png", plot_overview(rows, curves, out_dir / "curves_overview.png")),
        ("accuracy_vs_depth.png", plot_accuracy_vs_depth(rows, out_dir / "accuracy_vs_depth.png")),
        ("kd_sweep_val_acc.png", plot_sweep(runs, out_dir / "kd_sweep_val_acc.png")),
    ):
        if not made:
            (out_dir / name).unlink(missing_ok=True)  # a figure from an older set of runs would mislead
    return text, out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_lightning.report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "runs_dir", nargs="?", default="outputs/runs", help="folder of run folders (default outputs/runs)"
    )
    parser.add_argument("--out", default=None, help="report folder (default RUNS_DIR/../report)")
    parser.add_argument(
        "--kd-select",
        choices=("default", "val"),
        default="default",
        help="KD column: runs at --alpha/--temperature, or the best setting on validation per depth",
    )
    parser.add_argument("--alpha", type=float, default=KDConfig.alpha)
    parser.add_argument("--temperature", type=float, default=KDConfig.temperature)
    parser.add_argument("--no-figures", action="store_true", help="write the tables only (figures stay as they are)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    try:
        text, out_dir = make_report(
            Path(args.runs_dir), args.out, args.kd_select, args.alpha, args.temperature, figures=not args.no_figures
        )
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"report written to {out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
