"""Figures of the features (solo_qscore.plotting.features): activation frequencies with the band, class heat
maps, association bar plots."""

from __future__ import annotations

import numpy as np

from solo_qscore.plotting.features import (
    activation_frequency_figure,
    associations_figure,
    discriminative_heatmap_figure,
)


def test_activation_frequency_shades_the_three_regions():
    A = np.linspace(0, 50, 20)[::-1]
    fig = activation_frequency_figure(A, (10, 19), band=(50.0, 95.0), eps=2.0, mean_active=3.0)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["lower tail (10)", "discriminative, percentiles [50, 95) (9)", "upper tail (1)"]
    assert "mean $|L_i|$ = 3.00" in fig.axes[0].get_title()


def test_heatmap_two_panels_and_the_empty_case():
    correct = np.array([[0.1, 0.2], [np.nan, 0.3]])
    fig = discriminative_heatmap_figure(correct, correct[::-1], ["a", "b"], [3, 0], [1, 2])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["correctly classified (n = 3)", "misclassified (n = 3)"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a  (n=3)", "b  (n=0)"]
    empty = discriminative_heatmap_figure(np.zeros((0, 0)), np.zeros((0, 0)), [])
    assert not any(ax.axison for ax in empty.axes)


def test_association_bars_one_panel_per_feature():
    rows = [{"feature": j, "activation_frequency": 10.0, "support": 20, "top_classes": [1, 0],
             "top_fractions": [0.7, 0.2], "top_priors": [0.5, 0.5]} for j in (3, 8, 9)]
    fig = associations_figure(rows, ["zero", "one"], ncols=2)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 3 and [t.get_text() for t in visible[0].get_xticklabels()] == ["one", "zero"]
    assert [p.get_height() for p in visible[0].patches] == [70.0, 20.0]
    assert not [ax for ax in associations_figure([]).axes if ax.axison]
