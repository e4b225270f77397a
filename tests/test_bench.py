"""The speed benchmark's output, and the training loop's promise of no per-step host reads."""

from __future__ import annotations

import collections
import json

import lightning as L
import pytest
import torch

from kd_lightning.bench.cli import main as bench_main
from kd_lightning.bench.harness import SIZES
from kd_lightning.data import CIFAR10DataModule
from kd_lightning.modules import BaselineModule, DistillModule


@pytest.mark.slow
def test_bench_writes_all_four_comparisons_with_positive_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench_main(["--sizes", "tiny", "--device", "cpu", "--data-root", str(tmp_path / "absent"), "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["meta"]["data"].startswith("synthetic") and r["meta"]["device"].startswith("cpu")
    assert r["meta"]["sizes"] == {**SIZES["tiny"].__dict__}
    numbers = [
        r["pipeline"]["ours_img_s"],
        r["pipeline"]["torchvision_img_s"],
        r["pipeline"]["ratio"],
        *(r["trainer"][net][k] for net in ("resnet4", "resnet10") for k in ("lightning_img_s", "plain_img_s", "ratio")),
        r["kd"]["baseline_ms"],
        r["kd"]["kd_ms"],
        r["kd"]["teacher_forward_ms"],
        r["epoch"]["ours_s"],
        r["epoch"]["naive_s"],
        r["epoch"]["speedup"],
    ]
    assert all(isinstance(v, float) and v > 0 for v in numbers)
    assert r["pipeline"]["ratio"] == pytest.approx(r["pipeline"]["ours_img_s"] / r["pipeline"]["torchvision_img_s"])
    kd = r["kd"]
    assert kd["teacher_forwards"] == pytest.approx((kd["kd_ms"] - kd["baseline_ms"]) / kd["teacher_forward_ms"])
    printed = capsys.readouterr().out
    assert "1 data pipeline" in printed and "4 one epoch" in printed and str(out) in printed
    lines = {line.split("  ")[0]: line for line in printed.splitlines()}
    pipeline = lines["1 data pipeline, img/s (vs torchvision)"]  # judged against speed_targets.yaml
    assert pipeline.endswith(" yes") or pipeline.endswith(" NO")
    assert lines["4 one epoch ResNet-4, s (vs naive Lightning)"].split()[-2:] == ["-", "-"]  # a GPU target


def test_bench_refuses_cuda_when_there_is_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--device", "cuda", "--out", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2 and "torch sees no CUDA device" in capsys.readouterr().err


# ----------------------------------------------------------------------------- no host reads per step


class HostReads(L.Callback):
    """Counts Python-visible reads of tensor values, and tensors built from host values on a device,
    from the end of batch 1 to the end of batch 4: whole steps, data fetch and augmentation included.
    On a GPU each of these is a host-device synchronisation."""

    reads = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.active, self.calls = False, collections.Counter()
        for name in self.reads:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))
        make = torch.tensor

        def tensor(*args, **kwargs):
            if self.active and kwargs.get("device") is not None:
                self.calls["torch.tensor(..., device=...)"] += 1
            return make(*args, **kwargs)

        monkeypatch.setattr(torch, "tensor", tensor)

    def _counted(self, name, method):
        def counted(t, *args, **kwargs):
            if self.active:
                self.calls[name] += 1
            return method(t, *args, **kwargs)

        return counted

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.active = 1 <= batch_idx < 4


@pytest.fixture
def teacher_ckpt(tmp_path):
    teacher = BaselineModule(4, 8, role="teacher")
    path = tmp_path / "teacher.ckpt"
    torch.save({"hyper_parameters": dict(teacher.hparams), "state_dict": teacher.state_dict()}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["baseline", "kd"])
def test_training_steps_read_no_tensor_back_to_the_host(tmp_path, monkeypatch, teacher_ckpt, mode):
    module = BaselineModule(3, 8) if mode == "baseline" else DistillModule(3, str(teacher_ckpt), width=8)
    reads = HostReads(monkeypatch)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=6,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[reads],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=CIFAR10DataModule("synthetic", synthetic_size=(640, 64), batch_size=64))
    assert trainer.global_step == 6
    assert reads.calls == {}
    reads.active = True  # the counter itself works: one read, one count
    torch.zeros(()).item()
    assert reads.calls == {"item": 1}


# ----------------------------------------------------------------------------- many runs, compile, the table


@pytest.mark.slow
def test_many_runs_in_turn_and_side_by_side_as_processes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--sizes", "tiny", "--device", "cpu", "--data-root", str(tmp_path / "absent"), "--out", str(out)]
    bench_main([*args, "--only", "many", "--many", "2"])
    r = json.loads(out.read_text())
    assert set(r) == {"many", "meta"} and r["many"]["runs"] == 2
    for side in ("sequential", "side_by_side"):
        assert r["many"][side]["wall_s"] > 0 and r["many"][side]["train_img_s"] > 0
        assert len(r["many"][side]["per_run_img_s"]) == 2
    assert r["many"]["mps"] is None and r["many"]["mps_note"] == "CPU: no MPS"  # MPS is a CUDA matter
    assert r["many"]["wall_speedup"] == pytest.approx(
        r["many"]["sequential"]["wall_s"] / r["many"]["side_by_side"]["wall_s"]
    )
    assert "5 2 runs side by side vs in turn, wall s" in capsys.readouterr().out


def test_bench_refuses_an_unknown_comparison(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--only", "pipeline,fast", "--out", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2 and "--only fast is unknown" in capsys.readouterr().err


def test_the_table_shows_only_the_comparisons_that_ran_with_many_runs_and_compile_rows():
    from kd_lightning.bench.table import table

    side = {"wall_s": 12.0, "train_img_s": 300_000.0, "per_run_img_s": [75_000.0] * 4}
    results = {
        "many": {
            "runs": 4,
            "sequential": {**side, "wall_s": 40.0},
            "side_by_side": side,
            "mps": None,
            "mps_note": "CUDA MPS: nvidia-cuda-mps-control not found",
            "wall_speedup": 40 / 12,
        },
        "compile": {
            "eager": {"first_step_s": 2.0, "img_s": 70_000.0},
            "reduce-overhead": {"first_step_s": 40.0, "img_s": 105_000.0, "speedup": 1.5},
        },
    }
    text = table(results)
    assert "1 data pipeline" not in text and "4 one epoch" not in text
    assert "5 4 runs side by side vs in turn, wall s" in text and "3.33x" in text
    assert (
        "(training img/s together: in turn 300,000, side by side 300,000; CUDA MPS: nvidia-cuda-mps-control not" in text
    )
    assert "7 compile=reduce-overhead ResNet-4 step, img/s (vs eager)" in text and "1.50x" in text
    assert "(first step 40.0 s; eager 2.0 s)" in text
