import lightning as L
import pytest
import torch

from kd_lightning.data import CIFAR10DataModule
from kd_lightning.modules import BaselineModule, DistillModule
from kd_lightning.teacher import TeacherError, load_teacher


def tiny_trainer(tmp_path, epochs=1, **kw):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


@pytest.fixture(scope="module")
def data():
    dm = CIFAR10DataModule("synthetic", synthetic_size=(320, 64), batch_size=64, eval_batch_size=128)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("teacher")
    L.seed_everything(0)
    module = BaselineModule(5, 8, role="teacher", split_hash=data.split_hash)
    trainer = tiny_trainer(tmp, epochs=1)
    trainer.fit(module, datamodule=data)
    path = tmp / "teacher.ckpt"
    trainer.save_checkpoint(path)
    return path


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_teacher_parameters_and_bn_buffers_are_bit_identical_after_kd_training(tmp_path, data, teacher_ckpt):
    student = DistillModule(
        3, str(teacher_ckpt), kd={"alpha": 0.7, "temperature": 4.0}, width=8, split_hash=data.split_hash
    )
    before = snapshot(student.teacher)
    assert any("running_mean" in k for k in before)
    student_before = snapshot(student.model)
    tiny_trainer(tmp_path, epochs=2).fit(student, datamodule=data)
    after = student.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # num_batches_tracked included
    assert not all(torch.equal(student_before[k], v) for k, v in student.model.state_dict().items())


@pytest.mark.slow
def test_teacher_is_frozen_in_eval_mode_and_outside_the_optimizer(data, teacher_ckpt):
    student = DistillModule(3, str(teacher_ckpt), width=8, split_hash=data.split_hash)
    student.train()
    assert not student.teacher.training and student.model.training
    assert all(not p.requires_grad for p in student.teacher.parameters())
    student.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # what configure_optimizers reads
    opt = student.configure_optimizers()["optimizer"]
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in student.model.parameters()}
    assert not optimised & {id(p) for p in student.teacher.parameters()}


@pytest.mark.slow
def test_student_checkpoint_stores_teacher_path_and_hash_but_no_teacher_weights(tmp_path, data, teacher_ckpt):
    student = DistillModule(3, str(teacher_ckpt), width=8, split_hash=data.split_hash)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(student, datamodule=data)
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    ckpt = torch.load(tmp_path / "student.ckpt", weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert ckpt["teacher"]["path"] == str(teacher_ckpt) and len(ckpt["teacher"]["sha256"]) == 64
    restored = DistillModule.load_from_checkpoint(tmp_path / "student.ckpt")
    assert torch.equal(restored.model.fc.weight, student.model.fc.weight)


@pytest.mark.slow
def test_kd_run_logs_every_study_curve(tmp_path, data, teacher_ckpt):
    student = DistillModule(3, str(teacher_ckpt), width=8, split_hash=data.split_hash)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(student, datamodule=data)
    logged = set(trainer.logged_metrics)
    assert {"train/loss", "train/ce", "train/kd", "train/acc", "val/loss", "val/acc", "lr"} <= logged
    test = trainer.test(student, datamodule=data, verbose=False)[0]
    assert {"test/acc", "test/loss", "test/agreement"} <= set(test)


@pytest.mark.slow
def test_kd_loss_parts_combine_with_alpha(tmp_path, data, teacher_ckpt):
    student = DistillModule(
        3, str(teacher_ckpt), kd={"alpha": 0.25, "temperature": 2.0}, width=8, split_hash=data.split_hash
    )
    x, y = next(iter(data.val_dataloader()))
    x, y = data.on_after_batch_transfer((x, y), 0)
    loss, _, parts = student.training_loss(x, y)
    assert loss.item() == pytest.approx(
        0.25 * parts["kd"].compute().item() + 0.75 * parts["ce"].compute().item(), rel=1e-5
    )


@pytest.mark.slow
def test_load_teacher_refuses_what_is_not_a_fitting_teacher(tmp_path, data, teacher_ckpt):
    with pytest.raises(TeacherError, match="does not exist; train one with `make teacher`"):
        load_teacher(tmp_path / "none.ckpt", 10, data.split_hash)
    (tmp_path / "junk.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(TeacherError, match="is not a readable checkpoint"):
        load_teacher(tmp_path / "junk.ckpt", 10, data.split_hash)
    with pytest.raises(TeacherError, match="predicts 10 classes but the data has 100"):
        load_teacher(teacher_ckpt, 100, data.split_hash)
    with pytest.raises(TeacherError, match="another train/val split"):
        load_teacher(teacher_ckpt, 10, "0123456789abcdef")
    foreign = {"hyper_parameters": {"role": "other", "num_classes": 10}, "state_dict": {}}
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(TeacherError, match="is not a checkpoint of this project's runs"):
        load_teacher(tmp_path / "foreign.ckpt", 10, None)


def test_any_finished_run_can_teach_and_its_lineage_follows(tmp_path, data):
    """A baseline (or kd) student's checkpoint is a teacher too, e.g. an assistant between ResNet-10 and ResNet-3;
    the lineage is the checkpoint's own (its run's ancestors) followed by the checkpoint's run and sha256."""
    from kd_lightning.run.files import file_sha256
    from kd_lightning.run.record import CHECKPOINT_KEY

    baseline = BaselineModule(3, 8, role="baseline", split_hash=data.split_hash, reading="stages")
    ancestors = [{"run_name": "teacher-r10-w64-s0", "sha256": "ab" * 32}]
    run = {"run_name": "kd-r3-w8-t10-a0.5-T4-s0", "lineage": ancestors}
    ckpt = {"hyper_parameters": dict(baseline.hparams), "state_dict": baseline.state_dict(), CHECKPOINT_KEY: run}
    torch.save(ckpt, tmp_path / "assistant.ckpt")
    teacher, info = load_teacher(tmp_path / "assistant.ckpt", 10, data.split_hash)
    assert (info["depth"], info["width"], info["plan"], info["role"]) == (3, 8, [[1]], "baseline")
    assert info["lineage"] == [
        *ancestors,
        {"run_name": run["run_name"], "sha256": file_sha256(tmp_path / "assistant.ckpt"), "settings": None},
    ]
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(teacher.eval()(x), baseline.model.eval()(x), atol=1e-5)  # the same weights
