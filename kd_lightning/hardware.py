"""Facts about the machine a run uses: whether it trains on a GPU, at what precision, and what to call the device.

One place for these choices, so a training run, the benchmark and the run record agree.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch


def uses_cuda(accelerator: str) -> bool:
    """Whether a run with this trainer.accelerator will train on a CUDA GPU."""
    return str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def choose_precision(accelerator: str, precision: str | None = None) -> str:
    """`precision` when given; else bf16-mixed on a GPU that has bf16 (no GradScaler sync), else 32-true."""
    if precision:
        return precision
    return "bf16-mixed" if uses_cuda(accelerator) and torch.cuda.is_bf16_supported() else "32-true"


def prepare_backends(accelerator: str) -> None:
    """TF32 matmuls on a GPU: the bf16 runs lose nothing by it, the fp32 parts gain speed."""
    if uses_cuda(accelerator):
        torch.set_float32_matmul_precision("high")


def device_label(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3', or 'cpu (<model name>, <n> cores)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
    return f"cpu ({model}, {os.cpu_count()} cores)"
