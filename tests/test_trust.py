"""A result always matches its settings, and no second process or full disk spoils one: the run fingerprint
in the record and checkpoints, a full disk while checkpointing, the run lock, and sweeps that carry on past
a bad job. Runs are tiny (synthetic data, width 8, a few steps); reruns of a run folder are in test_resume."""

from __future__ import annotations

import dataclasses
import errno
import json
from pathlib import Path

import pytest
import torch
from conftest import BASELINE, CONF, TINY, make_cfg, run_cli, run_dir, train

from kd_lightning.run.files import RunFolderError, run_lock
from kd_lightning.run.record import RunRecord, RunRecordError, TimeSplit, load_record

# ----------------------------------------------------------------------------- settings


def test_settings_that_the_name_leaves_out_give_each_variant_its_own_folder(tmp_path):
    names = {
        make_cfg(tmp_path, *BASELINE, *extra).run_name for extra in ([], ["optim.lr=0.1"], ["trainer.max_epochs=3"])
    }
    assert names == {
        "baseline-r3-w8-s0-b32-e2",
        "baseline-r3-w8-s0-b32-lr0.1-e2",
        "baseline-r3-w8-s0-b32-e3",
    }


@pytest.mark.slow
def test_the_record_keeps_every_setting_and_its_fingerprint(finished):
    record = load_record(run_dir(finished, *BASELINE))
    assert record.settings["optim.lr"] == 0.2 and record.settings["trainer.max_epochs"] == 2
    assert record.settings["data.content_id"] and record.settings["trainer.precision"] == "32-true"
    assert record.fingerprint and record.variant == "b32-e2"
    ckpt = torch.load(run_dir(finished, *BASELINE) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["kd_lightning_settings"]["fingerprint"] == record.fingerprint


@pytest.mark.slow
def test_the_record_keeps_where_the_training_process_spent_its_time(finished):
    split = load_record(run_dir(finished, *BASELINE)).time_split
    assert split.epochs == 2 and split.steps_s > 0 and split.setup_s > 0 and split.first_step_at > 0


def test_the_time_split_is_typed_in_the_record_and_a_malformed_one_is_refused(tmp_path):
    split = TimeSplit(setup_s=1.5, steps_s=9.0, validation_s=1.0, between_epochs_s=0.5, epochs=3, first_step_at=1e9)
    data = {f.name: 0 for f in dataclasses.fields(RunRecord) if f.default is dataclasses.MISSING}
    data |= {"mode": "baseline", "run_name": "r", "time_split": dataclasses.asdict(split)}
    assert RunRecord.from_dict(data).time_split == split
    assert RunRecord.from_dict(json.loads(json.dumps(RunRecord.from_dict(data).to_dict()))) == RunRecord.from_dict(data)
    with pytest.raises(RunRecordError, match="field 'time_split' lacks the field 'steps_s'"):
        RunRecord.from_dict(data | {"time_split": {"setup_s": 1.0}})
    with pytest.raises(RunRecordError, match="field 'time_split' is 'fast'; it must be TimeSplit or null"):
        RunRecord.from_dict(data | {"time_split": "fast"})


# ----------------------------------------------------------------------------- broken files


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_whole_and_the_rerun_resumes(tmp_path, monkeypatch):
    from kd_lightning.run import callbacks

    saves, real_save = [], torch.save

    def disk_fills_up(obj, path, *args, **kwargs):
        saves.append(Path(path).name)
        if "last" in saves[-1] and sum("last" in name for name in saves) == 2:
            Path(path).write_bytes(b"half a checkpoint")  # epoch 1's last.ckpt meets a full disk half-way
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(callbacks.torch, "save", disk_fills_up)
    args = [a for a in BASELINE if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=3"]
    folder = run_dir(tmp_path, *args)
    with pytest.raises(
        RunFolderError,
        match=r"could not write the checkpoint .*last.ckpt \(No space left on device; [\d,.]+ MiB free\)",
    ):
        train(tmp_path, *args)
    monkeypatch.undo()
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name]
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 0  # the previous checkpoint, whole
    assert train(tmp_path, *args).epochs == 3


# ----------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_a_second_process_on_the_same_run_stops_with_one_sentence_and_leaves_the_folder(root):
    folder = run_dir(root, *BASELINE)
    (folder / "metrics.json").unlink()
    with run_lock(folder):  # as a first command training right now
        with pytest.raises(RunFolderError, match="another process is training the run .* right now"):
            train(root, *BASELINE)
    assert (folder / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_a_sweep_with_a_bad_job_trains_the_others_then_exits_2_naming_it(tmp_path):
    result = run_cli(
        "-m",
        "experiment=smoke",
        f"paths.root={tmp_path}",
        "mode=baseline",
        "student.depth=3,2,4",
        "trainer.max_epochs=1",
        *TINY,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "error: 1 run(s) of this sweep failed; the others ran:" in result.stderr
    assert "  baseline-r2-w8-s0-b32-e1: student.depth=2 is not allowed" in result.stderr
    finished = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/metrics.json"))
    assert finished == ["baseline-r3-w8-s0-b32-e1", "baseline-r4-w8-s0-b32-e1"]
    assert not list((tmp_path / ".sweeps").glob("*"))  # the failure notes are cleaned up


# ----------------------------------------------------------------------------- identity: what changes a result


def teacher_file(path: Path, dm, depth: int = 6, width: int = 8, **settings) -> Path:
    """A teacher checkpoint for the data module's data (untrained weights: identity needs no training)."""
    from kd_lightning.modules import BaselineModule
    from kd_lightning.run.record import CHECKPOINT_KEY

    module = BaselineModule(depth, width, role="teacher", split_hash=dm.split_hash)
    data = {"data.source": "synthetic", "data.content_id": dm.content_id, **settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {CHECKPOINT_KEY: {"settings": data, "run_name": f"teacher-r{depth}-w{width}-s0"}}
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), **run}, path)
    return path


def identity(cfg, dm=None) -> tuple[str, dict]:
    """What decides whether a run folder is reused: its name, and the settings whose fingerprint it records.
    `dm`: the data module, when the config's data keys are the ones it was built from."""
    from kd_lightning.build import build_datamodule, build_module
    from kd_lightning.train import run_settings

    dm = dm or build_datamodule(cfg)
    return cfg.run_name, run_settings(cfg, dm, build_module(cfg, dm))


def flipped(cfg, *overrides: str):
    from omegaconf import OmegaConf

    cfg = cfg.copy()
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, OmegaConf.create(f"v: {value}").v, force_add=False)  # as Hydra parses it
    return cfg


BASE = ["mode=kd", "student.depth=3", *TINY]
NEW_RUN = [  # a new name: a new run folder
    ["seed=1"],
    ["student.depth=4"],
    ["student.width=4"],
    ["student.reading=stages"],
    ["data.split_seed=1", "mode=baseline"],
    ["data.subset=100"],
    ["data.batch_size=16"],
    ["optim.lr=0.1"],
    ["optim.momentum=0.8"],
    ["optim.nesterov=false"],
    ["optim.weight_decay=0.001"],
    ["optim.schedule=cosine"],
    ["optim.label_smoothing=0.1"],
    ["trainer.max_epochs=3"],
    ["trainer.devices=2", "trainer.strategy=ddp"],
    ["kd.alpha=0.9"],
    ["kd.temperature=2"],
    ["kd.divergence=reverse"],
    ["kd.method=dkd"],
    ["mode=baseline"],
]
REFUSED = [  # the same name, another fingerprint: a finished run is refused naming the key as old -> new
    (["data.synthetic_test=80"], "data.content_id"),  # in a baseline run: a kd run refuses its teacher (other data)
    (["trainer.precision=bf16-mixed"], "trainer.precision 32-true -> bf16-mixed"),
]
REUSED = [  # neither: the finished run is reused (skipped) or resumed
    ["data.eval_batch_size=64"],
    ["data.num_workers=2"],
    ["trainer.checkpoint_every=2"],
    ["trainer.async_checkpoint=true"],
    ["trainer.log_every_n_steps=5"],
    ["trainer.enable_progress_bar=true"],
    ["trainer.deterministic=true"],
    ["trainer.strategy=ddp"],  # one process: the same steps
    ["gpu_pool.jobs_per_gpu=2"],
    ["overwrite=true"],
    ["compile=true"],
]


def test_every_input_that_changes_a_result_changes_the_run_name_or_the_fingerprint(tmp_path):
    from kd_lightning.build import build_datamodule
    from kd_lightning.run.record import fingerprint, setting_differences

    base = make_cfg(tmp_path, *BASE)
    dm = build_datamodule(base)
    for seed in (0, 1):
        teacher_file(tmp_path / "teachers" / f"r6-w8-s{seed}.ckpt", dm)

    def of(*overrides: str) -> tuple[str, dict]:
        data = any(o.startswith("data.") for o in overrides)
        return identity(flipped(base, *overrides), None if data else dm)

    name, settings = of()
    assert settings["trainer.world_size"] == 1 and settings["teacher.content_id"] == settings["data.content_id"]
    for overrides in NEW_RUN:
        assert of(*overrides)[0] != name, overrides
    baseline = of("mode=baseline")
    for overrides, said in REFUSED:
        other, changed = of("mode=baseline", *overrides)
        assert other == baseline[0] and said in setting_differences(baseline[1], changed), overrides
    for overrides in REUSED:
        assert of(*overrides) == (name, settings), overrides
    assert of("trainer.devices=2", "trainer.strategy=ddp")[1]["trainer.world_size"] == 2
    teacher_file(tmp_path / "teachers" / "r6-w8-s0.ckpt", dm, **{"trainer.max_epochs": 9})
    other, changed = of()  # another teacher file of the same network, data and name
    assert other == name and "teacher.sha256" in setting_differences(settings, changed)
    assert fingerprint(changed) != fingerprint(settings)


# ----------------------------------------------------------------------------- the teacher: facts from its file


@pytest.fixture(scope="module")
def data():
    from kd_lightning.data import CIFAR10DataModule

    dm = CIFAR10DataModule("synthetic", synthetic_size=(240, 64))
    dm.setup()
    return dm


def test_a_kd_run_takes_its_teachers_network_from_the_file_alone(tmp_path, data):
    from kd_lightning.build import build_datamodule

    base = make_cfg(tmp_path, *BASE, "teacher.depth=null", "teacher.width=null")  # what the schema leaves them
    ckpt = teacher_file(tmp_path / "t.ckpt", build_datamodule(base), depth=5, width=4)
    name, settings = identity(flipped(base, f"teacher.ckpt={ckpt}"))
    assert name.startswith("kd-r3-w8-t5x") and settings["teacher.sha256"]
    assistant = tmp_path / "runs" / "baseline-r7-w4-s0" / "checkpoints" / "best.ckpt"
    teacher_file(assistant, build_datamodule(base), depth=7, width=4)
    assert identity(flipped(base, f"teacher.ckpt={assistant}"))[0].startswith("kd-r3-w8-tbaseline7-a0.5")


def test_a_teacher_run_still_trains_the_studys_resnet_10_of_width_64(tmp_path):
    from hydra import compose, initialize_config_dir

    from kd_lightning.config import network

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["mode=teacher", f"paths.root={tmp_path}"])
    assert cfg.run_name == "teacher-r10-w64-s0" and network(cfg, "teacher")[:2] == (10, 64)
    assert cfg.teacher.ckpt == f"{tmp_path}/teachers/r10-w64-s0.ckpt"
    assert cfg.teacher.depth is None  # a kd run of this config reads its teacher's from the file


@pytest.mark.parametrize(
    ("given", "refused"),
    [
        (["teacher.depth=4"], True),
        (["teacher.width=4"], True),
        (["teacher.reading=blocks"], True),  # the blocks reading of ResNet-5 is [[2], [1]]
        (["teacher.plan=[[1],[1],[1]]"], False),
        (["teacher.depth=5", "teacher.width=8", "teacher.reading=blocks"], True),
        (["teacher.depth=5", "teacher.reading=stages"], False),
        ([], False),
    ],
)
def test_a_teacher_value_given_in_the_config_must_agree_with_the_file(tmp_path, given, refused):
    from kd_lightning.teacher import TeacherError
    from kd_lightning.train import check_teacher_architecture

    cfg = make_cfg(tmp_path, *BASE, "teacher.depth=null", "teacher.width=null", *given)
    info = {"depth": 5, "width": 8, "plan": [[1], [1], [1]]}  # a ResNet-5 of the stages reading
    if not refused:
        check_teacher_architecture(cfg, info)
        return
    with pytest.raises(
        TeacherError, match=r"holds a ResNet-5 of width 8 \(plan \[\[1\], \[1\], \[1\]\]\), but teacher"
    ):
        check_teacher_architecture(cfg, info)


def test_a_teacher_of_other_data_is_refused_naming_both_even_with_the_same_split(tmp_path, data):
    """A folder of other images of the same count splits alike: only the data's identity tells them apart."""
    from kd_lightning.teacher import TeacherError, load_teacher

    other = teacher_file(tmp_path / "other.ckpt", data, **{"data.content_id": "0123456789abcdef"})
    expect = dict(source="folder", content_id=data.content_id)
    with pytest.raises(
        TeacherError,
        match=rf"trained on other data \(data.source=synthetic, content 0123456789abcdef\) "
        rf"than this run \(data.source=folder, content {data.content_id}\)",
    ):
        load_teacher(other, 10, data.split_hash, **expect)
    unrecorded = teacher_file(tmp_path / "unrecorded.ckpt", data, **{"data.content_id": None})
    with pytest.raises(TeacherError, match="does not record the data it was trained on"):
        load_teacher(unrecorded, 10, data.split_hash, **expect)
    same = teacher_file(tmp_path / "same.ckpt", data)
    _, info = load_teacher(same, 10, data.split_hash, source="synthetic", content_id=data.content_id)
    assert info["content_id"] == data.content_id and info["lineage"][-1]["settings"]["data.content_id"]


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda c: c["hyper_parameters"].pop("width"), "lacks the field 'width' in its hyper-parameters"),
        (lambda c: c["hyper_parameters"].update(width=16), "holds weights that do not fit the network its hyper"),
        (lambda c: c.pop("state_dict"), "holds weights that do not fit the network its hyper-parameters describe"),
    ],
    ids=["a-field-missing", "a-header-of-another-width", "no-weights"],
)
def test_a_teacher_whose_header_disagrees_with_its_weights_is_refused_in_one_sentence(tmp_path, data, damage, said):
    from kd_lightning.teacher import TeacherError, load_teacher

    path = teacher_file(tmp_path / "t.ckpt", data)
    ckpt = torch.load(path, weights_only=False)
    damage(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(TeacherError, match=said):
        load_teacher(path, 10, data.split_hash)
