"""Figures of Q as a predictor of correctness (solo_qscore.plotting.separation): PR, ROC, Q histograms."""

from __future__ import annotations

import numpy as np

from solo_qscore.plotting.separation import pr_curve_figure, q_histogram_figure, roc_curve_figure


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_pr_curve_with_the_mirrored_view_and_chance_levels():
    fig = pr_curve_figure([1.0, 0.5, 0.0], [0.6, 0.8, 1.0], 0.81, 0.6, [1.0, 0.0], [0.4, 1.0], 0.5)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["positive = correct, score Q (AUPRC 0.810)", "chance = accuracy (0.600)",
                      "positive = misclassified, score -Q (AUPRC 0.500)", "chance = error rate (0.400)"]
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.0, 0.5, 1.0]  # sorted by recall for the steps
    empty = pr_curve_figure([], [], None, None)
    assert any("undefined" in t for t in _texts(empty))


def test_roc_curve_and_its_undefined_case():
    fig = roc_curve_figure([0.0, 0.5, 1.0], [0.0, 0.9, 1.0], 0.7)
    assert [line.get_label() for line in fig.axes[0].lines] == ["chance (AUROC 0.5)", "Q-Score (AUROC 0.700)"]
    assert any("undefined" in t for t in _texts(roc_curve_figure([], [], None)))


def test_q_histogram_of_both_outcomes_and_of_a_constant_q():
    q = np.array([0.0, 0.0, 0.1, 0.2, 0.3, 0.05])
    correct = np.array([False, True, True, True, True, False])
    fig = q_histogram_figure(q, correct, 0.8)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0].startswith("correct (n = 4") and legend[1].startswith("misclassified (n = 2")
    assert fig.axes[0].get_title().endswith("(AUROC 0.800)")
    constant = q_histogram_figure(np.zeros(4), np.array([True, False, True, True]))
    assert any("Q is constant" in t for t in _texts(constant))
