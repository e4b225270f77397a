"""Wall times of a scripted study: `python -m kd_lightning.study.timings OUT T0 JOBS DRY_RUN --per-seed N`.

`scripts/gpu_study.sh` starts every training process itself and logs one line per finished process
to OUT/logs/runs.tsv (name, exit code, start and stop as Unix seconds). This joins those lines with
each run's record (OUT/study/runs/*/metrics.json) and the benchmark's OUT/bench.json, and writes
OUT/timings.json and OUT/timings.txt: per-run process and training time, images/s, test accuracy,
each seed's span, the students' throughput together, the study's total, each run's time split (from
its log), and the rows of the speed
targets (kd_lightning/targets.py). The script calls it after every stage, so a study cut short
still leaves a summary behind. No torch import: it runs in a second.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from kd_lightning.run.files import write_json, write_text
from kd_lightning.run.record import RunRecord, iter_runs
from kd_lightning.study.targets import STUDENTS_PER_SEED, render, target_rows


def script_name(record: RunRecord) -> str:
    """The name gpu_study.sh gives a run's process: 'teacher-s0', 'baseline-r4-s0', 'kd-r4-s1', and with
    METHODS=1 'rev-r4-s0' (reverse KD), 'dkd-r4-s0' and 'chain-r3-s0' (KD through an assistant)."""
    if record.mode == "teacher":
        return f"teacher-s{record.seed}"
    kind = record.mode
    if record.method == "dkd":
        kind = "dkd"
    elif record.divergence == "reverse":
        kind = "rev"
    elif len(record.lineage or []) > 1:
        kind = "chain"
    return f"{kind}-r{record.depth}-s{record.seed}"


SPLIT = re.compile(
    r"time split: set-up ([\d.]+) s, steps ([\d.]+) s, validation ([\d.]+) s, between epochs ([\d.]+) s"
    r" \(\d+ epochs; first step at ([\d.]+)\)"
)


def time_split(log: Path, start: float) -> dict | None:
    """A run's 'time split' line (callbacks.EpochTimes) from its log: seconds from the process's start to its
    first step, and of set-up in fit, steps, validation and between epochs."""
    found = SPLIT.findall(log.read_text(errors="replace")) if log.exists() else []
    if not found:
        return None
    *parts, first_step = map(float, found[-1])
    split = {"launch_to_first_step_s": round(first_step - start, 1)}
    return split | dict(zip(("setup_s", "steps_s", "validation_s", "between_epochs_s"), parts))


def process_rows(out: Path, t0: float) -> list[dict]:
    """One row per finished process of runs.tsv, joined with its run record (None fields when it has none)."""
    runs_dir = out / "study" / "runs"
    records = {script_name(run.record): run.record for run in iter_runs(runs_dir)} if runs_dir.is_dir() else {}
    tsv = out / "logs" / "runs.tsv"
    rows = []
    for line in tsv.read_text().splitlines() if tsv.exists() else []:
        name, rc, start, stop = line.split("\t")
        r = records.get(name) if int(rc) == 0 else None
        rows.append(
            {
                "run": name,
                "seed": int(name.rsplit("-s", 1)[1]),
                "run_name": r and r.run_name,
                "exit_code": int(rc),
                "start_s": round(float(start) - t0, 1),
                "stop_s": round(float(stop) - t0, 1),
                "process_s": round(float(stop) - float(start), 1),
                "train_s": r and r.wall_seconds,
                "train_images_per_second": r and r.train_images_per_second,
                "images": r and r.epochs * r.n_train,
                "epochs": r and r.epochs,
                "test_acc": r and r.test_acc,
                "device": r and r.device,
                "split": time_split(out / "logs" / f"{name}.log", float(start)),
            }
        )
    return rows


def _span(rows: list[dict]) -> float:
    return round(max(r["stop_s"] for r in rows) - min(r["start_s"] for r in rows), 1) if rows else 0.0


def per_seed(runs: list[dict]) -> dict[str, dict]:
    """Each seed's span (its first start to its last stop), finished and failed runs."""
    out = {}
    for seed in sorted({r["seed"] for r in runs}):
        mine = [r for r in runs if r["seed"] == seed]
        finished = sum(r["exit_code"] == 0 and r["images"] is not None for r in mine)
        out[str(seed)] = {"span_s": _span(mine), "finished": finished, "failed": len(mine) - finished}
    return out


def students(runs: list[dict]) -> dict | None:
    """The finished students together: all their training images over their wall span, and their rates summed."""
    done = [r for r in runs if not r["run"].startswith("teacher") and r["images"] is not None]
    if not done:
        return None
    span = _span(done)
    return {
        "runs": len(done),
        "span_s": span,
        "images": sum(r["images"] for r in done),
        "images_per_second": round(sum(r["images"] for r in done) / max(span, 1e-9), 1),
        "sum_of_rates": round(sum(r["train_images_per_second"] for r in done), 1),
    }


def _device(out: Path, bench: dict, runs: list[dict], dry_run: bool) -> str:
    if dry_run:
        return "cpu (dry run)"
    return bench.get("meta", {}).get("device") or next((r["device"] for r in runs if r["device"]), "unknown device")


def summarise(out: Path, *, t0: float, end: float, jobs: int, dry_run: bool, planned_per_seed: int) -> dict:
    """Write OUT/timings.json and OUT/timings.txt; return the summary."""
    runs = process_rows(out, t0)
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
    mps_state = out / "logs" / "mps" / "state.json"
    seeds = per_seed(runs)
    first_teacher = next((r for r in runs if r["run"].startswith("teacher")), {})
    summary = {
        "device": _device(out, bench, runs, dry_run),
        "dry_run": dry_run,
        "jobs": jobs,
        "seeds": [int(s) for s in seeds],
        "planned_runs_per_seed": planned_per_seed,
        "mps": json.loads(mps_state.read_text())["note"] if mps_state.exists() else "CUDA MPS: not tried",
        "cut_by_deadline": (out / "logs" / "deadline.txt").exists(),
        "total_s": round(end - t0, 1),
        "study_s": _span(runs),
        "teacher_train_images_per_second": first_teacher.get("train_images_per_second"),
        "bench_resnet10_lightning_img_s": bench.get("trainer", {}).get("resnet10", {}).get("lightning_img_s"),
        "bench_epoch_speedup_vs_naive": bench.get("epoch", {}).get("speedup"),
        "per_seed": seeds,
        "students": students(runs),
        "runs": runs,
    }
    summary["targets"] = target_rows(bench, summary)
    write_json(out / "timings.json", summary)
    write_text(out / "timings.txt", render_runs(summary) + "\n" + render(summary["targets"]))
    return summary


def _cell(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render_runs(summary: dict) -> str:
    """The header line (card, totals, MPS) and one line per run."""
    runs = summary["runs"]
    lines = [
        f"{summary['device']}: total {summary['total_s']} s, study ({len(runs)} runs) {summary['study_s']} s, "
        f"{summary['jobs']} at a time, seeds {' '.join(map(str, summary['seeds']))}; teacher "
        f"{_cell(summary['teacher_train_images_per_second'], ',.0f')} img/s (its whole run, validation included)",
        f"{summary['mps']}" + ("; runs stopped at the deadline" if summary["cut_by_deadline"] else ""),
        f"{'run':15s} {'exit':>4s} {'start s':>8s} {'process s':>9s} {'train s':>8s} {'img/s':>9s} {'test acc':>8s}",
    ]
    for r in runs:
        acc = r["test_acc"] and 100 * r["test_acc"]
        lines.append(
            f"{r['run']:15s} {r['exit_code']:4d} {r['start_s']:8.1f} {r['process_s']:9.1f} "
            f"{_cell(r['train_s'], '8.1f')} {_cell(r['train_images_per_second'], '9,.0f')} {_cell(acc, '8.2f')}"
        )
    for r in runs:
        if r["run"].startswith("teacher") and r["split"]:
            parts = ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f} s" for k, v in r["split"].items())
            lines.append(f"{r['run']} time split: {parts}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kd_lightning.study.timings", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the study's output folder (holds logs/runs.tsv and study/runs)")
    parser.add_argument("t0", type=float, help="Unix seconds when the script started")
    parser.add_argument("jobs", type=int, help="training processes run at once")
    parser.add_argument("dry_run", type=int, choices=(0, 1))
    parser.add_argument("--per-seed", type=int, default=1 + STUDENTS_PER_SEED, help="runs planned per seed")
    parser.add_argument("--quiet", action="store_true", help="write the files, print nothing")
    args = parser.parse_args(argv)
    summary = summarise(
        args.out,
        t0=args.t0,
        end=time.time(),
        jobs=args.jobs,
        dry_run=bool(args.dry_run),
        planned_per_seed=args.per_seed,
    )
    if not args.quiet:
        print(render_runs(summary) + "\n" + render(summary["targets"]), end="")


if __name__ == "__main__":
    main()
