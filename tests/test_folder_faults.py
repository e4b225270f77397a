"""A broken run folder gets one sentence and a rerun that works: a path of the wrong kind, a dangling link, an
unreadable path, a full disk wherever it strikes, and a killed run whose processes could hold its lock.

The first tests check kd_lightning/run/integrity.py on hand-made folders; the rest rerun tiny trained runs or kill
processes (marked slow)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import BASELINE, ROOT, run_cli, run_dir, train

from kd_lightning.run.callbacks import AtomicCheckpointIO
from kd_lightning.run.files import RunFolderError, is_locked
from kd_lightning.run.integrity import check_run_folder, disk_error

WRONG_KIND = [
    ("metrics.json", "folder"),
    (".lock", "folder"),
    ("train.log", "folder"),
    (".hydra", "file"),
    ("tb", "file"),
    ("checkpoints", "file"),
    ("checkpoints/last.ckpt", "folder"),
    ("checkpoints/best.ckpt", "folder"),
]


def make(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if kind == "folder" else path.write_text("x")


@pytest.mark.parametrize(("name", "kind"), WRONG_KIND, ids=[f"{n}-is-a-{k}" for n, k in WRONG_KIND])
def test_a_path_of_the_wrong_kind_is_named_with_the_way_out(tmp_path, name, kind):
    make(tmp_path / name, kind)
    wanted = "file" if kind == "folder" else "folder"
    with pytest.raises(RunFolderError) as err:
        check_run_folder(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / name} is a {kind} where the run keeps a {wanted}; move it away, then rerun the same command "
        "(or give this run another paths.root)"
    )


@pytest.mark.parametrize("name", ["metrics.json", "checkpoints", "checkpoints/last.ckpt", "tb"])
def test_a_dangling_link_is_named_with_its_target(tmp_path, name):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).symlink_to(tmp_path / "unmounted" / "disk")
    with pytest.raises(RunFolderError, match=f"is a link to {tmp_path}/unmounted/disk, which does not exist; restore"):
        check_run_folder(tmp_path)


def test_a_link_to_a_folder_elsewhere_and_a_whole_folder_pass(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run" / "checkpoints").parent.mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "elsewhere")  # checkpoints on another disk
    for name, kind in (("tb", "folder"), ("metrics.json", "file"), (".lock", "file")):
        make(tmp_path / "run" / name, kind)
    check_run_folder(tmp_path / "run")
    check_run_folder(tmp_path / "not-yet-made")


def test_an_unreadable_path_is_named(tmp_path, monkeypatch):
    """As root every path is readable; os.access stands in for a file of another user."""
    make(tmp_path / "checkpoints" / "last.ckpt", "file")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and not str(p).endswith("last.ckpt"))
    with pytest.raises(RunFolderError, match=r"last.ckpt cannot be read or written by this user; fix its permissions"):
        check_run_folder(tmp_path)


def test_a_full_disk_is_found_behind_the_error_that_reports_it():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as err:  # what Lightning's TensorBoard logger does with it
            raise ValueError("you tried to log 2.13 which is currently not supported") from err
    except ValueError as err:
        assert disk_error(err) is full
    assert disk_error(RuntimeError("unexpected pos 576 vs 534")) is None
    assert disk_error(OSError(errno.ENOENT, "No such file")) is None


def test_torchs_writer_failing_on_a_full_disk_gives_one_sentence_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(obj, path, *args, **kwargs):  # torch's zip writer reports a full disk this way
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunFolderError) as err:
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "checkpoints" / "last.ckpt")
    assert str(err.value).startswith(
        f"could not write the checkpoint {tmp_path}/checkpoints/last.ckpt (torch could not finish writing it; "
    )
    assert "MiB free); free some space or choose another paths.root, then rerun the same command" in str(err.value)
    assert list((tmp_path / "checkpoints").iterdir()) == []


# ----------------------------------------------------------------------------- reruns of trained runs


@pytest.mark.slow
def test_a_folder_where_metrics_json_belongs_stops_the_rerun_and_once_moved_the_run_finishes(root):
    folder = run_dir(root, *BASELINE)
    kept = (folder / "metrics.json").read_text()
    (folder / "metrics.json").unlink()
    (folder / "metrics.json").mkdir()
    with pytest.raises(RunFolderError, match="metrics.json is a folder where the run keeps a file; move it away"):
        train(root, *BASELINE)
    assert (folder / "metrics.json").is_dir() and (folder / "checkpoints" / "last.ckpt").is_file()  # nothing touched
    (folder / "metrics.json").rmdir()
    assert train(root, *BASELINE).test_acc == pytest.approx(__import__("json").loads(kept)["test_acc"])


@pytest.mark.slow
def test_a_lock_folder_stops_the_command_with_exit_2_and_no_traceback(root):
    folder = run_dir(root, *BASELINE)
    (folder / ".lock").unlink()
    (folder / ".lock").mkdir()
    result = run_cli("experiment=smoke", f"paths.root={root}", *BASELINE, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {folder / '.lock'} is a folder where the run keeps a file; move it away" in result.stderr


@pytest.mark.slow
def test_a_full_disk_in_the_test_phase_gives_one_sentence_and_the_rerun_records_the_result(root, monkeypatch):
    from lightning.pytorch.loggers import TensorBoardLogger

    folder = run_dir(root, *BASELINE)
    (folder / "metrics.json").unlink()
    real = TensorBoardLogger.log_metrics

    def full_disk(self, metrics, step=None):
        if any(k.startswith("test/") for k in metrics):
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as err:
                raise ValueError(f"you tried to log {metrics} which is currently not supported") from err
        return real(self, metrics, step)

    monkeypatch.setattr(TensorBoardLogger, "log_metrics", full_disk)
    with pytest.raises(RunFolderError, match=rf"could not write to the run folder {folder} \(No space left on device"):
        train(root, *BASELINE)
    assert not (folder / "metrics.json").exists()
    monkeypatch.undo()
    assert train(root, *BASELINE).epochs == 2 and (folder / "metrics.json").is_file()


# ----------------------------------------------------------------------------- killed runs and their processes

HOLD_AND_FORK = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from kd_lightning.run.files import run_lock

    with run_lock(Path(sys.argv[1])):
        if os.fork() == 0:  # a child that outlives its parent, as a busy worker would
            print("forked", flush=True)
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
    """
)

DECODE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kd_lightning import images
    from kd_lightning.run.files import run_lock

    def slow(path):  # an image that takes a minute to decode
        time.sleep(60)

    images._decode = slow
    with run_lock(Path(sys.argv[1])):
        print("decoding", flush=True)
        images._decode_all(["a.png"] * 8, workers=2)
    """
)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(script: str, folder: Path, ready: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == ready
    return proc


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_a_forked_child_never_holds_the_run_lock_after_its_parent_is_killed(tmp_path):
    proc = start(HOLD_AND_FORK, tmp_path, "forked")  # the child runs: the fork is complete
    [child] = children(proc.pid)
    assert is_locked(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert alive(child)  # the child lives on ...
        assert not is_locked(tmp_path)  # ... without the lock
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="decode workers die with their parent through Linux's prctl")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_image_decode_workers_die_with_a_killed_run_and_leave_its_lock_free(tmp_path, sig):
    proc = start(DECODE, tmp_path, "decoding")
    workers: list[int] = []
    for _ in range(100):
        workers = children(proc.pid)
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    assert len(workers) >= 2
    proc.send_signal(sig)
    proc.wait()
    deadline = time.monotonic() + 5
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert left == [] and not is_locked(tmp_path)
