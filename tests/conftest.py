"""Shared fixtures: Hydra-composed configs shrunk to seconds on synthetic data, and the real-data archive."""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import shutil
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


TINY = ["data.synthetic_train=240", "data.synthetic_test=64", "data.batch_size=32"]
BASELINE = ["mode=baseline", "student.depth=3", "trainer.max_epochs=2", *TINY]  # a two-epoch run in about a second


def train(root: Path, *overrides: str):
    """One run in this process, as `python -m kd_lightning.train experiment=smoke ...` trains it; its record."""
    from kd_lightning.train import train as train_run

    return train_run(make_cfg(root, *overrides))


def run_dir(root: Path, *overrides: str) -> Path:
    return Path(make_cfg(root, *overrides).paths.run_dir)


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """The paths.root of a finished BASELINE run; tests copy it (the `root` fixture) before changing anything."""
    root = tmp_path_factory.mktemp("finished")
    train(root, *BASELINE)
    return root


@pytest.fixture
def root(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "root")
    return tmp_path / "root"


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _fast_tier_guard(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _fast_tier_guard(item):
        yield


@contextlib.contextmanager
def _fast_tier_guard(item):
    """A test not marked slow whose setup or body trains (Trainer.fit) or starts a process fails: the fast tier
    (`make test-fast`) stays a tier of unit tests."""
    if item.get_closest_marker("slow") is not None:
        yield
        return

    def refuse(*args, **kwargs):
        pytest.fail(f"{item.nodeid} trains or starts a process: mark it @pytest.mark.slow")

    import lightning

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lightning.Trainer, "fit", refuse)
        mp.setattr(subprocess.Popen, "__init__", refuse)
        mp.setattr(multiprocessing.process.BaseProcess, "start", refuse)
        mp.setattr(os, "fork", refuse)
        yield
