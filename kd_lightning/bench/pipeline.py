"""Comparison 1: the data pipeline, ours vs torchvision's per-image transforms in a DataLoader.

Measures only what feeds a training step: images/s delivered as normalised float batches on the
device, with the same random crop and flip, in batches of the study's size.
"""

from __future__ import annotations

import time

import torch

from kd_lightning.bench.harness import Pair, Sizes, sync, torchvision_loader
from kd_lightning.config import DataConfig
from kd_lightning.data import BatchLoader, augment, normalize

PIPELINE_BATCH = DataConfig().batch_size  # the study's training batch on every device


def bench_pipeline(train: Pair, sizes: Sizes, device: torch.device) -> dict:
    """Images/s delivered as normalised float batches on `device`, ours vs torchvision's DataLoader."""
    train = train[0][: sizes.pipeline_images], train[1][: sizes.pipeline_images]
    x, y = train[0].to(device), train[1].to(device)
    batch = min(PIPELINE_BATCH, len(y))
    ours = BatchLoader(x, y, batch_size=batch, shuffle=True, drop_last=True)
    normalize(augment(x[:batch]))  # warm-up
    best_ours = best_tv = 0.0
    tv = torchvision_loader(
        train,
        batch=batch,
        workers=sizes.workers,
        device=device,
        train=True,
        drop_last=True,
        persistent_workers=sizes.workers > 0,
    )
    for _ in tv:  # an untimed pass starts the workers once (kinder to torchvision than a cold start)
        pass
    for _ in range(sizes.repeats):
        sync(device)
        t0, images = time.perf_counter(), 0
        while images < 4 * len(y) or time.perf_counter() - t0 < 0.2:  # long enough to time
            for xb, _ in ours:
                normalize(augment(xb))
                images += len(xb)
        sync(device)
        best_ours = max(best_ours, images / (time.perf_counter() - t0))
        t0, images = time.perf_counter(), 0
        for xb, _ in tv:
            xb = xb.to(device, non_blocking=True)
            images += len(xb)
        sync(device)
        best_tv = max(best_tv, images / (time.perf_counter() - t0))
    ratio = best_ours / best_tv
    return {
        "ours_img_s": best_ours,
        "torchvision_img_s": best_tv,
        "ratio": ratio,
        "workers": sizes.workers,
        "batch": batch,
        "images": len(y),
        "threads": torch.get_num_threads(),
    }
