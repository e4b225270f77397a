"""Speed benchmark: `python -m kd_lightning.bench [--out PATH] [--data-root DIR] [--sizes auto|cpu|gpu|tiny]`.

Four comparisons, measured side by side in one process on whatever machine runs it:
  1. data pipeline: our device-resident batches vs torchvision's per-image transforms in a DataLoader;
  2. training throughput: BaselineModule through the Lightning Trainer vs a plain PyTorch loop
     (same model, optimiser, schedule, batch, data and precision), ResNet-4 and ResNet-10;
  3. one KD step vs one baseline step vs one teacher forward (same student, same batch);
  4. one epoch (train + validation) end to end: ours vs a naive Lightning + torchvision script.
Prints a table with ratios and targets and writes everything to a JSON file. Each timed figure
is the best of `repeats` alternating measurements, which keeps a shared machine's noise out of
the ratios as far as possible. Sizes follow the device: full CIFAR-10 at width 64 on a GPU, a
few hundred to a few thousand images at width 16 on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from kd_lightning.config import Config, DataConfig, OptimConfig
from kd_lightning.data import (
    MEAN,
    STD,
    BatchLoader,
    CIFAR10DataModule,
    augment,
    load_folder,
    normalize,
    split_indices,
    synthetic_cifar,
)
from kd_lightning.models import resnet
from kd_lightning.modules import BaselineModule, DistillModule

TARGETS = {"pipeline": 10.0, "trainer": 0.95, "kd_slack": 1.1, "epoch_gpu": 5.0}


@dataclass
class Sizes:
    width: int  # base width of every ResNet measured
    batch: int
    n_train: int  # training images (the study's split, first n)
    n_val: int
    warmup: int  # untimed steps before each timed window
    steps: int  # timed steps
    repeats: int  # alternating measurements; the best of each is kept
    workers: int  # torchvision DataLoader processes
    epoch_depth: int  # the network of the end-to-end epoch (the teacher's depth)
    pipeline_images: int  # images per timed pass of comparison 1 (batches of the study's size)


SIZES = {
    "gpu": Sizes(64, 512, 40_000, 10_000, 15, 50, 2, min(8, os.cpu_count() or 1), 10, 40_000),
    "cpu": Sizes(16, 128, 896, 192, 1, 6, 3, min(2, os.cpu_count() or 1), 10, 2_048),
    # width 8: at width 4 a channels_last ResNet-10 backward never returned on a CPU (torch 2.14.1)
    "tiny": Sizes(8, 32, 128, 64, 1, 2, 1, 1, 4, 256),
}
PIPELINE_BATCH = DataConfig().batch_size  # comparison 1 uses the study's training batch on every device


# ----------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _precision(device: torch.device) -> str:
    """The project's default (kd_lightning.train): bf16-mixed on a GPU that has it, else fp32."""
    return "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32-true"


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if _precision(device) == "bf16-mixed":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _accelerator(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


def load_data(root: Path, sizes: Sizes) -> tuple[tuple, tuple, str]:
    """(train images, labels), (val images, labels) from the study's split; real data when `root` has it.

    The training part holds max(n_train, pipeline_images) images; comparisons 2-4 use the first n_train.
    """
    n_train = max(sizes.n_train, sizes.pipeline_images)
    if (root / "train").is_dir():
        x, y, _ = load_folder(root, "train", workers=min(8, os.cpu_count() or 1))
        source = f"CIFAR-10 JPEG copy ({root})"
    else:  # enough images that the 80/20 split holds n_train and n_val
        x, y = synthetic_cifar(max(5 * n_train // 4 + 1, 5 * sizes.n_val + 1), seed=1)
        source = "synthetic (no data under --data-root)"
    train_idx, val_idx = split_indices(len(y), split_seed=0)
    train_idx, val_idx = train_idx[:n_train], val_idx[: sizes.n_val]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), source


class _TensorData(CIFAR10DataModule):
    """Our data module (device placement, batching, on-device augmentation) over tensors in memory."""

    def __init__(self, train: tuple, val: tuple, batch_size: int):
        super().__init__(source="synthetic", batch_size=batch_size)
        self._given = {"train": train, "val": val, "test": val}

    def setup(self, stage: str | None = None) -> None:
        self._splits = self._given  # the benchmark chose its images; no 80/20 re-split
        self.split_hash = self.val_hash = None


class _PILImages(torch.utils.data.Dataset):
    """uint8 images served the way torchvision's CIFAR10 serves them: one PIL image at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, train: bool):
        from torchvision import transforms as T

        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # (N, H, W, C)
        self.labels = labels.tolist()
        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
        self.transform = T.Compose([*steps, T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def _torchvision_loader(data: tuple, batch: int, workers: int, device: torch.device, train: bool, **kw):
    return torch.utils.data.DataLoader(
        _PILImages(*data, train=train),
        batch_size=batch,
        shuffle=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        **kw,
    )


# ----------------------------------------------------------------------------- 1. data pipeline


def bench_pipeline(train: tuple, sizes: Sizes, device: torch.device) -> dict:
    """Images/s delivered as normalised float batches on `device`, ours vs torchvision's DataLoader."""
    train = train[0][: sizes.pipeline_images], train[1][: sizes.pipeline_images]
    x, y = train[0].to(device), train[1].to(device)
    batch = min(PIPELINE_BATCH, len(y))
    ours = BatchLoader(x, y, batch, shuffle=True, drop_last=True)
    normalize(augment(x[:batch]))  # warm-up
    best_ours = best_tv = 0.0
    tv = _torchvision_loader(
        train, batch, sizes.workers, device, train=True, drop_last=True, persistent_workers=sizes.workers > 0
    )
    for _ in tv:  # an untimed pass starts the workers once (kinder to torchvision than a cold start)
        pass
    for _ in range(sizes.repeats):
        _sync(device)
        t0, images = time.perf_counter(), 0
        while images < 4 * len(y) or time.perf_counter() - t0 < 0.2:  # long enough to time
            for xb, _ in ours:
                normalize(augment(xb))
                images += len(xb)
        _sync(device)
        best_ours = max(best_ours, images / (time.perf_counter() - t0))
        t0, images = time.perf_counter(), 0
        for xb, _ in tv:
            xb = xb.to(device, non_blocking=True)
            images += len(xb)
        _sync(device)
        best_tv = max(best_tv, images / (time.perf_counter() - t0))
    ratio = best_ours / best_tv
    return {
        "ours_img_s": best_ours,
        "torchvision_img_s": best_tv,
        "ratio": ratio,
        "target": TARGETS["pipeline"],
        "met": ratio >= TARGETS["pipeline"],
        "workers": sizes.workers,
        "batch": batch,
        "images": len(y),
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- 2. Lightning vs plain loop


def _per_step(stamps: list[float], device: torch.device) -> float:
    """Seconds per step from timestamps taken before the first timed step and after each one.

    On a CPU the fastest step (noise from a shared machine only ever adds time); on a GPU the
    window's mean, since its steps run asynchronously and only the window's two ends are synced.
    """
    if device.type == "cpu":
        return min(b - a for a, b in zip(stamps, stamps[1:]))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


class _StepTimer(L.Callback):
    """Timestamps from the end of step warmup-1 to the end of step `last` (each interval holds one
    whole step: fetch, augmentation, forward, backward, optimiser, hooks); on CUDA it also counts
    host-device syncs in that window."""

    def __init__(self, warmup: int, last: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, last, device
        self.stamps, self.syncs, self._caught, self._records = [], None, None, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup - 1:
            _sync(self.device)
            if self.device.type == "cuda":
                self._caught = warnings.catch_warnings(record=True)
                self._records = self._caught.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
        elif batch_idx == self.last and self._caught is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            self.syncs = sum("synchroniz" in str(w.message) for w in self._records)
        if batch_idx == self.last:
            _sync(self.device)
        if self.warmup - 1 <= batch_idx <= self.last:
            self.stamps.append(time.perf_counter())


def _optimiser(model: torch.nn.Module, total_steps: int) -> tuple:
    o = OptimConfig()
    opt = torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )
    pct = max(0.25, 2 / total_steps)  # as ClassifierModule.configure_optimizers
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total_steps, pct_start=pct)


def plain_loop(depth: int, train: tuple, sizes: Sizes, device: torch.device) -> float:
    """Images/s of a hand-written loop: our batches, the same ResNet, SGD + one-cycle, precision."""
    torch.manual_seed(0)
    model = resnet(depth, 10, sizes.width).to(device, memory_format=torch.channels_last)
    total = sizes.warmup + sizes.steps
    opt, sched = _optimiser(model, total)
    batches = iter(BatchLoader(train[0].to(device), train[1].to(device), sizes.batch, shuffle=True, drop_last=True))
    stamps = []
    for step in range(total):
        if step == sizes.warmup:
            _sync(device)
            stamps.append(time.perf_counter())
        x, y = next(batches)
        x = normalize(augment(x))
        with _autocast(device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step == total - 1:
            _sync(device)
        if stamps:
            stamps.append(time.perf_counter())
    return sizes.batch / _per_step(stamps, device)


def lightning_loop(depth: int, train: tuple, sizes: Sizes, device: torch.device) -> tuple[float, int | None]:
    """Images/s (and CUDA syncs in the timed steps) of BaselineModule through the Trainer."""
    torch.manual_seed(0)
    total = sizes.warmup + sizes.steps
    timer = _StepTimer(sizes.warmup, total - 1, device)
    trainer = L.Trainer(
        accelerator=_accelerator(device),
        devices=1,
        precision=_precision(device),
        max_epochs=1,
        limit_train_batches=total,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(BaselineModule(depth, sizes.width), datamodule=_TensorData(train, train, sizes.batch))
    return sizes.batch / _per_step(timer.stamps, device), timer.syncs


def bench_trainer(train: tuple, sizes: Sizes, device: torch.device) -> dict:
    out = {}
    for depth in (4, 10):
        plain = lightning = 0.0
        for _ in range(sizes.repeats):
            plain = max(plain, plain_loop(depth, train, sizes, device))
            img_s, syncs = lightning_loop(depth, train, sizes, device)
            lightning = max(lightning, img_s)
        ratio = lightning / plain
        out[f"resnet{depth}"] = {
            "lightning_img_s": lightning,
            "plain_img_s": plain,
            "ratio": ratio,
            "target": TARGETS["trainer"],
            "met": ratio >= TARGETS["trainer"],
            "syncs_in_timed_steps": syncs,
        }
    return out


# ----------------------------------------------------------------------------- 3. KD step


def _teacher_file(folder: Path, width: int) -> Path:
    """A teacher checkpoint with random weights: timing does not need a trained one."""
    teacher = BaselineModule(10, width, role="teacher")
    path = folder / "teacher.ckpt"
    torch.save({"hyper_parameters": dict(teacher.hparams), "state_dict": teacher.state_dict()}, path)
    return path


def _time_ms(fn, sizes: Sizes, device: torch.device) -> float:
    for _ in range(sizes.warmup):
        fn()
    _sync(device)
    stamps = [time.perf_counter()]
    for i in range(sizes.steps):
        fn()
        if i == sizes.steps - 1:
            _sync(device)
        stamps.append(time.perf_counter())
    return 1000 * _per_step(stamps, device)


def bench_kd(train: tuple, sizes: Sizes, device: torch.device, tmp: Path) -> dict:
    """ms per step: a ResNet-4 student on hard labels, the same student distilled, a ResNet-10 forward."""
    torch.manual_seed(0)
    x = normalize(augment(train[0][: sizes.batch].to(device)))
    y = train[1][: sizes.batch].to(device)
    base = BaselineModule(4, sizes.width).to(device)
    kd = DistillModule(4, str(_teacher_file(tmp, sizes.width)), width=sizes.width).to(device)
    opts = {m: torch.optim.SGD(m.model.parameters(), lr=0.01, momentum=0.9) for m in (base, kd)}

    def step(module: BaselineModule) -> None:
        with _autocast(device):
            loss = module.training_loss(x, y)[0]
        opts[module].zero_grad(set_to_none=True)
        loss.backward()
        opts[module].step()

    def teacher_forward() -> None:
        with torch.no_grad(), _autocast(device):
            kd.teacher(x)

    best = {"baseline_ms": float("inf"), "kd_ms": float("inf"), "teacher_forward_ms": float("inf")}
    for _ in range(sizes.repeats):
        for key, fn in (
            ("baseline_ms", lambda: step(base)),
            ("kd_ms", lambda: step(kd)),
            ("teacher_forward_ms", teacher_forward),
        ):
            best[key] = min(best[key], _time_ms(fn, sizes, device))
    bound = best["baseline_ms"] + TARGETS["kd_slack"] * best["teacher_forward_ms"]
    return {**best, "bound_ms": bound, "ratio": best["kd_ms"] / bound, "met": best["kd_ms"] <= bound}


# ----------------------------------------------------------------------------- 4. one epoch end to end


class _NaiveModule(L.LightningModule):
    """What a first Lightning script does: NCHW tensors, the loss logged to the progress bar every step."""

    def __init__(self, depth: int, width: int):
        super().__init__()
        self.model = resnet(depth, 10, width)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt, sched = _optimiser(self.model, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def epoch_ours(train: tuple, val: tuple, sizes: Sizes, device: torch.device, folder: Path) -> float:
    """Seconds for one epoch as the GPU script runs it: train.build_trainer, progress bar off."""
    from kd_lightning.train import build_trainer

    cfg = OmegaConf.structured(Config)
    cfg.trainer.max_epochs, cfg.trainer.accelerator, cfg.trainer.enable_progress_bar = 1, _accelerator(device), False
    torch.manual_seed(0)
    module = BaselineModule(sizes.epoch_depth, sizes.width, role="teacher")
    data = _TensorData(train, val, sizes.batch)
    data.eval_batch_size = cfg.data.eval_batch_size
    trainer = build_trainer(cfg, folder)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    _sync(device)
    return time.perf_counter() - t0


def epoch_naive(train: tuple, val: tuple, sizes: Sizes, device: torch.device, folder: Path) -> float:
    """Seconds for one epoch of the usual script: torchvision DataLoader, fp32, default Trainer."""
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    torch.manual_seed(0)
    module = _NaiveModule(sizes.epoch_depth, sizes.width)
    trainer = L.Trainer(
        accelerator=_accelerator(device),
        devices=1,
        max_epochs=1,
        default_root_dir=folder,
        logger=TensorBoardLogger(folder),
        callbacks=[TQDMProgressBar(refresh_rate=1)],
        enable_model_summary=False,
    )
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # the Trainer's default, which build_trainer changes globally
    loaders = [
        _torchvision_loader(d, sizes.batch, sizes.workers, device, train=t) for d, t in ((train, True), (val, False))
    ]
    try:
        t0 = time.perf_counter()
        sink = io.StringIO()  # the progress bar draws every step, but not on the console
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            trainer.fit(module, *loaders)
        _sync(device)
        return time.perf_counter() - t0
    finally:
        torch.backends.cudnn.benchmark = benchmark


def bench_epoch(train: tuple, val: tuple, sizes: Sizes, device: torch.device, tmp: Path) -> dict:
    naive = epoch_naive(train, val, sizes, device, tmp / "naive")  # once each: an epoch is long enough to time
    ours = epoch_ours(train, val, sizes, device, tmp / "ours")
    speedup = naive / ours
    target = TARGETS["epoch_gpu"] if device.type == "cuda" else None
    return {
        "depth": sizes.epoch_depth,
        "ours_s": ours,
        "naive_s": naive,
        "speedup": speedup,
        "target": target,
        "met": None if target is None else speedup >= target,
        "ours_img_s": (len(train[1]) + len(val[1])) / ours,
        "naive_img_s": (len(train[1]) + len(val[1])) / naive,
    }


# ----------------------------------------------------------------------------- report


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _met(m: bool | None) -> str:
    return "-" if m is None else ("yes" if m else "NO")


def table(r: dict) -> str:
    """The results as a fixed-width text table, one comparison per line."""
    rows = [("comparison", "ours", "alternative", "ratio", "target", "met")]
    p = r["pipeline"]
    rows.append(
        (
            "1 data pipeline, img/s (vs torchvision)",
            _fmt(p["ours_img_s"]),
            _fmt(p["torchvision_img_s"]),
            f"{p['ratio']:.1f}x",
            f">= {p['target']:g}x",
            _met(p["met"]),
        )
    )
    for name, t in r["trainer"].items():
        rows.append(
            (
                f"2 Lightning vs plain loop {name}, img/s",
                _fmt(t["lightning_img_s"]),
                _fmt(t["plain_img_s"]),
                f"{t['ratio']:.3f}x",
                f">= {t['target']:g}x",
                _met(t["met"]),
            )
        )
    k = r["kd"]
    rows.append(
        (
            "3 KD step vs baseline + 1.1 teacher fwd, ms",
            _fmt(k["kd_ms"]),
            _fmt(k["bound_ms"]),
            f"{k['ratio']:.3f}x",
            "<= 1x",
            _met(k["met"]),
        )
    )
    rows.append(
        (
            f"  (baseline step {_fmt(k['baseline_ms'])} ms, teacher forward {_fmt(k['teacher_forward_ms'])} ms)",
            "",
            "",
            "",
            "",
            "",
        )
    )
    e = r["epoch"]
    rows.append(
        (
            f"4 one epoch ResNet-{e['depth']}, s (vs naive Lightning)",
            f"{e['ours_s']:.2f}",
            f"{e['naive_s']:.2f}",
            f"{e['speedup']:.2f}x",
            "-" if e["target"] is None else f">= {e['target']:g}x",
            _met(e["met"]),
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    )


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
    return f"cpu ({model}, {os.cpu_count()} cores)"


def run(sizes: Sizes, device: torch.device, data_root: Path) -> dict:
    """All four comparisons; returns the JSON-ready results."""
    start, load_start = time.perf_counter(), os.getloadavg()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    images, val, source = load_data(data_root, sizes)
    train = images[0][: sizes.n_train], images[1][: sizes.n_train]
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, measure in (
            ("pipeline", lambda: bench_pipeline(images, sizes, device)),
            ("trainer", lambda: bench_trainer(train, sizes, device)),
            ("kd", lambda: bench_kd(train, sizes, device, Path(tmp))),
            ("epoch", lambda: bench_epoch(train, val, sizes, device, Path(tmp))),
        ):
            t0 = time.perf_counter()
            results[name] = measure()
            seconds[name] = round(time.perf_counter() - t0, 1)
    results["meta"] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_label(device),
        "precision": _precision(device),
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m kd_lightning.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench.json"), help="JSON file to write")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("data/cifar10-jpeg"),
        help="an unpacked CIFAR-10 folder copy; synthetic images when it is absent",
    )
    parser.add_argument("--sizes", choices=["auto", *SIZES], default="auto", help="auto: gpu on CUDA, else cpu")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    sizes = SIZES[args.sizes if args.sizes != "auto" else ("gpu" if device.type == "cuda" else "cpu")]
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    results = run(sizes, device, args.data_root)
    meta = results["meta"]
    print(f"kd_lightning.bench on {meta['device']}, {meta['precision']}, data: {meta['data']}")
    print(
        f"width {sizes.width}, batch {sizes.batch}, {sizes.n_train} train / {sizes.n_val} val images, "
        f"best of {sizes.repeats}; load average {meta['load_average_start'][0]:.1f} -> "
        f"{meta['load_average_end'][0]:.1f}; {meta['wall_seconds']:.0f} s"
    )
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
