"""The report on a fixture of fake run folders: table values (mean, std, delta, paired difference), selection on
validation only, missing cells, valid non-blank PNGs, malformed run records; and on the real H100 bundle, tables
byte-identical to the stored golden files."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from kd_lightning.report import cli, figures
from kd_lightning.report import curves as curves_mod
from kd_lightning.report.stats import build_rows
from kd_lightning.run.record import iter_runs

EPOCHS = 3


def fake_run(
    runs: Path,
    mode: str,
    depth: int,
    seed: int,
    test: float,
    val: float,
    tag: str | None = None,
    agreement: float | None = None,
    events: bool = True,
    **fields,
) -> str:
    """A run folder: metrics.json (an old-style record unless `fields` adds the new ones) and, with `events`,
    per-epoch scalars as Lightning logs them: a kd run's train/loss is its whole objective, beside train/ce and
    train/kd. `tag` is what the run name holds between the net tag and the seed ('-t10-a0.5-T4' for kd)."""
    width = 8
    alpha, temperature = fields.get("alpha"), fields.get("temperature")
    if tag is None:
        tag = f"-t10-a{alpha:g}-T{temperature:g}" if mode == "kd" else ""
    name = f"{mode}-r{depth}-w{width}{tag}-s{seed}" + (f"-{fields['variant']}" if fields.get("variant") else "")
    run = runs / name
    run.mkdir(parents=True)
    metrics = dict(
        mode=mode,
        run_name=name,
        depth=depth,
        width=width,
        teacher_depth=10,
        teacher_width=width,
        alpha=alpha,
        temperature=temperature,
        seed=seed,
        data_source="synthetic",
        data_root="-",
        n_train=1600,
        n_val=400,
        n_test=500,
        best_val_acc=val,
        best_epoch=EPOCHS,
        test_acc=test,
        test_loss=1.0,
        test_agreement=agreement,
        epochs=EPOCHS,
        max_epochs=EPOCHS,
    )
    (run / "metrics.json").write_text(json.dumps({**metrics, **fields}))
    if events:  # per-epoch scalars at the epoch's last step, as Lightning logs them
        writer = SummaryWriter(str(run / "tb"))
        for epoch in range(EPOCHS):
            step = 10 * (epoch + 1) - 1
            ce = 2.0 / (epoch + 1) + seed * 0.01
            writer.add_scalar("epoch", epoch, step)
            if mode == "kd":  # the objective alpha * T^2 * KL + (1 - alpha) * CE is far above the CE
                writer.add_scalar("train/kd", 14.0 / (epoch + 1), step)
                writer.add_scalar("train/ce", ce, step)
                writer.add_scalar("train/loss", 0.5 * 14.0 / (epoch + 1) + 0.5 * ce, step)
            else:
                writer.add_scalar("train/loss", ce, step)
            writer.add_scalar("val/loss", 2.2 / (epoch + 1), step)
            writer.add_scalar("val/acc", val * (epoch + 1) / EPOCHS, step)
        writer.close()
    return name


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("fixture") / "runs"
    fake_run(runs, "teacher", 10, seed=0, test=0.90, val=0.89)
    fake_run(runs, "teacher", 10, seed=1, test=0.92, val=0.90)
    for seed, acc in enumerate((0.60, 0.62, 0.64)):
        fake_run(runs, "baseline", 3, seed=seed, test=acc, val=acc)
    # the default setting (alpha 0.5, T 4) on seeds 0 and 1 ...
    fake_run(runs, "kd", 3, seed=0, test=0.65, val=0.60, alpha=0.5, temperature=4.0, agreement=0.80)
    fake_run(runs, "kd", 3, seed=1, test=0.69, val=0.62, alpha=0.5, temperature=4.0, agreement=0.84)
    # ... and a setting better on validation but worse on test: choosing on test would pick the default
    fake_run(runs, "kd", 3, seed=0, test=0.50, val=0.70, alpha=0.9, temperature=2.0, agreement=0.70)
    fake_run(runs, "baseline", 4, seed=0, test=0.70, val=0.70, events=False)  # no KD for ResNet-4: a missing cell
    return runs


@pytest.fixture(scope="module")
def built(fixture_runs) -> tuple[str, Path]:
    """The report of the fixture with figures, made once for the tests that only read it."""
    return cli.make_report(fixture_runs)


@pytest.fixture()
def runs_dir(fixture_runs, tmp_path) -> Path:
    """A private copy of the fixture for tests that change it or its report."""
    shutil.copytree(fixture_runs, tmp_path / "runs")
    return tmp_path / "runs"


def csv_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "results.csv") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_table_gives_mean_std_n_delta_and_paired_difference(built, fixture_runs):
    text, out = built
    assert out == fixture_runs.parent / "report"
    rows = csv_rows(out)
    assert list(rows) == ["ResNet-10 (teacher)", "ResNet-3", "ResNet-4"]  # teacher first
    t, r3, r4 = rows["ResNet-10 (teacher)"], rows["ResNet-3"], rows["ResNet-4"]
    assert float(t["baseline_mean"]) == pytest.approx(91.0) and float(t["baseline_std"]) == pytest.approx(
        1.4142, abs=1e-3
    )
    assert float(r3["baseline_mean"]) == pytest.approx(62.0) and float(r3["baseline_std"]) == pytest.approx(2.0)
    assert r3["baseline_n"] == "3" and r3["kd_n"] == "2"
    assert float(r3["kd_mean"]) == pytest.approx(67.0) and float(r3["kd_std"]) == pytest.approx(2.8284, abs=1e-3)
    assert float(r3["kd_delta"]) == pytest.approx(5.0)  # 67 - 62 over all seeds
    assert float(r3["paired_mean"]) == pytest.approx(6.0)  # seeds 0, 1: +5 and +7
    assert float(r3["paired_std"]) == pytest.approx(1.4142, abs=1e-3)
    assert float(r3["agreement_mean"]) == pytest.approx(82.0)
    assert (r3["kd_alpha"], r3["kd_temperature"]) == ("0.5", "4")
    assert (r3["study_baseline"], r3["study_kd"]) == ("64", "67")
    assert r4["kd_mean"] == "" and r4["kd_n"] == "0" and r4["baseline_std"] == ""  # one seed: no std
    assert (
        "| ResNet-3 | 62.00 ± 2.00 (n=3) | 67.00 ± 2.83 (n=2) (+5.00) | +6.00 ± 1.41 (n=2) | 82.00 ± 2.83 (n=2)" in text
    )
    assert "| ResNet-4 | 70.00 (n=1) | - | - | - | - | 70 | 76 (+6) |" in text
    assert "synthetic class patterns (not CIFAR-10)" in text
    assert (out / "results.md").read_text() == text


def test_kd_settings_are_chosen_on_validation_never_on_test(runs_dir):
    text, out = cli.make_report(runs_dir, select="val", figures=False)
    r3 = csv_rows(out)["ResNet-3"]
    assert (r3["kd_alpha"], r3["kd_temperature"]) == ("0.9", "2")  # val 70% beats val 61%, whatever test says
    assert float(r3["kd_mean"]) == pytest.approx(50.0)
    assert "## KD settings chosen on validation accuracy" in text
    assert "| ResNet-3 | 0.9 | 2 | 70.00 (n=1) | 50.00 (n=1) | -10.00 (n=1) | 2 |" in text


def assert_valid_png(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert (pixels < 128).mean() > 0.005, f"{path.name} is blank"


def test_figures_are_valid_non_blank_pngs_and_leave_no_temporary_files(built, fixture_runs):
    _, out = built
    curves = sorted(p.name for p in (out / "curves").glob("*.png"))
    with_events = sorted(f"{p.parent.name}.png" for p in fixture_runs.glob("*/tb"))
    assert curves == with_events and len(curves) == 8  # every run with events, none for the one without
    for png in [
        *(out / "curves").glob("*.png"),
        out / "curves_overview.png",
        out / "depth_comparison.png",
        out / "accuracy_vs_depth.png",
        out / "kd_sweep_val_acc.png",
    ]:
        assert_valid_png(png)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_curves_read_train_and_val_loss_per_epoch_from_tensorboard(fixture_runs):
    curves = figures.loss_curves(fixture_runs / "baseline-r3-w8-s1" / "tb")
    assert [e for e, _ in curves["train/loss"]] == [1, 2, 3]
    assert [v for _, v in curves["val/loss"]] == pytest.approx([2.2, 1.1, 2.2 / 3])


def test_rerun_rewrites_the_same_report_and_drops_figures_of_removed_runs(runs_dir):
    text, out = cli.make_report(runs_dir)
    csv_before = (out / "results.csv").read_text()
    again, _ = cli.make_report(runs_dir)
    assert again == text and (out / "results.csv").read_text() == csv_before
    shutil.rmtree(runs_dir / "kd-r3-w8-t10-a0.9-T2-s0")
    cli.make_report(runs_dir)
    assert not (out / "curves" / "kd-r3-w8-t10-a0.9-T2-s0.png").exists()
    assert not (out / "kd_sweep_val_acc.png").exists()  # one KD setting left: no sweep


def test_cli_prints_the_table_and_fails_in_one_line_without_runs(runs_dir, tmp_path, capsys):
    assert cli.main([str(runs_dir.parent), "--no-figures"]) == 0  # a paths.root folder is accepted too
    assert "| ResNet-3 | 62.00 ± 2.00 (n=3)" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no finished runs") and err.count("\n") == 1


H100_RUNS = ROOT / "results" / "h100-2026-11-28" / "runs"
H100_GOLDEN = ROOT / "tests" / "golden" / "h100-2026-11-28"


def test_report_of_the_h100_bundle_matches_the_stored_golden_byte_for_byte(tmp_path):
    """The 27 real runs of the H100 study give exactly the results.md and results.csv stored before the refactor."""
    text, out = cli.make_report(H100_RUNS, out_dir=tmp_path, figures=False)
    for name in ("results.md", "results.csv"):
        assert (out / name).read_bytes() == (H100_GOLDEN / name).read_bytes(), f"{name} differs from the golden"
    assert text.encode() == (H100_GOLDEN / "results.md").read_bytes()


@pytest.mark.slow
def test_statistics_and_tables_import_without_matplotlib():
    code = (
        "import sys, kd_lightning.report, kd_lightning.report.stats, kd_lightning.report.tables, "
        "kd_lightning.report.methods, kd_lightning.report.method_tables, kd_lightning.report.curves; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_malformed_run_records_are_skipped_with_one_warning_line_each(built, runs_dir, tmp_path):
    """A record lacking fields and a truncated one: the report of the other runs, a line on stderr for each."""
    (runs_dir / "kd-fields-missing").mkdir()
    (runs_dir / "kd-fields-missing" / "metrics.json").write_text('{"mode": "kd"}')
    whole = (runs_dir / "baseline-r3-w8-s0" / "metrics.json").read_text()
    (runs_dir / "baseline-truncated").mkdir()
    (runs_dir / "baseline-truncated" / "metrics.json").write_text(whole[: len(whole) // 2])
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "kd_lightning.report", str(runs_dir), "--out", str(out), "--no-figures"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2 and "Traceback" not in result.stderr
    assert all(line.startswith("skipping a run: ") for line in warnings)
    assert "kd-fields-missing" in warnings[1] and "baseline-truncated" in warnings[0]
    _, clean = built
    assert (out / "results.md").read_text() == (clean / "results.md").read_text()
    assert (out / "results.csv").read_text() == (clean / "results.csv").read_text()


# ----------------------------------------------------------------------------- records with the new fields

LINEAGE = [{"run_name": "teacher-r10-w8-s0", "sha256": "aa"}]
CHAIN = [*LINEAGE, {"run_name": "kd-r6-w8-t10-a0.5-T4-s0", "sha256": "bb"}]


def new_run(runs: Path, mode: str, depth: int, seed: int = 0, test: float = 0.6, **fields) -> str:
    """A record as the current code writes it: the defaults of every new field unless `fields` says otherwise."""
    record = dict(reading="blocks", variant="", code={"commit": "abc", "dirty": False}, val=0.6)
    if mode == "kd":
        record.update(method="kd", divergence="forward", alpha=0.5, temperature=4.0, lineage=LINEAGE)
        record["teacher_ckpt"] = "outputs/teachers/r10-w8-s0.ckpt"
    record.update(fields)
    return fake_run(runs, mode, depth, seed=seed, test=test, **record)


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory) -> Path:
    """Baseline, plain KD, reverse KD, DKD (two settings) and an assistant chain for ResNet-3; other readings,
    a plan and a variant of it as rows of their own; ECE and NLL on the teacher, the baselines and some methods."""
    runs = tmp_path_factory.mktemp("methods") / "runs"
    for seed, (ece, nll) in enumerate(((0.02, 0.30), (0.04, 0.34))):
        new_run(runs, "teacher", 10, seed=seed, test=0.9, test_ece=ece, test_nll=nll)
    for seed, (acc, ece, nll) in enumerate(((0.60, 0.05, 1.1), (0.62, 0.06, 1.2), (0.64, 0.07, 1.3))):
        new_run(runs, "baseline", 3, seed=seed, test=acc, val=acc, test_ece=ece, test_nll=nll)
    for seed, (acc, ece, nll, agr) in enumerate(((0.65, 0.03, 1.0, 0.80), (0.69, 0.05, 1.1, 0.84))):
        new_run(runs, "kd", 3, seed=seed, test=acc, val=acc, test_ece=ece, test_nll=nll, agreement=agr)
    for seed, (acc, ece) in enumerate(((0.61, 0.08), (0.63, 0.09), (0.66, 0.10))):
        rev = dict(divergence="reverse", test_ece=ece, test_nll=1.4, agreement=0.7)
        new_run(runs, "kd", 3, seed=seed, test=acc, tag="-t10-rev-a0.5-T4", **rev)
    dkd = dict(method="dkd", divergence=None, alpha=1.0, beta=8.0, warmup_epochs=20)
    for seed, acc in enumerate((0.70, 0.71)):
        new_run(runs, "kd", 3, seed=seed, test=acc, tag="-t10-dkd-a1-b8-T4", **dkd)
    # better on validation, but not the default: the DKD column keeps the default setting
    new_run(runs, "kd", 3, seed=0, test=0.50, val=0.95, tag="-t10-dkd-a1-b4-T4", **{**dkd, "beta": 4.0})
    ckpt = "outputs/runs/kd-r6-w8-t10-a0.5-T4-s0/checkpoints/best.ckpt"
    new_run(runs, "kd", 3, seed=0, test=0.66, tag="-tkd6-a0.5-T4", lineage=CHAIN, teacher_ckpt=ckpt, teacher_depth=6)
    new_run(runs, "baseline", 3, seed=0, test=0.55, tag="-stages", reading="stages")
    new_run(runs, "kd", 3, seed=0, test=0.58, tag="-stages-t10-a0.5-T4", reading="stages")
    new_run(runs, "baseline", 3, seed=0, test=0.70, variant="e60")
    new_run(runs, "kd", 3, seed=0, test=0.72, variant="e60")
    new_run(runs, "baseline", 6, seed=0, test=0.75, tag="-p1_1_1_1", reading="plan", plan=[[1], [1], [1], [1]])
    return runs


@pytest.fixture(scope="module")
def methods_report(method_runs) -> tuple[str, Path]:
    return cli.make_report(method_runs, figures=False)


def test_rows_never_average_two_readings_plans_or_variants(methods_report):
    text, out = methods_report
    rows = csv_rows(out)
    assert list(rows) == ["ResNet-10 (teacher)", "ResNet-3", "ResNet-3 [e60]", "ResNet-3 stages", "ResNet-6 p1_1_1_1"]
    r3, e60, stages = rows["ResNet-3"], rows["ResNet-3 [e60]"], rows["ResNet-3 stages"]
    assert (r3["baseline_n"], float(r3["baseline_mean"])) == ("3", pytest.approx(62.0))
    assert (e60["baseline_n"], float(e60["baseline_mean"]), float(e60["kd_mean"])) == ("1", 70.0, 72.0)
    assert (stages["baseline_n"], float(stages["baseline_mean"]), float(stages["paired_mean"])) == ("1", 55.0, 3.0)
    assert "- Rows: one per network" in text


def test_the_kd_column_takes_plain_kd_only_whatever_the_selection(method_runs, methods_report):
    _, out = methods_report
    r3 = csv_rows(out)["ResNet-3"]
    assert (r3["kd_n"], float(r3["kd_mean"]), float(r3["paired_mean"])) == ("2", 67.0, pytest.approx(6.0))
    _, out = cli.make_report(method_runs, out_dir=out.parent / "val", select="val", figures=False)
    r3 = csv_rows(out)["ResNet-3"]  # the DKD run of best validation accuracy is no KD setting to choose
    assert (r3["kd_alpha"], r3["kd_temperature"], float(r3["kd_mean"])) == ("0.5", "4", 67.0)


def test_methods_table_cells_paired_differences_settings_and_chain(methods_report):
    text, out = methods_report
    assert (
        "| ResNet-3 | 62.00 ± 2.00 (n=3) | 67.00 ± 2.83 (n=2) | +6.00 ± 1.41 (n=2) | 63.33 ± 2.52 (n=3) | "
        "+1.33 ± 0.58 (n=3) | 70.50 ± 0.71 (n=2) | +9.50 ± 0.71 (n=2) | 66.00 (n=1) | +6.00 (n=1) |" in text
    )
    assert "| ResNet-3 stages | 55.00 (n=1) | 58.00 (n=1) | +3.00 (n=1) | - | - | - | - | - | - |" in text
    assert "DKD a=1 b=8 T=4 warm-up 20 (default)" in text  # not b=4, better on validation
    assert "chain (lowest seed): teacher-r10-w8-s0 → kd-r6-w8-t10-a0.5-T4-s0 → ResNet-3" in text
    assert "- Methods table: each method at its default setting" in text
    with open(out / "methods.csv") as f:
        lines = {(r["model"], r["method"]): r for r in csv.DictReader(f)}
    rev, chain = lines[("ResNet-3", "reverse")], lines[("ResNet-3", "assistant")]
    assert float(rev["mean"]) == pytest.approx(63.3333) and float(rev["paired_mean"]) == pytest.approx(1.3333)
    assert float(rev["paired_std"]) == pytest.approx(0.5774, abs=1e-4) and rev["chosen"] == "default"
    assert chain["chain"].startswith("teacher-r10-w8-s0 → ") and chain["paired_n"] == "1"


def test_calibration_table_only_with_ece_and_with_the_right_values(methods_report, built):
    text, out = methods_report
    assert "## Calibration and agreement (test)" in text
    assert "| ResNet-10 (teacher) | 3.00 ± 1.41 (n=2) | 0.320 ± 0.028 (n=2) | - | - | - |" in text
    assert (
        "| ResNet-3 | 6.00 ± 1.00 (n=3) | 1.200 ± 0.100 (n=3) | 4.00 ± 1.41 (n=2) | 1.050 ± 0.071 (n=2) "
        "| 82.00 ± 2.83 (n=2) |" in text
    )
    assert "| ResNet-3 | Reverse KD | 9.00 ± 1.00 (n=3) | 1.400 ± 0.000 (n=3) | 70.00 ± 0.00 (n=3) |" in text
    with open(out / "calibration.csv") as f:
        kd = next(r for r in csv.DictReader(f) if (r["model"], r["method"]) == ("ResNet-3", "kd"))
    assert float(kd["ece_mean"]) == pytest.approx(4.0) and float(kd["nll_mean"]) == pytest.approx(1.05)
    old_text, old_out = built  # old records: no ECE, no other method
    assert "Calibration" not in old_text and "## Methods" not in old_text
    assert not (old_out / "calibration.csv").exists() and not (old_out / "methods.csv").exists()


def test_kinds_of_distillation_from_the_record_old_records_are_plain_kd(method_runs):
    from kd_lightning.report.stats import kd_kind, record_reading
    from kd_lightning.run.record import iter_runs

    kinds = {r.record.run_name: kd_kind(r.record) for r in iter_runs(method_runs) if r.record.mode == "kd"}
    assert kinds["kd-r3-w8-tkd6-a0.5-T4-s0"] == "assistant" and kinds["kd-r3-w8-t10-rev-a0.5-T4-s1"] == "reverse"
    assert kinds["kd-r3-w8-t10-dkd-a1-b4-T4-s0"] == "dkd" and kinds["kd-r3-w8-t10-a0.5-T4-s0"] == "kd"
    old = next(r.record for r in iter_runs(H100_RUNS) if r.record.mode == "kd")
    assert (kd_kind(old), record_reading(old)) == ("kd", "")
    baseline_teacher = dataclasses.replace(old, teacher_ckpt="runs/baseline-r6-w64-s0/checkpoints/best.ckpt")
    teacher_run = dataclasses.replace(old, teacher_ckpt="runs/teacher-r10-w64-s0/checkpoints/best.ckpt")
    assert (kd_kind(baseline_teacher), kd_kind(teacher_run)) == ("assistant", "kd")
    assert kd_kind(dataclasses.replace(old, lineage=CHAIN, method="dkd")) == "other"


def test_per_run_figure_draws_training_ce_not_the_kd_objective_and_the_kd_term_apart(method_runs):
    run = next(r for r in iter_runs(method_runs) if r.record.run_name == "kd-r3-w8-t10-a0.5-T4-s1")
    curves = figures.loss_curves(run.dir / "tb")
    ce = [2.0 / e + 0.01 for e in (1, 2, 3)]
    drawn = curves_mod.cross_entropies(curves)
    assert [v for _, v in drawn["train"]] == pytest.approx(ce)  # train/ce, not train/loss (about 4 times larger)
    assert [v for _, v in drawn["val"]] == pytest.approx([2.2 / e for e in (1, 2, 3)])
    fig = figures._run_figure(run, curves)
    loss_ax, kd_ax = fig.axes
    train, val = (list(line.get_ydata()) for line in loss_ax.lines)
    assert train == pytest.approx(ce) and val == pytest.approx([2.2 / e for e in (1, 2, 3)])
    assert list(kd_ax.lines[0].get_ydata()) == pytest.approx([14.0 / e for e in (1, 2, 3)])
    figures.plt.close(fig)
    baseline = figures.loss_curves(method_runs / "baseline-r3-w8-s2" / "tb")
    assert curves_mod.cross_entropies(baseline)["train"] == baseline["train/loss"]  # a hard-label run's CE
    objective_only = {k: v for k, v in curves.items() if k != "train/ce"}
    assert "train" not in curves_mod.cross_entropies(objective_only)  # never the objective on the CE axis


def test_seed_band_mean_and_min_max_over_the_epochs_every_seed_reached():
    band = curves_mod.seed_band([[(1, 1.0), (2, 2.0), (3, 3.0)], [(1, 3.0), (2, 4.0)], []], scale=10.0)
    assert (band.epochs, band.mean, band.low, band.high, band.n) == ([1, 2], [20.0, 30.0], [10.0, 20.0], [30, 40], 2)
    assert curves_mod.seed_band([[], []]) is None


def test_depth_comparison_bands_and_a_valid_deterministic_png(method_runs, tmp_path):
    runs = list(iter_runs(method_runs))
    rows = build_rows(runs, alpha=0.5, temperature=4.0, select="default")
    curves = {r.record.run_name: figures.loss_curves(r.dir / "tb") for r in runs}
    r3 = next(row for row in rows if row.model == "ResNet-3")
    acc = curves_mod.comparison_bands(r3, curves)["val/acc"]
    assert acc["baseline"].mean == pytest.approx([62.0 * e / 3 for e in (1, 2, 3)])
    assert acc["baseline"].low == pytest.approx([60.0 * e / 3 for e in (1, 2, 3)])
    assert acc["KD"].high == pytest.approx([69.0 * e / 3 for e in (1, 2, 3)]) and acc["KD"].n == 2
    for name in ("a.png", "b.png"):
        assert figures.plot_depth_comparison(rows, curves, tmp_path / name)
    assert_valid_png(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_cell_that_would_average_two_runs_of_one_seed_is_warned_about(tmp_path, caplog):
    """Two plain KD runs of seed 0 from different teachers: the row cannot tell them apart, so it says so."""
    new_run(tmp_path, "baseline", 3, seed=0, test=0.6)
    new_run(tmp_path, "kd", 3, seed=0, test=0.65)
    new_run(tmp_path, "kd", 3, seed=0, test=0.67, tag="-t18-a0.5-T4", teacher_depth=18)
    rows = build_rows(list(iter_runs(tmp_path)), alpha=0.5, temperature=4.0, select="default")
    assert rows[0].kd.n == 2
    assert "ResNet-3 KD averages several runs of one seed: kd-r3-w8-t10-a0.5-T4-s0, kd-r3-w8-t18" in caplog.text


def test_runs_that_differ_in_more_than_their_seed_get_rows_of_their_own_labelled_by_what_differs(tmp_path):
    """KD from a 30-epoch teacher (seed 0) and from a 60-epoch one (seed 1), as `make reproduce SEEDS=0` and later
    `SEEDS=1 TEACHER_EPOCHS=60` leave them, and a baseline at another precision: no cell averages them."""
    common = {"data.content_id": "c0", "optim.lr": 0.2, "trainer.max_epochs": 3, "trainer.precision": "32-true"}

    def settings(mode: str, seed: int, **extra) -> dict:
        return {"mode": mode, "seed": seed, "student.depth": 3, **common, **extra}

    for seed, epochs in ((0, 30), (1, 60)):
        teacher = {"mode": "teacher", "seed": seed, "teacher.depth": 10, **common, "trainer.max_epochs": epochs}
        lineage = [{"run_name": f"teacher-r10-w8-s{seed}", "sha256": str(seed) * 64, "settings": teacher}]
        new_run(tmp_path, "baseline", 3, seed=seed, test=0.60 + seed / 100, settings=settings("baseline", seed))
        kd = settings("kd", seed, **{"kd.alpha": 0.5, "teacher.sha256": str(seed) * 64})
        new_run(tmp_path, "kd", 3, seed=seed, test=0.70 + seed / 10, lineage=lineage, settings=kd)
    bf16 = settings("baseline", 2, **{"trainer.precision": "bf16-mixed"})
    new_run(tmp_path, "baseline", 3, seed=2, test=0.5, settings=bf16)
    rows = {row.model: row for row in build_rows(list(iter_runs(tmp_path)), 0.5, 4.0, "default")}
    assert sorted(rows) == [
        "ResNet-3 [trainer.precision=32-true, teacher trainer.max_epochs=30]",
        "ResNet-3 [trainer.precision=32-true, teacher trainer.max_epochs=60]",
        "ResNet-3 [trainer.precision=bf16-mixed]",
    ]
    t30, t60 = (rows[f"ResNet-3 [trainer.precision=32-true, teacher trainer.max_epochs={e}]"] for e in (30, 60))
    assert (t30.kd.values, t60.kd.values) == ([pytest.approx(70.0)], [pytest.approx(80.0)])
    assert t30.base.n == t60.base.n == 2 and t30.paired.values == [pytest.approx(10.0)]  # the same seed's baseline
    assert rows["ResNet-3 [trainer.precision=bf16-mixed]"].base.values == [pytest.approx(50.0)]


def test_methods_csv_goes_when_only_plain_kd_is_left(method_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(method_runs, runs)
    _, out = cli.make_report(runs, figures=False)
    assert (out / "methods.csv").exists()
    for folder in runs.glob("kd-*"):
        if "-rev-" in folder.name or "-dkd-" in folder.name or "-tkd6-" in folder.name:
            shutil.rmtree(folder)
    text, _ = cli.make_report(runs, figures=False)
    assert "## Methods" not in text and not (out / "methods.csv").exists()
    assert (out / "calibration.csv").exists() and "The other methods of the methods table" not in text
