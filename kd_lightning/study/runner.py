"""Running a plan: each stage as Hydra multiruns (any launcher), or every run as its own process under a deadline.

`run_sweeps` is what `make reproduce` and `make methods` use: one `python -m kd_lightning.train -m`
command per sweep, stage after stage, with the launcher the overrides choose (Hydra's basic one runs
the jobs one after another). `Pool` is what `scripts/gpu_study.sh` uses on one machine: N training
processes at a time, each run as soon as the run it distils from has finished, a log and an exit
code per run, the state in OUT/logs/runs.json after every change, and at the deadline (or on
SIGTERM/Ctrl-C) SIGTERM to every running run, which saves last.ckpt so the same command resumes it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_lightning.run.files import write_json
from kd_lightning.study.plan import Plan, Run

log = logging.getLogger(__name__)

STATE_FILE = Path("logs") / "runs.json"  # under the study's output folder
GRACE_S = 90  # how long stopped runs get to write last.ckpt before they are killed
TRAIN = ("-m", "kd_lightning.train")


def run_sweeps(plan: Plan, *, python: str = sys.executable) -> int:
    """Every sweep of the plan as one Hydra multirun, in order; the exit code of the first that fails, else 0.
    A `hydra/launcher=NAME` among the plan's overrides launches every sweep's jobs with that launcher."""
    for sweep in plan.sweeps():
        cmd = [python, *TRAIN, "-m", *sweep.command_overrides()]
        log.info("%s: python %s", sweep.stage, " ".join(cmd[1:]))
        code = subprocess.run(cmd).returncode
        if code != 0:
            return code
    return 0


@dataclass
class Finished:
    """A run's process as the pool saw it; `exit_code` 128+N when signal N ended it, as a shell reports it."""

    name: str
    stage: str
    seed: int
    run_dir: str
    exit_code: int
    start: float
    stop: float


@dataclass
class Pool:
    """The plan's runs as processes, `jobs` at a time, until every run has ended or the deadline passed."""

    plan: Plan
    out: Path
    jobs: int
    deadline: float  # Unix seconds
    python: str = sys.executable
    on_change: Callable[[], Any] = lambda: None  # called after the state file is rewritten (the summary)
    meta: dict[str, Any] = field(default_factory=dict)  # kept in the state file (t0, dry_run, ...)
    finished: list[Finished] = field(default_factory=list)
    not_started: dict[str, str] = field(default_factory=dict)  # run -> why it did not start
    stopped: str | None = None  # why the pool stopped runs: the deadline or a signal

    def __post_init__(self) -> None:
        self._running: dict[str, tuple[Run, subprocess.Popen, float]] = {}
        self._folders: dict[str, Path] = {}
        self._signal: str | None = None

    def run(self) -> int:
        """0 when every run finished, 1 when one failed or did not run, 128+N when signal N stopped the pool."""
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        pending = list(self.plan.runs)
        try:
            self._folders = {run.name: self.plan.run_folder(run) for run in pending}  # a bad override stops here
            self._save()
            while pending or self._running:
                self._reap()
                pending = self._drop_orphans(pending)
                if self._signal or time.time() >= self.deadline:
                    self._stop(self._signal or "deadline", pending)
                    break
                pending = self._start_ready(pending)
                time.sleep(0.2)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self._signal:
            return 128 + (signal.SIGINT if self._signal == "SIGINT" else signal.SIGTERM)
        ok = not self.not_started and all(f.exit_code == 0 for f in self.finished)
        return 0 if ok else 1

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signal.Signals(signum).name

    def _start_ready(self, pending: list[Run]) -> list[Run]:
        done = {f.name for f in self.finished if f.exit_code == 0}
        for run in list(pending):
            if len(self._running) >= self.jobs or any(r.alone for r, _, _ in self._running.values()):
                break
            if run.after in self._folders and run.after not in done:  # it waits for a run of this plan
                continue
            if run.alone and self._running:
                break
            pending.remove(run)
            self._start(run)
        return pending

    def _start(self, run: Run) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.jobs))}
        with open(self.out / "logs" / f"{run.name}.log", "wb") as out:
            proc = subprocess.Popen(
                [self.python, *TRAIN, *run.overrides], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self._running[run.name] = (run, proc, time.time())
        log.info("started %s (pid %d)", run.name, proc.pid)

    def _reap(self) -> None:
        for run, proc, start in list(self._running.values()):
            if proc.poll() is not None:
                self._finish(run, proc, start)

    def _finish(self, run: Run, proc: subprocess.Popen, start: float) -> None:
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        run_dir = str(self._folders[run.name])
        self.finished.append(Finished(run.name, run.stage, run.seed, run_dir, code, start, time.time()))
        del self._running[run.name]
        if code != 0:
            log.warning("%s failed (exit %d); see %s", run.name, code, self.out / "logs" / f"{run.name}.log")
        self._save()

    def _drop_orphans(self, pending: list[Run]) -> list[Run]:
        """Runs whose teacher run failed or will never run are not started."""
        failed = {f.name for f in self.finished if f.exit_code != 0} | set(self.not_started)
        while orphans := [r for r in pending if r.after in failed]:
            for run in orphans:
                self.not_started[run.name] = f"{run.after} did not finish"
                log.warning("%s not started: %s did not finish", run.name, run.after)
                failed.add(run.name)
                pending.remove(run)
            self._save()
        return pending

    def _stop(self, reason: str, pending: list[Run]) -> None:
        """SIGTERM to every running run, GRACE_S for their checkpoints, then SIGKILL; the rest never starts."""
        self.stopped = reason
        for run in pending:
            self.not_started[run.name] = reason
        if self._running:
            names = ", ".join(self._running)
            log.warning("%s: stopping %s (each saves last.ckpt; the same command resumes it)", reason, names)
        for _, proc, _ in self._running.values():
            proc.send_signal(signal.SIGTERM)
        end = time.time() + GRACE_S
        while self._running and time.time() < end:
            self._reap()
            time.sleep(0.2)
        for _, proc, _ in self._running.values():
            proc.kill()
        for run, proc, start in list(self._running.values()):
            proc.wait()
            self._finish(run, proc, start)
        self._save()

    def _save(self) -> None:
        state = {
            **self.meta,
            "jobs": self.jobs,
            "deadline": self.deadline,
            "plan": self.plan.describe(),
            "runs": [f.__dict__ for f in self.finished],
            "running": sorted(self._running),
            "not_started": self.not_started,
            "stopped": self.stopped,
        }
        write_json(self.out / STATE_FILE, state)
        try:
            self.on_change()
        except Exception as err:  # the summary must never stop the study
            log.warning("the summary failed: %s: %s", type(err).__name__, err)
