"""Beyond the study, end to end through the CLI: `make methods` trains baseline, KD, reverse KD, DKD and KD
through an assistant, every record says which method, direction and lineage it used, with calibration and
the code version beside the accuracy, and TensorBoard gets each run's settings for its HParams view."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SETTINGS = "data.synthetic_train=240 data.synthetic_test=64 trainer.enable_progress_bar=false"


@pytest.fixture(scope="module")
def methods(tmp_path_factory) -> Path:
    """`make methods` on synthetic data: teacher ResNet-6, students ResNet-3, assistant ResNet-4, one epoch."""
    root = tmp_path_factory.mktemp("methods")
    args = ["EXPERIMENT=smoke", "DATA=synthetic", f"ROOT={root}", "DEPTHS=3", "ASSISTANT=4", "CHAIN_DEPTHS=3"]
    args += ["EPOCHS=1", "TEACHER_EPOCHS=1", f"EXTRA={SETTINGS}"]
    result = subprocess.run(["make", "methods", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return root


def records(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (root / "runs").glob("*/metrics.json")}


@pytest.mark.slow
def test_make_methods_trains_every_method_and_the_assistant_chain(methods):
    runs = records(methods)
    tail = "s0-b128-e1"
    assert sorted(runs) == sorted(
        [
            f"teacher-r6-w8-{tail}",
            f"baseline-r3-w8-{tail}",
            f"kd-r3-w8-t6-a0.5-T4-{tail}",
            f"kd-r3-w8-t6-rev-a0.5-T4-{tail}",
            f"kd-r3-w8-t6-dkd-a1-b8-T4-{tail}",
            f"kd-r4-w8-t6-a0.5-T4-{tail}",  # the assistant
            f"kd-r3-w8-tkd4-a0.5-T4-{tail}",  # distilled from the assistant
        ]
    )
    kd = {name: r for name, r in runs.items() if r["mode"] == "kd"}
    assert {(r["method"], r["divergence"]) for r in kd.values()} == {
        ("kd", "forward"),
        ("kd", "reverse"),
        ("dkd", None),
    }
    dkd = runs[f"kd-r3-w8-t6-dkd-a1-b8-T4-{tail}"]
    assert (dkd["alpha"], dkd["beta"], dkd["warmup_epochs"], dkd["temperature"]) == (1.0, 8.0, 20, 4.0)


@pytest.mark.slow
def test_the_chain_records_its_lineage_and_takes_its_teacher_from_the_checkpoint(methods):
    runs = records(methods)
    tail = "s0-b128-e1"
    chain = runs[f"kd-r3-w8-tkd4-a0.5-T4-{tail}"]
    teacher_file = methods / "teachers" / "r6-w8-s0.ckpt"
    assistant_file = methods / "runs" / f"kd-r4-w8-t6-a0.5-T4-{tail}" / "checkpoints" / "best.ckpt"
    from kd_lightning.run.files import file_sha256

    assert [{k: a[k] for k in ("run_name", "sha256")} for a in chain["lineage"]] == [
        {"run_name": f"teacher-r6-w8-{tail}", "sha256": file_sha256(teacher_file)},
        {"run_name": f"kd-r4-w8-t6-a0.5-T4-{tail}", "sha256": file_sha256(assistant_file)},
    ]
    # each ancestor's settings, so the report tells teachers apart that differ by more than their seed
    assert [a["settings"]["mode"] for a in chain["lineage"]] == ["teacher", "kd"]
    assert chain["lineage"][1]["settings"] == runs[f"kd-r4-w8-t6-a0.5-T4-{tail}"]["settings"]
    assert (chain["teacher_depth"], chain["teacher_plan"], chain["teacher_sha256"]) == (
        4,
        [[2]],
        file_sha256(assistant_file),
    )
    plain = runs[f"kd-r3-w8-t6-a0.5-T4-{tail}"]
    assert [a["run_name"] for a in plain["lineage"]] == [f"teacher-r6-w8-{tail}"]
    assert chain["split_hash"] == plain["split_hash"]  # the split guard held along the chain


@pytest.mark.slow
def test_every_record_has_calibration_and_the_code_version(methods):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for name, r in records(methods).items():
        assert 0 <= r["test_ece"] <= 1 and r["test_nll"] > 0, name
        assert r["code"]["commit"] == commit and isinstance(r["code"]["dirty"], bool), name


@pytest.mark.slow
def test_tensorboard_gets_each_runs_settings_with_its_final_accuracies(methods):
    run = methods / "runs" / "kd-r3-w8-t6-dkd-a1-b8-T4-s0-b128-e1"
    found = {}
    for events in sorted((run / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        try:
            plugin = acc.PluginTagToContent("hparams")
        except KeyError:  # an event file without the HParams plugin's data
            plugin = {}
        if "_hparams_/session_start_info" in plugin:
            from tensorboard.plugins.hparams import plugin_data_pb2

            data = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
            found = {k: v.string_value or v.number_value for k, v in data.session_start_info.hparams.items()}
        for tag in ("hparams/best_val_acc", "hparams/test_acc"):
            if tag in acc.Tags()["scalars"]:
                found[tag] = acc.Scalars(tag)[0].value
    record = json.loads((run / "metrics.json").read_text())
    assert found["method"] == "dkd" and found["depth"] == 3 and found["beta"] == 8 and found["epochs"] == 1
    assert found["hparams/test_acc"] == pytest.approx(record["test_acc"])
    assert found["hparams/best_val_acc"] == pytest.approx(record["best_val_acc"])


@pytest.mark.slow
def test_a_run_outside_a_git_checkout_records_no_commit(tmp_path, monkeypatch):
    from kd_lightning.gpu import hardware

    monkeypatch.setattr(hardware, "__file__", str(tmp_path / "pkg" / "hardware.py"))
    assert hardware.code_version() == {"commit": None, "dirty": None}
