"""The wall-time summary of a study run by the pool (`python -m kd_lightning.study summary OUT`).

Joins the pool's state (OUT/logs/runs.json: each process's start, stop and exit code, the plan)
with each run's record (its metrics.json, the time split included) and the benchmark's
OUT/bench.json, and writes OUT/timings.json and OUT/timings.txt: per run its process and training
time, images/s, test accuracy and time split; each seed's span; the students' throughput together;
the study's total; and every speed target's row (speed_targets.py). The pool rewrites it after
every finished run, so a study cut short still leaves a summary behind. No torch import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kd_lightning.run.files import write_json, write_text
from kd_lightning.run.record import RunFolder, RunRecord, RunRecordError, load_record
from kd_lightning.study import speed_targets
from kd_lightning.study.runner import STATE_FILE
from kd_lightning.study.speed_targets import Reading


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _record(run_dir: Path) -> RunRecord | None:
    try:
        return load_record(run_dir) if RunFolder(run_dir).metrics.exists() else None
    except RunRecordError:
        return None


def _row(name: str, stage: str, exit_code: int, start_s: float, stop_s: float, r: RunRecord | None) -> dict:
    return {
        "run": name,
        "stage": stage,
        "run_name": r and r.run_name,
        "exit_code": exit_code,
        "start_s": round(start_s, 1),
        "stop_s": round(stop_s, 1),
        "process_s": round(stop_s - start_s, 1),
        "train_s": r and r.wall_seconds,
        "train_images_per_second": r and r.train_images_per_second,
        "images": r and r.epochs * r.n_train,
        "epochs": r and r.epochs,
        "test_acc": r and r.test_acc,
        "device": r and r.device,
    }


def process_rows(state: dict, t0: float) -> list[dict]:
    """One row per finished process of the pool's state, joined with its run record (None fields without one)."""
    rows = []
    for p in state.get("runs", []):
        r = _record(Path(p["run_dir"])) if p["exit_code"] == 0 else None
        row = _row(p["name"], p["stage"], p["exit_code"], p["start"] - t0, p["stop"] - t0, r) | {"seed": p["seed"]}
        split = r.time_split if r and r.time_split and r.time_split.first_step_at >= p["start"] else None
        row["split"] = split and {  # only when this process trained (a skipped run's split is an older one's)
            "launch_to_first_step_s": round(split.first_step_at - p["start"], 1),
            "setup_s": split.setup_s,
            "steps_s": split.steps_s,
            "validation_s": split.validation_s,
            "between_epochs_s": split.between_epochs_s,
        }
        rows.append(row)
    return rows


def bundle_rows(bundle: Path) -> list[dict]:
    """The rows of a published bundle: its timings.json's processes joined with the run records beside them."""
    rows = []
    for p in read_json(bundle / "timings.json").get("runs", []):
        r = _record(bundle / "runs" / p["run_name"])
        if r is not None:
            stop = p.get("stop_s", p["start_s"] + p["process_s"])
            rows.append(_row(p["run"], r.mode, p["exit_code"], p["start_s"], stop, r) | {"seed": r.seed})
    return rows


def _span(rows: list[dict]) -> float:
    return round(max(r["stop_s"] for r in rows) - min(r["start_s"] for r in rows), 1) if rows else 0.0


def per_seed(rows: list[dict]) -> dict[str, dict]:
    """Each seed's span (its first start to its last stop), finished and failed runs."""
    out = {}
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        finished = sum(r["exit_code"] == 0 and r["images"] is not None for r in mine)
        out[str(seed)] = {"span_s": _span(mine), "finished": finished, "failed": len(mine) - finished}
    return out


def students(rows: list[dict]) -> dict | None:
    """The finished students together: all their training images over their wall span, and their rates summed."""
    done = [r for r in rows if r["stage"] != "teacher" and r["images"] is not None]
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


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k"


def _span_reading(rows: list[dict], planned: int, stopped: str | None) -> Reading:
    """A seed's (or the study's) span; a lower bound while any planned run has not finished."""
    seeds = per_seed(rows).values()
    finished, failed = sum(s["finished"] for s in seeds), sum(s["failed"] for s in seeds)
    if not rows:
        return Reading(None, note="no run finished")
    text = f"{_span(rows)} s ({finished} of {planned} runs finished)" + (
        f" [runs stopped: {stopped}]" if stopped else ""
    )
    note = f"{failed} runs failed" if failed else f"{planned - finished} runs not finished"
    return Reading(_span(rows), text=text, lower_bound=finished < planned, note=note)


def study_readings(rows: list[dict], bench: dict, plan: dict | None, stopped: str | None = None) -> dict[str, Reading]:
    """The study's measures the speed targets name as study.<name>."""
    out: dict[str, Reading] = {}
    teacher = next((r for r in sorted(rows, key=lambda r: r["start_s"]) if r["stage"] == "teacher"), None)
    rate = teacher and teacher["train_images_per_second"]
    step = bench.get("trainer", {}).get("resnet10", {}).get("lightning_img_s")
    share = rate / step if rate and step else None
    text = f"{_k(rate)} vs {_k(step)} img/s ({share:.0%})" if share else ""
    out["study.teacher_share_of_step_rate"] = Reading(share, text=text, note="needs a teacher and the benchmark")
    s = students(rows)
    if s is not None:
        rate, rates = s["images_per_second"], s["sum_of_rates"]
        out["study.students_images_per_second"] = Reading(
            rate, f"{rate:,.0f} img/s ({s['runs']} runs, {s['span_s']} s)"
        )
        out["study.students_sum_of_rates"] = Reading(rates, f"{rates:,.0f} img/s ({s['runs']} runs)")
    if plan is not None:
        seeds = plan["seeds"]
        if not plan["is_study"]:
            why = f"the plan is not the study: stages {','.join(plan['stages'])}, depths {plan['depths']}"
            out["study.one_seed_s"] = out["study.three_seeds_s"] = Reading(None, note=why)
        else:
            first = [r for r in rows if r["seed"] == seeds[0]]
            out["study.one_seed_s"] = _span_reading(first, plan["runs_per_seed"], stopped)
            out["study.three_seeds_s"] = (
                _span_reading(rows, 3 * plan["runs_per_seed"], stopped)
                if len(seeds) == 3
                else Reading(None, note=f"SEEDS={' '.join(map(str, seeds))}")
            )
    return out


def published_readings(bundle: Path) -> dict[str, Reading]:
    """The published bundle's own measures, which `times_published` targets multiply ({} without a bundle)."""
    bench = read_json(bundle / "bench.json")
    return speed_targets.bench_readings(bench) | study_readings(bundle_rows(bundle), bench, None)


def _device(bench: dict, rows: list[dict], dry_run: bool) -> str:
    if dry_run:
        return "cpu (dry run)"
    return bench.get("meta", {}).get("device") or next((r["device"] for r in rows if r["device"]), "unknown device")


def summarise(out: Path, *, t0: float, end: float, dry_run: bool) -> dict:
    """Write OUT/timings.json and OUT/timings.txt from what has finished so far; return the summary."""
    state = read_json(out / STATE_FILE)
    rows = process_rows(state, t0)
    bench = read_json(out / "bench.json")
    mps = read_json(out / "logs" / "mps" / "state.json").get("note", "CUDA MPS: not tried")
    teacher = next((r for r in rows if r["stage"] == "teacher"), {})
    plan = state.get("plan")
    summary = {
        "device": _device(bench, rows, dry_run),
        "dry_run": dry_run,
        "jobs": state.get("jobs"),
        "plan": plan,
        "mps": mps,
        "stopped": state.get("stopped"),
        "not_started": state.get("not_started", {}),
        "total_s": round(end - t0, 1),
        "study_s": _span(rows),
        "teacher_train_images_per_second": teacher.get("train_images_per_second"),
        "per_seed": per_seed(rows),
        "students": students(rows),
        "runs": rows,
    }
    targets_table, bundle = speed_targets.load()
    readings = speed_targets.bench_readings(bench) | study_readings(rows, bench, plan, state.get("stopped"))
    table = speed_targets.rows(readings, published_readings(bundle), dry_run=dry_run)
    summary["targets"] = speed_targets.as_dicts(table)
    write_json(out / "timings.json", summary)
    write_text(out / "timings.txt", render_runs(summary) + "\n" + speed_targets.render(table))
    return summary


def _cell(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render_runs(summary: dict) -> str:
    """The header lines (card, totals, MPS) and one line per run."""
    rows, plan = summary["runs"], summary["plan"] or {}
    stopped = f"; runs stopped: {summary['stopped']}" if summary["stopped"] else ""
    lines = [
        f"{summary['device']}: total {summary['total_s']} s, study ({len(rows)} runs) {summary['study_s']} s, "
        f"{summary['jobs'] or '-'} at a time, seeds {' '.join(map(str, plan.get('seeds', [])))}; teacher "
        f"{_cell(summary['teacher_train_images_per_second'], ',.0f')} img/s (its whole run, validation included)",
        f"{summary['mps']}{stopped}",
        f"{'run':15s} {'exit':>4s} {'start s':>8s} {'process s':>9s} {'train s':>8s} {'img/s':>9s} {'test acc':>8s}",
    ]
    for r in rows:
        acc = r["test_acc"] and 100 * r["test_acc"]
        lines.append(
            f"{r['run']:15s} {r['exit_code']:4d} {r['start_s']:8.1f} {r['process_s']:9.1f} "
            f"{_cell(r['train_s'], '8.1f')} {_cell(r['train_images_per_second'], '9,.0f')} {_cell(acc, '8.2f')}"
        )
    lines += [f"{name:15s} not started: {why}" for name, why in summary["not_started"].items()]
    for r in rows:
        if r["stage"] == "teacher" and r["split"]:
            parts = ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f} s" for k, v in r["split"].items())
            lines.append(f"{r['run']} time split: {parts}")
    return "\n".join(lines) + "\n"
