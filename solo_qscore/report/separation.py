r"""Does Q separate the samples the probe gets right from those it gets wrong? (step 3 of the report)

With ``c_i = 1[probe(h_i) = y_i]``: AUROC and AUPRC of :math:`Q` as a score for the positive class
*correct* (the paper's convention; the AUPRC of a random score is the base rate, i.e. the accuracy),
and the mirrored view, positive = misclassified, score = :math:`-Q`. :func:`separation` gives both
full views (:class:`~solo_qscore.report.result.BinaryView`), :func:`subsampled_curves` the curves
kept in ``probe.json``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
)

from solo_qscore.report.result import BinaryView, Curves, PRCurve, ROCCurve

__all__ = ["binary_view", "separation", "subsample", "subsampled_curves", "unit_ranks"]


def subsample(n: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` indices of ``0 .. n-1``, evenly spread, first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def _to_unit_interval(scores: Tensor) -> tuple[Tensor, float, float]:
    """Order-preserving affine map of ``scores`` (float64) to [0, 1].

    torchmetrics treats scores outside [0, 1] as logits and applies a sigmoid; an affine map keeps
    the ranking exact (AUROC/AUPRC depend only on it) and can be inverted for the thresholds.
    """
    lo, hi = float(scores.min()), float(scores.max())
    if hi > lo:
        return (scores - lo) / (hi - lo), lo, hi - lo
    return scores.new_full(scores.shape, 0.5), lo - 0.5, 1.0


def unit_ranks(scores: Tensor) -> Tensor:
    """The dense ranks of ``scores`` scaled to [0, 1] (float64; equal scores keep equal ranks).

    AUROC and AUPRC depend only on the order of the scores and on their ties; torchmetrics reads scores
    outside [0, 1] as logits and applies a sigmoid, which in float64 rounds every score above ~37 to 1.0
    and so ties them. Ranks in [0, 1] keep the order and the ties exactly, whatever the scores' range.
    """
    values, ranks = torch.unique(scores.double().reshape(-1), return_inverse=True)
    return ranks.double() / max(values.numel() - 1, 1)


def binary_view(scores: Tensor, positive: Tensor) -> BinaryView:
    """AUROC, AUPRC and the PR/ROC curves of ``scores`` for the positive class ``positive``."""
    unit, offset, scale = _to_unit_interval(scores.double())
    target = positive.long()
    auroc = float(binary_auroc(unit, target, thresholds=None))
    auprc = float(binary_average_precision(unit, target, thresholds=None))
    precision, recall, pr_thr = binary_precision_recall_curve(unit, target, thresholds=None)
    fpr, tpr, roc_thr = binary_roc(unit, target, thresholds=None)
    return BinaryView(
        auroc=auroc,
        auprc=auprc,
        precision=precision.double().numpy(),
        recall=recall.double().numpy(),
        pr_thresholds=(pr_thr.double() * scale + offset).numpy(),
        fpr=fpr.double().numpy(),
        tpr=tpr.double().numpy(),
        roc_thresholds=(roc_thr.double() * scale + offset).numpy(),
    )


def separation(
    q: Tensor, correct: Tensor, num_discriminative: int, notes: list[str]
) -> tuple[Optional[BinaryView], Optional[BinaryView]]:
    """The binary views of Q for "correct" and of -Q for "misclassified"; ``None`` when undefined (one
    outcome only). Why a metric is undefined or trivial is appended to ``notes``."""
    n_val, n_correct = int(correct.numel()), int(correct.sum())
    if not 0 < n_correct < n_val:
        outcome = "correctly" if n_correct == n_val else "incorrectly"
        notes.append(
            f"the probe classified all {n_val} validation samples {outcome}: AUROC and AUPRC of Q are "
            "undefined (they need both correct and misclassified samples)"
        )
        return None, None
    if num_discriminative and float(q.max()) == float(q.min()):
        notes.append(
            "Q is constant over the validation set (no sample has a highly activating discriminative "
            "feature): AUROC = 0.5 by construction"
        )
    return binary_view(q, correct), binary_view(-q, ~correct)


def subsampled_curves(
    view: Optional[BinaryView], mirror: Optional[BinaryView], max_points: int
) -> Optional[Curves]:
    """The PR/ROC curves kept in ``probe.json``, at most ``max_points`` points each."""
    if view is None or mirror is None:
        return None
    pr_idx = subsample(view.recall.size, max_points)
    roc_idx = subsample(view.fpr.size, max_points)
    mpr_idx = subsample(mirror.recall.size, max_points)
    return Curves(
        pr=PRCurve(recall=view.recall[pr_idx].tolist(), precision=view.precision[pr_idx].tolist()),
        roc=ROCCurve(fpr=view.fpr[roc_idx].tolist(), tpr=view.tpr[roc_idx].tolist()),
        pr_misclassified=PRCurve(recall=mirror.recall[mpr_idx].tolist(),
                                 precision=mirror.precision[mpr_idx].tolist()),
    )
