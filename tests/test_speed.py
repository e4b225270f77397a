"""The speed options on a CPU: torch.compile modes and inductor's shared cache, last.ckpt every N epochs with
every resume guarantee kept, and checkpoints written from a background thread and still atomic (the speed
targets and the study summary: test_study.py)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_cfg

from kd_lightning.build import compile_mode, compile_models
from kd_lightning.checks import check_config
from kd_lightning.config import ConfigError
from kd_lightning.run import callbacks
from kd_lightning.run.files import RunFolderError

TINY = ["mode=baseline", "student.depth=3", "data.synthetic_train=240", "data.synthetic_test=64", "data.batch_size=32"]


def train(root: Path, *overrides: str):
    from kd_lightning.train import train as train_run

    return train_run(make_cfg(root, *overrides))


def saves(monkeypatch) -> list[tuple[str, int, str]]:
    """Every checkpoint write as (file name, epoch, thread name), recorded at torch.save in AtomicCheckpointIO."""
    seen, real = [], torch.save

    def recorded(obj, path, *args, **kwargs):
        seen.append((Path(path).name.split(".")[1], obj["epoch"], threading.current_thread().name))
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(callbacks.torch, "save", recorded)
    return seen


def epoch_of(path: Path) -> tuple[int, int]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["epoch"], state["global_step"]


# ----------------------------------------------------------------------------- compile


def test_compile_true_means_the_default_mode_and_false_turns_it_off():
    assert [compile_mode(v) for v in (True, False, None, "reduce-overhead")] == [
        "default",
        None,
        None,
        "reduce-overhead",
    ]


def test_compile_and_checkpoint_cadence_keys_are_range_checked(tmp_path):
    check_config(make_cfg(tmp_path, "compile=max-autotune", "trainer.checkpoint_every=5"))
    with pytest.raises(ConfigError, match="compile=fast is not allowed; it must be false, true or one of default"):
        check_config(make_cfg(tmp_path, "compile=fast"))
    with pytest.raises(ConfigError, match="trainer.checkpoint_every=0 is not allowed"):
        check_config(make_cfg(tmp_path, "trainer.checkpoint_every=0"))


def test_a_kd_run_compiles_student_and_teacher_with_the_mode_asked(tmp_path, monkeypatch):
    from kd_lightning.modules import BaselineModule, DistillModule

    teacher = BaselineModule(4, 8, role="teacher")
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"hyper_parameters": dict(teacher.hparams), "state_dict": teacher.state_dict()}, ckpt)
    module, calls = DistillModule(3, str(ckpt), width=8), []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    compile_models(module, "reduce-overhead", tmp_path)
    assert calls == [("ResNet", {"mode": "reduce-overhead"})] * 2
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")  # the user's choice is kept


@pytest.mark.slow
def test_compile_default_trains_a_tiny_run_end_to_end_with_its_cache_under_paths_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # restored afterwards, whatever compiling sets
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    record = train(tmp_path, *TINY, "trainer.max_epochs=1", "compile=default")
    assert record.epochs == 1 and 0 <= record.test_acc <= 1
    assert any((tmp_path / "cache" / "inductor").iterdir())  # the next run of the sweep reuses it
    keys = torch.load(tmp_path / "runs" / record.run_name / "checkpoints" / "best.ckpt", weights_only=False)
    assert not [k for k in keys["state_dict"] if "_orig_mod" in k]  # checkpoints load into eager modules


# ----------------------------------------------------------------------------- checkpoint cadence


@pytest.mark.slow
def test_last_checkpoint_every_two_epochs_still_writes_the_final_epoch(tmp_path, monkeypatch):
    seen = saves(monkeypatch)
    record = train(tmp_path, *TINY, "trainer.max_epochs=3", "trainer.checkpoint_every=2")
    assert [epoch for name, epoch, _ in seen if name == "last"] == [1, 2]  # epoch 2 of 3, then the final one
    assert epoch_of(tmp_path / "runs" / record.run_name / "checkpoints" / "last.ckpt")[0] == 2


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_between_cadence_epochs_and_the_run_finishes(tmp_path, monkeypatch):
    from kd_lightning.modules import BaselineModule

    args = [*TINY[:2], "trainer.max_epochs=2", "trainer.checkpoint_every=5", "data.synthetic_train=1000"]
    steps = 800 // 32
    stop_at = steps + 5  # a few batches into epoch 1; no cadence checkpoint was written at epoch 0's end
    original = BaselineModule.on_train_batch_end

    def preempted(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.trainer.global_step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = make_cfg(tmp_path, *args, "data.batch_size=32")
    last = Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt"
    with monkeypatch.context() as m:
        m.setattr(BaselineModule, "on_train_batch_end", preempted)
        with pytest.raises(SystemExit):
            train(tmp_path, *args, "data.batch_size=32")
    assert epoch_of(last) == (1, stop_at)
    assert train(tmp_path, *args, "data.batch_size=32").epochs == 2
    assert epoch_of(last) == (1, 2 * steps)


# ----------------------------------------------------------------------------- asynchronous checkpoints


@pytest.mark.slow
def test_async_checkpoints_are_written_off_the_training_thread_and_the_run_resumes_from_them(tmp_path, monkeypatch):
    seen = saves(monkeypatch)
    record = train(tmp_path, *TINY, "trainer.max_epochs=2", "trainer.async_checkpoint=true")
    assert {name for name, _, _ in seen} == {"best", "last"}
    assert all(thread != threading.main_thread().name for _, _, thread in seen)
    folder = tmp_path / "runs" / record.run_name / "checkpoints"
    assert epoch_of(folder / "last.ckpt")[0] == 1 and not list(folder.glob(".*tmp*"))
    again = train(tmp_path, *TINY, "trainer.max_epochs=2", "trainer.async_checkpoint=true")  # finished: skipped
    assert again.fingerprint == record.fingerprint


KILLED_WRITER = """
import sys, time, pathlib, torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from kd_lightning.run import callbacks
path, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
io = AsyncCheckpointIO(callbacks.AtomicCheckpointIO())
io.save_checkpoint({"epoch": 0, "w": torch.zeros(1000)}, path)
io.teardown()
def slow(obj, target, *args, **kwargs):
    with open(target, "wb") as f:
        f.write(b"half a checkpoint")
    marker.touch()
    time.sleep(120)
callbacks.torch.save = slow
io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_kill_in_the_middle_of_an_async_write_leaves_the_previous_checkpoint_whole(tmp_path):
    path, marker = tmp_path / "last.ckpt", tmp_path / "writing"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), str(marker)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached its second save"
        time.sleep(0.02)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert torch.load(path, weights_only=False)["epoch"] == 0


@pytest.mark.slow
def test_a_full_disk_during_an_async_checkpoint_stops_the_run_and_the_rerun_resumes(tmp_path, monkeypatch):
    names, real = [], torch.save

    def disk_fills_up(obj, path, *args, **kwargs):
        names.append(Path(path).name)
        if "last" in names[-1] and sum("last" in n for n in names) == 2:
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(callbacks.torch, "save", disk_fills_up)
    args = [*TINY, "trainer.max_epochs=3", "trainer.async_checkpoint=true"]
    with pytest.raises(
        RunFolderError,
        match=r"could not write the checkpoint .*last.ckpt \(No space left on device; [\d,.]+ MiB free\)",
    ):
        train(tmp_path, *args)
    monkeypatch.undo()
    folder = Path(make_cfg(tmp_path, *args).paths.run_dir) / "checkpoints"
    # whole: epoch 0's, or epoch 2's when the error surfaced only at the end; never the cut one of epoch 1
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] != 1
    assert train(tmp_path, *args).epochs == 3
