"""What a result can be trusted for: every run of one split seed validates on the same images (and KD refuses a
teacher from another split), a NaN loss stops the run instead of reaching metrics.json, and one seed gives one
result. That the teacher never changes during distillation is pinned in-process by test_modules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_cfg

DATA = ["data.synthetic_train=1000", "data.synthetic_test=200"]  # 800 training, 200 validation images
# run names carry the settings that differ from the defaults: batch 128 (data=synthetic) and the epochs
TEACHER_RUN, KD_RUN = "teacher-r6-w8-s0-b128-e2", "kd-r3-w8-t6-a0.5-T4-s0-b128-e3"
BASELINE_RUN = "baseline-r3-w8-s0-b128-e1"
KD_EPOCHS = 3


def metrics_of(root: Path, run: str) -> dict:
    return json.loads((root / "runs" / run / "metrics.json").read_text())


def teacher_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny teacher (ResNet-6, width 8, 2 epochs on synthetic data), trained once; its paths.root."""
    from kd_lightning.train import train

    root = tmp_path_factory.mktemp("guarantees")
    train(make_cfg(root, "mode=teacher", *DATA))
    return root


@pytest.fixture(scope="module")
def kd_run(teacher) -> Path:
    """A KD run of several epochs distilling the fixture's teacher, in the teacher's paths.root."""
    from kd_lightning.train import train

    train(make_cfg(teacher, "mode=kd", "student.depth=3", f"trainer.max_epochs={KD_EPOCHS}", *DATA))
    return teacher / "runs" / KD_RUN


# ----------------------------------------------------------------------------- split


@pytest.mark.slow
def test_teacher_baseline_and_kd_runs_of_one_split_seed_record_the_same_split(teacher, kd_run):
    from kd_lightning.data import index_hash, split_indices
    from kd_lightning.train import train

    train(make_cfg(teacher, "mode=baseline", "student.depth=3", "trainer.max_epochs=1", *DATA))
    runs = [metrics_of(teacher, run) for run in (TEACHER_RUN, BASELINE_RUN, KD_RUN)]
    expected = index_hash(split_indices(1000, split_seed=0)[1])
    assert [(m["mode"], m["split_seed"], m["split_hash"], m["val_hash"]) for m in runs] == [
        (mode, 0, expected, expected) for mode in ("teacher", "baseline", "kd")
    ]
    assert index_hash(split_indices(1000, split_seed=1)[1]) != expected


@pytest.mark.slow
def test_kd_refuses_a_teacher_trained_on_another_split_seed(teacher, tmp_path):
    from kd_lightning.teacher import TeacherError
    from kd_lightning.train import train

    cfg = make_cfg(tmp_path, "mode=kd", "data.split_seed=1", f"teacher.ckpt={teacher}/teachers/r6-w8-s0.ckpt", *DATA)
    with pytest.raises(TeacherError, match="another train/val split .* data.split_seed"):
        train(cfg)
    assert not (tmp_path / "runs" / cfg.run_name).exists()  # no folder left for a run that never started


# ----------------------------------------------------------------------------- NaN


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_the_step_and_the_last_finite_loss(tmp_path, monkeypatch):
    from kd_lightning.modules import BaselineModule, NonFiniteLossError
    from kd_lightning.train import train

    losses, real_loss = [], BaselineModule.training_loss

    def nan_at_step_5(self, x, y):
        loss, logits, parts = real_loss(self, x, y)
        losses.append(loss.item())
        return (loss * math.nan if len(losses) == 5 else loss), logits, parts

    monkeypatch.setattr(BaselineModule, "training_loss", nan_at_step_5)
    with pytest.raises(NonFiniteLossError) as err:
        train(make_cfg(tmp_path, "mode=baseline", "student.depth=3", *DATA))
    assert "step 5 " in str(err.value) and f"last finite loss was {losses[3]:.4g}" in str(err.value)
    assert len(losses) < 12  # stopped within the first epoch, before its validation
    assert not list(tmp_path.rglob("metrics.json"))


def test_metrics_json_refuses_nan(tmp_path):
    from kd_lightning.run.files import write_json

    with pytest.raises(ValueError):
        write_json(tmp_path / "metrics.json", {"test_acc": math.nan})
    assert not (tmp_path / "metrics.json").exists()


# ----------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_two_cpu_runs_with_one_seed_give_identical_metrics_and_weights(teacher, tmp_path):
    from kd_lightning.train import train

    again = train(make_cfg(tmp_path, "mode=teacher", *DATA)).to_dict()
    first = metrics_of(teacher, TEACHER_RUN)
    for key in ("best_val_acc", "best_epoch", "test_acc", "test_loss", "split_hash"):
        assert again[key] == first[key], key
    a = teacher_tensors(teacher / "teachers" / "r6-w8-s0.ckpt")
    b = teacher_tensors(tmp_path / "teachers" / "r6-w8-s0.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)
