"""A result always matches its settings, and no second process or full disk spoils one: the run fingerprint
in the record and checkpoints, a full disk while checkpointing, the run lock, and sweeps that carry on past
a bad job. Runs are tiny (synthetic data, width 8, a few steps); reruns of a run folder are in test_resume."""

from __future__ import annotations

import dataclasses
import errno
import json
from pathlib import Path

import pytest
import torch
from conftest import BASELINE, TINY, make_cfg, run_cli, run_dir, train

from kd_lightning.run.files import RunFolderError, run_lock
from kd_lightning.run.record import RunRecord, RunRecordError, TimeSplit, load_record

# ----------------------------------------------------------------------------- settings


def test_settings_that_the_name_leaves_out_give_each_variant_its_own_folder(tmp_path):
    names = {
        make_cfg(tmp_path, *BASELINE, *extra).run_name for extra in ([], ["optim.lr=0.1"], ["trainer.max_epochs=3"])
    }
    assert names == {
        "baseline-r3-w8-s0-b32-e2",
        "baseline-r3-w8-s0-b32-lr0.1-e2",
        "baseline-r3-w8-s0-b32-e3",
    }


@pytest.mark.slow
def test_the_record_keeps_every_setting_and_its_fingerprint(finished):
    record = load_record(run_dir(finished, *BASELINE))
    assert record.settings["optim.lr"] == 0.2 and record.settings["trainer.max_epochs"] == 2
    assert record.settings["data.content_id"] and record.settings["trainer.precision"] == "32-true"
    assert record.fingerprint and record.variant == "b32-e2"
    ckpt = torch.load(run_dir(finished, *BASELINE) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["kd_lightning_settings"]["fingerprint"] == record.fingerprint


@pytest.mark.slow
def test_the_record_keeps_where_the_training_process_spent_its_time(finished):
    split = load_record(run_dir(finished, *BASELINE)).time_split
    assert split.epochs == 2 and split.steps_s > 0 and split.setup_s > 0 and split.first_step_at > 0


def test_the_time_split_is_typed_in_the_record_and_a_malformed_one_is_refused(tmp_path):
    split = TimeSplit(setup_s=1.5, steps_s=9.0, validation_s=1.0, between_epochs_s=0.5, epochs=3, first_step_at=1e9)
    data = {f.name: 0 for f in dataclasses.fields(RunRecord) if f.default is dataclasses.MISSING}
    data |= {"mode": "baseline", "run_name": "r", "time_split": dataclasses.asdict(split)}
    assert RunRecord.from_dict(data).time_split == split
    assert RunRecord.from_dict(json.loads(json.dumps(RunRecord.from_dict(data).to_dict()))) == RunRecord.from_dict(data)
    with pytest.raises(RunRecordError, match="field 'time_split' lacks the field 'steps_s'"):
        RunRecord.from_dict(data | {"time_split": {"setup_s": 1.0}})
    with pytest.raises(RunRecordError, match="field 'time_split' is 'fast'; it must be TimeSplit or null"):
        RunRecord.from_dict(data | {"time_split": "fast"})


# ----------------------------------------------------------------------------- broken files


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_whole_and_the_rerun_resumes(tmp_path, monkeypatch):
    from kd_lightning.run import callbacks

    saves, real_save = [], torch.save

    def disk_fills_up(obj, path, *args, **kwargs):
        saves.append(Path(path).name)
        if "last" in saves[-1] and sum("last" in name for name in saves) == 2:
            Path(path).write_bytes(b"half a checkpoint")  # epoch 1's last.ckpt meets a full disk half-way
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(callbacks.torch, "save", disk_fills_up)
    args = [a for a in BASELINE if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=3"]
    folder = run_dir(tmp_path, *args)
    with pytest.raises(RunFolderError, match=r"could not write the checkpoint .*last.ckpt \(No space left on device\)"):
        train(tmp_path, *args)
    monkeypatch.undo()
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name]
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 0  # the previous checkpoint, whole
    assert train(tmp_path, *args).epochs == 3


# ----------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_a_second_process_on_the_same_run_stops_with_one_sentence_and_leaves_the_folder(root):
    folder = run_dir(root, *BASELINE)
    (folder / "metrics.json").unlink()
    with run_lock(folder):  # as a first command training right now
        with pytest.raises(RunFolderError, match="another process is training the run .* right now"):
            train(root, *BASELINE)
    assert (folder / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_a_sweep_with_a_bad_job_trains_the_others_then_exits_2_naming_it(tmp_path):
    result = run_cli(
        "-m",
        "experiment=smoke",
        f"paths.root={tmp_path}",
        "mode=baseline",
        "student.depth=3,2,4",
        "trainer.max_epochs=1",
        *TINY,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "error: 1 run(s) of this sweep failed; the others ran:" in result.stderr
    assert "  baseline-r2-w8-s0-b32-e1: student.depth=2 is not allowed" in result.stderr
    finished = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/metrics.json"))
    assert finished == ["baseline-r3-w8-s0-b32-e1", "baseline-r4-w8-s0-b32-e1"]
    assert not list((tmp_path / ".sweeps").glob("*"))  # the failure notes are cleaned up
