"""Wall times of a scripted study: `python -m kd_lightning.timings OUT T0 STUDY_END END JOBS DRY_RUN`.

`scripts/gpu_study.sh` starts every training process itself and logs one line per process to
OUT/logs/runs.tsv (name, exit code, start and stop as Unix seconds). This joins those lines with
each run's record (OUT/study/runs/*/metrics.json) and the benchmark's OUT/bench.json, and writes
OUT/timings.json and OUT/timings.txt: per-run process and training time, images/s, test accuracy,
and the study's total.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kd_lightning.runs import RunRecord, iter_runs, write_json, write_text


def script_name(record: RunRecord) -> str:
    """The name gpu_study.sh gives a run's process: 'teacher', 'baseline-r4', 'kd-r4'."""
    return "teacher" if record.mode == "teacher" else f"{record.mode}-r{record.depth}"


def process_rows(out: Path, t0: float) -> list[dict]:
    records = {script_name(run.record): run.record for run in iter_runs(out / "study" / "runs")}
    rows = []
    for line in (out / "logs" / "runs.tsv").read_text().splitlines():
        name, rc, start, stop = line.split("\t")
        r = records.get(name)
        rows.append(
            {
                "run": name,
                "run_name": r and r.run_name,
                "exit_code": int(rc),
                "start_s": round(float(start) - t0, 1),
                "process_s": round(float(stop) - float(start), 1),
                "train_s": r and r.wall_seconds,
                "train_images_per_second": r and r.train_images_per_second,
                "epochs": r and r.epochs,
                "test_acc": r and r.test_acc,
            }
        )
    return rows


def _cell(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render(summary: dict) -> str:
    runs = summary["runs"]
    lines = [
        f"{summary['device']}: total {summary['total_s']} s, study ({len(runs)} runs) {summary['study_s']} s, teacher "
        f"{_cell(summary['teacher_train_images_per_second'], ',.0f')} img/s (its whole run, validation included)",
        f"{'run':12s} {'exit':>4s} {'start s':>8s} {'process s':>9s} {'train s':>8s} {'img/s':>9s} {'test acc':>8s}",
    ]
    for r in runs:
        acc = r["test_acc"] and 100 * r["test_acc"]
        lines.append(
            f"{r['run']:12s} {r['exit_code']:4d} {r['start_s']:8.1f} {r['process_s']:9.1f} "
            f"{_cell(r['train_s'], '8.1f')} {_cell(r['train_images_per_second'], '9,.0f')} {_cell(acc, '8.2f')}"
        )
    return "\n".join(lines) + "\n"


def summarise(out: Path, *, t0: float, study_end: float, end: float, jobs: int, dry_run: bool) -> dict:
    """Write OUT/timings.json and OUT/timings.txt; return the summary."""
    runs = process_rows(out, t0)
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
    teacher = next((r for r in runs if r["run"] == "teacher"), {})
    study_start = min((r["start_s"] for r in runs), default=0.0)
    summary = {
        "device": "cpu (dry run)" if dry_run else torch.cuda.get_device_name(0),
        "dry_run": dry_run,
        "jobs": jobs,
        "total_s": round(end - t0, 1),
        "study_s": round(study_end - t0 - study_start, 1),
        "teacher_train_images_per_second": teacher.get("train_images_per_second"),
        "bench_resnet10_lightning_img_s": bench.get("trainer", {}).get("resnet10", {}).get("lightning_img_s"),
        "bench_epoch_speedup_vs_naive": bench.get("epoch", {}).get("speedup"),
        "runs": runs,
    }
    write_json(out / "timings.json", summary)
    write_text(out / "timings.txt", render(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kd_lightning.timings", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the study's output folder (holds logs/runs.tsv and study/runs)")
    parser.add_argument("t0", type=float, help="Unix seconds when the script started")
    parser.add_argument("study_end", type=float, help="Unix seconds when the last training process ended")
    parser.add_argument("end", type=float, help="Unix seconds now")
    parser.add_argument("jobs", type=int, help="training processes run at once")
    parser.add_argument("dry_run", type=int, choices=(0, 1))
    args = parser.parse_args(argv)
    summary = summarise(
        args.out, t0=args.t0, study_end=args.study_end, end=args.end, jobs=args.jobs, dry_run=bool(args.dry_run)
    )
    print(render(summary), end="")


if __name__ == "__main__":
    main()
