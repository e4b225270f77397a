"""Comparison 3: one KD step vs one baseline step of the same student, and one teacher forward.

Distillation should cost a baseline step plus a teacher forward and nothing more: `teacher_forwards`
is what the KD step costs over the baseline step, counted in teacher forwards (its target is in
kd_lightning/study/speed_targets.yaml). The teacher has random weights: timing needs no trained one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kd_lightning.bench.harness import Pair, Sizes, autocast, time_ms
from kd_lightning.data import augment, normalize
from kd_lightning.modules import BaselineModule, DistillModule
from kd_lightning.run.files import atomic_path


def _teacher_file(folder: Path, width: int) -> Path:
    """A ResNet-10 teacher checkpoint with random weights, in the form DistillModule loads."""
    teacher = BaselineModule(10, width=width, role="teacher")
    path = folder / "teacher.ckpt"
    with atomic_path(path) as tmp:
        torch.save({"hyper_parameters": dict(teacher.hparams), "state_dict": teacher.state_dict()}, tmp)
    return path


def bench_kd(train: Pair, sizes: Sizes, device: torch.device, tmp: Path) -> dict:
    """ms per step: a ResNet-4 student on hard labels, the same student distilled, a ResNet-10 forward."""
    torch.manual_seed(0)
    x = normalize(augment(train[0][: sizes.batch].to(device)))
    y = train[1][: sizes.batch].to(device)
    base = BaselineModule(4, width=sizes.width).to(device)
    kd = DistillModule(4, str(_teacher_file(tmp, sizes.width)), width=sizes.width).to(device)
    opts = {m: torch.optim.SGD(m.model.parameters(), lr=0.01, momentum=0.9) for m in (base, kd)}

    def step(module: BaselineModule) -> None:
        with autocast(device):
            loss = module.training_loss(x, y)[0]
        opts[module].zero_grad(set_to_none=True)
        loss.backward()
        opts[module].step()

    def teacher_forward() -> None:
        with torch.no_grad(), autocast(device):
            kd.teacher(x)

    best = {"baseline_ms": float("inf"), "kd_ms": float("inf"), "teacher_forward_ms": float("inf")}
    for _ in range(sizes.repeats):
        for key, fn in (
            ("baseline_ms", lambda: step(base)),
            ("kd_ms", lambda: step(kd)),
            ("teacher_forward_ms", teacher_forward),
        ):
            best[key] = min(best[key], time_ms(fn, sizes, device))
    return {**best, "teacher_forwards": (best["kd_ms"] - best["baseline_ms"]) / best["teacher_forward_ms"]}
