"""Every bad input stops the CLI with a message that names the value (one `error: ...` line for the
program's checks, Hydra's message for the typed schema's): a non-zero exit, no traceback, and no run
folder or metrics.json left behind.

Importing torch and Lightning takes several seconds on a 2-core machine while a bad input fails in
well under one, so the cases share one interpreter: it imports `kd_lightning.train` once, then forks
a child per case (two at a time) that sets `sys.argv`, points its stdout and stderr at files and
calls `main()`, the function `python -m kd_lightning.train` runs. The child's exit status and stderr
are what the user would see; its CPU time and peak memory show that a refusal did no real work.

`python tests/test_reliability.py` runs every case and prints the table in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kd_lightning.data import CLASSES

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    args: list[str]  # after `experiment=smoke paths.root=...`; {ws} is the workspace folder
    names: list[str]  # what the message must contain: the bad value, and the way out where there is one
    rc: int = 2  # 2: the program's user error; 1: Hydra's schema refused the override
    offline: bool = False  # the child cannot open network connections
    env: dict[str, str] = field(default_factory=dict)
    traceback: bool = False  # HYDRA_FULL_ERROR=1 keeps the traceback
    trains: bool = False  # fails after training began: the run folder stays (to resume), metrics.json does not
    quick: bool = False  # refused from an estimate: well under a second of CPU, the network never allocated
    no_gpu: bool = False  # holds only on a machine where torch sees no CUDA GPU


TEACHER_WAY_OUT = "train one with `make teacher` (mode=teacher) or point teacher.ckpt=PATH"
MEMORY_WAY_OUT = "choose a smaller depth, width or data.batch_size"
FOLDER = ["mode=baseline", "data.source=folder"]  # then data.root={ws}/<a layout of make_workspace>

CASES = [
    # ---- the program's range checks (kd_lightning/checks.py): exit 2, one `error:` line
    Case("seed-above-32-bits", ["seed=4294967296"], ["seed=4294967296", "[0, 4294967295]"]),
    Case("seed-negative", ["seed=-1"], ["seed=-1", "[0, 4294967295]"]),
    Case("student-depth-too-small", ["student.depth=2"], ["student.depth=2", ">= 3"]),
    Case("student-width-zero", ["student.width=0"], ["student.width=0", ">= 1"]),
    Case("teacher-depth-too-small", ["mode=teacher", "teacher.depth=2"], ["teacher.depth=2", ">= 3"]),
    Case("unknown-reading", ["student.reading=foo"], ["student.reading=foo", "blocks or stages"]),
    Case("plan-unit-of-three-convs", ["student.plan=[[3]]"], ["student.plan=[[3]]", "units of 1 or 2 convs"]),
    Case("plan-empty", ["student.plan=[]"], ["student.plan=[]", "1 to 4 stages"]),
    Case("unknown-kd-method", ["kd.method=foo"], ["kd.method=foo", "kd or dkd"]),
    Case("unknown-divergence", ["kd.divergence=sideways"], ["kd.divergence=sideways", "forward or reverse"]),
    Case("dkd-beta-negative", ["kd.dkd.beta=-1"], ["kd.dkd.beta=-1", "[0, 1000]"]),
    Case("dkd-warmup-negative", ["kd.dkd.warmup_epochs=-1"], ["kd.dkd.warmup_epochs=-1", ">= 0"]),
    Case("alpha-above-one", ["kd.alpha=1.5"], ["kd.alpha=1.5", "[0, 1]"]),
    Case("alpha-negative", ["kd.alpha=-0.1"], ["kd.alpha=-0.1", "[0, 1]"]),
    Case("alpha-nan", ["kd.alpha=nan"], ["kd.alpha=nan", "[0, 1]"]),
    Case("temperature-zero", ["kd.temperature=0"], ["kd.temperature=0", "(0, 100]"]),
    Case("temperature-inf", ["kd.temperature=inf"], ["kd.temperature=inf", "(0, 100]"]),
    Case("temperature-nan", ["kd.temperature=nan"], ["kd.temperature=nan", "(0, 100]"]),
    Case("temperature-1000", ["kd.temperature=1000"], ["kd.temperature=1000", "(0, 100]"]),
    Case("lr-zero", ["mode=baseline", "optim.lr=0"], ["optim.lr=0", "> 0"]),
    Case("lr-negative", ["mode=baseline", "optim.lr=-0.1"], ["optim.lr=-0.1", "> 0"]),
    Case("lr-inf", ["mode=baseline", "optim.lr=inf"], ["optim.lr=inf", "a finite number > 0"]),
    Case(
        "momentum-zero-with-nesterov",
        ["mode=baseline", "optim.momentum=0"],
        ["optim.momentum=0", "optim.nesterov=true", "optim.momentum > 0", "optim.nesterov=false"],
    ),
    Case("momentum-above-one", ["mode=baseline", "optim.momentum=1.5"], ["optim.momentum=1.5", "[0, 1)"]),
    Case(
        "weight-decay-negative", ["mode=baseline", "optim.weight_decay=-1e-4"], ["optim.weight_decay=-0.0001", ">= 0"]
    ),
    Case("label-smoothing-two", ["mode=baseline", "optim.label_smoothing=2"], ["optim.label_smoothing=2", "[0, 1)"]),
    Case(
        "label-smoothing-negative",
        ["mode=baseline", "optim.label_smoothing=-0.1"],
        ["optim.label_smoothing=-0.1", "[0, 1)"],
    ),
    Case(
        "unknown-schedule",
        ["mode=baseline", "optim.schedule=linear"],
        ["optim.schedule=linear", "onecycle, cosine or constant"],
    ),
    Case("batch-size-zero", ["mode=baseline", "data.batch_size=0"], ["data.batch_size=0", ">= 1"]),
    Case("eval-batch-size-zero", ["mode=baseline", "data.eval_batch_size=0"], ["data.eval_batch_size=0", ">= 1"]),
    Case("num-workers-negative", ["mode=baseline", "data.num_workers=-1"], ["data.num_workers=-1", ">= 0"]),
    Case("split-seed-negative", ["mode=baseline", "data.split_seed=-1"], ["data.split_seed=-1", "[0, 4294967295]"]),
    Case("subset-zero", ["mode=baseline", "data.subset=0"], ["data.subset=0", "null or an integer >= 1"]),
    Case("unknown-source", ["mode=baseline", "data.source=imagenet"], ["data.source=imagenet", "folder"]),
    Case("max-epochs-zero", ["mode=baseline", "trainer.max_epochs=0"], ["trainer.max_epochs=0", ">= 1"]),
    Case("max-epochs-negative", ["mode=baseline", "trainer.max_epochs=-3"], ["trainer.max_epochs=-3", ">= 1"]),
    Case(
        "log-every-zero",
        ["mode=baseline", "trainer.log_every_n_steps=0"],
        ["trainer.log_every_n_steps=0", ">= 1"],
    ),
    Case("unknown-precision", ["mode=baseline", "trainer.precision=foo"], ["trainer.precision=foo", "32-true"]),
    Case("unknown-accelerator", ["mode=baseline", "trainer.accelerator=tpu"], ["trainer.accelerator=tpu", "cpu"]),
    Case(
        "gpu-on-a-machine-without-one",
        ["mode=baseline", "trainer.accelerator=gpu"],
        ["trainer.accelerator=gpu", "no CUDA GPU", "trainer.accelerator=cpu"],
        no_gpu=True,
    ),
    Case("devices-zero", ["mode=baseline", "trainer.devices=0"], ["trainer.devices=0", ">= 1", "auto"]),
    Case("devices-negative", ["mode=baseline", "trainer.devices=-1"], ["trainer.devices=-1", ">= 1", "auto"]),
    Case(
        "devices-list-on-cpu",
        ["mode=baseline", "trainer.devices=[5]"],
        ["trainer.devices=[5]", "on the CPU", "number of processes >= 1 or auto"],
    ),
    Case("jobs-per-gpu-zero", ["mode=baseline", "gpu_pool.jobs_per_gpu=0"], ["gpu_pool.jobs_per_gpu=0", ">= 1"]),
    Case("teacher-ckpt-empty", ["mode=kd", "teacher.ckpt="], ["teacher.ckpt= ", "non-empty path"]),
    Case("folder-root-empty-value", [*FOLDER, "data.root="], ["data.root= ", "non-empty path"]),
    Case("paths-root-empty", ["paths.root="], ["paths.root= ", "non-empty path", "outputs"]),
    Case(
        "paths-root-unwritable",
        ["paths.root=/proc/kd-lightning"],
        ["paths.root=/proc/kd-lightning", "cannot be written", "choose a folder you can write to"],
    ),
    Case(
        "paths-root-is-a-file",
        ["paths.root={ws}/corrupt.ckpt"],
        ["paths.root={ws}/corrupt.ckpt", "cannot be written", "choose a folder you can write to"],
    ),
    # ---- networks or batches too large for this machine: refused from an estimate, nothing is built
    Case("student-too-wide", ["student.width=100000"], ["student.width=100000", "GiB", MEMORY_WAY_OUT], quick=True),
    Case("student-too-deep", ["student.depth=100000"], ["student.depth=100000", "GiB", MEMORY_WAY_OUT], quick=True),
    Case(
        "teacher-too-wide",
        ["mode=teacher", "teacher.width=100000"],
        ["teacher.width=100000", "GiB", MEMORY_WAY_OUT],
        quick=True,
    ),
    Case(
        "batch-too-large",
        ["data.batch_size=100000000"],
        ["data.batch_size=100000000", "GiB", MEMORY_WAY_OUT],
        quick=True,
    ),
    # ---- the synthetic source's sizes (kd_lightning/data.py)
    Case(
        "synthetic-train-zero",
        ["mode=baseline", "data.synthetic_train=0"],
        ["data.synthetic_train=0", ">= 2"],
    ),
    Case(
        "synthetic-train-negative",
        ["mode=baseline", "data.synthetic_train=-5"],
        ["data.synthetic_train=-5", ">= 2"],
    ),
    Case("synthetic-test-zero", ["mode=baseline", "data.synthetic_test=0"], ["data.synthetic_test=0", ">= 1"]),
    Case("subset-larger-than-data", ["mode=baseline", "data.subset=100000"], ["data.subset=100000", "[1, 1600]"]),
    # ---- the teacher checkpoint of a KD run
    Case("no-teacher", ["mode=kd"], ["teacher.ckpt=", "does not exist", TEACHER_WAY_OUT]),
    Case(
        "teacher-ckpt-is-a-folder",
        ["mode=kd", "teacher.ckpt={ws}/empty"],
        ["teacher.ckpt={ws}/empty", "is a folder", "point it at a checkpoint file"],
    ),
    Case(
        "teacher-corrupt",
        ["mode=kd", "teacher.ckpt={ws}/corrupt.ckpt"],
        ["teacher.ckpt={ws}/corrupt.ckpt", "not a readable checkpoint", TEACHER_WAY_OUT],
    ),
    Case(
        "teacher-of-another-project",
        ["mode=kd", "teacher.ckpt={ws}/foreign.ckpt"],
        ["teacher.ckpt={ws}/foreign.ckpt", "not a checkpoint of this project's runs", TEACHER_WAY_OUT],
    ),
    Case(
        "teacher-100-classes",
        ["mode=kd", "teacher.ckpt={ws}/hundred.ckpt"],
        ["teacher.ckpt={ws}/hundred.ckpt", "100 classes", "has 10", TEACHER_WAY_OUT],
    ),
    Case(
        "teacher-other-split",
        ["mode=kd", "teacher.ckpt={ws}/other-split.ckpt"],
        ["teacher.ckpt={ws}/other-split.ckpt", "another train/val split", "data.split_seed"],
    ),
    Case(
        "teacher-other-architecture",
        ["mode=kd", "teacher.ckpt={ws}/r4-w4.ckpt"],
        [
            "teacher.ckpt={ws}/r4-w4.ckpt",
            "ResNet-4 of width 4",
            "teacher.depth=6",
            "set teacher.depth=4 teacher.width=4",
        ],
    ),
    Case(
        "teacher-other-data",
        ["mode=kd", "teacher.ckpt={ws}/other-data.ckpt"],
        ["teacher.ckpt={ws}/other-data.ckpt", "trained on other data", "content 0123456789abcdef", "this run ("],
    ),
    Case(
        "teacher-data-unrecorded",
        ["mode=kd", "teacher.ckpt={ws}/unrecorded.ckpt"],
        ["teacher.ckpt={ws}/unrecorded.ckpt", "does not record the data it was trained on", "train a teacher"],
    ),
    Case(
        "teacher-header-disagrees-with-weights",
        ["mode=kd", "teacher.ckpt={ws}/mismatch.ckpt"],
        ["teacher.ckpt={ws}/mismatch.ckpt", "holds weights that do not fit", "is [8, 8, 3, 3]", TEACHER_WAY_OUT],
    ),
    Case(
        "teacher-field-missing",
        ["mode=kd", "teacher.ckpt={ws}/no-width.ckpt"],
        ["teacher.ckpt={ws}/no-width.ckpt", "lacks the field 'width'", TEACHER_WAY_OUT],
    ),
    # ---- data.source=folder: the layout, then the images
    Case("folder-root-missing", [*FOLDER, "data.root={ws}/nowhere"], ["data.root={ws}/nowhere", "does not exist"]),
    Case(
        "folder-root-is-a-file",
        [*FOLDER, "data.root={ws}/corrupt.ckpt"],
        ["data.root={ws}/corrupt.ckpt", "is a file, not a folder", "an unpacked CIFAR-10 folder"],
    ),
    Case(
        "folder-root-empty",
        [*FOLDER, "data.root={ws}/empty"],
        ["data.root={ws}/empty", "no 'train/' folder", "train/<class>"],
    ),
    Case("folder-without-test", [*FOLDER, "data.root={ws}/no-test"], ["data.root={ws}/no-test", "no 'test/' folder"]),
    Case(
        "folder-nine-classes",
        [*FOLDER, "data.root={ws}/nine-classes"],
        ["data.root={ws}/nine-classes", "9 class folders", "needs 10", ", ".join(CLASSES)],
    ),
    Case(
        "folder-empty-class",
        [*FOLDER, "data.root={ws}/empty-class"],
        ["data.root={ws}/empty-class", "train/dog/ holds no images", ".png, .jpg, .jpeg"],
    ),
    Case(
        "folder-webp-class",
        [*FOLDER, "data.root={ws}/webp"],
        ["data.root={ws}/webp", "train/cat/ holds 2 .webp files", ".png, .jpg, .jpeg", "convert those files"],
    ),
    Case(
        "folder-train-test-mismatch",
        [*FOLDER, "data.root={ws}/mismatch"],
        ["data.root={ws}/mismatch", "different class folders", "only in train/: truck", "only in test/: trucks"],
    ),
    Case(
        "folder-unreadable-image",
        [*FOLDER, "data.root={ws}/broken"],
        ["{ws}/broken/train/cat/broken.png", "cannot read"],
    ),
    Case(
        "folder-image-not-32x32",
        [*FOLDER, "data.root={ws}/small"],
        ["{ws}/small/train/cat/small.png", "16x16", "must be 32x32"],
    ),
    Case(
        "torchvision-offline",
        ["mode=baseline", "data.source=torchvision", "data.root={ws}/download"],
        ["data.root={ws}/download", "data.source=folder data.root=PATH"],
        offline=True,
    ),
    # ---- Hydra's typed schema (kd_lightning/config.py): exit 1, Hydra's message
    Case("unknown-key", ["stuent.depth=3"], ["'stuent.depth'", "not in 'Config'"], rc=1),
    Case("unknown-nested-key", ["data.sorce=folder"], ["'data.sorce'", "not in 'DataConfig'"], rc=1),
    Case("unknown-mode", ["mode=foo"], ["mode=foo", "teacher", "baseline", "kd"], rc=1),
    Case(
        "student-depth-not-int", ["student.depth=abc"], ["student.depth=abc", "could not be converted to Integer"], rc=1
    ),
    Case(
        "student-depth-fraction",
        ["student.depth=3.5"],
        ["student.depth=3.5", "could not be converted to Integer"],
        rc=1,
    ),
    Case(
        "strategy-unknown",
        ["mode=baseline", "trainer.strategy=foo"],
        ["trainer.strategy=foo", "is unknown", "auto, ddp"],
    ),
    Case(
        "precision-16-mixed-on-cpu",
        ["mode=baseline", "trainer.precision=16-mixed"],
        ["trainer.precision=16-mixed", "not possible on the CPU", "bf16-mixed or 32-true"],
    ),
    Case(
        "batch-larger-than-the-data",
        ["mode=baseline", "data.batch_size=3000"],
        ["data.batch_size=3000", "larger than the 1600 training images", "at most 1600"],
    ),
    Case(
        "teacher-ckpt-not-a-regular-file",
        ["mode=kd", "teacher.ckpt=/dev/null"],
        ["teacher.ckpt=/dev/null", "is not a regular file"],
    ),
    Case("alpha-not-a-number", ["kd.alpha=abc"], ["kd.alpha=abc", "could not be converted to Float"], rc=1),
    Case("subset-not-a-number", ["data.subset=abc"], ["data.subset=abc", "could not be converted to Integer"], rc=1),
    Case("plan-not-a-list", ["student.plan=abc"], ["student.plan=abc", "not a ListConfig, list or tuple"], rc=1),
    Case("nesterov-not-a-bool", ["optim.nesterov=maybe"], ["optim.nesterov=maybe", "not a valid bool"], rc=1),
    # ---- after training began: the run folder stays (curves, to resume), no metrics.json
    Case(
        "lr-absurd",
        ["mode=baseline", "optim.lr=1e12", "data.synthetic_train=500", "data.batch_size=32"],
        ["NaN or inf at step ", "last finite loss was ", "optim.lr and overwrite=true"],
        trains=True,
    ),
    Case(
        "full-error-keeps-traceback",
        ["student.depth=2"],
        ["student.depth=2"],
        env={"HYDRA_FULL_ERROR": "1"},
        rc=1,
        traceback=True,
    ),
]


# ----------------------------------------------------------------------------- workspace


def make_workspace(ws: Path) -> Path:
    """Checkpoints and data folders that are wrong in exactly one way each."""
    import numpy as np
    import torch
    from PIL import Image

    from kd_lightning.data import CIFAR10DataModule
    from kd_lightning.modules import BaselineModule
    from kd_lightning.run.record import CHECKPOINT_KEY

    ws.mkdir(parents=True, exist_ok=True)
    (ws / "corrupt.ckpt").write_bytes(b"this is not a checkpoint\n" * 10)
    smoke = CIFAR10DataModule("synthetic", synthetic_size=(2000, 500))  # experiment=smoke's data and split
    smoke.setup()
    # another project's Lightning checkpoint: hyper-parameters, but no role of this project's runs
    torch.save({"hyper_parameters": {"depth": 18, "lr": 0.1}, "state_dict": {}}, ws / "foreign.ckpt")
    for name, classes, split, content, depth in [
        ("hundred", 100, smoke.split_hash, smoke.content_id, 3),
        ("other-split", 10, "0123456789abcdef", smoke.content_id, 3),
        ("r4-w4", 10, smoke.split_hash, smoke.content_id, 4),  # good, but not experiment=smoke's ResNet-6 of width 8
        ("other-data", 10, smoke.split_hash, "0123456789abcdef", 6),  # the same split of other images
        ("unrecorded", 10, smoke.split_hash, None, 6),  # no record of its data: a hand-made or old checkpoint
        ("mismatch", 10, smoke.split_hash, smoke.content_id, 6),  # its header says width 16, its weights width 8
        ("no-width", 10, smoke.split_hash, smoke.content_id, 6),
    ]:
        module = BaselineModule(depth, 4 if name != "mismatch" else 8, num_classes=classes, split_hash=split)
        hp = dict(module.hparams) | {"role": "teacher"}
        if name == "mismatch":
            hp["width"] = 16
        if name == "no-width":
            del hp["width"]
        # what a teacher is rebuilt from and checked against: hyper-parameters, weights, the run's data
        run = {CHECKPOINT_KEY: {"settings": {"data.source": "synthetic", "data.content_id": content}}}
        torch.save({"hyper_parameters": hp, "state_dict": module.state_dict(), **run}, ws / f"{name}.ckpt")
    (ws / "empty").mkdir(exist_ok=True)

    def image(path: Path, size: int = 32) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(path)

    def cifar_folder(name: str, splits=("train", "test"), classes=CLASSES) -> Path:
        """One 32x32 PNG in each class folder: a layout that passes every check."""
        for split in splits:
            for cls in classes:
                image(ws / name / split / cls / "ok.png")
        return ws / name

    cifar_folder("no-test", splits=["train"])
    (cifar_folder("broken") / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG truncated")
    image(cifar_folder("small") / "train" / "cat" / "small.png", size=16)
    cifar_folder("nine-classes", classes=CLASSES[:9])
    (cifar_folder("empty-class") / "train" / "dog" / "ok.png").unlink()
    webp = cifar_folder("webp") / "train" / "cat"
    (webp / "ok.png").unlink()
    for i in range(2):  # refused by their suffix, before anything is decoded
        (webp / f"{i}.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 ")
    mismatch = cifar_folder("mismatch")
    (mismatch / "test" / "truck").rename(mismatch / "test" / "trucks")
    return ws


# ----------------------------------------------------------------------------- runner


def _run_case_in_child(argv: list[str], env: dict[str, str], offline: bool, out: str, err: str) -> None:
    """In a forked child: what `python -m kd_lightning.train ARGV` does, then exit with its status."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        # find conf/ next to the file, as under `python -m`, rather than in a `kd_lightning` package
        os.environ.update(env, HYDRA_MAIN_MODULE="__main__")
        if offline:
            import errno
            import socket

            def unreachable(*args, **kwargs):
                raise OSError(errno.ENETUNREACH, "Network is unreachable")

            socket.create_connection = unreachable
            socket.socket.connect = unreachable
        import kd_lightning.train as entry

        sys.argv = [entry.__file__, *argv]
        try:
            entry.main()
            code = 0
        except SystemExit as exc:  # as the interpreter reports it
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            import traceback

            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def resident_kib() -> int:
    """This process's anonymous resident memory (KiB): what a forked child starts with (its mapped files are
    faulted in again as it touches them), the base its peak (ru_maxrss) grows from."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:")))


def serve(cases_file: str, results_file: str, timeout: float = 60.0) -> None:
    """Run every case of cases_file (JSON) in a forked child, two at a time; write per case its rc, stdout,
    stderr, wall and CPU seconds, and the memory it took beyond what it shared with the parent (MiB)."""
    import signal
    import time

    import kd_lightning.train  # noqa: F401  (imported once, before the forks)

    pending = json.loads(Path(cases_file).read_text())
    tmp = Path(results_file).parent
    results, running = {}, {}  # running: pid -> (case, start, resident KiB of the parent at the fork)
    while pending or running:
        while pending and len(running) < min(2, os.cpu_count() or 1):
            case = pending.pop(0)
            before, start = resident_kib(), time.monotonic()
            pid = os.fork()
            if pid == 0:
                _run_case_in_child(case["argv"], case["env"], case["offline"], *_outputs(tmp, case["id"]))
            running[pid] = (case, start, before)
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            for child, (_, start, _) in running.items():
                if time.monotonic() > start + timeout:
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.01)
            continue
        case, start, before = running.pop(pid)
        out, err = (Path(p) for p in _outputs(tmp, case["id"]))
        results[case["id"]] = {
            "rc": os.waitstatus_to_exitcode(status),
            "stdout": out.read_text(errors="replace"),
            "stderr": err.read_text(errors="replace"),
            "seconds": time.monotonic() - start,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,  # unlike the wall time, not slowed by other processes
            "grew_mib": (usage.ru_maxrss - before) / 1024,
        }
    Path(results_file).write_text(json.dumps(results))


def _outputs(folder: Path, case_id: str) -> tuple[str, str]:
    return str(folder / f"{case_id}.out"), str(folder / f"{case_id}.err")


def own_root(case: Case) -> str | None:
    """The paths.root a case gives itself (None: the runner's folder for it)."""
    return next((a.split("=", 1)[1] for a in case.args if a.startswith("paths.root=")), None)


def run_cases(ws: Path, cases: list[Case]) -> dict[str, dict]:
    """Each case's exit code, output and what it left under its paths.root.

    A case that sets paths.root itself (empty, unwritable) runs without the runner's; what it left is
    looked for where its runs and teachers would go ('' is the filesystem root)."""
    jobs = []
    for case in cases:
        root = [] if own_root(case) is not None else [f"paths.root={ws}/roots/{case.id}"]
        argv = ["experiment=smoke", *root, *(a.format(ws=ws) for a in case.args)]
        jobs.append({"id": case.id, "argv": argv, "env": case.env, "offline": case.offline})
    work = ws / "runner"
    work.mkdir(exist_ok=True)
    (work / "cases.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [sys.executable, __file__, "--serve", str(work / "cases.json"), str(work / "results.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((work / "results.json").read_text())
    for case in cases:
        own = own_root(case)
        root = ws / "roots" / case.id if own is None else Path(own.format(ws=ws) or "/")
        found = [root] if own is None else [root / "runs", root / "teachers"]
        left = [p for top in found if top.exists() for p in [top, *top.rglob("*")] if p != root]
        results[case.id]["left"] = sorted(str(p.relative_to(root)) for p in left)
    return results


def message(stderr: str) -> str:
    """The message: the one `error: ` line, or the first line of Hydra's (the rest give the schema's key)."""
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) <= 1, stderr
    return ours[0] if ours else stderr.lstrip().splitlines()[0]


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    ws = make_workspace(tmp_path_factory.mktemp("bad-inputs"))
    return ws, run_cases(ws, CASES)


CHECKED = [c for c in CASES if not c.traceback]


def skip_where_it_does_not_hold(case: Case) -> None:
    if case.no_gpu:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.id)
def test_bad_input_exits_nonzero_with_a_message_naming_the_value(case, outcomes):
    skip_where_it_does_not_hold(case)
    ws, results = outcomes
    got = results[case.id]
    assert got["rc"] == case.rc, got["stderr"]
    assert "Traceback" not in got["stderr"] + got["stdout"]
    if case.rc == 2:
        assert message(got["stderr"]).startswith("error: "), got["stderr"]
    else:  # Hydra's message: the key on its first line, then why (several lines)
        assert case.args[-1].split("=")[0] in message(got["stderr"])
    for part in case.names:
        assert part.format(ws=ws) in got["stderr"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.id)
def test_bad_input_leaves_no_run_folder_or_metrics(case, outcomes):
    skip_where_it_does_not_hold(case)
    _, results = outcomes
    left = results[case.id]["left"]
    if case.rc == 2 and own_root(case) is None:  # Hydra made the run folder before the error: it must be gone again
        assert "runs" in left, "the case wrote nothing at all: is paths.root still where runs go?"
    assert not [p for p in left if p.endswith("metrics.json") or p.startswith("teachers/")], left
    if not case.trains:
        assert not [p for p in left if p.startswith("runs/")], left


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.quick], ids=lambda c: c.id)
def test_too_large_a_network_is_refused_at_once_without_allocating_it(case, outcomes):
    got = outcomes[1][case.id]
    assert got["rc"] == 2, got["stderr"]
    # the child's CPU time (its wall time depends on what else runs): a fork, Hydra's composition and the
    # checks, ~0.2-0.6 s here; building a network of hundreds of GiB would take far longer, or fail
    assert got["cpu_seconds"] < 1.0, got
    # beyond the pages it shares with the parent: ~25 MiB for any refusal, GiB for the network
    assert got["grew_mib"] < 100, got


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback_of_a_user_error(outcomes):
    got = outcomes[1]["full-error-keeps-traceback"]
    assert got["rc"] != 0
    assert "Traceback" in got["stderr"] and "ConfigError: student.depth=2 is not allowed" in got["stderr"]


# ----------------------------------------------------------------------------- docs table


def markdown_table(ws: Path, results: dict[str, dict]) -> str:
    rows = ["| bad input | exit | message |", "|---|---|---|"]
    for case in CASES:
        if case.traceback:
            continue
        got = results[case.id]
        args = " ".join(a.format(ws=ws).replace(str(ws), "WS") for a in case.args)
        text = message(got["stderr"]) if case.rc == 2 else got["stderr"].split("\n\nSet the environment")[0]
        text = text.strip().replace(str(ws), "WS").replace("|", "\\|").replace("\n", "<br>")
        rows.append(f"| `{args}` | {got['rc']} | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], sys.argv[3])
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            ws = make_workspace(Path(tmp) / "WS")
            print(markdown_table(ws, run_cases(ws, CASES)))
