r"""The heat map's data (paper Fig. 3): per class, the mean normalised activation :math:`\hat h_{ij}` of each
discriminative feature over the correctly classified and over the misclassified validation samples.

The classes shown are those with both outcomes, most misclassified first (at most
``heatmap_max_classes``); the features are grouped by the shown class on which their mean over
correct samples peaks. :func:`~solo_qscore.report.figures.heatmap_figure` draws it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from solo_qscore.report.result import Heatmap

__all__ = ["class_means", "heatmap_arrays"]


def class_means(hn: Tensor, y: Tensor, select: Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean of the rows of ``hn`` where ``select``; NaN for classes without such rows."""
    rows = select.nonzero().flatten()
    sums = torch.zeros(num_classes, hn.shape[1], dtype=torch.float64)
    sums.index_add_(0, y[rows], hn[rows])
    counts = torch.bincount(y[rows], minlength=num_classes).double()
    means = sums / counts[:, None]
    means[counts == 0] = float("nan")
    return means.numpy(), counts.long().numpy()


def heatmap_arrays(
    val_h: Tensor, val_y: Tensor, correct: Tensor, discriminative: Tensor, num_classes: int, max_classes: int
) -> Heatmap:
    """The class means of the L2-normalised validation features on ``D``, split by the probe's outcome."""
    feature_index = discriminative.nonzero().flatten()
    h = val_h.double()
    hn = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
    hd = hn[:, feature_index]
    correct_means, count_correct = class_means(hd, val_y, correct, num_classes)
    wrong_means, count_wrong = class_means(hd, val_y, ~correct, num_classes)
    # classes shown: those with both outcomes, most misclassified first, at most max_classes
    eligible = np.flatnonzero((count_correct > 0) & (count_wrong > 0))
    if eligible.size == 0:
        eligible = np.flatnonzero(count_correct + count_wrong > 0)
    ranked = eligible[np.argsort(-count_wrong[eligible], kind="stable")][:max_classes]
    classes = np.sort(ranked)
    # features sorted by the shown class on which their correct-sample mean peaks, then by that peak
    if feature_index.numel() and classes.size:
        shown = correct_means[classes]
        filled = np.where(np.isfinite(shown), shown, -np.inf)
        order = np.lexsort((-filled.max(0), filled.argmax(0)))
    else:
        order = np.arange(feature_index.numel())
    return Heatmap(
        feature_index=feature_index.numpy()[order],
        classes=classes,
        correct=correct_means[:, order],
        misclassified=wrong_means[:, order],
        count_correct=count_correct,
        count_misclassified=count_wrong,
    )
