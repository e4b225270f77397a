"""The speed targets of issue 12, judged from a GPU study's bench.json and timings.json.

Every row of the issue's table, with what was measured, its target and one of met / not met / not
measured: `scripts/gpu_study.sh` prints them at its end (through `python -m kd_lightning.study.timings`),
and timings.json keeps them. A CPU dry run shows its figures but measures no GPU target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"

# the H100 run at commit 36ed2f9 (results/h100-2026-11-28/timings.txt): the 8 students of seed 0 side by side
PUBLISHED_STUDENT_RATES_SUM = 128_893  # the sum of their per-run img/s, the "~130k"
PUBLISHED_STUDENT_AGGREGATE = 8 * 30 * 40_000 / 116.5  # all their images over their wall span: 82.4k img/s
STUDENTS_PER_SEED = 8  # baseline and KD at depths 3-6


@dataclass
class Row:
    figure: str
    measured: str
    target: str
    status: str


def _status(value: float | None, ok: bool, dry_run: bool) -> str:
    if value is None:
        return NOT_MEASURED
    if dry_run:
        return f"{NOT_MEASURED} (CPU dry run)"
    return MET if ok else NOT_MET


def _get(d: dict, *keys: str) -> Any:
    for key in keys:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k"


# rows 1-4: (figure, keys in bench.json, format, target, whether a value meets it)
BENCH_ROWS = (
    ("Lightning step vs plain PyTorch loop, ResNet-4", ("trainer", "resnet4", "ratio"), "{:.2f}x", ">= 0.95x",
     lambda v: v >= 0.95),
    ("Lightning step vs plain PyTorch loop, ResNet-10", ("trainer", "resnet10", "ratio"), "{:.2f}x", ">= 0.95x",
     lambda v: v >= 0.95),
    ("KD step vs (baseline step + 1.1 x teacher forward)", ("kd", "ratio"), "{:.2f}", "<= 1.0", lambda v: v <= 1.0),
    ("One epoch, ours vs the naive Lightning + torchvision script", ("epoch", "speedup"), "{:.2f}x", ">= 5x",
     lambda v: v >= 5),
)  # fmt: skip


def bench_rows(bench: dict, dry_run: bool) -> list[Row]:
    """Rows 1-4: the step and epoch comparisons of the benchmark."""
    rows = []
    for figure, keys, fmt, target, meets in BENCH_ROWS:
        v = _get(bench, *keys)
        measured = "-" if v is None else fmt.format(v)
        rows.append(
            Row(figure=figure, measured=measured, target=target, status=_status(v, v is not None and meets(v), dry_run))
        )
    return rows


def study_rows(bench: dict, timings: dict) -> list[Row]:
    """Rows 5-8: the teacher's whole-run rate, the students side by side, one seed, three seeds."""
    dry = timings.get("dry_run", False)
    teacher = timings.get("teacher_train_images_per_second")
    step = _get(bench, "trainer", "resnet10", "lightning_img_s")
    share = teacher / step if teacher and step else None
    measured = "-" if share is None else f"{_k(teacher)} vs {_k(step)} img/s ({100 * share:.0f}%)"
    status = _status(share, (share or 0) >= 0.9, dry)
    rows = [Row(figure="Teacher's whole-run rate vs its step rate", measured=measured, target=">= 90%", status=status)]

    s = timings.get("students") or {}
    agg, rates = s.get("images_per_second"), s.get("sum_of_rates")
    measured = "-" if agg is None else f"{_k(agg)} img/s ({s['runs']} runs, {s['span_s']} s; sum of rates {_k(rates)})"
    target = f">= {_k(2 * PUBLISHED_STUDENT_AGGREGATE)} (2x {_k(PUBLISHED_STUDENT_AGGREGATE)}; sum of rates 2x 130k)"
    ok = agg is not None and agg >= 2 * PUBLISHED_STUDENT_AGGREGATE and rates >= 2 * PUBLISHED_STUDENT_RATES_SUM
    figure = "Students side by side on the one GPU, all runs together"
    rows.append(Row(figure=figure, measured=measured, target=target, status=_status(agg, ok, dry)))

    seeds, planned = timings.get("per_seed") or {}, timings.get("planned_runs_per_seed", 1 + STUDENTS_PER_SEED)
    first = seeds.get(str(timings["seeds"][0])) if timings.get("seeds") else None
    whole = None
    if len(seeds) == 3:
        whole = {
            "span_s": timings.get("study_s"),
            "finished": sum(v["finished"] for v in seeds.values()),
            "failed": sum(v["failed"] for v in seeds.values()),
        }
    for row in (
        _span_row(
            "One seed of the study (teacher, then 8 students)", part=first, limit=60, runs=planned, timings=timings
        ),
        _span_row("Three seeds (27 runs) in one command", part=whole, limit=150, runs=3 * planned, timings=timings),
    ):
        if planned != 1 + STUDENTS_PER_SEED:
            row.status = f"{NOT_MEASURED} ({planned} runs per seed, not {1 + STUDENTS_PER_SEED})"
        rows.append(row)
    if whole is None:
        rows[-1].status = f"{NOT_MEASURED} (SEEDS={' '.join(map(str, timings.get('seeds', [])))})"
    if timings.get("cut_by_deadline"):
        for r in rows[-2:]:
            r.measured += " [runs stopped at the deadline]"
    return rows


def _span_row(figure: str, *, part: dict | None, limit: float, runs: int, timings: dict) -> Row:
    """A seed's (or the study's) span against its limit; unfinished spans are judged only when already too long."""
    row = Row(figure=figure, measured="-", target=f"<= {limit} s", status=NOT_MEASURED)
    if part is None:
        return row
    span, finished, failed = part["span_s"], part["finished"], part["failed"]
    row.measured = f"{span} s ({finished} of {runs} runs finished)"
    if timings.get("dry_run"):
        row.status = f"{NOT_MEASURED} (CPU dry run)"
    elif finished == runs and not failed:
        row.status = MET if span <= limit else NOT_MET
    elif span > limit or timings.get("cut_by_deadline"):  # unfinished, and already over the limit or stopped
        row.status = NOT_MET
    else:
        row.status = f"{NOT_MEASURED} ({failed} runs failed)"
    return row


def target_rows(bench: dict, timings: dict) -> list[dict]:
    """Every row of the issue's table, as JSON-ready dicts."""
    rows = bench_rows(bench, timings.get("dry_run", False)) + study_rows(bench, timings)
    return [asdict(r) for r in rows]


def render(rows: list[dict]) -> str:
    """The rows as a fixed-width table."""
    head = {"figure": "figure", "measured": "measured", "target": "target", "status": "met?"}
    table = [head, *rows]
    widths = {k: max(len(str(r[k])) for r in table) for k in head}
    return "".join("  ".join(str(r[k]).ljust(widths[k]) for k in head).rstrip() + "\n" for r in table)
