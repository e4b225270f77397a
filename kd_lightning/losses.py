"""Distillation losses: Hinton et al.'s KD (either KL direction) and Zhao et al.'s decoupled KD.

Every function here is pure: no range checks and no host reads per call (the modules check their
settings once, when they are built, against kd_lightning.checks.RULES).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from kd_lightning.config import Divergence, allowed

# How far below a row's smallest logit DKD puts the target logit to mask it out: exp(-1000) is 0
# in float32 and float64, so the masked class holds no probability whatever the logits are.
_MASK_MARGIN = 1000.0


class DistillLoss(NamedTuple):
    total: torch.Tensor
    kd: torch.Tensor  # T^2 * KL in the chosen direction (forward: KL(p_teacher^T || p_student^T)), before alpha
    ce: torch.Tensor  # CE(targets, student), before the (1 - alpha) weight


class DKDLoss(NamedTuple):
    total: torch.Tensor  # ce + weight * (alpha * tckd + beta * nckd)
    tckd: torch.Tensor  # T^2 * KL(b_teacher || b_student), before alpha and the warm-up weight
    nckd: torch.Tensor  # T^2 * KL(p̂_teacher || p̂_student), before beta and the warm-up weight
    ce: torch.Tensor  # CE(targets, student) at temperature 1, unweighted


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i (log p_i - log q_i) from (B, K) log-probabilities, averaged over the batch.

    Log-space on both sides: a p_i that underflows to 0 contributes 0 (not 0 * -inf = NaN), and the
    gradient reaches both arguments.
    """
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    *,
    divergence: str = "forward",
) -> DistillLoss:
    """total = alpha * T^2 * KL_dir + (1 - alpha) * CE(targets, s), with p^T = softmax(z / T) and

    - ``divergence="forward"``: KL_dir = KL(p_teacher^T || p_student^T) = sum_i p_t,i (log p_t,i - log p_s,i).
      The teacher's softened distribution is the target: Hinton et al. (2015) and the PyTorch KD
      tutorial; the default, and what this function always computed.
    - ``divergence="reverse"``: KL_dir = KL(p_student^T || p_teacher^T) = sum_i p_s,i (log p_s,i - log p_t,i).
      The study's formula read literally: alpha * T^2 * KL(softmax(z_s/T), softmax(z_t/T)) with
      KL(p, q) = sum p log(p / q). Mode-seeking: the student is pushed to put no mass where the
      teacher has little, rather than to cover every class the teacher covers.

    Logits are (B, C), targets (B,) class indices; the KL is summed over classes and averaged over
    the batch, CE is the batch mean at temperature 1. Both KL sides are log-softmaxes, so a
    probability that underflows to 0 contributes 0 rather than NaN. The teacher is a fixed target
    (its logits are detached); the gradient flows to the student in both directions. The T^2 factor
    keeps the soft-target gradients on the scale of the hard-label ones (Hinton et al., 2015).
    `divergence` takes a value of `Divergence`.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    if divergence == "forward":
        kl = _kl(log_p_teacher, log_p_student)
    elif divergence == "reverse":
        kl = _kl(log_p_student, log_p_teacher)
    else:  # a plain string comparison, no tensor read: an unknown value must not pass silently as either
        raise ValueError(f"divergence={divergence!r} is unknown; allowed: {allowed(Divergence)}")
    kd = kl * temperature**2
    ce = F.cross_entropy(student_logits.float(), targets)
    return DistillLoss(alpha * kd + (1.0 - alpha) * ce, kd, ce)


def _decoupled_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From (B, C) logits already divided by T: log b (B, 2) = log [p_t, 1 - p_t] and log p̂ (B, C).

    log p̂ is the log-softmax over the non-target classes; its target entry is at most -1000 (a
    probability of exactly 0), because the target logit is replaced by the row's minimum minus 1000.
    log(1 - p_t) = logsumexp(non-target logits) - logsumexp(all logits), so neither part takes the
    log of a probability that may have underflowed.
    """
    target_mask = F.one_hot(targets, logits.shape[-1]).bool()
    masked = torch.where(target_mask, logits.detach().amin(dim=-1, keepdim=True) - _MASK_MARGIN, logits)
    target_logit = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    binary = torch.stack((target_logit, torch.logsumexp(masked, dim=-1)), dim=-1)
    return F.log_softmax(binary, dim=-1), F.log_softmax(masked, dim=-1)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    *,
    weight: float = 1.0,
) -> DKDLoss:
    """Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang: "Decoupled Knowledge
    Distillation", CVPR 2022, Eq. (6) and its released code):

        total = CE(targets, s) + weight * (alpha * tckd + beta * nckd)
        tckd  = T^2 * KL(b_teacher || b_student),  b = [p_t, 1 - p_t]
        nckd  = T^2 * KL(p̂_teacher || p̂_student),  p̂_i = p_i / (1 - p_t) for i != t

    with p = softmax(z / T) and t the target class of each row. TCKD compares how much probability
    the two networks put on the target class; NCKD compares the shapes of their distributions over
    the other C - 1 classes. Together they decompose Hinton's forward KD per sample (the paper's
    Eq. (3)): KL(p_teacher || p_student) = TCKD + (1 - p_t^teacher) * NCKD, where DKD frees the
    NCKD weight from the teacher's confidence.

    Shapes: logits (B, C), targets (B,) class indices. Each KL is summed over its classes (2 for
    TCKD, C - 1 for NCKD) and averaged over the batch, and already includes the T^2 factor; `ce` is
    the batch-mean cross-entropy at temperature 1. `weight` is the warm-up factor the caller
    computes from the epoch (`dkd_warmup`); the paper's CIFAR settings are alpha=1, beta=8, T=4 and
    a 20-epoch warm-up.

    Numerics: everything is in log-space. As in the paper's code, p̂ is a softmax over the logits
    with the target masked out; the code there subtracts 1000 from the target logit, here the
    target logit is set 1000 below the row's smallest logit, so the mask holds even when the target
    logit exceeds the others by more than 1000 (finite at logits of +-1e4). The teacher is a fixed
    target (its logits are detached); gradients reach the student only.
    """
    log_b_s, log_p_hat_s = _decoupled_log_probs(student_logits.float() / temperature, targets)
    log_b_t, log_p_hat_t = _decoupled_log_probs(teacher_logits.detach().float() / temperature, targets)
    tckd = _kl(log_b_t, log_b_s) * temperature**2
    nckd = _kl(log_p_hat_t, log_p_hat_s) * temperature**2
    ce = F.cross_entropy(student_logits.float(), targets)
    return DKDLoss(ce + weight * (alpha * tckd + beta * nckd), tckd, nckd, ce)


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """The DKD weight for a 0-based `epoch` (Lightning's `current_epoch`): min(1, (epoch + 1) / warmup_epochs).

    The paper's code weighs DKD by min(epoch / warmup, 1) with epochs counted from 1, so the first
    epoch trains at 1/warmup and epoch `warmup_epochs` (1-based) is the first at full weight; with
    0-based epochs that is (epoch + 1) / warmup. warmup_epochs=0 means no warm-up (weight 1).
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / warmup_epochs)
