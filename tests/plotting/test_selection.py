"""Label-free metrics vs probe accuracy over checkpoints (solo_qscore.plotting.selection, `solo-qscore rank`)."""

from __future__ import annotations

import numpy as np
import pytest

from solo_qscore.analysis.selection import METRIC_DIRECTIONS, rank_correlations
from solo_qscore.plotting import selection_figure

ACCURACY = np.array([0.52, 0.61, 0.70, 0.66, 0.48, 0.75])
GROUPS = ["simclr", "simclr", "simclr", "byol", "byol", "byol"]
LABELS = [f"{g}-ep{e}" for g, e in zip(GROUPS, (1, 2, 4, 1, 2, 4))]
METRICS = {name: np.linspace(0.5, 1.5, 6) + 0.1 * k * np.cos(np.arange(6.0))
           for k, name in enumerate(METRIC_DIRECTIONS)}  # the seven metrics of `solo-qscore rank`


def test_with_accuracy_one_panel_per_metric_with_its_tau():
    rows = rank_correlations(METRICS, ACCURACY, GROUPS, resamples=20)
    fig = selection_figure(METRICS, ACCURACY, GROUPS, LABELS, rows)
    assert len(fig.axes) == 7  # 2 rows of 4, the eighth slot removed
    titles = [ax.get_title() for ax in fig.axes]
    tau = next(r["kendall_tau"] for r in rows if r["metric"] == "rankme" and r["group"] == "all")
    assert titles[3].startswith("rankme (higher is better)") and f"Kendall τ = {tau:+.2f}" in titles[3]
    assert titles[6].startswith("alpha_req (closer to 1 is better)")
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[6])  # accuracy: one y axis
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["simclr", "byol"] and "the checkpoint the metric picks" in legend
    rankme = fig.axes[3]  # rankme grows with the index: it picks the last checkpoint, named beside its ring
    assert [t.get_text() for t in rankme.texts] == ["byol-ep4"]
    fig.canvas.draw()


def test_without_correlations_the_titles_have_no_tau():
    fig = selection_figure({"q_mean": [0.1, 0.3, 0.2]}, [0.5, 0.7, 0.6])
    assert len(fig.axes) == 1 and "τ" not in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].texts] == ["#1"]


def test_without_accuracy_each_panel_names_the_preferred_checkpoint():
    metrics = {"rankme": [3.0, 9.0, 5.0, 1.0, 2.0, 4.0], "alpha_req": [2.0, 1.5, 0.9, 1.2, 0.3, 3.0],
               "lidar": [np.nan] * 6}
    fig = selection_figure(metrics, None, GROUPS, LABELS)
    assert len(fig.axes) == 3
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0] == "rankme (higher is better): prefers simclr-ep2"
    assert titles[1] == "alpha_req (closer to 1 is better): prefers simclr-ep4"  # |0.9 - 1| is the smallest
    assert titles[2] == "lidar (higher is better)"  # never defined: nothing preferred
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == LABELS
    fig.canvas.draw()


def test_lengths_are_checked():
    with pytest.raises(ValueError, match="one value per checkpoint"):
        selection_figure({"rankme": [1.0, 2.0]}, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels has 1 entries"):
        selection_figure({"rankme": [1.0, 2.0]}, None, labels=["a"])
    with pytest.raises(ValueError, match="no metric"):
        selection_figure({}, None)
