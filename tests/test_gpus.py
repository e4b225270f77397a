"""The lock-file GPU pool, on simulated devices: no two holders share a device, and a job waits for a free one."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import make_cfg

from kd_lightning.gpu import hardware
from kd_lightning.gpu import lease as gpus


def _hold(lock_dir: str, n_devices: int, jobs_per_device: int, seconds: float, log_path: str) -> None:
    """Process body: lease a device, note when it was held, hold it a while."""
    with gpus.device_lease(n_devices, lock_dir, jobs_per_device, poll_seconds=0.01) as device:
        start = time.time()
        time.sleep(seconds)
        end = time.time()
    with open(log_path, "a") as f:
        f.write(f"{device} {start} {end}\n")


@pytest.mark.slow
def test_eight_processes_on_two_devices_never_overlap_on_a_device(tmp_path):
    log_path = tmp_path / "holds.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(str(tmp_path / "locks"), 2, 1, 0.15, str(log_path))) for _ in range(8)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    holds = [line.split() for line in log_path.read_text().splitlines()]
    assert len(holds) == 8
    for device in ("0", "1"):
        spans = sorted((float(s), float(e)) for d, s, e in holds if d == device)
        assert spans, f"device {device} was never used"
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"two processes held device {device} at once"
    # 8 jobs of 0.15 s on 2 devices cannot finish in less than 4 rounds: the others waited
    assert time.time() - t0 >= 4 * 0.15


def test_threads_with_two_jobs_per_device_hold_at_most_two_each_and_use_all_slots(tmp_path):
    holders: dict[int, int] = {0: 0, 1: 0}
    peak = {0: 0, 1: 0, "total": 0}
    guard = threading.Lock()

    def job() -> None:
        with gpus.device_lease(2, tmp_path, jobs_per_device=2, poll_seconds=0.01) as device:
            with guard:
                holders[device] += 1
                peak[device] = max(peak[device], holders[device])
                peak["total"] = max(peak["total"], sum(holders.values()))
            time.sleep(0.1)
            with guard:
                holders[device] -= 1

    threads = [threading.Thread(target=job) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] <= 2 and peak[1] <= 2
    assert peak["total"] == 4  # every slot was used, none twice


def test_a_job_waits_while_every_device_is_taken_and_gets_the_one_released(tmp_path):
    got: list[int] = []
    lease_a, lease_b = gpus.device_lease(2, tmp_path), gpus.device_lease(2, tmp_path)
    first, second = lease_a.__enter__(), lease_b.__enter__()
    assert {first, second} == {0, 1}  # spread over devices before anything waits
    waiter = threading.Thread(target=lambda: got.append(_lease_once(tmp_path)))
    waiter.start()
    time.sleep(0.3)
    assert got == [], "a job got a device while both were held"
    lease_b.__exit__(None, None, None)
    waiter.join(5)
    lease_a.__exit__(None, None, None)
    assert got == [second]


def _lease_once(lock_dir: Path) -> int:
    with gpus.device_lease(2, lock_dir, poll_seconds=0.01) as device:
        return device


def _lease_and_die(lock_dir: str) -> None:
    with gpus.device_lease(1, lock_dir, poll_seconds=0.01):
        os._exit(1)  # a crash: no cleanup code runs


@pytest.mark.slow
def test_a_crashed_holder_frees_its_device(tmp_path):
    p = mp.get_context("fork").Process(target=_lease_and_die, args=(str(tmp_path),))
    p.start()
    p.join(10)
    assert p.exitcode == 1
    done = threading.Event()
    t = threading.Thread(target=lambda: (_lease_one_device(tmp_path), done.set()))
    t.start()
    assert done.wait(5), "the device of a dead process stayed locked"


def _lease_one_device(lock_dir: Path) -> None:
    with gpus.device_lease(1, lock_dir, poll_seconds=0.01):
        pass


def test_lock_files_are_named_after_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    names = gpus.device_names(2)
    assert names == ["2", "3"]
    with gpus.device_lease(2, tmp_path, names=names) as device:
        assert device == 0
        assert (tmp_path / "gpu-2-slot0.lock").exists()


@pytest.mark.parametrize(("n_gpus", "per_gpu", "expected"), [(0, 1, 1), (0, 4, 1), (2, 1, 2), (4, 2, 8)])
def test_parallel_jobs_is_gpus_times_jobs_per_gpu_and_one_without_a_gpu(monkeypatch, n_gpus, per_gpu, expected):
    monkeypatch.setattr(hardware, "gpu_count", lambda: n_gpus)
    assert gpus.parallel_jobs(per_gpu) == expected


def test_parallel_jobs_rejects_zero_jobs_per_gpu():
    with pytest.raises(ValueError, match="gpu_pool.jobs_per_gpu=0"):
        gpus.parallel_jobs(0)


def test_run_lease_gives_each_single_device_run_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "gpu_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = make_cfg(tmp_path, "trainer.accelerator=auto", f"gpu_pool.lock_dir={tmp_path / 'locks'}")
    with gpus.run_lease(cfg) as a, gpus.run_lease(cfg) as b:
        assert {a, b} == {0, 1}


@pytest.mark.parametrize(
    ("n_gpus", "overrides"),
    [
        (0, []),  # CPU-only machine
        (2, ["trainer.accelerator=cpu"]),
        (2, ["trainer.devices=2"]),  # DDP over both
        (1, []),  # a single GPU needs no pool unless asked
        (2, ["gpu_pool.lease=false"]),
    ],
)
def test_run_lease_leaves_runs_that_need_no_pool_alone(tmp_path, monkeypatch, n_gpus, overrides):
    monkeypatch.setattr(hardware, "gpu_count", lambda: n_gpus)
    cfg = make_cfg(tmp_path, "trainer.accelerator=auto", f"gpu_pool.lock_dir={tmp_path / 'locks'}", *overrides)
    with gpus.run_lease(cfg) as device:
        assert device is None


def test_run_lease_on_one_gpu_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "gpu_count", lambda: 1)
    cfg = make_cfg(tmp_path, "trainer.accelerator=auto", "gpu_pool.lease=true", f"gpu_pool.lock_dir={tmp_path}")
    with gpus.run_lease(cfg) as device:
        assert device == 0
