"""`python -m kd_lightning.study COMMAND`: the study's runs, from one plan (kd_lightning/study/plan.py).

  run     each stage as Hydra multiruns (make teacher, reproduce, methods, ...); hydra/launcher=NAME picks the launcher
  pool    every run as its own process, --jobs at a time, under a deadline (scripts/gpu_study.sh)
  plan    print the runs: short name, what each waits for, run folder, overrides
  summary rewrite OUT/timings.json and OUT/timings.txt from a pool's folder, and print them

Plan options (every command but summary): --stages or --methods, --seeds, --depths, --assistant,
--chain-depths; --teacher/--student KEY=VALUE add an override to the teacher runs or the student
runs only; any further KEY=VALUE (before or after the options) goes to every run.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hydra.errors import HydraException

from kd_lightning.study import plan as plans
from kd_lightning.study.runner import Pool, run_sweeps

log = logging.getLogger("kd_lightning.study")

REPORT_RESERVE_S = 30  # the pool's deadline falls this long before the time limit: the report still fits
# the GPU study's runs: every run on the GPU from the offline copy; a dry run: CPU, synthetic data, tiny sizes
DRY_RUN = (
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "student.width=8",
    "teacher.width=8",
    "data=synthetic",
    "data.synthetic_train=320",
    "data.synthetic_test=64",
    "data.batch_size=64",
)


def _ints(text: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers (e.g. 0,1,2 or '0 1 2')")
    return tuple(int(p) for p in parts)


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}")
        return value

    return parse


def _stages(text: str) -> tuple[str, ...]:
    stages = tuple(s for s in re.split(r"[,\s]+", text.strip()) if s)
    if unknown := [s for s in stages if s not in plans.STAGES]:
        raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not a stage; choose from {', '.join(plans.STAGES)}")
    return tuple(s for s in plans.STAGES if s in stages)  # always in the order they must run


def _plan_options(p: argparse.ArgumentParser, seeds: str) -> None:
    stages = ",".join(plans.STUDY_STAGES)
    p.add_argument("--stages", type=_stages, default=plans.STUDY_STAGES, help=f"default {stages}")
    p.add_argument("--methods", action="store_true", help="every stage: the study, reverse KD, DKD, the chain")
    p.add_argument("--seeds", type=_ints, default=_ints(seeds), help=f"training seeds (default {seeds})")
    p.add_argument("--depths", type=_ints, default=plans.STUDY_DEPTHS, help="student depths (default 3,4,5,6)")
    p.add_argument("--assistant", type=int, default=plans.ASSISTANT, help="the chain's assistant depth")
    p.add_argument("--chain-depths", type=_ints, default=plans.CHAIN_DEPTHS, help="students of the assistant")
    p.add_argument("--teacher", action="append", default=[], metavar="KEY=VALUE", help="for teacher runs only")
    p.add_argument("--student", action="append", default=[], metavar="KEY=VALUE", help="for student runs only")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m kd_lightning.study", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="each stage as Hydra multiruns")
    _plan_options(run, "0")
    pool = sub.add_parser("pool", help="every run as a process, under a deadline")
    pool.add_argument("out", type=Path, help="the study's folder: study/runs, logs, timings")
    _plan_options(pool, "0,1,2")
    pool.add_argument(
        "--jobs", type=_positive(int), help="processes at once (default: the CPU cores, at most 16; dry run 2)"
    )
    pool.add_argument("--time-limit", type=_positive(float), help="seconds from --t0 (default 480; dry run 900)")
    pool.add_argument("--t0", type=float, help="Unix seconds the study began (default: now)")
    pool.add_argument("--dry-run", action="store_true", help="CPU, synthetic data, width 8, one epoch")
    pool.add_argument("--data-root", default="data/cifar10-jpeg", help="the offline CIFAR-10 copy (GPU runs)")
    _plan_options(sub.add_parser("plan", help="print the runs"), "0")
    summary = sub.add_parser("summary", help="rewrite and print OUT/timings.txt")
    summary.add_argument("out", type=Path)
    summary.add_argument("--t0", type=float, required=True, help="Unix seconds the study began")
    summary.add_argument("--dry-run", action="store_true")
    summary.add_argument("--quiet", action="store_true", help="write the files, print nothing")
    return top


def make_plan(args: argparse.Namespace, common: tuple[str, ...] = ()) -> plans.Plan:
    return plans.Plan(
        stages=plans.METHOD_STAGES if args.methods else args.stages,
        seeds=args.seeds,
        depths=args.depths,
        assistant=args.assistant,
        chain_depths=args.chain_depths,
        overrides=(*common, *args.overrides),
        teacher=tuple(args.teacher),
        student=tuple(args.student),
    )


def pool(args: argparse.Namespace) -> int:
    from kd_lightning.study.timings import summarise

    out = args.out.resolve()
    cores = os.cpu_count() or 1
    jobs = args.jobs or (2 if args.dry_run else min(cores, 16))
    t0 = args.t0 or time.time()
    deadline = t0 + (args.time_limit or (900 if args.dry_run else 480)) - REPORT_RESERVE_S
    gpu = ("trainer.accelerator=gpu", "data=offline", f"data.root={args.data_root}", f"data.num_workers={cores}")
    size = DRY_RUN if args.dry_run else gpu
    common = (f"paths.root={out / 'study'}", "trainer.enable_progress_bar=false", *size)
    plan = make_plan(args, common)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    steps = logging.FileHandler(out / "logs" / "steps.log")
    steps.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
    log.addHandler(steps)
    log.info(
        "study: %d runs (%d per seed, seeds %s), %d at a time, %.0f s to the deadline",
        len(plan.runs),
        plan.runs_per_seed,
        " ".join(map(str, plan.seeds)),
        jobs,
        deadline - time.time(),
    )

    def on_change() -> None:
        summarise(out, t0=t0, end=time.time(), dry_run=args.dry_run)

    meta = {"t0": t0, "dry_run": args.dry_run}
    return Pool(plan, out, jobs=jobs, deadline=deadline, on_change=on_change, meta=meta).run()


def show_plan(plan: plans.Plan) -> None:
    for run in plan.runs:
        after = f" after {run.after}" if run.after else (" alone" if run.alone else "")
        print(f"{run.name}{after}: {plan.run_folder(run)}")
        print(f"    {' '.join(run.overrides)}")
    print(f"{len(plan.runs)} runs, {plan.runs_per_seed} per seed")


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args, overrides = top.parse_known_args(argv)
    if flags := [o for o in overrides if o.startswith("-")]:
        top.error(f"unrecognized arguments: {' '.join(flags)}")
    if overrides and args.command == "summary":
        top.error(f"summary takes no overrides: {' '.join(overrides)}")
    args.overrides = overrides
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "summary" and not args.out.is_dir():
            raise ValueError(f"{args.out} is not a folder; give the folder the pool wrote (it holds logs/runs.json)")
        if args.command == "summary":
            from kd_lightning.study.timings import summarise

            summarise(args.out, t0=args.t0, end=time.time(), dry_run=args.dry_run)
            if not args.quiet:
                print((args.out / "timings.txt").read_text(), end="")
            return 0
        if args.command == "pool":
            return pool(args)
        plan = make_plan(args)
        if args.command == "plan":
            show_plan(plan)
            return 0
        return run_sweeps(plan)
    except (ValueError, HydraException) as err:  # a stage, seed or override the config refuses
        print(f"error: {err}", file=sys.stderr)
        return 2
