"""`python -m kd_lightning.bench`: run the comparisons, print the table, write the JSON file."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import torch

from kd_lightning.bench.checkpoint import bench_checkpoint
from kd_lightning.bench.compile import bench_compile
from kd_lightning.bench.epoch import bench_epoch
from kd_lightning.bench.harness import SECTIONS, SIZES, Sizes, accelerator, load_data
from kd_lightning.bench.kd import bench_kd
from kd_lightning.bench.many import bench_many
from kd_lightning.bench.pipeline import bench_pipeline
from kd_lightning.bench.table import table
from kd_lightning.bench.trainer import bench_trainer
from kd_lightning.gpu.hardware import choose_precision, device_label, prepare_backends, uses_cuda
from kd_lightning.run.files import write_json

DEFAULT = ("many", "pipeline", "trainer", "kd", "epoch", "checkpoint")  # compile only when asked: it takes minutes


def run(sizes: Sizes, device: torch.device, data_root: Path, only: tuple[str, ...] = DEFAULT) -> dict:
    """The comparisons named in `only` (harness.SECTIONS order); returns the JSON-ready results."""
    start, load_start = time.perf_counter(), os.getloadavg()
    prepare_backends(accelerator(device))
    # comparisons 2 and 3 time loops without a training Trainer: both sides get cuDNN's autotuner, as training does
    torch.backends.cudnn.benchmark = uses_cuda(accelerator(device))
    images, val, source = load_data(data_root, sizes)
    train = images[0][: sizes.n_train], images[1][: sizes.n_train]
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        measures = {
            # first: its worker processes must meet a GPU that this process has not touched yet (MPS)
            "many": lambda: bench_many(train=train, sizes=sizes, device=device, tmp=Path(tmp)),
            "pipeline": lambda: bench_pipeline(images, sizes, device),
            "trainer": lambda: bench_trainer(train, sizes, device),
            "kd": lambda: bench_kd(train=train, sizes=sizes, device=device, tmp=Path(tmp)),
            "epoch": lambda: bench_epoch(train=train, val=val, sizes=sizes, device=device, tmp=Path(tmp)),
            "checkpoint": lambda: bench_checkpoint(sizes, device, Path(tmp)),
            "compile": lambda: bench_compile(train, sizes, device),
        }
        for name in SECTIONS:
            if name not in only or (name == "many" and sizes.many < 1):
                continue
            t0 = time.perf_counter()
            results[name] = measures[name]()
            seconds[name] = round(time.perf_counter() - t0, 1)
    results["meta"] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_label(device),
        "precision": choose_precision(accelerator(device)),
        "data": source,
        "sizes": asdict(sizes),
        "wall_seconds": time.perf_counter() - start,
        "section_seconds": seconds,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
    }
    return results


def header(results: dict, sizes: Sizes) -> str:
    """Two lines: the card, versions, precision and data; the sizes, repeats, machine load and wall time."""
    meta = results["meta"]
    return (
        f"kd_lightning.bench on {meta['device']}, torch {meta['torch']}, lightning {meta['lightning']}, "
        f"{meta['precision']}, data: {meta['data']}\n"
        f"width {sizes.width}, batch {sizes.batch}, {sizes.n_train} train / {sizes.n_val} val images, "
        f"comparisons 1-3 best of {sizes.repeats}, 4 timed once; load average "
        f"{meta['load_average_start'][0]:.1f} -> {meta['load_average_end'][0]:.1f}; {meta['wall_seconds']:.0f} s"
    )


def main(argv: list[str] | None = None) -> dict:
    """Parse the flags, run, print the header and table, write the JSON file; returns the results."""
    parser = argparse.ArgumentParser(
        prog="python -m kd_lightning.bench",
        description="Speed benchmark: the comparisons of docs/performance.md on this machine.",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench.json"), help="JSON file to write")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("data/cifar10-jpeg"),
        help="an unpacked CIFAR-10 folder copy; synthetic images when it is absent",
    )
    parser.add_argument("--sizes", choices=["auto", *SIZES], default="auto", help="auto: gpu on CUDA, else cpu")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--only", default=",".join(DEFAULT), help=f"comma-separated comparisons out of {','.join(SECTIONS)}"
    )
    parser.add_argument("--many", type=int, default=None, help="processes of the many-runs comparison (0 skips it)")
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    if unknown := set(only) - set(SECTIONS):
        parser.error(f"--only {','.join(sorted(unknown))} is unknown; choose from {','.join(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    sizes = SIZES[args.sizes if args.sizes != "auto" else ("gpu" if device.type == "cuda" else "cpu")]
    if args.many is not None:
        sizes = replace(sizes, many=args.many)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    results = run(sizes, device, args.data_root, only)
    print(header(results, sizes))
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return results
