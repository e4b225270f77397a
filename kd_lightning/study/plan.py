"""The study's runs as data: which runs, their overrides, what each waits for, and their run folders.

One plan serves both ways of running it (kd_lightning/study/runner.py): each stage as Hydra
multiruns with any launcher (`make reproduce`, `make methods`), or every run as its own process
with a deadline (`scripts/gpu_study.sh`). Run names and folders come from the project's config
through Hydra's compose API, so they are the ones `python -m kd_lightning.train` gives.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kd_lightning.config import register
from kd_lightning.run.record import RunFolder

CONF = Path(__file__).resolve().parents[2] / "conf"

# stage -> (short name of its runs, the overrides that make the stage)
STAGES = {
    "teacher": ("teacher", ("mode=teacher",)),
    "baseline": ("baseline", ("mode=baseline",)),
    "kd": ("kd", ("mode=kd",)),
    "reverse": ("rev", ("mode=kd", "kd.divergence=reverse")),
    "dkd": ("dkd", ("mode=kd", "kd.method=dkd")),
    "chain": ("chain", ("mode=kd",)),  # KD from the assistant's best checkpoint (a kd run at ASSISTANT)
}
STUDY_STAGES = ("teacher", "baseline", "kd")  # the study: a teacher, then baseline and KD students per depth
METHOD_STAGES = tuple(STAGES)  # and reverse KD, DKD and KD through an assistant
# keys each run's place in the plan sets, and how to choose them
PLANNED = {
    "mode": "the stages",
    "seed": "the seeds",
    "student.depth": "the depths",
    "kd.method": "the stages",
    "kd.divergence": "the stages",
    "teacher.ckpt": "the stages (the chain's teacher is its assistant)",
}
STUDY_DEPTHS = (3, 4, 5, 6)
ASSISTANT = 6
CHAIN_DEPTHS = (3, 4, 5)


@dataclass(frozen=True)
class Run:
    """One training process: its short name ('kd-r4-s0'), overrides, and the run it must wait for."""

    name: str
    stage: str
    seed: int
    overrides: tuple[str, ...]
    after: str | None = None  # a run of this plan whose checkpoint it distils from
    alone: bool = False  # nothing else runs beside it (the first teacher: its whole-run rate is a target)


@dataclass(frozen=True)
class Sweep:
    """One Hydra multirun: fixed overrides and the swept keys (every combination is one run)."""

    stage: str
    overrides: tuple[str, ...]
    grid: tuple[tuple[str, tuple[int, ...]], ...]

    def command_overrides(self) -> list[str]:
        return [*self.overrides, *(f"{key}={','.join(map(str, values))}" for key, values in self.grid)]


@dataclass(frozen=True)
class Plan:
    """The runs of a study, stage by stage; `overrides` go to every run, `teacher`/`student` to those runs."""

    stages: tuple[str, ...]
    seeds: tuple[int, ...]
    depths: tuple[int, ...] = STUDY_DEPTHS
    assistant: int = ASSISTANT
    chain_depths: tuple[int, ...] = CHAIN_DEPTHS
    overrides: tuple[str, ...] = ()
    teacher: tuple[str, ...] = ()
    student: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stage {unknown[0]!r} is unknown; choose from {', '.join(STAGES)}")
        if not self.seeds or not self.depths:
            raise ValueError("a plan needs at least one seed and one depth")
        for override in (*self.overrides, *self.teacher, *self.student):
            if (key := override.split("=")[0].lstrip("+~")) in PLANNED:
                raise ValueError(f"{override} is set by the plan; choose {PLANNED[key]} instead")

    @property
    def is_study(self) -> bool:
        """Whether this is the study itself (its timing targets hold for it alone)."""
        return self.stages == STUDY_STAGES and self.depths == STUDY_DEPTHS

    def sweeps(self) -> list[Sweep]:
        """The multiruns, in the order they must run; the chain's come once per seed (its teacher file differs)."""
        out: list[Sweep] = []
        for stage in (s for s in STAGES if s in self.stages):
            fixed = (*self.overrides, *STAGES[stage][1], *(self.teacher if stage == "teacher" else self.student))
            if stage == "teacher":
                out.append(Sweep(stage, fixed, (("seed", self.seeds),)))
            elif stage == "chain":
                if "kd" not in self.stages:  # the assistant, when the kd stage does not train it
                    kd = (*self.overrides, *STAGES["kd"][1], *self.student)
                    out.append(Sweep("kd", kd, self._grid((self.assistant,))))
                for seed in self.seeds:
                    chain = (f"teacher.depth={self.assistant}", f"teacher.ckpt={self.assistant_checkpoint(seed)}")
                    grid = (("student.depth", self.chain_depths), ("seed", (seed,)))
                    out.append(Sweep(stage, (*fixed, *chain), grid))
            else:
                depths = self.depths
                if stage == "kd" and "chain" in self.stages and self.assistant not in depths:
                    depths = (*depths, self.assistant)
                out.append(Sweep(stage, fixed, self._grid(depths)))
        return out

    def _grid(self, depths: tuple[int, ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return (("student.depth", depths), ("seed", self.seeds))

    @functools.cached_property
    def runs(self) -> tuple[Run, ...]:
        """Every run of every sweep in the sweeps' order: the teachers first, then stage after stage."""
        runs: list[Run] = []
        for sweep in self.sweeps():
            keys = [key for key, _ in sweep.grid]
            for values in itertools.product(*(values for _, values in sweep.grid)):
                runs.append(self._run(sweep, dict(zip(keys, values))))
        if runs and runs[0].stage == "teacher":
            runs[0] = dataclasses.replace(runs[0], alone=True)
        return tuple(runs)

    def _run(self, sweep: Sweep, point: dict[str, int]) -> Run:
        seed = point["seed"]
        overrides = (*sweep.overrides, *(f"{key}={value}" for key, value in point.items()))
        if sweep.stage == "teacher":
            return Run(f"teacher-s{seed}", "teacher", seed, overrides)
        depth = point["student.depth"]
        name = f"{STAGES[sweep.stage][0]}-r{depth}-s{seed}"
        if sweep.stage == "chain":
            after = f"kd-r{self.assistant}-s{seed}"
        else:
            after = f"teacher-s{seed}" if "teacher" in self.stages and sweep.stage != "baseline" else None
        return Run(name, sweep.stage, seed, overrides, after)

    @property
    def runs_per_seed(self) -> int:
        return len(self.runs) // len(self.seeds)

    def describe(self) -> dict:
        """What the study summary needs to know of the plan (JSON-ready)."""
        return {
            "stages": list(self.stages),
            "seeds": list(self.seeds),
            "depths": list(self.depths),
            "runs_per_seed": self.runs_per_seed,
            "is_study": self.is_study,
        }

    def run_folder(self, run: Run | tuple[str, ...]) -> Path:
        """The run folder `python -m kd_lightning.train` gives these overrides (config and conf/ decide it)."""
        return run_folder(tuple(run.overrides if isinstance(run, Run) else run))

    def assistant_checkpoint(self, seed: int) -> Path:
        """The best checkpoint of the seed's assistant: the kd student at depth `assistant`, from the teacher."""
        kd = (*self.overrides, *STAGES["kd"][1], *self.student)
        return RunFolder(self.run_folder((*kd, f"student.depth={self.assistant}", f"seed={seed}"))).best


@functools.cache
def run_folder(overrides: tuple[str, ...]) -> Path:
    """hydra.run.dir of a training command with these overrides, composed from conf/ as the command would."""
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return Path(OmegaConf.select(cfg, "hydra.run.dir"))
