"""The distillation loss of Hinton et al., as the study writes it (alpha weighs the KD term)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F


class DistillLoss(NamedTuple):
    total: torch.Tensor
    kd: torch.Tensor  # T^2 * KL(p_teacher^T || p_student^T), before the alpha weight
    ce: torch.Tensor  # CE(targets, student), before the (1 - alpha) weight


def check_kd_params(alpha: float, temperature: float) -> None:
    """Refuse settings the loss is not defined for; called once when a module is built, not per step."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"kd.alpha must lie in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"kd.temperature must be > 0, got {temperature}")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
) -> DistillLoss:
    """total = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(targets, s).

    Logits are (B, C), targets (B,) class indices. The KL takes the teacher's softened
    distribution as the target and is averaged over the batch; both sides are log-softmaxes, so
    a teacher probability that underflows to 0 contributes 0 rather than NaN. The T^2 factor keeps
    the soft-target gradients on the scale of the hard-label ones (Hinton et al., 2015).
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kd = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * temperature**2
    ce = F.cross_entropy(student_logits.float(), targets)
    return DistillLoss(alpha * kd + (1.0 - alpha) * ce, kd, ce)
