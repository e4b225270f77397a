import math

import pytest
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from kd_lightning.calibration import CalibrationMetrics, confidence_bins


def logits_for(confidences, predicted, num_classes=3):
    """Float64 logits whose softmax puts `confidence` on class `predicted` and the rest evenly elsewhere."""
    rows = []
    for conf, cls in zip(confidences, predicted):
        rest = (1 - conf) / (num_classes - 1)
        rows.append([math.log(conf) if i == cls else math.log(rest) for i in range(num_classes)])
    return torch.tensor(rows, dtype=torch.float64)


def ece_by_hand(confidences, correct, n_bins=15):
    """Guo et al. in plain Python: bins ((m-1)/M, m/M], sum of |B|/n * |acc(B) - conf(B)|."""
    bins = {}
    for conf, ok in zip(confidences, correct):
        bins.setdefault(max(math.ceil(conf * n_bins) - 1, 0), []).append((conf, ok))
    n = len(confidences)
    return sum(
        len(members) / n * abs(sum(ok for _, ok in members) / len(members) - sum(c for c, _ in members) / len(members))
        for members in bins.values()
    )


def calibration(logits, targets, batch_size=None):
    metric = CalibrationMetrics()
    for chunk, labels in zip(logits.split(batch_size or len(logits)), targets.split(batch_size or len(targets))):
        metric.update(chunk, labels)
    return metric.compute()


# confidences away from every k/15 edge: 0.35 and 0.38 share a bin, 0.55 and 0.9 and 0.97 do not
CONF = [0.35, 0.38, 0.55, 0.55, 0.9, 0.9, 0.9, 0.97]
PRED = [0, 1, 2, 0, 1, 1, 2, 0]
TARGETS = torch.tensor([0, 2, 2, 1, 1, 0, 2, 0])


def test_ece_matches_hand_computation():
    correct = [int(p == y) for p, y in zip(PRED, TARGETS.tolist())]
    got = calibration(logits_for(CONF, PRED), TARGETS)["ece"].item()
    assert got == pytest.approx(ece_by_hand(CONF, correct), rel=1e-9)
    # by bins: 0.35/0.38 -> |1/2 - 0.365|, 0.55s -> |1/2 - 0.55|, 0.9s -> |2/3 - 0.9|, 0.97 -> |1 - 0.97|
    assert got == pytest.approx((2 * 0.135 + 2 * 0.05 + 3 * (0.9 - 2 / 3) + 0.03) / 8, rel=1e-9)


def test_ece_is_zero_for_perfectly_calibrated_predictions():
    # in each bin the accuracy equals the confidence: 6 of 8 right at 0.75, 1 of 2 right at 0.5
    conf = [0.75] * 8 + [0.5] * 2
    predicted = [0] * 10
    targets = torch.tensor([0] * 6 + [1] * 2 + [0, 1])
    assert calibration(logits_for(conf, predicted), targets)["ece"].item() == pytest.approx(0.0, abs=1e-12)


def test_batched_equals_one_pass():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(257, 10, generator=gen) * 3
    targets = torch.randint(0, 10, (257,), generator=gen)
    whole = calibration(logits, targets)
    for batch_size in (1, 16, 100):
        batched = calibration(logits, targets, batch_size)
        for key in ("ece", "nll"):
            assert batched[key].item() == pytest.approx(whole[key].item(), rel=1e-12, abs=1e-15)


def test_nll_is_the_mean_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 10, generator=gen) * 4
    targets = torch.randint(0, 10, (64,), generator=gen)
    got = calibration(logits, targets, batch_size=10)["nll"].item()
    assert got == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_an_edge_confidence_belongs_to_the_bin_below_and_one_to_the_last():
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    assert confidence_bins(edges[1:]).tolist() == list(range(15))  # k/15 -> bin k-1, 1.0 -> bin 14
    assert confidence_bins(edges[1:-1] + 1e-9).tolist() == list(range(1, 15))


def test_matches_torchmetrics_when_no_confidence_lies_on_an_edge():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(500, 10, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, 10, (500,), generator=gen)
    theirs = multiclass_calibration_error(logits.softmax(1), targets, num_classes=10, n_bins=15, norm="l1")
    assert calibration(logits, targets)["ece"].item() == pytest.approx(theirs.item(), rel=1e-6)


def test_confidence_of_one_shares_the_top_bin():
    """1.0 (wrong) and 0.95 twice (right) pool: |2/3 - 2.9/3| = 0.3; torchmetrics bins 1.0 alone: 1/3 + 2/3 * 0.05."""
    logits = torch.tensor([[100.0, -100.0]] + [[math.log(0.95), math.log(0.05)]] * 2, dtype=torch.float64)
    targets = torch.tensor([1, 0, 0])
    assert calibration(logits, targets)["ece"].item() == pytest.approx(0.3, rel=1e-9)
    theirs = multiclass_calibration_error(logits.softmax(1), targets, num_classes=2, n_bins=15, norm="l1")
    assert theirs.item() == pytest.approx(1 / 3 + 2 / 3 * 0.05, rel=1e-6)


def test_update_leaves_the_logits_graph_alone():
    logits = torch.randn(8, 10, requires_grad=True)
    result = calibration(logits, torch.zeros(8, dtype=torch.long))
    assert not any(value.requires_grad for value in result.values())
