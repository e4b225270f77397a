"""Facts about the machine a run uses: whether it trains on a GPU, at what precision, how much memory
it has, what to call the device, which software versions run, and which process is rank zero.

One place for these choices, so a training run, the benchmark and the run record agree.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torchvision


def gpu_count() -> int:
    """CUDA GPUs this process may use (0 on a machine without one): the one place that asks torch."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def uses_cuda(accelerator: str) -> bool:
    """Whether a run with this trainer.accelerator will train on a CUDA GPU."""
    return str(accelerator) in ("auto", "gpu", "cuda") and gpu_count() > 0


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


def memory_bytes(accelerator: str) -> tuple[int, str]:
    """How much memory a run's tensors can use, and what to call it: the first GPU's, or the machine's RAM."""
    if uses_cuda(accelerator):
        return torch.cuda.get_device_properties(0).total_memory, "the GPU's memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"


def software_versions() -> dict[str, str]:
    """The versions a run record keeps beside its results."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": L.__version__,
        "hydra": hydra.__version__,
    }


def code_version() -> dict[str, Any]:
    """{'commit': the git commit of this package's checkout, 'dirty': whether its tree had changes}; None for both
    when the code does not run from a git checkout (an installed copy, a bare copy of the tree)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if head.returncode != 0 or status.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def is_launch_rank_zero() -> bool:
    """False in the extra processes a multi-device run starts (they share the run folder of rank 0)."""
    return all(os.environ.get(v, "0") == "0" for v in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
