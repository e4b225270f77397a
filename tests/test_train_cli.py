"""The entry point as users run it: a teacher, then a KD multirun, on synthetic data; and one real-data run."""

import json

import pytest
from conftest import make_cfg, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

METRIC_KEYS = {
    "mode",
    "depth",
    "width",
    "alpha",
    "temperature",
    "seed",
    "split_seed",
    "val_hash",
    "best_val_acc",
    "best_epoch",
    "test_acc",
    "epochs",
    "wall_seconds",
    "device",
    "versions",
}


def tb_tags(run_dir):
    tags = set()
    for events in (run_dir / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_teacher_then_kd_multirun_write_complete_run_folders(tmp_path):
    root = f"paths.root={tmp_path}"
    teacher = run_cli("experiment=smoke", "mode=teacher", root)
    assert teacher.returncode == 0, teacher.stderr
    assert (tmp_path / "teachers" / "r6-w8-s0.ckpt").is_file()  # where mode=kd looks by default
    kd = run_cli("-m", "experiment=smoke", "student.depth=3,4", "mode=kd", root)
    assert kd.returncode == 0, kd.stderr
    assert "kd       ResNet-3 w8 a=0.5 T=4 seed 0: val" in kd.stdout  # one summary line per run

    for name, mode, depth in [
        ("teacher-r6-w8-s0-b128-e2", "teacher", 6),
        ("kd-r3-w8-t6-a0.5-T4-s0-b128-e2", "kd", 3),
        ("kd-r4-w8-t6-a0.5-T4-s0-b128-e2", "kd", 4),
    ]:
        run = tmp_path / "runs" / name
        metrics = json.loads((run / "metrics.json").read_text())
        assert METRIC_KEYS <= set(metrics)
        assert (metrics["mode"], metrics["depth"], metrics["epochs"]) == (mode, depth, 2)
        assert 0.0 <= metrics["test_acc"] <= 1.0 and 1 <= metrics["best_epoch"] <= 2
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / ".hydra" / "config.yaml").is_file()
        want = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "test/acc", "test/loss"}
        if mode == "kd":
            want |= {"train/kd", "train/ce"}
        assert want <= tb_tags(run)
    hashes = {json.loads(p.read_text())["val_hash"] for p in tmp_path.glob("runs/*/metrics.json")}
    assert len(hashes) == 1  # teacher and students validated on the same images


def test_run_folder_name_is_derived_from_the_config(tmp_path):
    # smoke's batch 128 and 2 epochs differ from the defaults: their tags end the name
    assert make_cfg(tmp_path, "mode=teacher").run_name == "teacher-r6-w8-s0-b128-e2"
    assert make_cfg(tmp_path, "mode=baseline", "student.depth=5", "seed=2").run_name == "baseline-r5-w8-s2-b128-e2"
    cfg = make_cfg(tmp_path, "mode=kd", "student.depth=3", "kd.alpha=0.9", "kd.temperature=2")
    assert cfg.run_name == "kd-r3-w8-t6-a0.9-T2-s0-b128-e2"
    assert cfg.teacher.ckpt == f"{tmp_path}/teachers/r6-w8-s0.ckpt"


def test_design_command_composes_four_kd_runs():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["student.depth=3,4,5,6", "mode=kd"])
    batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    assert [job for batch in batches for job in batch] == [[f"student.depth={d}", "mode=kd"] for d in (3, 4, 5, 6)]


@pytest.mark.slow
def test_resnet4_beats_chance_after_one_epoch_on_real_images(tmp_path, cifar_jpeg):
    result = run_cli(
        "mode=baseline",
        "student.depth=4",
        "student.width=16",
        "data=offline",
        f"data.root={cifar_jpeg}",
        "data.subset=5000",
        "data.batch_size=128",
        "data.num_workers=2",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"paths.root={tmp_path}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "runs" / "baseline-r4-w16-s0-n5000-b128-e1" / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (5000, 1250, 10000)
    assert metrics["best_val_acc"] > 0.2  # chance is 0.1
