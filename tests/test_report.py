"""The report on a fixture of fake run folders: table values (mean, std, delta, paired difference), selection on
validation only, missing cells, valid non-blank PNGs, malformed run records; and on the real H100 bundle, tables
byte-identical to the stored golden files."""

from __future__ import annotations

import csv
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

EPOCHS = 3


def fake_run(
    runs: Path,
    mode: str,
    depth: int,
    seed: int,
    test: float,
    val: float,
    alpha: float | None = None,
    temperature: float | None = None,
    agreement: float | None = None,
    events: bool = True,
) -> str:
    width = 8
    name = f"{mode}-r{depth}-w{width}" + (f"-t10-a{alpha:g}-T{temperature:g}" if mode == "kd" else "") + f"-s{seed}"
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
    (run / "metrics.json").write_text(json.dumps(metrics))
    if events:  # per-epoch scalars at the epoch's last step, as Lightning logs them
        writer = SummaryWriter(str(run / "tb"))
        for epoch in range(EPOCHS):
            step = 10 * (epoch + 1) - 1
            writer.add_scalar("epoch", epoch, step)
            writer.add_scalar("train/loss", 2.0 / (epoch + 1) + seed * 0.01, step)
            writer.add_scalar("val/loss", 2.2 / (epoch + 1), step)
        writer.close()
    return name


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("fixture") / "runs"
    fake_run(runs, "teacher", 10, 0, test=0.90, val=0.89)
    fake_run(runs, "teacher", 10, 1, test=0.92, val=0.90)
    for seed, acc in enumerate((0.60, 0.62, 0.64)):
        fake_run(runs, "baseline", 3, seed, test=acc, val=acc)
    # the default setting (alpha 0.5, T 4) on seeds 0 and 1 ...
    fake_run(runs, "kd", 3, 0, test=0.65, val=0.60, alpha=0.5, temperature=4.0, agreement=0.80)
    fake_run(runs, "kd", 3, 1, test=0.69, val=0.62, alpha=0.5, temperature=4.0, agreement=0.84)
    # ... and a setting better on validation but worse on test: choosing on test would pick the default
    fake_run(runs, "kd", 3, 0, test=0.50, val=0.70, alpha=0.9, temperature=2.0, agreement=0.70)
    fake_run(runs, "baseline", 4, 0, test=0.70, val=0.70, events=False)  # no KD for ResNet-4: a missing cell
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


def test_statistics_and_tables_import_without_matplotlib():
    code = (
        "import sys, kd_lightning.report, kd_lightning.report.stats, kd_lightning.report.tables; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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
