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


def checkpoint(path: Path, settings: dict | None = SETTINGS, epoch: int = 0, best_epoch: int | None = 0) -> Path:
    """A checkpoint file holding what resume.py reads of one: the run's settings, the fields Lightning restores, and
    the best checkpoint's epoch as the RunCheckpoint monitoring val/acc records it (None: no best one yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {} if settings is None else {CHECKPOINT_KEY: {"settings": settings, "fingerprint": fingerprint(settings)}}
    best = {"monitor": "val/acc", "best_model_path": "" if best_epoch is None else "best.ckpt"}
    callbacks = {"RunCheckpoint{'monitor': 'val/acc'}": best | {"best_epoch": best_epoch}}
    fields = {"global_step": 10 * epoch, "state_dict": {"w": torch.zeros(2)}, "optimizer_states": [], "loops": {}}
    torch.save({"epoch": epoch, **fields, "callbacks": callbacks, **stored}, path)
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


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        pytest.param(lambda ckpt: ckpt.pop("loops"), "lacks the field 'loops'", id="a-field-missing"),
        pytest.param(
            lambda ckpt: ckpt["state_dict"].update(w=torch.zeros(3)),
            "holds weights that do not fit this run's network (w is [3], the network's is [2])",
            id="weights-of-another-shape",
        ),
        pytest.param(
            lambda ckpt: ckpt["state_dict"].update(v=torch.zeros(2)),
            "holds weights that do not fit this run's network (0 tensors missing, 1 unexpected, e.g. v)",
            id="weights-of-another-network",
        ),
    ],
)
def test_a_checkpoint_whose_fields_or_weights_do_not_fit_falls_back_with_a_warning(tmp_path, caplog, damage, said):
    folder = RunFolder(tmp_path)
    checkpoint(folder.best, epoch=1, best_epoch=1)
    damaged = torch.load(checkpoint(folder.last, epoch=1, best_epoch=1), weights_only=False)
    damage(damaged)
    torch.save(damaged, folder.last)
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        assert resume_checkpoint(tmp_path, SETTINGS, {"w": (2,)}) == folder.best
    assert f"last.ckpt {said}; trying an earlier checkpoint" in caplog.text


def test_a_best_checkpoint_of_other_settings_is_refused_while_last_is_this_runs(tmp_path):
    """best.ckpt is what the run tests: another run's, with the same network, is never tested as this run's."""
    checkpoint(RunFolder(tmp_path).last, epoch=1)
    checkpoint(RunFolder(tmp_path).best, settings={**SETTINGS, "optim.lr": 0.1}, epoch=0)
    with pytest.raises(RunFolderError, match=r"the checkpoint best.ckpt .* \(optim.lr 0.1 -> 0.2\)"):
        resume_checkpoint(tmp_path, SETTINGS)


@pytest.mark.parametrize("broken", [b"", b"half a checkpoint", None], ids=["empty", "cut", "missing"])
def test_a_lost_best_checkpoint_is_restored_from_last_when_that_is_the_best_epochs(tmp_path, caplog, broken):
    folder = RunFolder(tmp_path)
    checkpoint(folder.last, epoch=2, best_epoch=2)
    if broken is not None:
        folder.best.write_bytes(broken)
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        assert resume_checkpoint(tmp_path, SETTINGS) == folder.last
    assert folder.best.read_bytes() == folder.last.read_bytes()
    assert "last.ckpt is the best epoch's, so best.ckpt is restored from it" in caplog.text


def test_a_lost_best_checkpoint_of_an_earlier_epoch_starts_the_run_afresh(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    checkpoint(folder.last, epoch=2, best_epoch=1)  # the best epoch's weights were in best.ckpt only
    folder.tb.mkdir()
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        assert resume_checkpoint(tmp_path, SETTINGS) is None
    assert "best.ckpt is missing, and with it the best epoch's weights: the run starts afresh" in caplog.text
    assert not folder.checkpoints.exists() and not folder.tb.exists()


def test_a_run_stopped_in_its_first_epoch_has_no_best_checkpoint_yet_and_resumes(tmp_path):
    checkpoint(RunFolder(tmp_path).last, epoch=0, best_epoch=None)  # SIGTERM before the first validation
    assert resume_checkpoint(tmp_path, SETTINGS) == RunFolder(tmp_path).last


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


@pytest.mark.slow
def test_a_best_checkpoint_of_another_run_after_the_last_epoch_is_refused_and_nothing_is_recorded(root):
    """Another run's best.ckpt of the same network, in a run that finished training but wrote no metrics.json."""
    folder, other = run_dir(root, *BASELINE), [*BASELINE, "optim.lr=0.1"]
    train(root, *other)
    (folder / "metrics.json").unlink()
    shutil.copyfile(run_dir(root, *other) / "checkpoints" / "best.ckpt", folder / "checkpoints" / "best.ckpt")
    with pytest.raises(RunFolderError, match=r"the checkpoint best.ckpt in .* \(optim.lr 0.1 -> 0.2\)"):
        train(root, *BASELINE)
    assert not (folder / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut", "missing"])
def test_a_broken_best_checkpoint_after_the_last_epoch_is_retested_or_retrained_saying_which(root, caplog, damage):
    folder = run_dir(root, *BASELINE)
    kept = load_record(folder)
    (folder / "metrics.json").unlink()
    best = folder / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:1000]) if damage == "cut" else best.unlink()
    last_is_best = kept.best_epoch == kept.epochs
    with caplog.at_level(logging.WARNING, logger="kd_lightning"):
        record = train(root, *BASELINE)
    said = "so best.ckpt is restored from it" if last_is_best else "the best epoch's weights: the run starts afresh"
    assert said in caplog.text
    # on the CPU a retrained run is the same run: either way the result is the original one
    assert (record.test_acc, record.best_epoch, record.epochs) == (kept.test_acc, kept.best_epoch, kept.epochs)


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
