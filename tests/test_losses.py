import math

import pytest
import torch
from torch.nn import functional as F

from kd_lightning.losses import check_kd_params, distillation_loss

S = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
T = torch.tensor([[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]])
Y = torch.tensor([0, 2])


def by_hand(s, t, y, alpha, temp):
    """Plain-Python reference: sum p_t (log p_t - log p_s) over classes, mean over the batch."""
    total_kl, total_ce = 0.0, 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        zs = [v / temp for v in srow]
        zt = [v / temp for v in trow]
        ls = [v - math.log(sum(math.exp(u) for u in zs)) for v in zs]
        lt = [v - math.log(sum(math.exp(u) for u in zt)) for v in zt]
        total_kl += sum(math.exp(a) * (a - b) for a, b in zip(lt, ls))
        total_ce += -(srow[label] - math.log(sum(math.exp(u) for u in srow)))
    kd = temp**2 * total_kl / len(y)
    ce = total_ce / len(y)
    return alpha * kd + (1 - alpha) * ce, kd, ce


@pytest.mark.parametrize("alpha, temp", [(0.5, 4.0), (0.9, 2.0), (0.1, 1.0), (0.3, 8.0)])
def test_matches_hand_computation(alpha, temp):
    total, kd, ce = distillation_loss(S, T, Y, alpha, temp)
    want_total, want_kd, want_ce = by_hand(S, T, Y, alpha, temp)
    assert total.item() == pytest.approx(want_total, rel=1e-5)
    assert kd.item() == pytest.approx(want_kd, rel=1e-5)
    assert ce.item() == pytest.approx(want_ce, rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy():
    assert distillation_loss(S, T, Y, 0.0, 4.0).total.item() == pytest.approx(F.cross_entropy(S, Y).item())


def test_alpha_one_is_t_squared_times_kl():
    temp = 3.0
    kl = F.kl_div(F.log_softmax(S / temp, 1), F.softmax(T / temp, 1), reduction="batchmean")
    assert distillation_loss(S, T, Y, 1.0, temp).total.item() == pytest.approx(temp**2 * kl.item(), rel=1e-5)


def test_teacher_distribution_is_the_target():
    forward = distillation_loss(S, T, Y, 1.0, 2.0).total
    swapped = distillation_loss(T, S, Y, 1.0, 2.0).total
    assert not torch.isclose(forward, swapped)
    assert forward.item() == pytest.approx(by_hand(S, T, Y, 1.0, 2.0)[0], rel=1e-5)


def test_kd_term_carries_the_t_squared_factor():
    for temp in (1.0, 2.0, 5.0):
        kl = F.kl_div(F.log_softmax(S / temp, 1), F.log_softmax(T / temp, 1), log_target=True, reduction="batchmean")
        assert distillation_loss(S, T, Y, 0.5, temp).kd.item() == pytest.approx(temp**2 * kl.item(), rel=1e-5)


def test_identical_logits_give_zero_kd():
    assert distillation_loss(S, S, Y, 1.0, 4.0).total.item() == pytest.approx(0.0, abs=1e-6)


def test_extreme_logits_stay_finite_and_differentiable():
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, -5.0]])  # teacher probabilities underflow to 0
    out = distillation_loss(s, t, Y, 0.5, 1.0)
    out.total.backward()
    assert all(torch.isfinite(v) for v in out)
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=rf"kd.alpha must lie in \[0, 1\], got {alpha}"):
        check_kd_params(alpha, 2.0)


@pytest.mark.parametrize("temp", [0.0, -1.0])
def test_non_positive_temperature_is_refused(temp):
    with pytest.raises(ValueError, match=rf"kd.temperature must be > 0, got {temp}"):
        check_kd_params(0.5, temp)
