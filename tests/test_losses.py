import math

import pytest
import torch
from torch.nn import functional as F

from kd_lightning.checks import check_values
from kd_lightning.config import Divergence, DKDConfig, KDConfig, filled, values
from kd_lightning.losses import distillation_loss, dkd_loss, dkd_warmup

DIVERGENCES = sorted(values(Divergence))


def kd_settings(**changes) -> dict:
    """A kd config section as a module receives it: the schema's defaults with `changes` (dkd.* as dkd_*)."""
    dkd = filled(DKDConfig, {k[4:]: v for k, v in changes.items() if k.startswith("dkd_")})
    return filled(KDConfig, {k: v for k, v in changes.items() if not k.startswith("dkd_")}) | {"dkd": dkd}


S = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
T = torch.tensor([[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]])
Y = torch.tensor([0, 2])
EXTREME_S = [[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]]
EXTREME_T = [[-1e4, 1e4, 0.0], [1e4, -1e4, -5.0]]  # probabilities underflow to 0 on either side


def log_softmax(row, temp=1.0):
    """Plain-Python log-softmax of a list of floats at temperature temp."""
    z = [v / temp for v in row]
    return [v - math.log(sum(math.exp(u) for u in z)) for v in z]


def by_hand(s, t, y, alpha, temp, divergence="forward"):
    """Plain-Python reference: forward sums p_t (log p_t - log p_s), reverse p_s (log p_s - log p_t), batch mean."""
    total_kl, total_ce = 0.0, 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        ls, lt = log_softmax(srow, temp), log_softmax(trow, temp)
        target, other = (lt, ls) if divergence == "forward" else (ls, lt)
        total_kl += sum(math.exp(a) * (a - b) for a, b in zip(target, other))
        total_ce += -log_softmax(srow)[label]
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


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_extreme_logits_stay_finite_and_differentiable(divergence):
    s = torch.tensor(EXTREME_S, requires_grad=True)
    out = distillation_loss(s, torch.tensor(EXTREME_T), Y, 0.5, 1.0, divergence=divergence)
    out.total.backward()
    assert all(torch.isfinite(v) for v in out)
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=rf"kd.alpha={alpha:g} is not allowed; it must be a number in \[0, 1\]"):
        check_values("kd", kd_settings(alpha=alpha))


@pytest.mark.parametrize("temp", [0.0, -1.0])
def test_non_positive_temperature_is_refused(temp):
    with pytest.raises(ValueError, match=rf"kd.temperature={temp:g} is not allowed; it must be a number in \(0, 100\]"):
        check_values("kd", kd_settings(temperature=temp))


def test_unknown_divergence_is_refused_once_and_per_call():
    with pytest.raises(ValueError, match=r"kd.divergence=backward is not allowed; it must be forward or reverse"):
        check_values("kd", kd_settings(divergence="backward"))
    with pytest.raises(ValueError, match=r"divergence='backward' is unknown; allowed: forward or reverse"):
        distillation_loss(S, T, Y, 0.5, 2.0, divergence="backward")


# --- reverse KL: KL(p_student^T || p_teacher^T) -------------------------------------------------


@pytest.mark.parametrize("alpha, temp", [(0.5, 4.0), (0.9, 2.0), (0.1, 1.0), (0.3, 8.0)])
def test_reverse_matches_hand_computation(alpha, temp):
    got = distillation_loss(S, T, Y, alpha, temp, divergence="reverse")
    want = by_hand(S, T, Y, alpha, temp, divergence="reverse")
    for part, value in zip(got, want):
        assert part.item() == pytest.approx(value, rel=1e-5)


def test_forward_is_the_default_and_unchanged():
    default = distillation_loss(S, T, Y, 0.5, 4.0)
    forward = distillation_loss(S, T, Y, 0.5, 4.0, divergence="forward")
    assert all(torch.equal(a, b) for a, b in zip(default, forward))
    assert default.kd.item() == pytest.approx(by_hand(S, T, Y, 0.5, 4.0)[1], rel=1e-5)


def test_directions_differ_on_asymmetric_inputs():
    forward = distillation_loss(S, T, Y, 1.0, 2.0, divergence="forward").kd
    reverse = distillation_loss(S, T, Y, 1.0, 2.0, divergence="reverse").kd
    assert not torch.isclose(forward, reverse, rtol=1e-3)
    # reverse KL of (S, T) is forward KL of (T, S): the student's distribution is the target
    assert reverse.item() == pytest.approx(distillation_loss(T, S, Y, 1.0, 2.0).kd.item(), rel=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_both_directions_are_zero_when_teacher_equals_student(divergence):
    assert distillation_loss(S, S, Y, 1.0, 4.0, divergence=divergence).kd.item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_gradient_matches_the_explicit_formula():
    temp = 3.0
    s = S.double().requires_grad_(True)
    distillation_loss(s, T, Y, 1.0, temp, divergence="reverse").total.backward()
    s_ref = S.double().requires_grad_(True)
    ls, lt = F.log_softmax(s_ref / temp, 1), F.log_softmax(T.double() / temp, 1)
    (temp**2 * (ls.exp() * (ls - lt)).sum(1).mean()).backward()
    assert torch.allclose(s.grad, s_ref.grad, rtol=1e-4, atol=1e-7)
    assert s.grad.abs().sum() > 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_kd_gradient_reaches_the_student_only(divergence):
    s, t = S.clone().requires_grad_(True), T.clone().requires_grad_(True)
    distillation_loss(s, t, Y, 1.0, 2.0, divergence=divergence).total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


# --- decoupled KD (Zhao et al., CVPR 2022) -------------------------------------------------------

S4 = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 3.0, -2.0], [1.0, 1.5, -0.5, 0.7]])
T4 = torch.tensor([[3.0, -0.2, 0.4, 1.0], [-1.0, 0.0, 2.5, 0.5], [0.2, 2.2, 0.1, -1.0]])
Y4 = torch.tensor([0, 2, 1])


def kl_by_hand(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def dkd_by_hand(s, t, y, alpha, beta, temp, weight=1.0):
    """The paper's definitions in plain Python floats: b = [p_t, 1 - p_t], p̂_i = p_i / (1 - p_t) for i != t."""
    tckd = nckd = ce = 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        ps = [math.exp(v) for v in log_softmax(srow, temp)]
        pt = [math.exp(v) for v in log_softmax(trow, temp)]
        tckd += kl_by_hand([pt[label], 1 - pt[label]], [ps[label], 1 - ps[label]])
        hat_s = [v / (1 - ps[label]) for i, v in enumerate(ps) if i != label]
        hat_t = [v / (1 - pt[label]) for i, v in enumerate(pt) if i != label]
        nckd += kl_by_hand(hat_t, hat_s)
        ce -= log_softmax(srow)[label]
    n = len(y)
    tckd, nckd, ce = temp**2 * tckd / n, temp**2 * nckd / n, ce / n
    return ce + weight * (alpha * tckd + beta * nckd), tckd, nckd, ce


@pytest.mark.parametrize("alpha, beta, temp", [(1.0, 8.0, 4.0), (1.0, 1.0, 1.0), (0.5, 2.0, 2.0), (2.0, 0.5, 8.0)])
def test_dkd_matches_the_papers_definitions(alpha, beta, temp):
    got = dkd_loss(S4, T4, Y4, alpha, beta, temp)
    # float32 KLs of nearly equal binary distributions at T=8 carry ~2e-5 relative rounding error
    for part, value in zip(got, dkd_by_hand(S4, T4, Y4, alpha, beta, temp)):
        assert part.item() == pytest.approx(value, rel=1e-4)


def test_dkd_weight_scales_only_the_distillation_terms():
    got = dkd_loss(S4, T4, Y4, 1.0, 8.0, 4.0, weight=0.25)
    assert got.total.item() == pytest.approx(dkd_by_hand(S4, T4, Y4, 1.0, 8.0, 4.0, weight=0.25)[0], rel=1e-5)
    assert dkd_loss(S4, T4, Y4, 1.0, 8.0, 4.0, weight=0.0).total.item() == pytest.approx(got.ce.item())


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_kd_decomposes_into_tckd_plus_teacher_weighted_nckd(temp):
    """The paper's Eq. (3), per sample: KL(p_teacher || p_student) = TCKD + (1 - p_t^teacher) * NCKD."""
    for i in range(len(Y4)):
        s, t, y = S4[i : i + 1], T4[i : i + 1], Y4[i : i + 1]
        parts = dkd_loss(s, t, y, 1.0, 1.0, temp)
        teacher_non_target = 1 - F.softmax(t / temp, 1)[0, y].item()
        kd = distillation_loss(s, t, y, 1.0, temp).kd.item()
        assert kd == pytest.approx(parts.tckd.item() + teacher_non_target * parts.nckd.item(), rel=1e-5)


def test_dkd_is_zero_when_student_equals_teacher():
    got = dkd_loss(S4, S4, Y4, 1.0, 8.0, 4.0)
    assert got.tckd.item() == pytest.approx(0.0, abs=1e-6)
    assert got.nckd.item() == pytest.approx(0.0, abs=1e-6)
    assert got.total.item() == pytest.approx(got.ce.item(), abs=1e-5)


def test_dkd_extreme_logits_stay_finite_and_differentiable():
    s = torch.tensor(EXTREME_S, requires_grad=True)
    out = dkd_loss(s, torch.tensor(EXTREME_T), Y, 1.0, 8.0, 1.0)
    out.total.backward()
    assert all(torch.isfinite(v) for v in out)
    assert torch.isfinite(s.grad).all()


def test_nckd_masks_the_target_even_when_it_dominates_by_more_than_1000():
    """Subtracting 1000 from a target logit of 1e4 would leave it dominant; NCKD must ignore it whatever its size."""
    s, t = torch.tensor([[1e4, 0.0, 2.0]]), torch.tensor([[5e3, 1.0, -1.0]])
    got = dkd_loss(s, t, torch.tensor([0]), 1.0, 1.0, 1.0).nckd.item()
    want = kl_by_hand([math.exp(v) for v in log_softmax([1.0, -1.0])], [math.exp(v) for v in log_softmax([0.0, 2.0])])
    assert got == pytest.approx(want, rel=1e-5)


def test_dkd_gradient_reaches_the_student_only():
    s, t = S4.clone().requires_grad_(True), T4.clone().requires_grad_(True)
    dkd_loss(s, t, Y4, 1.0, 8.0, 4.0).total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("epoch, weight", [(0, 1 / 20), (9, 0.5), (18, 19 / 20), (19, 1.0), (100, 1.0)])
def test_dkd_warmup_is_linear_from_the_first_epoch(epoch, weight):
    assert dkd_warmup(epoch, 20) == pytest.approx(weight)


def test_dkd_warmup_of_zero_epochs_is_full_weight():
    assert dkd_warmup(0, 0) == 1.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dkd_alpha": -0.1}, r"kd.dkd.alpha=-0.1 is not allowed; it must be a number in \[0, 1000\]"),
        ({"dkd_beta": -1.0}, r"kd.dkd.beta=-1 is not allowed"),
        ({"temperature": 0.0}, r"kd.temperature=0 is not allowed"),
        ({"dkd_warmup_epochs": -1}, r"kd.dkd.warmup_epochs=-1 is not allowed; it must be an integer >= 0"),
        ({"dkd_warmup_epochs": 2.5}, r"kd.dkd.warmup_epochs=2.5 is not allowed; it must be an integer >= 0"),
    ],
)
def test_dkd_settings_outside_their_ranges_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        check_values("kd", kd_settings(method="dkd", **changes))


def test_dkd_paper_defaults_are_accepted():
    check_values("kd", kd_settings(method="dkd", dkd_alpha=1.0, dkd_beta=8.0, temperature=4.0, dkd_warmup_epochs=20))
