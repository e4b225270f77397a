"""A lock-file pool of GPUs: each running job of a local sweep holds one GPU for its whole lifetime.

The joblib launcher starts several jobs at once and every job sees every GPU. Picking a GPU by job
number modulo GPU count collides as soon as jobs finish out of order, so instead each GPU has
`jobs_per_device` slots, one lock file per slot, and a job takes the first free slot with
`flock`. The kernel drops a lock when its holder exits or crashes, so no slot is ever leaked, and
a job that finds every slot taken waits until one is released.

Joblib's loky workers are reused across jobs, so CUDA_VISIBLE_DEVICES cannot be changed once a
worker has touched CUDA: the leased index goes to the Trainer as `devices=[index]` instead.
Lock files are named after the entries of CUDA_VISIBLE_DEVICES, so two sweeps that see different
GPU sets still lock the physical cards; the lock folder must be local to the machine (flock on a
network filesystem does not coordinate).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kd_lightning.gpu import hardware, mps

log = logging.getLogger(__name__)


def parallel_jobs(jobs_per_device: int) -> int:
    """How many sweep jobs run at once: GPUs x jobs per GPU, or one at a time without a GPU."""
    if isinstance(jobs_per_device, bool) or not isinstance(jobs_per_device, int) or jobs_per_device < 1:
        raise ValueError(f"gpu_pool.jobs_per_gpu={jobs_per_device!r} is not allowed; it must be an integer >= 1")
    n = hardware.gpu_count()
    return n * jobs_per_device if n > 0 else 1


def device_names(n_devices: int) -> list[str]:
    """Names for the lock files of the visible GPUs: the CUDA_VISIBLE_DEVICES entries when set."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    names = [name.strip() for name in env.split(",") if name.strip()]
    if len(names) < n_devices:
        names = [str(i) for i in range(n_devices)]
    return [re.sub(r"[^A-Za-z0-9_.-]", "_", name) for name in names[:n_devices]]


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def device_lease(
    n_devices: int,
    lock_dir: str | Path,
    jobs_per_device: int = 1,
    poll_seconds: float = 2.0,
    names: Sequence[str] | None = None,
) -> Iterator[int]:
    """Hold one of `n_devices` devices (yields its index) until the block ends; wait while none is free.

    Slots are tried lowest slot first across all devices, so jobs spread over the GPUs before
    any GPU takes a second job. Separate opens of a lock file conflict even within one process,
    so threads of one process are kept apart too.
    """
    if n_devices < 1:
        raise ValueError(f"n_devices={n_devices} is not allowed; a device lease needs at least one device")
    if jobs_per_device < 1:
        raise ValueError(f"jobs_per_device={jobs_per_device} is not allowed; it must be an integer >= 1")
    names = list(names) if names is not None else [str(i) for i in range(n_devices)]
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    slots = [(d, k) for k in range(jobs_per_device) for d in range(n_devices)]
    waited = False
    while True:
        for device, slot in slots:
            fd = _try_lock(lock_dir / f"gpu-{names[device]}-slot{slot}.lock")
            if fd is None:
                continue
            if waited:
                log.info("GPU %s is free; starting", names[device])
            try:
                yield device
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if not waited:
            log.info("all %d GPU slots under %s are taken; waiting for one", len(slots), lock_dir)
            waited = True
        time.sleep(poll_seconds)


@contextmanager
def run_lease(cfg: DictConfig) -> Iterator[int | None]:
    """The GPU index a run should use for its lifetime, or None when it needs no lease.

    A run leases a GPU when it is a one-device CUDA run and the machine shows it several GPUs
    (`gpu_pool.lease: null`), or whenever `gpu_pool.lease: true` on CUDA. CPU runs, DDP runs and
    runs given explicit device ids go ahead unchanged.
    """
    wants_cuda = str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda")
    n = hardware.gpu_count() if wants_cuda else 0
    one_device = str(cfg.trainer.devices) == "1"
    pool = cfg.gpu_pool
    wanted = pool.lease if pool.lease is not None else n > 1
    if not (wanted and n > 0 and one_device):
        yield None
        return
    with device_lease(n, pool.lock_dir, pool.jobs_per_gpu, names=device_names(n)) as index:
        try:
            yield index
        finally:
            import torch

            torch.cuda.empty_cache()  # a reused worker must not keep memory on a GPU it no longer holds


def register() -> None:
    """`${kd_parallel_jobs:K}` in launcher configs: the n_jobs of a sweep that packs K jobs per GPU."""
    if not OmegaConf.has_resolver("kd_parallel_jobs"):
        OmegaConf.register_new_resolver("kd_parallel_jobs", parallel_jobs)


class MpsAroundSweep(Callback):
    """The MPS daemon around a local sweep (hydra/launcher=gpus sets it in hydra.callbacks): started before the
    first job when the machine has a GPU and the binary, stopped after the last if it was started here."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir, self.state = Path(state_dir), None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if hardware.gpu_count() > 0:
            self.state = mps.start(self.state_dir)
            log.info("%s", self.state.note)
            atexit.register(self._stop)  # a sweep that raises never reaches on_multirun_end

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.state is not None and (note := mps.stop(self.state)):
            log.info("%s", note)
        self.state = None
