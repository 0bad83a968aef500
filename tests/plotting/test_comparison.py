"""Before vs after (solo_qscore.plotting.comparison, paper Fig. A.10)."""

from __future__ import annotations

import numpy as np

from solo_qscore.plotting.comparison import regularization_comparison_figure


def test_distributions_and_means_of_two_runs():
    before = {"num_active": np.array([3, 4, 5, 6]), "confidence": np.array([0.5, 0.6, 0.9, 0.4]),
              "correct": np.array([True, True, True, False])}
    after = {"num_active": np.array([2, 2, 3, 3]), "confidence": np.array([0.7, 0.8, 0.9, 0.95]),
             "correct": np.array([True, True, True, True])}
    fig = regularization_comparison_figure(before, after, labels=("plain", "regularised"))
    assert len(fig.axes) == 6
    means = fig.axes[2]  # |L_i|: the bars of the means, all / correct / misclassified
    heights = [p.get_height() for p in means.patches]
    assert heights[:3] == [4.5, 4.0, 6.0] and heights[3:5] == [2.5, 2.5] and heights[5] == 0.0  # n/a as 0
    misclassified = fig.axes[1]  # the second run has no misclassified sample: only the first is drawn
    assert [t.get_text() for t in misclassified.get_legend().get_texts()] == ["plain (n = 1, mean 6)"]
