"""What a run folder already holds decides what a rerun does (kd_lightning/run/resume.py): a finished run of the
same settings is skipped, one of other settings is refused naming each changed key, an unfinished run resumes from
its last readable checkpoint, broken files never block the rerun, and a teacher run keeps its export.

The first tests drive resume.py's functions on hand-made run folders (no training); the rest rerun tiny trained
runs (marked slow). Kills and signals mid-run are in test_interrupts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import BASELINE, TINY, make_cfg, run_dir, train

from kd_lightning.run.files import RunFolderError, file_sha256
from kd_lightning.run.record import CHECKPOINT_KEY, RunFolder, fingerprint, load_record
from kd_lightning.run.resume import (
    clear_run,
    discard_unstarted,
    finished_record,
    resume_checkpoint,
)

SETTINGS = {"mode": "baseline", "student.depth": 3, "optim.lr": 0.2}


def checkpoint(path: Path, settings: dict | None = SETTINGS, epoch: int = 0) -> Path:
    """A checkpoint file holding what resume.py reads of one: the run's settings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {} if settings is None else {CHECKPOINT_KEY: {"settings": settings, "fingerprint": fingerprint(settings)}}
    torch.save({"epoch": epoch, **stored}, path)
    return path


# ----------------------------------------------------------------------------- resume.py on hand-made folders


def test_an_empty_folder_is_neither_finished_nor_resumable(tmp_path):
    assert finished_record(tmp_path, SETTINGS) is None
    assert resume_checkpoint(tmp_path, SETTINGS) is None


def test_the_last_checkpoint_is_the_resume_point_and_a_cut_one_falls_back_to_best(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    checkpoint(folder.best, epoch=0)
    checkpoint(folder.last, epoch=1)
    assert resume_checkpoint(tmp_path, SETTINGS) == folder.last
    folder.last.write_bytes(folder.last.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        assert resume_checkpoint(tmp_path, SETTINGS) == folder.best
    assert "last.ckpt cannot be read" in caplog.text


def test_a_checkpoint_of_other_settings_is_refused_naming_the_key(tmp_path):
    checkpoint(RunFolder(tmp_path).last, settings={**SETTINGS, "optim.lr": 0.1})
    with pytest.raises(RunFolderError, match=r"the checkpoint last.ckpt .* \(optim.lr 0.1 -> 0.2\)"):
        resume_checkpoint(tmp_path, SETTINGS)


def test_no_readable_checkpoint_clears_the_old_curves_and_starts_afresh(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    folder.checkpoints.mkdir()
    folder.last.write_bytes(b"garbage")
    folder.tb.mkdir()
    (folder.tb / "events.out.tfevents.1").write_bytes(b"old curve")
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        assert resume_checkpoint(tmp_path, SETTINGS) is None
    assert "starts afresh" in caplog.text
    assert not folder.checkpoints.exists() and not folder.tb.exists()


def test_clear_run_removes_what_training_wrote_and_keeps_the_log(tmp_path):
    folder = RunFolder(tmp_path)
    checkpoint(folder.last)
    folder.tb.mkdir()
    folder.metrics.write_text("{}")
    (tmp_path / "train.log").write_text("log")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.log"]


def test_a_run_that_never_started_leaves_no_folder_but_a_started_one_is_kept(tmp_path):
    unstarted, started = tmp_path / "unstarted", tmp_path / "started"
    unstarted.mkdir()
    checkpoint(RunFolder(started).last)
    discard_unstarted(unstarted)
    discard_unstarted(started)
    assert not unstarted.exists() and RunFolder(started).last.exists()


# ----------------------------------------------------------------------------- reruns of trained runs


@pytest.mark.slow
def test_a_finished_run_of_other_settings_is_refused_naming_each_changed_key(root):
    folder = run_dir(root, *BASELINE)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RunFolderError) as err:
        train(root, *BASELINE, "data.synthetic_train=300")
    message = str(err.value)
    assert "data.synthetic_train 240 -> 300" in message and "data.content_id" in message
    assert "overwrite=true" in message and "another paths.root" in message
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # .hydra/ included


@pytest.mark.slow
def test_resuming_from_a_checkpoint_of_other_settings_is_refused(root):
    folder = run_dir(root, *BASELINE)
    (folder / "metrics.json").unlink()  # unfinished: only its checkpoints are left
    with pytest.raises(RunFolderError, match=r"the checkpoint last.ckpt .* data.synthetic_train 240 -> 300"):
        train(root, *BASELINE, "data.synthetic_train=300")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- the teacher


@pytest.fixture(scope="module")
def teacher_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    train(root, "mode=teacher", "trainer.max_epochs=1", *TINY)
    return root


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_teacher_run_without_export_or_best_checkpoint_says_to_retrain_it(teacher_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(teacher_root, root)
    Path(make_cfg(root, "mode=teacher").teacher.ckpt).unlink()
    (run_dir(root, "mode=teacher", "trainer.max_epochs=1", *TINY) / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(RunFolderError, match=r"export teacher.ckpt=.* are both gone; retrain it with overwrite=true"):
        train(root, "mode=teacher", "trainer.max_epochs=1", *TINY)


@pytest.mark.slow
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
