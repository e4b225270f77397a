"""The results as the fixed-width text table the CLI prints (and scripts/gpu_study.sh keeps as bench.txt)."""

from __future__ import annotations

from kd_lightning.bench.harness import TARGETS


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _met(m: bool | None) -> str:
    return "-" if m is None else ("yes" if m else "NO")


def _at_least(target: float | None) -> str:
    return "-" if target is None else f">= {target:g}x"


def table(r: dict) -> str:
    """One comparison per line: ours, the alternative, their ratio, the target and whether it is met."""
    p, k, e = r["pipeline"], r["kd"], r["epoch"]
    rows = [("comparison", "ours", "alternative", "ratio", "target", "met")]
    cells = _fmt(p["ours_img_s"]), _fmt(p["torchvision_img_s"]), f"{p['ratio']:.1f}x"
    rows.append(("1 data pipeline, img/s (vs torchvision)", *cells, _at_least(p["target"]), _met(p["met"])))
    for name, t in r["trainer"].items():
        cells = _fmt(t["lightning_img_s"]), _fmt(t["plain_img_s"]), f"{t['ratio']:.3f}x"
        rows.append((f"2 Lightning vs plain loop {name}, img/s", *cells, _at_least(t["target"]), _met(t["met"])))
    cells = _fmt(k["kd_ms"]), _fmt(k["bound_ms"]), f"{k['ratio']:.3f}x"
    rows.append((f"3 KD step vs baseline + {TARGETS['kd_slack']:g} teacher fwd, ms", *cells, "<= 1x", _met(k["met"])))
    parts = f"  (baseline step {_fmt(k['baseline_ms'])} ms, teacher forward {_fmt(k['teacher_forward_ms'])} ms)"
    rows.append((parts, "", "", "", "", ""))
    label = f"4 one epoch ResNet-{e['depth']}, s (vs naive Lightning)"
    cells = f"{e['ours_s']:.2f}", f"{e['naive_s']:.2f}", f"{e['speedup']:.2f}x"
    rows.append((label, *cells, _at_least(e["target"]), _met(e["met"])))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    )
