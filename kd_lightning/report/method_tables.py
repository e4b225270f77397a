"""The methods table and the calibration tables, as results.md sections and csv files, without matplotlib.

Each appears only when its runs exist (another method than plain KD; a run that measured ECE), so the
report of runs without them (the H100 bundle) is exactly what it was. tables.py puts these sections and
preamble lines into results.md; cli.py writes the csv files and removes them when they no longer apply.
"""

from __future__ import annotations

import csv
import io

from kd_lightning.report.methods import ARMS, METHODS, Defaults, MethodRow, dkd_setting_label, kd_setting_label, others
from kd_lightning.report.stats import Row, Stat, pct, stat
from kd_lightning.report.tables import md_table, r4
from kd_lightning.run.record import Run

OTHER_METHODS = [k for k in METHODS if k != "kd"]  # what the calibration table of the methods adds


def method_notes(mrows: list[MethodRow], defaults: Defaults) -> list[str]:
    """results.md preamble lines that say what the KD column holds and how the methods table chose settings."""
    if not mrows:
        return []
    kd = kd_setting_label(*defaults.kd)
    return [
        "- KD column: plain KD only (forward KL from a teacher run); reverse KD, DKD and KD via an assistant are in "
        "the methods table",
        f"- Methods table: each method at its default setting (reverse KD and KD via an assistant {kd}; DKD "
        f"{dkd_setting_label(defaults.dkd)}) when runs at it exist, else the only setting run, else the setting of "
        "best mean validation accuracy (never test accuracy); plain KD as in the KD column",
    ]


def methods_section(mrows: list[MethodRow]) -> str:
    """'## Methods': test accuracy of each method and its paired difference, then each row's settings and chain."""
    if not mrows:
        return ""
    header = ["Model", "Baseline"]
    for title in METHODS.values():
        header += [title, "Δ (paired)"]
    table = []
    for m in mrows:
        cells = [m.row.model, m.arms["baseline"].acc.cell()]
        for kind in METHODS:
            cells += [m.arms[kind].acc.cell(), m.paired(kind).cell(signed=True)]
        table.append(cells)
    lines = []
    for m in mrows:
        used = [(kind, arm) for kind, arm in m.arms.items() if kind in METHODS and arm.runs]
        if used:
            said = [f"{METHODS[kind]} {arm.setting} ({arm.chosen})" for kind, arm in used]
            chain = m.arms["assistant"].chain
            lines.append(f"- {m.row.model}: " + "; ".join(said) + (f"; chain (lowest seed): {chain}" if chain else ""))
    left = others([m.row for m in mrows])
    if left:
        names = ", ".join(r.record.run_name for r in left)
        lines.append(f"- In no column (reverse KD or DKD via an assistant, or another method): {names}")
    return "\n".join(
        [
            "## Methods\n",
            "Test accuracy (%), mean ± sample std over seeds (n = seeds), of each method at one setting; "
            "Δ (paired) = the method on its left minus the baseline of the same seed, over the seeds both have.\n",
            md_table(header, table),
            "Settings (a = alpha, b = beta, T = temperature) and how each was chosen; an assistant chain is named "
            "from the lineage of its lowest seed:\n",
            "\n".join(lines) + "\n",
        ]
    )


def methods_csv(mrows: list[MethodRow]) -> str:
    """methods.csv: one line per network and method that ran (the baseline too), for reading by code."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["model", "method", "setting", "chosen", "n", "mean", "std", "paired_mean", "paired_std", "paired_n", "chain"]
    )
    for m in mrows:
        for kind, arm in ((kind, arm) for kind, arm in m.arms.items() if arm.runs):
            acc, paired = arm.acc, (m.paired(kind) if kind != "baseline" else Stat())
            numbers = [acc.n, r4(acc.mean), r4(acc.std), r4(paired.mean), r4(paired.std), paired.n]
            w.writerow([m.row.model, kind, arm.setting, arm.chosen, *numbers, arm.chain])
    return buf.getvalue()


def has_calibration(runs: list[Run]) -> bool:
    return any(r.record.test_ece is not None for r in runs)


def calibration(runs: list[Run]) -> tuple[Stat, Stat, Stat]:
    """ECE (%), NLL and teacher agreement (%) of runs, over those that recorded them."""
    return pct(runs, "test_ece"), stat(runs, "test_nll"), pct(runs, "test_agreement")


def calibration_lines(rows: list[Row], mrows: list[MethodRow]) -> list[tuple[str, str, list[Run]]]:
    """(model, method, runs) of every cell the calibration tables show: each row's baseline (or teacher) and KD,
    then the other methods of the methods table; only those with a run that recorded ECE, NLL or agreement."""
    out = []
    for row in rows:
        out.append((row.model, "teacher" if row.role == "teacher" else "baseline", row.base_runs))
        if row.role == "student":
            out.append((row.model, "kd", row.kd_runs))
    out += [(m.row.model, kind, m.arms[kind].runs) for m in mrows for kind in OTHER_METHODS]
    return [line for line in out if any(s.n for s in calibration(line[2]))]


def calibration_section(rows: list[Row], mrows: list[MethodRow], runs: list[Run]) -> str:
    """'## Calibration and agreement (test)': '' when no run measured ECE."""
    if not has_calibration(runs):
        return ""
    main, measured = [], {model for model, _, _ in calibration_lines(rows, [])}
    for row in (row for row in rows if row.model in measured):
        ece, nll, _ = calibration(row.base_runs)
        kd_ece, kd_nll, agreement = calibration(row.kd_runs)
        main.append([row.model, ece.cell(), nll.cell(digits=3), kd_ece.cell(), kd_nll.cell(digits=3), agreement.cell()])
    parts = [
        "## Calibration and agreement (test)\n",
        "ECE: expected calibration error (%, 15 equal-width confidence bins; Guo et al., 2017); NLL: mean negative "
        "log-likelihood of the test labels; teacher agreement: share of test images (%) where the student predicts "
        "its teacher's class. Mean ± sample std over the seeds that recorded them; rows without any (older records) "
        "are left out.\n",
        md_table(
            ["Model", "Baseline ECE %", "Baseline NLL", "KD ECE %", "KD NLL", "KD teacher agreement %"],
            main,
        ),
    ]
    other = [line for line in calibration_lines(rows, mrows) if line[1] in OTHER_METHODS]
    if other:
        cells = []
        for model, kind, rs in other:
            ece, nll, agreement = calibration(rs)
            cells.append([model, ARMS[kind], ece.cell(), nll.cell(digits=3), agreement.cell()])
        parts += [
            "The other methods of the methods table, at the same settings (KD via an assistant agrees with its "
            "assistant):\n",
            md_table(["Model", "Method", "ECE %", "NLL", "Teacher agreement %"], cells),
        ]
    return "\n".join(parts)


def calibration_csv(rows: list[Row], mrows: list[MethodRow]) -> str:
    """calibration.csv: ECE (%), NLL and teacher agreement (%) per network and method, for reading by code."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["model", "method", "n", "ece_mean", "ece_std", "nll_mean", "nll_std", "agreement_mean", "agreement_std"]
    )
    for model, kind, rs in calibration_lines(rows, mrows):
        ece, nll, agreement = calibration(rs)
        means = [r4(x) for x in (ece.mean, ece.std, nll.mean, nll.std, agreement.mean, agreement.std)]
        w.writerow([model, kind, ece.n, *means])
    return buf.getvalue()
