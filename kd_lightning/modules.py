"""LightningModules: a ResNet trained on hard labels (teacher or baseline), or distilled from a frozen teacher."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from kd_lightning.calibration import CalibrationMetrics
from kd_lightning.checks import check_values
from kd_lightning.config import DKDConfig, KDConfig, Method, Mode, OptimConfig, Schedule, allowed, filled, values
from kd_lightning.losses import distillation_loss, dkd_loss, dkd_warmup
from kd_lightning.models import resnet
from kd_lightning.plans import Reading, net_plan, plan_depth
from kd_lightning.teacher import load_teacher


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss."""


def _accuracy(num_classes: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes, average="micro", validate_args=False)


def _mean() -> MeanMetric:
    return MeanMetric(nan_strategy="disable")


def build_optimizer(
    params: Iterable[nn.Parameter], optim: Mapping[str, Any], total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """SGD with the `optim` settings (OptimConfig's keys) and its schedule over `total_steps` steps, if any."""
    o = optim
    opt = torch.optim.SGD(
        params, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"], weight_decay=o["weight_decay"]
    )
    if o["schedule"] == Schedule.onecycle and total_steps > 2:
        # a quarter of the steps warm up; at least two, so tiny smoke runs still have a ramp
        pct = max(0.25, 2 / total_steps)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o["lr"], total_steps=total_steps, pct_start=pct)
    if o["schedule"] == Schedule.cosine and total_steps > 0:
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return opt, None


class BaselineModule(L.LightningModule):
    """A ResNet trained on hard labels: a baseline student, or the teacher (role='teacher').

    Also the base of DistillModule: the network, SGD with a schedule, accuracy/loss metrics and
    per-epoch logging are the same for every run.
    """

    nan_check_every = 50  # steps between host reads of the non-finite-loss flag (each read is a device sync)

    def __init__(
        self,
        depth: int,
        width: int = 64,
        *,
        num_classes: int = 10,
        role: str = Mode.baseline.value,
        reading: str = Reading.blocks.value,
        plan: Sequence[Sequence[int]] | None = None,
        optim: Mapping[str, Any] | None = None,
        split_hash: str | None = None,
        val_hash: str | None = None,
        data_source: str | None = None,
        content_id: str | None = None,
    ):
        """`split_hash`, `val_hash`, `data_source`, `content_id`: the data this run trains on (data.py), kept in its
        checkpoints so a kd run that distils from one can check that it shares the data and the split."""
        super().__init__()
        if role not in values(Mode):
            raise ValueError(f"role={role!r} is unknown; allowed: {allowed(Mode)}")
        optim = filled(OptimConfig, optim)
        check_values("optim", optim)
        plan = net_plan(depth, reading, plan)
        # the init arguments (a subclass's included), with optim's defaults filled in and the network as built:
        # its plan and the depth that follows from it, so a checkpoint rebuilds it whatever the reading was
        self.save_hyperparameters(ignore=["optim", "plan"])
        self.save_hyperparameters({"optim": optim, "plan": plan, "depth": plan_depth(plan)})
        self.model = resnet(num_classes=num_classes, width=width, plan=plan).to(memory_format=torch.channels_last)
        # metrics are updated on the device every step and read once per epoch: validate_args and the
        # NaN check would each read a tensor back to the host per step (_watch_loss covers non-finite losses)
        self.acc = nn.ModuleDict({s: _accuracy(num_classes) for s in ("tr", "val", "test")})
        self.calibration = CalibrationMetrics()  # test only: ECE and NLL of the chosen checkpoint
        self.loss_mean = nn.ModuleDict({s: _mean() for s in ("tr", "val", "test")})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run's val/acc_best curve carries on
        self.register_buffer("_step_count", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("_bad_step", torch.full((), -1, dtype=torch.long), persistent=False)
        self.register_buffer("_last_finite", torch.zeros(()), persistent=False)
        self._lr_sum, self._lr_steps, self._train_parts = 0.0, 0, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(loss, student logits, extra loss parts to log); hard-label cross-entropy here."""
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.optim["label_smoothing"])
        return loss, logits, {}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, logits, parts = self.training_loss(x, y)
        self._watch_loss(loss.detach())
        self.acc["tr"].update(logits.detach(), y)
        self.loss_mean["tr"].update(loss.detach())
        self._train_parts = parts
        # summed on the host: logging this Python float every step would copy it to the device every step
        self._lr_sum += self.optimizers().param_groups[0]["lr"]
        self._lr_steps += 1
        return loss

    def on_train_epoch_start(self) -> None:
        self._lr_sum, self._lr_steps = 0.0, 0

    def on_train_epoch_end(self) -> None:
        # logged once per epoch, not from every step: each self.log call costs a millisecond or more
        # of host time, which a GPU step of a small student cannot hide
        self.log("train/acc", self.acc["tr"])
        self.log("train/loss", self.loss_mean["tr"], prog_bar=True)
        for name, metric in self._train_parts.items():
            self.log(f"train/{name}", metric)
        if self._lr_steps:
            self.log("lr", self._lr_sum / self._lr_steps)  # the epoch's mean learning rate

    def _watch_loss(self, loss: torch.Tensor) -> None:
        """Record the first non-finite step on the device; read it only every few steps (no per-step sync)."""
        self._step_count += 1
        finite = torch.isfinite(loss)
        first_bad = (self._bad_step < 0) & ~finite
        self._bad_step.copy_(torch.where(first_bad, self._step_count, self._bad_step))
        self._last_finite.copy_(torch.where(finite & (self._bad_step < 0), loss.float(), self._last_finite))

    def on_train_start(self) -> None:
        self._step_count.fill_(self.trainer.global_step)  # a resumed run counts steps from the run's start

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % self.nan_check_every == 0:
            self.check_finite()

    def check_finite(self) -> None:
        bad = int(self._bad_step)
        if bad >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN or inf at step {bad} (epoch {self.current_epoch}); "
                f"the last finite loss was {float(self._last_finite):.4g}. Rerun with a lower optim.lr and "
                "overwrite=true (a resumed run keeps the old learning rate), or check the data"
            )

    def on_validation_epoch_start(self) -> None:
        if self.trainer.training or self.trainer.state.fn == "fit":
            self.check_finite()  # before a checkpoint of this epoch can be written

    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        self.loss_mean[stage].update(F.cross_entropy(logits, y))
        self.acc[stage].update(logits, y)
        if stage == "test":
            self.calibration.update(logits, y)
        name = "val" if stage == "val" else "test"
        self.log(f"{name}/loss", self.loss_mean[stage], on_step=False, on_epoch=True)
        self.log(f"{name}/acc", self.acc[stage], on_step=False, on_epoch=True, prog_bar=True)
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best(self.acc["val"].compute())
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{name}": value for name, value in self.calibration.compute().items()})
        self.calibration.reset()

    def configure_optimizers(self) -> dict:
        # the student only: a teacher is never optimised
        total = int(self.trainer.estimated_stepping_batches)
        opt, sched = build_optimizer(self.model.parameters(), self.hparams.optim, total)
        if sched is None:
            return {"optimizer": opt}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DistillModule(BaselineModule):
    """A student distilled from a frozen teacher: plain KD (alpha * T^2 * KL + (1 - alpha) * CE, the KL in
    either direction) or decoupled KD (CE + warm-up * (alpha * TCKD + beta * NCKD)); see losses.py.

    The teacher is frozen for the whole run: no gradients, eval mode (its BatchNorm statistics
    never move), outside the optimiser, and left out of this module's checkpoints (only its path
    and hash are stored; it is reloaded from `teacher_ckpt`).
    """

    def __init__(
        self,
        depth: int,
        teacher_ckpt: str,
        *,
        kd: Mapping[str, Any] | None = None,
        width: int = 64,
        num_classes: int = 10,
        **common: Any,
    ):
        """`kd`: KDConfig's keys (defaults filled in); `common`: BaselineModule's other keyword arguments."""
        kd = filled(KDConfig, kd)
        kd["dkd"] = filled(DKDConfig, kd["dkd"])
        check_values("kd", kd)
        if common.setdefault("role", Mode.kd.value) != Mode.kd.value:  # load_from_checkpoint passes it back
            raise ValueError(f"DistillModule trains role 'kd', got role={common['role']!r}")
        super().__init__(depth, width, num_classes=num_classes, **common)
        self.save_hyperparameters({"kd": kd})
        teacher, self.teacher_info = load_teacher(
            teacher_ckpt,
            num_classes,
            common.get("split_hash"),
            source=common.get("data_source"),
            content_id=common.get("content_id"),
        )
        self.teacher = teacher.to(memory_format=torch.channels_last).eval().requires_grad_(False)
        self.parts = nn.ModuleDict({name: _mean() for name in ("kd", "ce", "tckd", "nckd")})
        self.agreement = _mean()
        self._dkd_weight = 1.0  # the warm-up factor of this epoch, a host float (no device read per step)

    def train(self, mode: bool = True) -> DistillModule:
        super().train(mode)
        self.teacher.eval()  # whatever Lightning or the user toggles, the teacher stays in eval mode
        return self

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._dkd_weight = dkd_warmup(self.current_epoch, self.hparams.kd["dkd"]["warmup_epochs"])

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        logits = self.model(x)
        kd = self.hparams.kd
        if kd["method"] == Method.dkd:
            d = kd["dkd"]
            loss = dkd_loss(
                logits, teacher_logits, y, d["alpha"], d["beta"], kd["temperature"], weight=self._dkd_weight
            )
            # the distillation term as the objective weighs it, before the warm-up factor
            terms = {"kd": d["alpha"] * loss.tckd + d["beta"] * loss.nckd, "tckd": loss.tckd, "nckd": loss.nckd}
        else:
            loss = distillation_loss(
                logits, teacher_logits, y, kd["alpha"], kd["temperature"], divergence=kd["divergence"]
            )
            terms = {"kd": loss.kd}
        terms["ce"] = loss.ce
        for name, value in terms.items():
            self.parts[name].update(value.detach())
        return loss.total, logits, {name: self.parts[name] for name in terms}

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._eval_step("test", batch)
        with torch.no_grad():
            teacher_pred = self.teacher(batch[0]).argmax(1)
        self.agreement.update((logits.argmax(1) == teacher_pred).float())
        self.log("test/agreement", self.agreement, on_step=False, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["teacher"] = self.teacher_info  # path and sha256, not the weights
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # the teacher came from teacher_ckpt in __init__; give the strict state-dict load its keys back
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
