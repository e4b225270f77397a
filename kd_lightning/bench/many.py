"""Comparison 5: many runs on one device: N short training processes one after another, side by side, and
side by side under CUDA MPS (when the machine has it).

The study trains 8 students per seed, each a process of its own. Each side here starts N such
processes (a ResNet-4 through the Lightning Trainer, `many_steps` steps of the study's batch), and
records the whole wall time (process start-up included, as in the study) and the training rate of
all of them together: their images over the span of their timed windows (the sum of the windows
one after another). Workers come first in the benchmark, before its own process touches the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from kd_lightning.bench.harness import Pair, Sizes
from kd_lightning.gpu import mps
from kd_lightning.run.files import atomic_path


def _worker(argv: list[str]) -> None:
    """One run: `python -m kd_lightning.bench.many DATA DEVICE WIDTH BATCH STEPS THREADS`; prints one JSON line."""
    from kd_lightning.bench.harness import StepTimer, accelerator, cover, step_trainer
    from kd_lightning.data import CIFAR10DataModule
    from kd_lightning.gpu.hardware import prepare_backends
    from kd_lightning.modules import BaselineModule

    data, device_type, width, batch, steps, threads = argv[0], argv[1], *map(int, argv[2:])
    torch.set_num_threads(threads)
    device = torch.device(device_type)
    prepare_backends(accelerator(device))
    torch.backends.cudnn.benchmark = device.type == "cuda"
    warmup = max(2, steps // 10)
    train = cover(torch.load(data), (warmup + steps) * batch)
    timer = StepTimer(warmup, warmup + steps - 1, device)
    trainer = step_trainer(device, max_steps=warmup + steps, callbacks=[timer])
    offset = time.time() - time.perf_counter()  # the windows of several processes on one clock
    torch.manual_seed(0)
    trainer.fit(
        BaselineModule(4, width=width), datamodule=CIFAR10DataModule.from_tensors(train, train, batch_size=batch)
    )
    start, end = timer.stamps[0] + offset, timer.stamps[-1] + offset
    print(json.dumps({"start": start, "end": end, "images": steps * batch}))


def _side(n: int, parallel: bool, command: list[str], env: dict[str, str]) -> dict:
    """Wall seconds of n workers (at once or in turn) and their training rate together."""
    t0 = time.perf_counter()
    pipes = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    if parallel:
        procs = [subprocess.Popen(command, **pipes) for _ in range(n)]
        done = [(*p.communicate(), p.returncode) for p in procs]
    else:
        done = [(d.stdout, d.stderr, d.returncode) for d in (subprocess.run(command, **pipes) for _ in range(n))]
    wall = time.perf_counter() - t0
    if failed := [err for _, err, code in done if code]:
        raise RuntimeError(f"a many-runs worker failed: {command}\n{failed[0][-2000:]}")
    outputs = [out for out, _, _ in done]
    windows = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    images = sum(w["images"] for w in windows)
    span = max(w["end"] for w in windows) - min(w["start"] for w in windows)
    if not parallel:
        span = sum(w["end"] - w["start"] for w in windows)
    return {
        "wall_s": wall,
        "train_img_s": images / span,
        "per_run_img_s": [w["images"] / (w["end"] - w["start"]) for w in windows],
    }


def bench_many(train: Pair, sizes: Sizes, device: torch.device, tmp: Path) -> dict:
    """N runs one after another vs side by side vs side by side under MPS (CUDA only)."""
    n, cores = sizes.many, os.cpu_count() or 1
    data = tmp / "many-data.pt"
    with atomic_path(data) as tmp_data:
        torch.save((train[0][: sizes.n_train].clone(), train[1][: sizes.n_train].clone()), tmp_data)

    def command(threads: int) -> list[str]:
        args = [data, device.type, sizes.width, sizes.batch, sizes.many_steps, threads]
        return [sys.executable, "-m", "kd_lightning.bench.many", *map(str, args)]

    package_root = str(Path(__file__).resolve().parents[2])  # the workers import this copy of the package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    one_thread = max(1, cores // n)
    result = {
        "runs": n,
        "steps": sizes.many_steps,
        "sequential": _side(n, parallel=False, command=command(cores), env=env),
        "side_by_side": _side(n, parallel=True, command=command(one_thread), env=env),
        "mps": None,
        "mps_note": "CPU: no MPS",
    }
    if device.type == "cuda":
        with mps.daemon(tmp / "mps") as state:
            result["mps_note"] = state.note
            if state.active:
                result["mps"] = _side(n, parallel=True, command=command(one_thread), env={**env, **state.env})
    best = min(result[k]["wall_s"] for k in ("side_by_side", "mps") if result[k] is not None)
    result["wall_speedup"] = result["sequential"]["wall_s"] / best
    return result


if __name__ == "__main__":
    _worker(sys.argv[1:])
