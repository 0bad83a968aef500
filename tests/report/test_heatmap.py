"""The heat map's data (solo_qscore.report.heatmap): class means of the normalised discriminative features."""

from __future__ import annotations

import numpy as np
import torch

from solo_qscore.report.heatmap import class_means, heatmap_arrays
from solo_qscore.report.result import Heatmap


def test_class_means_and_counts_with_an_empty_class():
    hn = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 2])
    means, counts = class_means(hn, y, torch.tensor([True, True, False]), num_classes=3)
    np.testing.assert_array_equal(means[0], [2.0, 1.0])
    assert np.isnan(means[1]).all() and np.isnan(means[2]).all()  # class 1: no rows, class 2: not selected
    assert counts.tolist() == [2, 0, 0]


def test_heatmap_arrays_of_a_hand_example():
    """Two discriminative features (1 and 3); class 0 peaks on feature 3, class 1 on feature 1."""
    h = torch.tensor([[0.0, 1.0, 0.0, 3.0], [0.0, 1.0, 0.0, 4.0], [0.0, 5.0, 0.0, 1.0], [0.0, 4.0, 0.0, 0.0],
                      [0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    correct = torch.tensor([True, True, True, True, False, False])
    D = torch.tensor([False, True, False, True])
    heat = heatmap_arrays(h, y, correct, D, num_classes=2, max_classes=5)
    assert isinstance(heat, Heatmap)
    assert heat.classes.tolist() == [0, 1] and heat.feature_index.tolist() == [3, 1]  # grouped by peak class
    hn = h.double() / h.double().norm(dim=1, keepdim=True)
    np.testing.assert_allclose(heat.correct[0], hn[:2][:, [3, 1]].mean(0).numpy())
    np.testing.assert_allclose(heat.misclassified[1], hn[5, [3, 1]].numpy())
    assert heat.count_correct.tolist() == [2, 2] and heat.count_misclassified.tolist() == [1, 1]
    one = heatmap_arrays(h, y, correct, D, num_classes=2, max_classes=1)
    assert one.classes.tolist() == [0]  # a tie in errors: the first class
