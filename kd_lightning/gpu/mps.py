"""CUDA MPS around many runs on one GPU: `python -m kd_lightning.gpu.mps start|stop STATE_DIR`, or `daemon()`.

Processes that share a GPU take turns (time-slicing); under the MPS daemon their kernels overlap.
The daemon must run before the runs create their CUDA contexts, and every run must see the same
CUDA_MPS_PIPE_DIRECTORY. So the gpus launcher (gpus.MpsAroundSweep) and scripts/gpu_study.sh start
it before their first run and stop it after their last, and only when they started it themselves: a
daemon that already runs is used and left alone. A missing binary, a failed start or a CUDA client
that fails under a new daemon leaves the runs on time-slicing, with one log line. The pipes go to a
short folder under $TMPDIR (socket paths are limited to about 100 characters), the daemon's logs to
STATE_DIR/log; both only where the user has not set CUDA_MPS_PIPE_DIRECTORY / CUDA_MPS_LOG_DIRECTORY.
KD_MPS=0 switches MPS off.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from kd_lightning.run.files import write_json, write_text

log = logging.getLogger(__name__)

BINARY = "nvidia-cuda-mps-control"
PIPE, LOG = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
STATE_FILE, ENV_FILE = "state.json", "env.sh"
FALLBACK = "the runs share the GPU by time-slicing"


@dataclass
class MpsState:
    """What start() found or did: `started` (by us, so stop() quits it), `active` (a daemon serves new runs)."""

    started: bool
    active: bool
    note: str
    env: dict[str, str]  # the variables start() set for the runs ({} when it set none)


def pipe_folder() -> Path:
    """Short and per user: the daemon's sockets live here."""
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"kd-lightning-mps-{os.getuid()}"


def _control(stdin: str | None, *args: str, timeout: float = 20) -> subprocess.CompletedProcess | None:
    """One call of the control binary with the current environment; None when it is missing or hangs."""
    exe = shutil.which(BINARY)
    if exe is None:
        return None
    try:
        return subprocess.run(
            [exe, *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def daemon_running() -> bool:
    """Whether a control daemon answers on the current CUDA_MPS_PIPE_DIRECTORY (its default when unset)."""
    done = _control("get_server_list\n")
    return done is not None and done.returncode == 0


# a CUDA client under the new daemon: the MPS server starts with the first client and can still fail there
# (a sandboxed driver, another user's server); without a GPU there is nothing to try
PROBE = "import sys, torch; sys.exit(torch.cuda.is_available() and int((torch.ones(1, device='cuda') + 1).item()) != 2)"


def _client_works() -> str:
    """'' when a CUDA client runs under the daemon, else why not."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:200]


def start(state_dir: Path, probe: bool = True) -> MpsState:
    """Start the daemon unless one runs or the binary is missing; set its environment for the runs.
    `probe`: run one CUDA client under a daemon started here, and fall back if it fails."""
    if os.environ.get("KD_MPS", "1") == "0":
        return MpsState(started=False, active=False, note=f"CUDA MPS: off (KD_MPS=0); {FALLBACK}", env={})
    if shutil.which(BINARY) is None:
        return MpsState(started=False, active=False, note=f"CUDA MPS: {BINARY} not found; {FALLBACK}", env={})
    if daemon_running():
        where = os.environ.get(PIPE, "its default pipe folder")
        note = f"CUDA MPS: a daemon already runs ({where}); using it, leaving it running"
        return MpsState(started=False, active=True, note=note, env={})
    env = {k: v for k, v in ((PIPE, str(pipe_folder())), (LOG, str(Path(state_dir) / "log"))) if k not in os.environ}
    for value in env.values():
        Path(value).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    if daemon_running():  # one of ours outlived its sweep (a kill): use it, as any running daemon
        note = f"CUDA MPS: a daemon already runs ({os.environ[PIPE]}); using it"
        return MpsState(started=False, active=True, note=note, env=env)
    done = _control(None, "-d")
    for _ in range(20):  # the daemon forks; its pipe answers a moment later
        if done is None or done.returncode != 0 or daemon_running():
            break
        time.sleep(0.1)
    if done is None or done.returncode != 0 or not daemon_running():
        for key in env:  # the runs must not look for a daemon that is not there
            os.environ.pop(key, None)
        why = "no answer" if done is None else f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}"
        note = f"CUDA MPS: `{BINARY} -d` failed ({why}); {FALLBACK}"
        return MpsState(started=False, active=False, note=note, env={})
    note = f"CUDA MPS: started the daemon (pipes in {os.environ[PIPE]}); stopped at the end"
    state = MpsState(started=True, active=True, note=note, env=env)
    if probe and (why := _client_works()):
        stop(state)
        for key in env:
            os.environ.pop(key, None)
        note = f"CUDA MPS: a CUDA client failed under the daemon ({why}); stopped it; {FALLBACK}"
        return MpsState(started=False, active=False, note=note, env={})
    return state


def stop(state: MpsState) -> str:
    """Quit the daemon if start() started it; a daemon found running is left alone."""
    if not state.started:
        return ""
    done = _control("quit\n")
    if done is None or done.returncode != 0:
        return "CUDA MPS: the daemon did not quit; stop it with `echo quit | nvidia-cuda-mps-control`"
    return "CUDA MPS: stopped the daemon"


@contextmanager
def daemon(state_dir: Path, enabled: bool = True) -> Iterator[MpsState]:
    """MPS for the block (see start); stopped afterwards if it was started here."""
    if not enabled:
        yield MpsState(started=False, active=False, note="", env={})
        return
    state = start(state_dir)
    log.info("%s", state.note)
    try:
        yield state
    finally:
        if note := stop(state):
            log.info("%s", note)
        for key in state.env:  # later CUDA work in this process must not look for the stopped daemon
            os.environ.pop(key, None)


def main(argv: list[str] | None = None) -> None:
    """The shell's way in: `start` writes STATE_DIR/state.json and env.sh (to source); `stop` reads them."""
    parser = argparse.ArgumentParser(prog="python -m kd_lightning.gpu.mps", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("state_dir", type=Path, help="holds state.json, env.sh and the daemon's log folder")
    args = parser.parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.action == "start":
        state = start(args.state_dir)
        write_json(args.state_dir / STATE_FILE, asdict(state))
        write_text(args.state_dir / ENV_FILE, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in state.env.items()))
        print(state.note)
        return
    path = args.state_dir / STATE_FILE
    if path.exists():
        state = MpsState(**json.loads(path.read_text()))
        os.environ.update(state.env)
        if note := stop(state):
            print(note)


if __name__ == "__main__":
    main()
