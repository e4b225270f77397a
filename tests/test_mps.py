"""CUDA MPS start and stop on a CPU, with a fake nvidia-cuda-mps-control on PATH that records its calls: the
daemon is started only when none runs, stopped only by whoever started it, and a missing or failing binary
leaves the runs on time-slicing with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kd_lightning.gpu import hardware, mps
from kd_lightning.gpu import lease as gpus

# a daemon is a file in the pipe folder; every call is logged with its arguments, input and MPS environment
FAKE = """#!/usr/bin/env bash
state="${CUDA_MPS_PIPE_DIRECTORY:-$FAKE_MPS_DEFAULT}/daemon"
cmd=""; [[ ${1:-} == -d ]] || cmd=$(cat)
echo "args=[$*] stdin=[$cmd] pipe=[${CUDA_MPS_PIPE_DIRECTORY:-}] log=[${CUDA_MPS_LOG_DIRECTORY:-}]" >>"$FAKE_MPS_LOG"
case "${1:-}:$cmd" in
  -d:*) [[ -z ${FAKE_MPS_FAIL:-} ]] || { echo "cannot start the daemon" >&2; exit 1; }; touch "$state" ;;
  :get_server_list) [[ -f $state ]] || exit 1 ;;
  :quit) [[ -f $state ]] || exit 1; rm "$state" ;;
esac
"""


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Path:
    """The fake binary first on PATH; returns its call log. MPS variables unset, TMPDIR inside tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / mps.BINARY
    exe.write_text(FAKE)
    exe.chmod(0o755)
    calls = tmp_path / "calls.log"
    calls.touch()
    (tmp_path / "default-pipe").mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(calls))
    monkeypatch.setenv("FAKE_MPS_DEFAULT", str(tmp_path / "default-pipe"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    for key in (mps.PIPE, mps.LOG, "KD_MPS", "FAKE_MPS_FAIL"):  # set first, so the undo also removes what start() sets
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    return calls


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


@pytest.mark.slow
def test_starts_the_daemon_in_writable_folders_and_stops_it_afterwards(fake, tmp_path):
    state = mps.start(tmp_path / "state")
    assert state.started and state.active and "started the daemon" in state.note
    pipe, log_dir = tmp_path / "tmp" / f"kd-lightning-mps-{os.getuid()}", tmp_path / "state" / "log"
    assert os.environ[mps.PIPE] == str(pipe) and os.environ[mps.LOG] == str(log_dir)
    assert pipe.is_dir() and log_dir.is_dir()
    starts = [c for c in _calls(fake) if c.startswith("args=[-d]")]
    assert starts == [f"args=[-d] stdin=[] pipe=[{pipe}] log=[{log_dir}]"]  # the daemon got the folders
    assert mps.stop(state) == "CUDA MPS: stopped the daemon"
    assert _calls(fake)[-1].startswith("args=[] stdin=[quit]") and not (pipe / "daemon").exists()


@pytest.mark.slow
def test_a_running_daemon_is_used_and_never_stopped(fake, tmp_path, monkeypatch):
    pipe = tmp_path / "theirs"
    pipe.mkdir()
    (pipe / "daemon").touch()
    monkeypatch.setenv(mps.PIPE, str(pipe))
    state = mps.start(tmp_path / "state")
    assert not state.started and state.active and "already runs" in state.note and state.env == {}
    assert mps.stop(state) == ""
    assert not any("-d" in c or "quit" in c for c in _calls(fake))
    assert (pipe / "daemon").exists()


@pytest.mark.slow
@pytest.mark.parametrize("why", ["missing", "failing", "off"])
def test_a_missing_or_failing_binary_falls_back_to_time_slicing_with_one_line(fake, tmp_path, monkeypatch, why):
    if why == "missing":
        monkeypatch.setenv("PATH", "/usr/bin:/bin")
    elif why == "failing":
        monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    else:
        monkeypatch.setenv("KD_MPS", "0")
    state = mps.start(tmp_path / "state")
    assert not state.started and not state.active and state.env == {}
    assert "\n" not in state.note and state.note.endswith("the runs share the GPU by time-slicing")
    expected = {"missing": "nvidia-cuda-mps-control not found", "failing": "(exit 1: cannot start the daemon)"}
    assert expected.get(why, "off (KD_MPS=0)") in state.note
    assert mps.PIPE not in os.environ and mps.LOG not in os.environ  # no run looks for an absent daemon
    assert mps.stop(state) == ""


@pytest.mark.slow
def test_the_shell_commands_write_the_environment_to_source_and_stop_only_their_daemon(fake, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (mps.PIPE, mps.LOG)}
    cli = [sys.executable, "-m", "kd_lightning.gpu.mps"]
    started = subprocess.run([*cli, "start", str(tmp_path / "s")], env=env, capture_output=True, text=True)
    assert started.returncode == 0 and "started the daemon" in started.stdout
    exports = (tmp_path / "s" / "env.sh").read_text()
    assert f"export {mps.PIPE}=" in exports and f"export {mps.LOG}={tmp_path / 's' / 'log'}" in exports
    assert json.loads((tmp_path / "s" / "state.json").read_text())["started"] is True
    stopped = subprocess.run([*cli, "stop", str(tmp_path / "s")], env=env, capture_output=True, text=True)
    assert stopped.stdout.strip() == "CUDA MPS: stopped the daemon"
    assert sum("quit" in c for c in _calls(fake)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("n_gpus", [0, 1])
def test_the_gpus_launcher_runs_mps_around_a_sweep_only_with_a_gpu(fake, tmp_path, monkeypatch, n_gpus):
    monkeypatch.setattr(hardware, "gpu_count", lambda: n_gpus)
    callback = gpus.MpsAroundSweep(str(tmp_path / "locks" / "mps"))
    config = OmegaConf.create({})
    callback.on_multirun_start(config)
    running = (tmp_path / "tmp" / f"kd-lightning-mps-{os.getuid()}" / "daemon").exists()
    callback.on_multirun_end(config)
    assert running == (n_gpus == 1)
    assert sum("-d" in c for c in _calls(fake)) == n_gpus and sum("quit" in c for c in _calls(fake)) == n_gpus


@pytest.mark.slow
def test_a_daemon_whose_first_cuda_client_fails_is_stopped_and_the_runs_fall_back(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(mps, "PROBE", "import sys; sys.exit('MPS server failed to start')")
    state = mps.start(tmp_path / "state")
    assert not state.started and not state.active and state.env == {}
    assert "a CUDA client failed under the daemon (MPS server failed to start)" in state.note
    assert sum(c.startswith("args=[-d]") for c in _calls(fake)) == 1  # started once, then quit
    assert "stdin=[quit]" in _calls(fake)[-1] and mps.PIPE not in os.environ
