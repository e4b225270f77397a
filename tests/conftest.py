"""Shared fixtures: Hydra-composed configs shrunk to seconds on synthetic data, and the real-data archive."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# the offline CIFAR-10 copy; `make test` exports its path (the Makefile holds the default)
ARCHIVE = Path(os.environ["DATA_ARCHIVE"]) if os.environ.get("DATA_ARCHIVE") else None


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The config `python -m kd_lightning.train experiment=smoke ...` would see, writing under tmp_path."""
    from kd_lightning.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config", overrides=["experiment=smoke", f"paths.root={tmp_path}", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.paths.run_dir = str(tmp_path / "runs" / cfg.run_name)
    return cfg


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "kd_lightning.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cifar_jpeg(tmp_path_factory) -> Path:
    """The offline CIFAR-10 copy, unpacked once per session (data/cifar10-jpeg if it is already there)."""
    local = ROOT / "data" / "cifar10-jpeg"
    if (local / "train").is_dir() and (local / "test").is_dir():
        return local
    if ARCHIVE is None:
        pytest.skip("real-data test needs the offline CIFAR-10 archive: set DATA_ARCHIVE=PATH (make test sets it)")
    if not ARCHIVE.is_file():
        pytest.skip(f"real-data test needs the offline CIFAR-10 archive at DATA_ARCHIVE={ARCHIVE}, which is absent")
    dest = tmp_path_factory.mktemp("cifar")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(dest, filter="data")
    return dest / "cifar10-jpeg"
