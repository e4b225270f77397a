"""`make_report` and the command line: read the run folders, write the tables, then the figures."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import kd_lightning.report as package
from kd_lightning.config import DKDConfig, KDConfig
from kd_lightning.report import method_tables
from kd_lightning.report.methods import Defaults, method_rows
from kd_lightning.report.stats import Row, build_rows
from kd_lightning.report.tables import render_csv, render_markdown
from kd_lightning.run.files import write_text
from kd_lightning.run.record import Run, iter_runs


def write_figures(rows: list[Row], runs: list[Run], out_dir: Path) -> None:
    """Every PNG of the report; a figure with nothing to show is removed rather than left from older runs.

    matplotlib is imported here, not at the top, so that a report without figures does not load it.
    """
    from kd_lightning.report import figures

    curves = figures.plot_runs(runs, out_dir / "curves")
    for name, made in (
        ("curves_overview.png", figures.plot_overview(rows, curves, out_dir / "curves_overview.png")),
        ("depth_comparison.png", figures.plot_depth_comparison(rows, curves, out_dir / "depth_comparison.png")),
        ("accuracy_vs_depth.png", figures.plot_accuracy_vs_depth(rows, out_dir / "accuracy_vs_depth.png")),
        ("kd_sweep_val_acc.png", figures.plot_sweep(rows, out_dir / "kd_sweep_val_acc.png")),
    ):
        if not made:
            (out_dir / name).unlink(missing_ok=True)  # a figure from an older set of runs would mislead


def write_tables(rows: list[Row], runs: list[Run], out_dir: Path, select: str, kd: tuple[float, float]) -> str:
    """results.md and results.csv, then methods.csv and calibration.csv when their tables are shown (removed when
    not, like a stale figure); returns results.md's text. The DKD default is the config's."""
    defaults = Defaults(kd=kd, dkd=(DKDConfig.alpha, DKDConfig.beta, KDConfig.temperature, DKDConfig.warmup_epochs))
    mrows = method_rows(rows, defaults)
    text = render_markdown(
        rows,
        runs,
        select=select,
        alpha=kd[0],
        temperature=kd[1],
        notes=tuple(method_tables.method_notes(mrows, defaults)),
        sections=(method_tables.methods_section(mrows), method_tables.calibration_section(rows, mrows, runs)),
    )
    write_text(out_dir / "results.md", text)
    write_text(out_dir / "results.csv", render_csv(rows, runs))
    for name, wanted, content in (
        ("methods.csv", bool(mrows), lambda: method_tables.methods_csv(mrows)),
        ("calibration.csv", method_tables.has_calibration(runs), lambda: method_tables.calibration_csv(rows, mrows)),
    ):
        if wanted:
            write_text(out_dir / name, content())
        else:
            (out_dir / name).unlink(missing_ok=True)
    return text


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
    runs = list(iter_runs(runs_dir))
    if not runs:
        raise FileNotFoundError(
            f"no finished runs (*/metrics.json) under {runs_dir}; train some first (make reproduce)"
        )
    out_dir = Path(out_dir) if out_dir is not None else runs_dir.resolve().parent / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(runs, alpha=float(alpha), temperature=float(temperature), select=select)
    text = write_tables(rows, runs, out_dir=out_dir, select=select, kd=(float(alpha), float(temperature)))
    if figures:
        write_figures(rows, runs, out_dir)
    return text, out_dir


def main(argv: list[str] | None = None) -> int:
    """The command line; 0 when the report is written, 2 (one line on stderr) when there are no runs."""
    parser = argparse.ArgumentParser(prog="python -m kd_lightning.report", description=package.__doc__.split("\n")[0])
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
    logging.getLogger(package.__name__).setLevel(logging.INFO)
    try:
        text, out_dir = make_report(
            runs_dir=Path(args.runs_dir),
            out_dir=args.out,
            select=args.kd_select,
            alpha=args.alpha,
            temperature=args.temperature,
            figures=not args.no_figures,
        )
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"report written to {out_dir}/")
    return 0
