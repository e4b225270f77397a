"""Calibration of a classifier's test predictions: expected calibration error and negative log-likelihood.

`CalibrationMetrics` is a torchmetrics `Metric`: `update(logits, targets)` per batch, `compute()`
once at the end. Its states are fixed-size tensors (per-bin sums and two scalars, float64) that
stay on the device and are summed across processes, so an update reads nothing back to the host
and the result is the same batched as in one pass.

Why not torchmetrics' `MulticlassCalibrationError(n_bins=15, norm="l1")`: it computes the same
sum, but over bins [k/15, (k+1)/15) closed on the left, with a confidence of exactly 1.0 (common
in float32 for a confident network) put in a bin of its own, so its value differs from Guo et
al.'s ((k-1)/15, k/15] bins whenever a confidence lies on an edge or equals 1; it also keeps every
confidence of the test set in a list state rather than 3 x 15 sums.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchmetrics import Metric

N_BINS = 15  # Guo et al. (2017)


def confidence_bins(confidences: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """The bin index in [0, n_bins) of each confidence, for bins [0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1].

    Guo et al.'s convention: bin m (1-based) holds the confidences in ((m-1)/M, m/M], so a
    confidence equal to an edge belongs to the bin below it and 1.0 to the last bin. The edges
    are `torch.linspace(0, 1, M + 1)` in the confidences' dtype. Confidences are at least 1/C > 0
    for C classes, so whether 0 belongs to the first bin never matters.
    """
    inner_edges = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype, device=confidences.device)[1:-1]
    return torch.bucketize(confidences, inner_edges, right=False)


class CalibrationMetrics(Metric):
    """ECE over `n_bins` equal-width confidence bins and NLL, accumulated over batches.

    ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)| (Guo, Pleiss, Sun, Weinberger: "On Calibration
    of Modern Neural Networks", ICML 2017), where the confidence of a sample is its largest
    softmax probability, acc(B_b) the fraction of bin b's samples whose argmax is the target, and
    conf(B_b) their mean confidence; bins as in `confidence_bins`. Since |B_b| * acc(B_b) and
    |B_b| * conf(B_b) are the bin's sums, ECE = sum_b |correct_b - confidence_b| / n, which is what
    the states hold: per-bin sums of correctness and confidence, and n.

    NLL = mean over samples of -log softmax(logits)[target] (F.cross_entropy's mean), at
    temperature 1.

    update(logits (B, C), targets (B,) class indices); compute() -> {"ece": scalar, "nll": scalar}
    (float64 tensors; NaN before any update). Softmax and sums are in float64.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, n_bins: int = N_BINS, **kwargs):
        super().__init__(**kwargs)
        self.n_bins = n_bins
        zeros = torch.zeros(n_bins, dtype=torch.float64)
        self.add_state("bin_correct", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("bin_confidence", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("nll_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        log_probs = F.log_softmax(logits.detach().double(), dim=-1)
        log_confidence, predictions = log_probs.max(dim=-1)
        confidence = log_confidence.exp()
        bins = confidence_bins(confidence, self.n_bins)
        self.bin_correct.index_add_(0, bins, (predictions == targets).double())
        self.bin_confidence.index_add_(0, bins, confidence)
        self.nll_sum += F.nll_loss(log_probs, targets, reduction="sum")
        self.count += targets.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        ece = (self.bin_correct - self.bin_confidence).abs().sum() / self.count
        return {"ece": ece, "nll": self.nll_sum / self.count}
