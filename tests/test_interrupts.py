"""A run stopped at any moment finishes with the same command: SIGKILL falls back to the last
epoch's checkpoint, SIGTERM saves one where it stopped; TensorBoard continues; a finished run is
never retrained unless overwrite=true says so.

The SIGKILL case is a real training process started with the user's command, killed a moment into
its second epoch and started again. SIGTERM goes through the same Lightning handler in-process, so
the step it lands on is exact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EPOCHS = 3
N_TRAIN, BATCH = 2000, 128  # 1600 training images after the 80/20 split: 12 steps an epoch
STEPS_PER_EPOCH = (N_TRAIN * 4 // 5) // BATCH
ARGS = [
    "mode=baseline",
    "student.depth=3",
    f"trainer.max_epochs={EPOCHS}",
    f"data.synthetic_train={N_TRAIN}",
    "data.synthetic_test=200",
    f"data.batch_size={BATCH}",
]
RUN = f"runs/baseline-r3-w8-s0-b{BATCH}-e{EPOCHS}"


def command(root: Path) -> list[str]:
    return [sys.executable, "-m", "kd_lightning.train", "experiment=smoke", f"paths.root={root}", *ARGS]


def ckpt_state(path: Path) -> tuple[int, int]:
    """(epoch, global_step) of a checkpoint."""
    c = torch.load(path, map_location="cpu", weights_only=False)
    return c["epoch"], c["global_step"]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> dict:
    """The user's command, SIGKILLed a moment into epoch 1, then the same command again; what each left."""
    root = tmp_path_factory.mktemp("resume")
    last = root / RUN / "checkpoints" / "last.ckpt"
    first = subprocess.Popen(command(root), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, fit_start = time.monotonic() + 120, None
    while not last.exists():  # written (atomically) when epoch 0 ends
        assert first.poll() is None, f"the run ended (rc {first.returncode}) before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within two minutes"
        if fit_start is None and any((root / RUN / "tb").glob("events.out.tfevents.*")):
            fit_start = time.monotonic()  # the logger's file appears as fit starts
        time.sleep(0.02)
    time.sleep(0.3 * (time.monotonic() - (fit_start or time.monotonic())))  # about a third into epoch 1
    alive = first.poll() is None
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    seen = {
        "root": root,
        "alive_at_kill": alive,
        "after_kill": ckpt_state(last),
        "metrics_after_kill": (root / RUN / "metrics.json").exists(),
    }
    second = subprocess.run(command(root), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    seen["second_log"] = second.stdout + second.stderr
    return seen


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_ends_with_every_epoch(killed_and_resumed):
    s = killed_and_resumed
    assert s["alive_at_kill"]
    assert s["after_kill"] == (0, STEPS_PER_EPOCH)  # killed inside epoch 1: only epoch 0 was saved
    assert not s["metrics_after_kill"]
    assert "resuming from" in s["second_log"]
    metrics = json.loads((s["root"] / RUN / "metrics.json").read_text())
    assert metrics["epochs"] == metrics["max_epochs"] == EPOCHS
    last = ckpt_state(s["root"] / RUN / "checkpoints" / "last.ckpt")
    assert last == (EPOCHS - 1, EPOCHS * STEPS_PER_EPOCH)  # epoch 1 redone once, nothing more


@pytest.mark.slow
def test_metrics_json_of_a_resumed_run_is_complete(killed_and_resumed):
    metrics = json.loads((killed_and_resumed["root"] / RUN / "metrics.json").read_text())
    for key in ("best_val_acc", "test_acc", "test_loss", "wall_seconds", "train_images_per_second"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0 < metrics["best_val_acc"] <= 1 and 0 < metrics["test_acc"] <= 1
    assert 1 <= metrics["best_epoch"] <= EPOCHS
    assert metrics["n_train"] == N_TRAIN * 4 // 5 and metrics["split_hash"] and metrics["versions"]


@pytest.mark.slow
def test_tensorboard_curves_continue_across_a_restart(killed_and_resumed):
    tb = killed_and_resumed["root"] / RUN / "tb"
    files = sorted(tb.glob("events.out.tfevents.*"))
    assert len(files) >= 2  # both processes wrote to the same folder
    curves: dict[str, dict[int, float]] = {"train/loss": {}, "val/acc_best": {}}
    for f in files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag, points in curves.items():
            if tag in acc.Tags()["scalars"]:
                points.update({e.step: e.value for e in acc.Scalars(tag)})
    # one point per epoch, at that epoch's last step: nothing restarted at step 0, nothing doubled
    assert sorted(curves["train/loss"]) == [(e + 1) * STEPS_PER_EPOCH - 1 for e in range(EPOCHS)]
    best = [v for _, v in sorted(curves["val/acc_best"].items())]
    assert len(best) == EPOCHS and best == sorted(best)  # the running best carries over the restart


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_where_it_stopped_and_the_same_run_finishes(tmp_path, monkeypatch):
    from kd_lightning.modules import BaselineModule
    from kd_lightning.train import train

    args = [*ARGS[:2], "trainer.max_epochs=2", "data.synthetic_train=1000", "data.batch_size=64"]
    steps = 800 // 64
    stop_at = steps + 5  # a few batches into epoch 1
    original = BaselineModule.on_train_batch_end

    def preempted(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.trainer.global_step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before it preempts

    cfg = make_cfg(tmp_path, *args)
    run_dir = Path(cfg.paths.run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    with monkeypatch.context() as m:
        m.setattr(BaselineModule, "on_train_batch_end", preempted)
        with pytest.raises(SystemExit) as stop:
            train(cfg)
    assert stop.value.code == 128 + signal.SIGTERM  # a failure to the scheduler, so it runs the job again
    assert ckpt_state(last) == (1, stop_at)
    assert not (run_dir / "metrics.json").exists()
    metrics = train(make_cfg(tmp_path, *args)).to_dict()
    assert metrics["epochs"] == 2
    assert ckpt_state(last) == (1, 2 * steps)  # the steps before the stop are not run twice


def copy_of_finished_run(killed_and_resumed, tmp_path: Path) -> Path:
    """The finished run under another paths.root: also a run folder moved since its checkpoints were written."""
    shutil.copytree(killed_and_resumed["root"] / RUN, tmp_path / RUN)
    return tmp_path


@pytest.mark.slow
def test_rerunning_a_finished_run_trains_nothing_and_keeps_its_files(killed_and_resumed, tmp_path, monkeypatch):
    from kd_lightning.train import train

    root = copy_of_finished_run(killed_and_resumed, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (root / RUN).rglob("*") if p.is_file()}
    monkeypatch.setattr(L.Trainer, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    metrics = train(make_cfg(root, *ARGS)).to_dict()
    assert metrics == json.loads((root / RUN / "metrics.json").read_text())
    after = {p: p.stat().st_mtime_ns for p in (root / RUN).rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_overwrite_true_retrains_a_finished_run(killed_and_resumed, tmp_path):
    from kd_lightning.train import train

    root = copy_of_finished_run(killed_and_resumed, tmp_path)
    old_events = set((root / RUN / "tb").glob("events.out.tfevents.*"))
    # the same run folder (its name leaves out the synthetic data size), retrained on fewer images
    metrics = train(make_cfg(root, *ARGS, "overwrite=true", "data.synthetic_train=500")).to_dict()
    assert metrics["epochs"] == EPOCHS and metrics["n_train"] == 400
    assert json.loads((root / RUN / "metrics.json").read_text()) == metrics
    assert ckpt_state(root / RUN / "checkpoints" / "last.ckpt") == (EPOCHS - 1, EPOCHS * (400 // BATCH))
    assert not old_events & set((root / RUN / "tb").glob("events.out.tfevents.*"))  # old curves gone


@pytest.mark.slow
def test_overwrite_true_with_a_bad_override_keeps_the_finished_run(killed_and_resumed, tmp_path):
    from kd_lightning.data import DataError
    from kd_lightning.train import train

    root = copy_of_finished_run(killed_and_resumed, tmp_path)
    before = sorted(p.relative_to(root) for p in (root / RUN).rglob("*"))
    with pytest.raises(DataError):
        train(make_cfg(root, *ARGS, "overwrite=true", "data.source=folder", f"data.root={tmp_path}/typo"))
    assert sorted(p.relative_to(root) for p in (root / RUN).rglob("*")) == before


@pytest.mark.slow
def test_run_killed_before_metrics_json_finishes_in_its_moved_folder_without_training_again(
    killed_and_resumed, tmp_path, monkeypatch
):
    from kd_lightning.modules import BaselineModule
    from kd_lightning.train import train

    root = copy_of_finished_run(killed_and_resumed, tmp_path)
    kept = json.loads((root / RUN / "metrics.json").read_text())
    (root / RUN / "metrics.json").unlink()  # as if killed during the test pass, after the last epoch
    monkeypatch.setattr(BaselineModule, "training_step", lambda *a: pytest.fail("an epoch was trained again"))
    metrics = train(make_cfg(root, *ARGS)).to_dict()
    assert metrics["epochs"] == EPOCHS
    same = ("best_val_acc", "best_epoch", "test_acc", "test_loss", "split_hash")
    assert {k: metrics[k] for k in same} == {k: kept[k] for k in same}
