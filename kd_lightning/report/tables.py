"""results.md and results.csv: the rows of stats.py rendered as text, without matplotlib; and the fixed-width text
tables the benchmark and the study summary print.

Missing cells are "-" in markdown and empty in csv, so a reader can tell "not run" from zero.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from kd_lightning.report.stats import Row, best_on_validation, kd_settings, paired_difference, pct
from kd_lightning.run.record import Run


def text_table(rows: Sequence[Sequence[str]], align: str) -> str:
    """Rows as fixed-width text, columns two spaces apart and padded to their widest cell ('l' or 'r' per
    column in `align`); a row of one cell is a note, printed whole and left out of the widths."""
    cells = [row for row in rows if len(row) > 1]
    widths = [max((len(row[i]) for row in cells), default=0) for i in range(len(align))]
    lines = []
    for row in rows:
        padded = (c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align))
        lines.append(row[0] if len(row) == 1 else "  ".join(padded).rstrip())
    return "\n".join(lines)


DATA_NAMES = {
    "torchvision": "CIFAR-10 (torchvision)",
    "folder": "CIFAR-10, image-folder copy at {root}",
    "synthetic": "synthetic class patterns (not CIFAR-10)",
}

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

SWEEP_HEADER = [
    "Model",
    "Best alpha",
    "Best T",
    "Val acc %",
    "Test acc %",
    "KD - baseline, paired by seed %",
    "Settings tried",
]

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


def num(x: float | int | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def md_row(row: Row) -> list[str]:
    """The markdown cells of one table row."""
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


def describe(runs: list[Run]) -> list[str]:
    """Lines naming the data, widths, epochs and seeds the runs used."""
    records = [r.record for r in runs]
    sources = sorted({(r.data_source, r.data_root, r.n_train, r.n_val, r.n_test) for r in records}, key=str)
    lines = []
    for src, root, n_tr, n_val, n_te in sources:
        name = DATA_NAMES.get(src, str(src)).format(root=root)
        lines.append(f"- Data: {name}; {n_tr} train / {n_val} validation / {n_te} test images")
    if len(sources) > 1:
        lines.append("- Warning: these runs mix data settings; compare rows with care")
    for role, modes in (("teacher", {"teacher"}), ("students", {"baseline", "kd"})):
        eps = sorted({r.max_epochs for r in records if r.mode in modes})
        if eps:
            lines.append(f"- Epochs ({role}): {', '.join(map(str, eps))}")
    lines.append(f"- Base widths: {', '.join(str(w) for w in sorted({r.width for r in records}))}")
    lines.append(f"- Seeds: {', '.join(str(s) for s in sorted({r.seed for r in records}))}")
    return lines


def sweep_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Per student network: the plain-KD alpha/T of best mean validation accuracy and what it scored."""
    out = []
    for row in rows:
        if not row.plain_kd:
            continue
        settings = kd_settings(row.plain_kd)
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
    return SWEEP_HEADER, out


def rows_note(rows: list[Row]) -> list[str]:
    """A preamble line, when some row is another reading, plan, variant or setting: why one depth has several rows."""
    if not any(row.reading or row.variant or row.differs for row in rows):
        return []
    return [
        "- Rows: one per network; another reading ('stages'), a plan ('p1_1_1_1'), variant tags ('[e60]': "
        "settings that differ from the defaults) or any other setting that changes a result (named in brackets: "
        "the data's content, the precision, the teacher) make another row, never more seeds of one"
    ]


def render_markdown(
    rows: list[Row],
    runs: list[Run],
    select: str,
    alpha: float,
    temperature: float,
    notes: tuple[str, ...] = (),
    sections: tuple[str, ...] = (),
) -> str:
    """results.md: what the runs were, the table, the sweep table when some network tried several settings,
    then `sections` (methods, calibration: method_tables.py) with their preamble `notes`; empty ones are skipped."""
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
            + rows_note(rows)
            + [f"- KD column: {how}", "- Study columns: the study's reported test accuracy at the same depth"]
            + list(notes)
        )
        + "\n",
        md_table(MD_HEADER, [md_row(r) for r in rows]),
    ]
    header, sweep = sweep_table(rows)
    if any(row[-1] != "1" for row in sweep):  # only when some network tried several settings
        parts += ["## KD settings chosen on validation accuracy\n", md_table(header, sweep)]
    return "\n".join(parts + [s for s in sections if s])


def r4(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def csv_row(row: Row, source: str) -> list[object]:
    """The csv cells of one table row; numbers to four decimals, missing ones empty."""
    sb, sk = row.study
    return [
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


def render_csv(rows: list[Row], runs: list[Run]) -> str:
    """results.csv: one line per table row, for reading by code."""
    source = ";".join(sorted({r.record.data_source or "" for r in runs}))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    w.writerows(csv_row(row, source) for row in rows)
    return buf.getvalue()
