"""A result always matches its settings, and no broken file or second process blocks a rerun: the run
fingerprint, unreadable records and checkpoints, a full disk, the run lock, the teacher export, and
sweeps that carry on past a bad job. Runs are tiny (synthetic data, width 8, a few steps)."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_cfg, run_cli

from kd_lightning.run.files import RunFolderError, file_sha256, run_lock
from kd_lightning.run.record import load_record

TINY = ["data.synthetic_train=240", "data.synthetic_test=64", "data.batch_size=32"]
BASELINE = ["mode=baseline", "student.depth=3", "trainer.max_epochs=2", *TINY]


def train(root: Path, *overrides: str):
    from kd_lightning.train import train as train_run

    return train_run(make_cfg(root, *overrides))


def run_dir(root: Path, *overrides: str) -> Path:
    return Path(make_cfg(root, *overrides).paths.run_dir)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny baseline run; tests copy its paths.root before changing anything."""
    root = tmp_path_factory.mktemp("finished")
    train(root, *BASELINE)
    return root


@pytest.fixture
def root(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "root")
    return tmp_path / "root"


# ----------------------------------------------------------------------------- settings


def test_a_finished_run_of_other_settings_is_refused_naming_each_changed_key(root):
    folder = run_dir(root, *BASELINE)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RunFolderError) as err:
        train(root, *BASELINE, "data.synthetic_train=300")
    message = str(err.value)
    assert "data.synthetic_train 240 -> 300" in message and "data.content_id" in message
    assert "overwrite=true" in message and "another paths.root" in message
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # .hydra/ included


def test_settings_that_the_name_leaves_out_give_each_variant_its_own_folder(tmp_path):
    names = {
        make_cfg(tmp_path, *BASELINE, *extra).run_name for extra in ([], ["optim.lr=0.1"], ["trainer.max_epochs=3"])
    }
    assert names == {
        "baseline-r3-w8-s0-b32-e2",
        "baseline-r3-w8-s0-b32-lr0.1-e2",
        "baseline-r3-w8-s0-b32-e3",
    }


def test_the_record_keeps_every_setting_and_its_fingerprint(finished):
    record = load_record(run_dir(finished, *BASELINE))
    assert record.settings["optim.lr"] == 0.2 and record.settings["trainer.max_epochs"] == 2
    assert record.settings["data.content_id"] and record.settings["trainer.precision"] == "32-true"
    assert record.fingerprint and record.variant == "b32-e2"
    ckpt = torch.load(run_dir(finished, *BASELINE) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["kd_lightning_settings"]["fingerprint"] == record.fingerprint


def test_resuming_from_a_checkpoint_of_other_settings_is_refused(root):
    folder = run_dir(root, *BASELINE)
    (folder / "metrics.json").unlink()  # unfinished: only its checkpoints are left
    with pytest.raises(RunFolderError, match=r"the checkpoint last.ckpt .* data.synthetic_train 240 -> 300"):
        train(root, *BASELINE, "data.synthetic_train=300")


# ----------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"mode": "kd"}'], ids=["empty", "garbage", "incomplete"])
def test_an_unreadable_metrics_json_counts_as_unfinished_and_is_written_again(root, content, caplog):
    folder = run_dir(root, *BASELINE)
    kept = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        record = train(root, *BASELINE)
    assert "counts as unfinished" in caplog.text
    assert record.test_acc == kept["test_acc"] and record.best_epoch == kept["best_epoch"]
    assert json.loads((folder / "metrics.json").read_text())["test_acc"] == kept["test_acc"]


def test_a_cut_last_checkpoint_falls_back_to_best_and_the_run_finishes(root, caplog):
    folder = run_dir(root, *BASELINE)
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    (folder / "metrics.json").unlink()
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        record = train(root, *BASELINE)
    assert "last.ckpt cannot be read" in caplog.text
    assert record.epochs == 2
    assert torch.load(last, weights_only=False)["epoch"] == 1  # whole again


def test_every_checkpoint_unreadable_starts_the_run_afresh(root, caplog):
    folder = run_dir(root, *BASELINE)
    old_events = set((folder / "tb").glob("events.out.tfevents.*"))
    for ckpt in (folder / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"garbage")
    (folder / "metrics.json").unlink()
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        record = train(root, *BASELINE)
    assert "starts afresh" in caplog.text and record.epochs == 2
    assert not old_events & set((folder / "tb").glob("events.out.tfevents.*"))  # the old curves went with it


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


# ----------------------------------------------------------------------------- the teacher


@pytest.fixture(scope="module")
def teacher_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    train(root, "mode=teacher", "trainer.max_epochs=1", *TINY)
    return root


def test_a_finished_teacher_run_restores_its_deleted_export(teacher_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    export = Path(make_cfg(root, "mode=teacher").teacher.ckpt)
    folder = run_dir(root, "mode=teacher", "trainer.max_epochs=1", *TINY)
    record = load_record(folder)
    assert record.teacher_sha256 == file_sha256(export)
    export.unlink()
    train(root, "mode=teacher", "trainer.max_epochs=1", *TINY)
    assert file_sha256(export) == record.teacher_sha256 == file_sha256(folder / "checkpoints" / "best.ckpt")


def test_a_teacher_run_without_export_or_best_checkpoint_says_to_retrain_it(teacher_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    Path(make_cfg(root, "mode=teacher").teacher.ckpt).unlink()
    (run_dir(root, "mode=teacher", "trainer.max_epochs=1", *TINY) / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(RunFolderError, match=r"export teacher.ckpt=.* are both gone; retrain it with overwrite=true"):
        train(root, "mode=teacher", "trainer.max_epochs=1", *TINY)


def test_kd_refuses_to_resume_after_the_teacher_file_changed(teacher_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    kd = ["mode=kd", "student.depth=3", "trainer.max_epochs=1", *TINY]
    record = train(root, *kd)
    assert (record.teacher_depth, record.teacher_width) == (6, 8)  # read from the checkpoint
    (run_dir(root, *kd) / "metrics.json").unlink()
    export = Path(make_cfg(root, *kd).teacher.ckpt)
    state = torch.load(export, weights_only=False)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, export)  # another teacher of the same architecture
    with pytest.raises(RunFolderError, match=r"teacher.sha256 \w+ -> \w+"):
        train(root, *kd)
