"""scripts/gpu_study.sh as far as a CPU allows: its dry run (same steps, CPU, synthetic data, tiny
sizes, a fake MPS binary) through the study's process pool, its deadline, a kill from outside, the
methods and the chain, and its refusal to train the real study without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from test_mps import FAKE

from kd_lightning.study import speed_targets

SCRIPT = ROOT / "scripts" / "gpu_study.sh"
# the wheels a bare GPU machine lacks; `make test` exports their folder (the Makefile holds the default)
WHEELS = Path(os.environ["WHEELS"]) if os.environ.get("WHEELS") else None


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYDEPS": str(tmp_path / "pydeps"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_gpu_script_without_an_output_folder_prints_its_usage(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 2 and "usage: scripts/gpu_study.sh OUT_DIR" in result.stderr


@pytest.mark.slow
def test_gpu_script_refuses_the_real_study_when_torch_sees_no_gpu(tmp_path):
    (tmp_path / "no-wheels").mkdir()
    result = run_script(
        tmp_path, str(tmp_path / "out"), CUDA_VISIBLE_DEVICES="", WHEELS_DIR=str(tmp_path / "no-wheels")
    )
    assert result.returncode == 2
    assert "torch sees no CUDA device; DRY_RUN=1 runs the same steps on the CPU" in result.stderr
    assert not (tmp_path / "out" / "study").exists()


@pytest.fixture
def fake_mps(tmp_path) -> dict[str, str]:
    """A fake nvidia-cuda-mps-control first on PATH (see test_mps.py); the environment that puts it there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE)
    exe.chmod(0o755)
    (tmp_path / "default-pipe").mkdir()
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_MPS_LOG": str(tmp_path / "mps-calls.log"),
        "FAKE_MPS_DEFAULT": str(tmp_path / "default-pipe"),
        "TMPDIR": str(tmp_path),
    }


@pytest.mark.slow
def test_gpu_script_dry_run_trains_each_seed_after_its_teacher_with_mps_bench_report_and_targets(tmp_path, fake_mps):
    wheels = WHEELS if WHEELS is not None and WHEELS.is_dir() else tmp_path / "no-wheels"
    wheels.mkdir(exist_ok=True)
    out = tmp_path / "out"
    # two seeds, one depth, two runs at a time: seed 1's teacher shares the slots with seed 0's students
    env = dict(DRY_RUN="1", WHEELS_DIR=str(wheels), SEEDS="0 1", DEPTHS="3", JOBS="2", MPS="1", **fake_mps)
    result = run_script(tmp_path, str(out), BENCH_ARGS="--only pipeline", **env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    if wheels == WHEELS:  # the dependencies a bare GPU machine lacks came from the shipped wheels
        assert (tmp_path / "pydeps" / "hydra").is_dir() and (tmp_path / "pydeps" / "omegaconf").is_dir()

    metrics = [json.loads(p.read_text()) for p in (out / "study" / "runs").glob("*/metrics.json")]
    assert sorted((m["mode"], m["depth"], m["seed"]) for m in metrics) == sorted(
        [("teacher", 10, s) for s in (0, 1)] + [(mode, 3, s) for mode in ("baseline", "kd") for s in (0, 1)]
    )
    assert all(m["max_epochs"] == 1 and m["data_source"] == "synthetic" for m in metrics)
    teachers = {m["seed"]: m["teacher_ckpt"] for m in metrics if m["mode"] == "teacher"}
    assert all(m["teacher_ckpt"] == teachers[m["seed"]] for m in metrics if m["mode"] == "kd")

    timings = json.loads((out / "timings.json").read_text())
    runs = {r["run"]: r for r in timings["runs"]}
    assert timings["dry_run"] is True and len(runs) == 6 and timings["plan"]["seeds"] == [0, 1]
    assert all(r["exit_code"] == 0 and r["process_s"] > 0 and r["train_s"] > 0 for r in runs.values())
    first = runs["teacher-s0"]  # alone: every other run starts once it has ended
    assert min(r["start_s"] for name, r in runs.items() if name != "teacher-s0") >= first["stop_s"] - 0.2
    for seed in (0, 1):  # each seed's KD student once its own teacher exists
        assert runs[f"kd-r3-s{seed}"]["start_s"] >= runs[f"teacher-s{seed}"]["stop_s"] - 0.2
    assert timings["per_seed"] == {s: {**timings["per_seed"][s], "finished": 3, "failed": 0} for s in ("0", "1")}
    assert timings["total_s"] >= timings["study_s"] > 0 and timings["teacher_train_images_per_second"] > 0
    split = runs["teacher-s0"]["split"]  # where the teacher's time went, from its record
    record = next(m for m in metrics if m["mode"] == "teacher" and m["seed"] == 0)
    assert split["steps_s"] == record["time_split"]["steps_s"] > 0
    assert 0 < split["launch_to_first_step_s"] < first["process_s"]
    assert "teacher-s0 time split: launch to first step" in (out / "timings.txt").read_text()

    # every target has a row, printed at the end and kept in timings.json and timings.txt; a dry run judges none
    assert len(timings["targets"]) >= len(speed_targets.load()[0])
    assert all(r["status"].startswith("not measured") for r in timings["targets"])
    for text in (result.stdout, (out / "timings.txt").read_text()):
        assert "Three seeds of the study in one command" in text and "met?" in text and "study (6 runs)" in text

    assert "started the daemon" in timings["mps"]  # MPS=1: started before the study, stopped after it
    calls = Path(fake_mps["FAKE_MPS_LOG"]).read_text()
    assert calls.count("args=[-d]") == 1 and calls.count("stdin=[quit]") == 1
    assert "1 data pipeline" in (out / "bench.txt").read_text() and "pipeline" in json.loads(
        (out / "bench.json").read_text()
    )
    assert (out / "report" / "results.md").is_file()
    assert {p.name for p in (out / "logs").glob("*.log")} >= {"teacher-s0.log", "kd-r3-s1.log", "bench.log"}


@pytest.mark.slow
def test_gpu_script_stops_runs_at_its_deadline_and_leaves_a_summary(tmp_path):
    (tmp_path / "no-wheels").mkdir()
    out = tmp_path / "out"
    t0 = time.monotonic()
    # the deadline falls 20 s after the start (30 s are kept for the report); the teacher, 50 epochs of
    # 1600 images (minutes on a CPU), cannot finish by then, and the students wait for it
    env = dict(DRY_RUN="1", WHEELS_DIR=str(tmp_path / "no-wheels"), SEEDS="0", DEPTHS="3", BENCH="0", TIME_LIMIT="50")
    env["EXTRA"] = "trainer.max_epochs=50 data.synthetic_train=2000"
    result = run_script(tmp_path, str(out), **env)
    assert result.returncode == 1 and time.monotonic() - t0 < 80
    timings = json.loads((out / "timings.json").read_text())
    assert timings["stopped"] == "deadline" and all(r["exit_code"] == 143 for r in timings["runs"])
    assert {"baseline-r3-s0", "kd-r3-s0"} <= set(timings["not_started"])
    assert "runs stopped: deadline" in (out / "timings.txt").read_text()


@pytest.mark.slow
def test_gpu_script_killed_from_outside_still_leaves_a_summary(tmp_path):
    (tmp_path / "no-wheels").mkdir()
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DRY_RUN": "1",
        "WHEELS_DIR": str(tmp_path / "no-wheels"),
        "SEEDS": "0",
        "DEPTHS": "3",
        "BENCH": "0",
    }
    # what the device command does: a timeout around the script, then a tarball of whatever is there
    result = subprocess.run(
        ["timeout", "-s", "TERM", "9", "bash", str(SCRIPT), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (124, 143), result.stderr[-2000:]
    assert (out / "timings.json").is_file() and (out / "timings.txt").is_file()
    assert (out / "logs" / "steps.log").is_file()


@pytest.mark.slow
def test_gpu_script_methods_trains_reverse_kd_dkd_and_a_chain_through_the_assistant(tmp_path):
    (tmp_path / "no-wheels").mkdir()
    out = tmp_path / "out"
    env = dict(DRY_RUN="1", WHEELS_DIR=str(tmp_path / "no-wheels"), SEEDS="0", DEPTHS="3", BENCH="0", METHODS="1")
    result = run_script(tmp_path, str(out), **env, ASSISTANT="3", CHAIN_DEPTHS="3", JOBS="2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    runs = {p.parent.name: json.loads(p.read_text()) for p in (out / "study" / "runs").glob("*/metrics.json")}
    kinds = sorted((r["mode"], r["method"], r["divergence"], len(r["lineage"] or [])) for r in runs.values())
    assert kinds == [
        ("baseline", None, None, 0),
        ("kd", "dkd", None, 1),
        ("kd", "kd", "forward", 1),
        ("kd", "kd", "forward", 2),  # the chain: teacher, then the ResNet-3 KD student as its assistant
        ("kd", "kd", "reverse", 1),
        ("teacher", None, None, 0),
    ]
    timings = json.loads((out / "timings.json").read_text())
    assert {r["run"] for r in timings["runs"]} >= {"rev-r3-s0", "dkd-r3-s0", "chain-r3-s0"}
    assert "## Methods" in (out / "report" / "results.md").read_text()
