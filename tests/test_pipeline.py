"""The reproduction pipeline as a user runs it: `make reproduce`, the submitit and joblib launchers, on tiny
synthetic runs in a temporary paths.root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, run_cli
from hydra import compose, initialize_config_dir

# tiny synthetic runs: a few batches, one epoch
TINY = [
    "experiment=smoke",
    "trainer.max_epochs=1",
    "data.synthetic_train=512",
    "data.synthetic_test=256",
    "trainer.enable_progress_bar=false",
]


def make(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`make` in the repository with this interpreter, never (re)installing the environment."""
    return subprocess.run(
        ["make", "-o", "setup", f"PYTHON={sys.executable}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finished_runs(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/metrics.json"))}


def results_of_training(root: Path) -> dict[Path, int]:
    """Modification times of everything a training writes (Hydra rewrites .hydra/ and the log even for a skip)."""
    files = [
        *root.glob("runs/*/metrics.json"),
        *root.glob("runs/*/checkpoints/*"),
        *root.glob("runs/*/tb/*"),
        *root.glob("teachers/*"),
    ]
    return {p: p.stat().st_mtime_ns for p in files}


@pytest.mark.slow
def test_make_reproduce_runs_end_to_end_and_a_rerun_trains_nothing(tmp_path):
    args = [
        "reproduce",
        "EXPERIMENT=smoke",
        "DATA=synthetic",
        f"ROOT={tmp_path}",
        "DEPTHS=3,4",
        "EPOCHS=1",
        "TEACHER_EPOCHS=1",
        "EXTRA=data.synthetic_train=512 data.synthetic_test=256 trainer.enable_progress_bar=false",
    ]
    first = make(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = finished_runs(tmp_path)
    assert sorted(runs) == [
        "baseline-r3-w8-s0-b128-e1",
        "baseline-r4-w8-s0-b128-e1",
        "kd-r3-w8-t6-a0.5-T4-s0-b128-e1",
        "kd-r4-w8-t6-a0.5-T4-s0-b128-e1",
        "teacher-r6-w8-s0-b128-e1",
    ]
    assert all(m["data_source"] == "synthetic" and m["epochs"] == 1 for m in runs.values())
    report = tmp_path / "report"
    results, table = (report / "results.md").read_text(), (report / "results.csv").read_text()
    assert "| ResNet-6 (teacher) |" in results and "| ResNet-4 |" in results
    assert "| ResNet-3 |" in first.stdout  # the table is printed too
    stamps = results_of_training(tmp_path)
    assert len(stamps) >= 5 * 3

    second = make(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert output.count("already done; skipped") == 5
    assert "GPU available" not in output and "Trainer.fit" not in output  # no Trainer was even built
    assert results_of_training(tmp_path) == stamps, "a skipped pipeline rewrote metrics, checkpoints or events"
    assert (report / "results.md").read_text() == results
    assert (report / "results.csv").read_text() == table


@pytest.mark.slow
def test_submitit_local_multirun_over_two_depths_writes_one_run_folder_each(tmp_path):
    result = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "mode=baseline",
        "student.depth=3,4",
        f"paths.root={tmp_path}",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(tmp_path)
    assert sorted(runs) == ["baseline-r3-w8-s0-b128-e1", "baseline-r4-w8-s0-b128-e1"]
    assert [m["depth"] for m in runs.values()] == [3, 4]
    assert list((tmp_path / "runs" / ".submitit").glob("*/*_result.pkl")), "the jobs did not go through submitit"


@pytest.mark.slow
def test_gpus_launcher_runs_parallel_jobs_into_their_own_run_folders(tmp_path):
    # two workers at once, as on a 2-GPU machine; on this CPU-only machine nothing is leased
    result = run_cli(
        "-m",
        "hydra/launcher=gpus",
        "hydra.launcher.n_jobs=2",
        "mode=baseline",
        "student.depth=3,4",
        f"paths.root={tmp_path}",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "n_jobs=2" in result.stdout + result.stderr
    runs = finished_runs(tmp_path)
    assert sorted(runs) == ["baseline-r3-w8-s0-b128-e1", "baseline-r4-w8-s0-b128-e1"]
    assert all(m["run_name"] == name for name, m in runs.items())


def test_gpus_launcher_n_jobs_is_gpus_times_jobs_per_gpu_and_one_without_a_gpu():
    from kd_lightning.config import register
    from kd_lightning.gpu import hardware, lease

    register()
    lease.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=gpus", "gpu_pool.jobs_per_gpu=4"], return_hydra_config=True)
    expected = 1 if hardware.gpu_count() == 0 else 4 * hardware.gpu_count()
    assert cfg.hydra.launcher.n_jobs == expected


def test_every_job_of_a_sweep_gets_its_own_run_folder():
    from kd_lightning.config import register

    register()
    names = set()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for depth in (3, 4):
            for alpha in (0.1, 0.5):
                for temperature in (1, 4):
                    for seed in (0, 1):
                        cfg = compose(
                            "config",
                            overrides=[
                                f"student.depth={depth}",
                                f"kd.alpha={alpha}",
                                f"kd.temperature={temperature}",
                                f"seed={seed}",
                            ],
                        )
                        names.add(cfg.run_name)
    assert len(names) == 2 * 2 * 2 * 2


def test_slurm_launcher_asks_one_gpu_per_run_with_cluster_settings_from_the_command_line():
    from kd_lightning.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=proj",
                "hydra.launcher.timeout_min=90",
            ],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert (launcher.partition, launcher.account, launcher.timeout_min) == ("gpu", "proj", 90)
