"""The study as one plan (kd_lightning/study): its runs, names and chain from the project's config, the multiruns
the Makefile runs, the process pool with its deadline, the speed targets as one table, and the summary judged
against the published H100 bundle's own files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_dir

from kd_lightning.report.tables import text_table
from kd_lightning.run.record import RunFolder, load_record
from kd_lightning.study import speed_targets
from kd_lightning.study.cli import main as study_main
from kd_lightning.study.plan import METHOD_STAGES, STUDY_DEPTHS, STUDY_STAGES, Plan
from kd_lightning.study.runner import STATE_FILE, Pool
from kd_lightning.study.speed_targets import NOT_MEASURED, NOT_MET, Reading, SpeedTarget
from kd_lightning.study.timings import summarise

BUNDLE = ROOT / "results" / "h100-2026-11-28"
SMOKE = ("experiment=smoke",)


def smoke_plan(root: Path, stages=METHOD_STAGES, **kw) -> Plan:
    kw = {"seeds": (0, 1), "depths": (3,), "assistant": 4, "chain_depths": (3,)} | kw
    return Plan(stages=stages, overrides=(*SMOKE, f"paths.root={root}"), **kw)


# ----------------------------------------------------------------------------- the plan


def test_the_study_plan_is_a_teacher_then_baseline_and_kd_per_depth_for_each_seed():
    plan = Plan(STUDY_STAGES, seeds=(0, 1, 2))
    assert plan.is_study and plan.runs_per_seed == 1 + 2 * len(STUDY_DEPTHS)
    names = [r.name for r in plan.runs]
    assert names[:3] == ["teacher-s0", "teacher-s1", "teacher-s2"] and len(set(names)) == len(names)
    assert [r.name for r in plan.runs if r.alone] == ["teacher-s0"]  # its whole-run rate is a target
    for run in plan.runs:
        assert run.after == (f"teacher-s{run.seed}" if run.stage == "kd" else None)
    assert not Plan(STUDY_STAGES, seeds=(0,), depths=(3,)).is_study


def test_run_folders_and_the_chain_teacher_come_from_the_config_as_the_train_command_names_them(tmp_path):
    plan = smoke_plan(tmp_path, seeds=(1,))
    for run in plan.runs:
        overrides = [o for o in run.overrides if o not in SMOKE and not o.startswith("paths.root=")]
        assert plan.run_folder(run) == run_dir(tmp_path, *overrides), run.name
    chain = next(r for r in plan.runs if r.stage == "chain" and r.seed == 1)
    assistant = run_dir(tmp_path, "mode=kd", "student.depth=4", "seed=1")
    assert chain.after == "kd-r4-s1" and f"teacher.ckpt={RunFolder(assistant).best}" in chain.overrides
    assert "teacher.depth=4" in chain.overrides and "kd-r4-s1" in {r.name for r in plan.runs}


def test_each_stage_is_one_multirun_and_the_chain_one_per_seed(tmp_path):
    sweeps = smoke_plan(tmp_path).sweeps()
    assert [s.stage for s in sweeps] == ["teacher", "baseline", "kd", "reverse", "dkd", "chain", "chain"]
    kd = sweeps[2].command_overrides()
    assert "student.depth=3,4" in kd and "seed=0,1" in kd  # the assistant joins the kd stage
    assert "kd.divergence=reverse" in sweeps[3].command_overrides()
    assert [o for o in sweeps[5].command_overrides() if o.startswith("seed=")] == ["seed=0"]
    alone = smoke_plan(tmp_path, stages=("chain",)).sweeps()  # no kd stage: the assistant runs first
    assert [(s.stage, s.command_overrides()[-2]) for s in alone][:2] == [
        ("kd", "student.depth=4"),
        ("chain", "student.depth=3"),
    ]


def test_teacher_and_student_overrides_reach_only_their_runs(tmp_path):
    plan = smoke_plan(tmp_path, teacher=("trainer.max_epochs=5",), student=("trainer.max_epochs=1",))
    for run in plan.runs:
        epochs = "5" if run.stage == "teacher" else "1"
        assert f"trainer.max_epochs={epochs}" in run.overrides and len(run.overrides) == len(set(run.overrides))


def test_the_cli_refuses_an_unknown_stage_or_a_seed_that_is_not_a_number(capsys):
    with pytest.raises(SystemExit) as exit_info:
        study_main(["plan", "--stages", "teacher,distil"])
    assert (
        exit_info.value.code == 2
        and "'distil' is not a stage; choose from teacher, baseline" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        study_main(["plan", "--seeds", "0,one"])
    assert "'0,one' is not a list of integers" in capsys.readouterr().err


def test_the_cli_plan_prints_each_run_with_its_folder(tmp_path, capsys):
    assert study_main(["plan", "--seeds", "0", "--depths", "3", *SMOKE, f"paths.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert f"kd-r3-s0 after teacher-s0: {run_dir(tmp_path, 'mode=kd', 'student.depth=3')}" in out
    assert "3 runs, 3 per seed" in out


def test_a_bad_override_is_one_error_line(tmp_path, capsys):
    assert study_main(["plan", "--methods", *SMOKE, "student.widht=8"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# ----------------------------------------------------------------------------- the pool

FAKE_TRAIN = """\
#!{python}
# stands in for `python -m kd_lightning.train`: sleeps max_epochs / 2 s, fails teacher seed 1, "saves" on SIGTERM
import signal, sys, time
args = sys.argv[3:]
def stop(*_):
    print("saved last.ckpt", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
if "mode=teacher" in args and "seed=1" in args:
    sys.exit(3)
time.sleep(int(next(a.split("=")[1] for a in args if a.startswith("trainer.max_epochs="))) / 2)
"""


def fake_pool(tmp_path: Path, seconds: int, deadline: float, **plan_kw) -> Pool:
    """A pool of the study's stages whose runs each sleep `seconds` (their max_epochs / 2) instead of training."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable))
    fake.chmod(0o755)
    epochs = f"trainer.max_epochs={2 * seconds}"
    plan = smoke_plan(tmp_path / "root", stages=STUDY_STAGES, teacher=(epochs,), student=(epochs,), **plan_kw)
    return Pool(plan, tmp_path / "out", jobs=2, deadline=time.time() + deadline, python=str(fake))


@pytest.mark.slow
def test_the_pool_runs_each_student_after_its_teacher_and_skips_those_of_a_failed_one(tmp_path):
    pool = fake_pool(tmp_path, seconds=1, deadline=60, seeds=(0, 1))
    assert pool.run() == 1
    runs = {f.name: f for f in pool.finished}
    assert runs["teacher-s1"].exit_code == 3 and pool.not_started == {"kd-r3-s1": "teacher-s1 did not finish"}
    assert runs["baseline-r3-s1"].exit_code == 0  # a baseline needs no teacher
    first = runs["teacher-s0"]
    assert all(f.start >= first.stop for name, f in runs.items() if name != "teacher-s0")  # it ran alone
    assert runs["kd-r3-s0"].start >= first.stop
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    assert state["plan"]["runs_per_seed"] == 3 and len(state["runs"]) == 5 and state["stopped"] is None
    assert (tmp_path / "out" / "logs" / "kd-r3-s0.log").is_file()


@pytest.mark.slow
def test_at_the_deadline_the_pool_stops_its_runs_with_sigterm_and_starts_no_more(tmp_path):
    pool = fake_pool(tmp_path, seconds=60, deadline=3, seeds=(0,))
    t0 = time.time()
    assert pool.run() == 1 and time.time() - t0 < 30
    assert [(f.name, f.exit_code) for f in pool.finished] == [("teacher-s0", 143)]
    assert "saved last.ckpt" in (tmp_path / "out" / "logs" / "teacher-s0.log").read_text()
    assert pool.stopped == "deadline" and set(pool.not_started) == {"baseline-r3-s0", "kd-r3-s0"}


@pytest.mark.slow
def test_a_sigterm_to_the_pool_reaches_its_runs(tmp_path):
    pool = fake_pool(tmp_path, seconds=60, deadline=600, seeds=(0,))
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    try:
        assert pool.run() == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert pool.stopped == "SIGTERM" and pool.finished[0].exit_code == 143


# ----------------------------------------------------------------------------- the speed targets


def test_every_target_is_typed_with_exactly_one_limit():
    targets, bundle = speed_targets.load()
    assert targets and bundle == BUNDLE
    assert all((t.at_least is None) != (t.at_most is None) for t in targets)
    assert len({t.measure for t in targets}) == len(targets)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{figure: a, measure: bench.x, format: '{}', at_least: 1, at_most: 2}", "exactly one of at_least, at_most"),
        ("{figure: a, measure: bench.x, format: '{}', at_lest: 1}", "target 1 is malformed"),
        ("{figure: a, measure: bench.x, format: '{}', at_least: fast}", "target 1 is malformed"),
    ],
)
def test_a_malformed_target_is_refused_naming_it(tmp_path, entry, message):
    path = tmp_path / "targets.yaml"
    path.write_text(f"published: results\ntargets:\n  - {entry}\n")
    with pytest.raises(ValueError, match=message):
        speed_targets.load(path)


def test_a_wildcard_target_judges_each_figure_it_matches():
    target = SpeedTarget(figure="step, {}", measure="bench.trainer.*.ratio", format="{:.2f}x", at_least=0.95)
    assert target.matches("bench.trainer.resnet4.ratio") == ("resnet4",)
    assert target.matches("bench.trainer.resnet4.plain_img_s") is None
    assert speed_targets.check("trainer.resnet4.ratio", 0.99, gpu=False) == (">= 0.95x", "yes")
    assert speed_targets.check("trainer.resnet4.ratio", 0.5, gpu=False) == (">= 0.95x", "NO")
    assert speed_targets.check("epoch.speedup", 9.0, gpu=False) == ("-", "-")  # a GPU target
    assert speed_targets.check("pipeline.images", 9.0, gpu=True) == ("-", "-")  # no target


def test_an_unfinished_span_is_not_met_only_once_it_is_over_its_limit():
    def one_seed(seconds: float) -> str:
        reading = Reading(seconds, lower_bound=True, note="2 runs not finished")
        rows = speed_targets.rows({"study.one_seed_s": reading}, {}, dry_run=False)
        return next(r.status for r in rows if r.figure.startswith("One seed"))

    limit = next(t.at_most for t in speed_targets.load()[0] if t.measure == "study.one_seed_s")
    assert one_seed(limit + 1) == NOT_MET
    assert one_seed(limit - 1) == f"{NOT_MEASURED} (2 runs not finished)"


def test_the_fixed_width_table_pads_columns_and_prints_notes_whole():
    text = text_table([("a", "1"), ("long name", "22"), ("a note longer than any column",)], "lr")
    assert text.splitlines() == ["a           1", "long name  22", "a note longer than any column"]


# ----------------------------------------------------------------------------- the summary of the published study


def published_study(out: Path) -> float:
    """OUT as the pool would have left it for seed 0 of results/h100-2026-11-28; returns its t0."""
    timings = json.loads((BUNDLE / "timings.json").read_text())
    folders = {r["run"]: r["run_name"] for r in timings["runs"]}
    lines = [ln.split("\t") for ln in (BUNDLE / "logs" / "runs.tsv").read_text().splitlines()]
    for run in (BUNDLE / "runs").glob("*-s0"):
        shutil.copytree(run, out / "study" / "runs" / run.name)
    runs = [
        {
            "name": f"{name}-s0",
            "stage": name.split("-")[0],
            "seed": 0,
            "run_dir": str(out / "study" / "runs" / folders[name]),
            "exit_code": int(rc),
            "start": float(start),
            "stop": float(stop),
        }
        for name, rc, start, stop in lines
    ]
    state = {"jobs": 8, "plan": Plan(STUDY_STAGES, seeds=(0,)).describe(), "runs": runs, "stopped": None}
    (out / "logs").mkdir(parents=True)
    (out / STATE_FILE).write_text(json.dumps(state))
    shutil.copy(BUNDLE / "bench.json", out / "bench.json")
    return runs[0]["start"] - timings["runs"][0]["start_s"]


def test_the_summary_of_the_published_run_reproduces_its_figures_and_judges_them(tmp_path):
    t0 = published_study(tmp_path)
    summary = summarise(tmp_path, t0=t0, end=t0 + 265.7, dry_run=False)
    rows = {r["figure"]: (r["measured"], r["status"]) for r in summary["targets"]}
    bench = json.loads((BUNDLE / "bench.json").read_text())
    for net in ("resnet4", "resnet10"):
        measured = f"{bench['trainer'][net]['ratio']:.2f}x"
        assert rows[f"Lightning step vs plain PyTorch loop, {net}"] == (measured, NOT_MET)
    records = [load_record(p.parent) for p in BUNDLE.glob("runs/*-s0/metrics.json")]
    rates = sum(r.train_images_per_second for r in records if r.mode != "teacher")
    summed = rows["Students side by side on the one GPU, their per-run rates summed"]
    assert summed[0].startswith(f"{rates:,.0f} img/s") and summed[1] == NOT_MET  # 1x of 2x
    span = round(max(r["stop_s"] for r in summary["runs"]) - min(r["start_s"] for r in summary["runs"]), 1)
    assert rows["One seed of the study (its teacher, then its students)"] == (
        f"{span} s (9 of 9 runs finished)",
        NOT_MET,
    )
    assert rows["Three seeds of the study in one command"][1] == f"{NOT_MEASURED} (SEEDS=0)"
    assert rows["Teacher's whole-run rate vs its step rate"][1] == NOT_MET
    text = (tmp_path / "timings.txt").read_text()
    assert f"study (9 runs) {span} s" in text and "met?" in text
    assert json.loads((tmp_path / "timings.json").read_text())["per_seed"]["0"]["finished"] == 9


def test_the_published_baselines_are_read_from_the_bundle_not_typed_in(tmp_path):
    from kd_lightning.study.timings import published_readings

    readings = published_readings(BUNDLE)
    records = [load_record(p.parent) for p in BUNDLE.glob("runs/*-s0/metrics.json")]
    students = [r for r in records if r.mode != "teacher"]
    assert readings["study.students_sum_of_rates"].value == pytest.approx(
        sum(r.train_images_per_second for r in students), abs=0.1
    )
    assert (
        readings["bench.trainer.resnet4.ratio"].value
        == json.loads((BUNDLE / "bench.json").read_text())["trainer"]["resnet4"]["ratio"]
    )
    assert all(r.value is None for r in published_readings(tmp_path).values())  # no bundle there


def test_three_seeds_cut_at_the_deadline_are_not_met_and_say_so(tmp_path):
    t0 = published_study(tmp_path)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    for seed in (1, 2):  # their teachers stopped at the deadline, so no student of theirs ran
        state["runs"].append(
            {"name": f"teacher-s{seed}", "stage": "teacher", "seed": seed, "run_dir": str(tmp_path / "none"),
             "exit_code": 143, "start": t0 + 100, "stop": t0 + 400}
        )  # fmt: skip
    state["plan"], state["stopped"] = Plan(STUDY_STAGES, seeds=(0, 1, 2)).describe(), "deadline"
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    summary = summarise(tmp_path, t0=t0, end=t0 + 480, dry_run=False)
    three = next(r for r in summary["targets"] if r["figure"].startswith("Three seeds"))
    assert three["status"] == NOT_MET and "(9 of 27 runs finished)" in three["measured"]
    assert "[runs stopped: deadline]" in three["measured"]
    assert "runs stopped: deadline" in (tmp_path / "timings.txt").read_text()
