"""Every bad input stops the CLI with a message that names the value (one `error: ...` line for the
program's checks, Hydra's message for the typed schema's): a non-zero exit, no traceback, and no run
folder or metrics.json left behind.

Importing torch and Lightning takes several seconds on a 2-core machine while a bad input fails in
well under one, so the cases share one interpreter: it imports `kd_lightning.train` once, then forks
a child per case that sets `sys.argv`, points its stdout and stderr at files and calls `main()`, the
function `python -m kd_lightning.train` runs. The child's exit status and stderr are what the user
would see.

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


CASES = [
    Case("student-depth-too-small", ["student.depth=2"], ["student.depth=2", ">= 3"]),
    Case(
        "student-depth-not-int", ["student.depth=abc"], ["student.depth=abc", "could not be converted to Integer"], rc=1
    ),
    Case("alpha-above-one", ["kd.alpha=1.5"], ["kd.alpha=1.5", "[0, 1]"]),
    Case("temperature-zero", ["kd.temperature=0"], ["kd.temperature=0", "(0, 100]"]),
    Case("batch-size-zero", ["mode=baseline", "data.batch_size=0"], ["data.batch_size=0", ">= 1"]),
    Case("unknown-key", ["stuent.depth=3"], ["'stuent.depth'", "not in 'Config'"], rc=1),
    Case("unknown-nested-key", ["data.sorce=folder"], ["'data.sorce'", "not in 'DataConfig'"], rc=1),
    Case("unknown-source", ["mode=baseline", "data.source=imagenet"], ["data.source=imagenet", "folder"]),
    Case("max-epochs-zero", ["mode=baseline", "trainer.max_epochs=0"], ["trainer.max_epochs=0", ">= 1"]),
    Case("lr-zero", ["mode=baseline", "optim.lr=0"], ["optim.lr=0", "> 0"]),
    Case("no-teacher", ["mode=kd"], ["teacher.ckpt=", "does not exist", "make teacher", "teacher.ckpt=PATH"]),
    Case(
        "teacher-corrupt",
        ["mode=kd", "teacher.ckpt={ws}/corrupt.ckpt"],
        ["teacher.ckpt={ws}/corrupt.ckpt", "not a readable checkpoint"],
    ),
    Case(
        "teacher-is-a-student",
        ["mode=kd", "teacher.ckpt={ws}/student.ckpt"],
        ["teacher.ckpt={ws}/student.ckpt", "'baseline' run, not a teacher"],
    ),
    Case(
        "teacher-100-classes",
        ["mode=kd", "teacher.ckpt={ws}/hundred.ckpt"],
        ["teacher.ckpt={ws}/hundred.ckpt", "100 classes", "has 10"],
    ),
    Case(
        "teacher-other-split",
        ["mode=kd", "teacher.ckpt={ws}/other-split.ckpt"],
        ["teacher.ckpt={ws}/other-split.ckpt", "another train/val split", "data.split_seed"],
    ),
    Case(
        "folder-root-missing",
        ["mode=baseline", "data.source=folder", "data.root={ws}/nowhere"],
        ["data.root={ws}/nowhere", "does not exist"],
    ),
    Case(
        "folder-root-empty",
        ["mode=baseline", "data.source=folder", "data.root={ws}/empty"],
        ["data.root={ws}/empty", "no 'train/' folder", "train/<class>"],
    ),
    Case(
        "folder-without-test",
        ["mode=baseline", "data.source=folder", "data.root={ws}/no-test"],
        ["data.root={ws}/no-test", "no 'test/' folder"],
    ),
    Case(
        "folder-unreadable-image",
        ["mode=baseline", "data.source=folder", "data.root={ws}/broken"],
        ["{ws}/broken/train/cat/broken.png", "cannot read"],
    ),
    Case("subset-larger-than-data", ["mode=baseline", "data.subset=100000"], ["data.subset=100000", "[1, 1600]"]),
    Case(
        "torchvision-offline",
        ["mode=baseline", "data.source=torchvision", "data.root={ws}/download"],
        ["data.root={ws}/download", "data.source=folder data.root=PATH"],
        offline=True,
    ),
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

    from kd_lightning.data import CLASSES, index_hash, split_indices
    from kd_lightning.modules import BaselineModule

    ws.mkdir(parents=True, exist_ok=True)
    (ws / "corrupt.ckpt").write_bytes(b"this is not a checkpoint\n" * 10)
    split_hash = index_hash(split_indices(2000, split_seed=0)[1])  # experiment=smoke's synthetic split
    for name, role, classes, split in [
        ("student", "baseline", 10, split_hash),
        ("hundred", "teacher", 100, split_hash),
        ("other-split", "teacher", 10, "0123456789abcdef"),
    ]:
        module = BaselineModule(3, 4, num_classes=classes, role=role, split_hash=split)
        # the two keys of a Lightning checkpoint that a teacher is rebuilt from
        torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ws / f"{name}.ckpt")
    (ws / "empty").mkdir(exist_ok=True)
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    for root, splits in [("no-test", ["train"]), ("broken", ["train", "test"])]:
        for split in splits:
            for cls in CLASSES:
                (ws / root / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(ws / root / split / cls / "ok.png")
    (ws / "broken" / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG truncated")
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


def serve(cases_file: str, results_file: str, timeout: float = 60.0) -> None:
    """Run every case of cases_file (JSON) in a forked child; write rc, stdout, stderr per case."""
    import signal
    import time

    import kd_lightning.train  # noqa: F401  (imported once, before the forks)

    cases = json.loads(Path(cases_file).read_text())
    results = {}
    tmp = Path(results_file).parent
    for case in cases:
        out, err = tmp / f"{case['id']}.out", tmp / f"{case['id']}.err"
        pid = os.fork()
        if pid == 0:
            _run_case_in_child(case["argv"], case["env"], case["offline"], str(out), str(err))
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
        results[case["id"]] = {
            "rc": os.waitstatus_to_exitcode(done[1]),
            "stdout": out.read_text(errors="replace"),
            "stderr": err.read_text(errors="replace"),
        }
    Path(results_file).write_text(json.dumps(results))


def run_cases(ws: Path, cases: list[Case]) -> dict[str, dict]:
    """Each case's exit code, output and what it left under its own paths.root."""
    jobs = []
    for case in cases:
        argv = ["experiment=smoke", f"paths.root={ws}/roots/{case.id}", *(a.format(ws=ws) for a in case.args)]
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
        root = ws / "roots" / case.id
        results[case.id]["left"] = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
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


@pytest.mark.parametrize("case", [c for c in CASES if not c.traceback], ids=lambda c: c.id)
def test_bad_input_exits_nonzero_with_a_message_naming_the_value(case, outcomes):
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


@pytest.mark.parametrize("case", [c for c in CASES if not c.traceback], ids=lambda c: c.id)
def test_bad_input_leaves_no_run_folder_or_metrics(case, outcomes):
    _, results = outcomes
    left = results[case.id]["left"]
    if case.rc == 2:  # Hydra made the run folder before the error: it must be gone again
        assert "runs" in left, "the case wrote nothing at all: is paths.root still where runs go?"
    assert not [p for p in left if p.endswith("metrics.json") or p.startswith("teachers/")], left
    if not case.trains:
        assert not [p for p in left if p.startswith("runs/")], left


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
