"""scripts/gpu_study.sh as far as a CPU allows: its dry run (same steps, CPU, synthetic data, tiny
sizes) and its refusal to train the real study without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_study.sh"
# the wheels a bare GPU machine lacks; `make test` exports their folder (the Makefile holds the default)
WHEELS = Path(os.environ["WHEELS"]) if os.environ.get("WHEELS") else None


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYDEPS": str(tmp_path / "pydeps"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def test_gpu_script_without_an_output_folder_prints_its_usage(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 2 and "usage: scripts/gpu_study.sh OUT_DIR" in result.stderr


def test_gpu_script_refuses_the_real_study_when_torch_sees_no_gpu(tmp_path):
    (tmp_path / "no-wheels").mkdir()
    result = run_script(
        tmp_path, str(tmp_path / "out"), CUDA_VISIBLE_DEVICES="", WHEELS_DIR=str(tmp_path / "no-wheels")
    )
    assert result.returncode == 2
    assert "torch sees no CUDA device; DRY_RUN=1 runs the same steps on the CPU" in result.stderr
    assert not (tmp_path / "out" / "study").exists()


@pytest.mark.slow
def test_gpu_script_dry_run_trains_teacher_then_students_and_writes_bench_report_and_timings(tmp_path):
    wheels = WHEELS if WHEELS is not None and WHEELS.is_dir() else tmp_path / "no-wheels"
    wheels.mkdir(exist_ok=True)
    out = tmp_path / "out"
    # two depths, two runs at a time: four students, so a run waits for a free slot
    result = run_script(tmp_path, str(out), DRY_RUN="1", WHEELS_DIR=str(wheels), DEPTHS="3 4", JOBS="2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    if wheels == WHEELS:  # the dependencies a bare GPU machine lacks came from the shipped wheels
        assert (tmp_path / "pydeps" / "hydra").is_dir() and (tmp_path / "pydeps" / "omegaconf").is_dir()

    metrics = [json.loads(p.read_text()) for p in (out / "study" / "runs").glob("*/metrics.json")]
    assert sorted((m["mode"], m["depth"]) for m in metrics) == sorted(
        [("teacher", 10)] + [(mode, d) for mode in ("baseline", "kd") for d in (3, 4)]
    )
    assert all(m["max_epochs"] == 1 and m["data_source"] == "synthetic" for m in metrics)
    teacher_ckpt = next(m for m in metrics if m["mode"] == "teacher")["teacher_ckpt"]
    assert all(m["teacher_ckpt"] == teacher_ckpt for m in metrics if m["mode"] == "kd")

    timings = json.loads((out / "timings.json").read_text())
    assert timings["dry_run"] is True and len(timings["runs"]) == 5
    assert all(r["exit_code"] == 0 and r["process_s"] > 0 and r["train_s"] > 0 for r in timings["runs"])
    assert timings["total_s"] >= timings["study_s"] > 0 and timings["teacher_train_images_per_second"] > 0
    assert timings["runs"][0]["run"] == "teacher"  # the students start once the teacher exists
    teacher = timings["runs"][0]
    assert min(r["start_s"] for r in timings["runs"][1:]) >= teacher["start_s"] + teacher["process_s"] - 0.2
    assert "study (5 runs)" in (out / "timings.txt").read_text()

    bench = json.loads((out / "bench.json").read_text())
    assert {"pipeline", "trainer", "kd", "epoch", "meta"} <= set(bench)
    assert "1 data pipeline" in (out / "bench.txt").read_text()
    assert (out / "report" / "results.md").is_file()
    assert {p.name for p in (out / "logs").glob("*.log")} >= {"teacher.log", "kd-r3.log", "bench.log"}
