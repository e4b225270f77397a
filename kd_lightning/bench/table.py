"""The results as the fixed-width text table the CLI prints (and scripts/gpu_study.sh keeps as bench.txt).

Each figure that has a speed target (kd_lightning/study/speed_targets.yaml) shows the target and whether it is met.
"""

from __future__ import annotations

from kd_lightning.report.tables import text_table
from kd_lightning.study.speed_targets import check

Line = tuple[str, ...]  # six cells, or one: a note printed whole


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _note(text: str) -> Line:
    return (text,)


def _step_rows(r: dict, gpu: bool) -> list[Line]:
    """Comparisons 1-4, those that ran."""
    rows: list[Line] = []
    if p := r.get("pipeline"):
        cells = _fmt(p["ours_img_s"]), _fmt(p["torchvision_img_s"]), f"{p['ratio']:.1f}x"
        rows.append(("1 data pipeline, img/s (vs torchvision)", *cells, *check("pipeline.ratio", p["ratio"], gpu=gpu)))
    for name, t in r.get("trainer", {}).items():
        cells = _fmt(t["lightning_img_s"]), _fmt(t["plain_img_s"]), f"{t['ratio']:.3f}x"
        judged = check(f"trainer.{name}.ratio", t["ratio"], gpu=gpu)
        rows.append((f"2 Lightning vs plain loop {name}, img/s", *cells, *judged))
    if k := r.get("kd"):
        cells = _fmt(k["kd_ms"]), _fmt(k["baseline_ms"]), f"+{k['teacher_forwards']:.2f} fwd"
        judged = check("kd.teacher_forwards", k["teacher_forwards"], gpu=gpu)
        rows.append(("3 KD step vs baseline step (in teacher forwards), ms", *cells, *judged))
        rows.append(_note(f"  (teacher forward {_fmt(k['teacher_forward_ms'])} ms)"))
    if e := r.get("epoch"):
        label = f"4 one epoch ResNet-{e['depth']}, s (vs naive Lightning)"
        cells = f"{e['ours_s']:.2f}", f"{e['naive_s']:.2f}", f"{e['speedup']:.2f}x"
        rows.append((label, *cells, *check("epoch.speedup", e["speedup"], gpu=gpu)))
    return rows


def _run_rows(r: dict) -> list[Line]:
    """Comparisons 5-7, when they ran."""
    rows: list[Line] = []
    if m := r.get("many"):
        side = m["mps"] or m["side_by_side"]
        label = f"5 {m['runs']} runs side by side{' (MPS)' if m['mps'] else ''} vs in turn, wall s"
        rows.append(
            (label, f"{side['wall_s']:.1f}", f"{m['sequential']['wall_s']:.1f}", f"{m['wall_speedup']:.2f}x", "-", "-")
        )
        rates = [
            f"in turn {_fmt(m['sequential']['train_img_s'])}",
            f"side by side {_fmt(m['side_by_side']['train_img_s'])}",
        ]
        if m["mps"]:
            rates.append(f"MPS {_fmt(m['mps']['train_img_s'])}")
        rows.append(_note(f"  (training img/s together: {', '.join(rates)}; {m['mps_note']})"))
    if c := r.get("checkpoint"):
        cells = f"{c['async_wait_ms']:.1f}", f"{c['sync_ms']:.1f}", f"{c['sync_ms'] / c['async_wait_ms']:.1f}x"
        rows.append(("6 checkpoint, ms the step waits (async vs in place)", *cells, "-", "-"))
        landed = f"async writes landed after {c['async_all_landed_ms']:.0f} ms each"
        rows.append(_note(f"  ({c['weights_mb']:.0f} MB of weights; {landed})"))
    if c := r.get("compile"):
        for mode, v in c.items():
            if mode != "eager":
                cells = _fmt(v["img_s"]), _fmt(c["eager"]["img_s"]), f"{v['speedup']:.2f}x"
                rows.append((f"7 compile={mode} ResNet-4 step, img/s (vs eager)", *cells, "-", "-"))
                rows.append(
                    _note(f"  (first step {v['first_step_s']:.1f} s; eager {c['eager']['first_step_s']:.1f} s)")
                )
    return rows


def table(r: dict) -> str:
    """One comparison per line: ours, the alternative, their ratio, the target and whether it is met."""
    gpu = not str(r.get("meta", {}).get("device", "cpu")).startswith("cpu")
    rows: list[Line] = [("comparison", "ours", "alternative", "ratio", "target", "met")]
    rows += _step_rows(r, gpu) + _run_rows(r)
    return text_table(rows, "lrrrrr")
