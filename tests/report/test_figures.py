"""The report's figures (solo_qscore.report.figures): which a report can draw, from what it holds; the heat map's
classes; the lowest- and highest-Q thumbnails."""

from __future__ import annotations

import json

import numpy as np
import pytest

from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import ReportConfig
from solo_qscore.report.figures import FIGURE_NAMES, heatmap_figure, q_extremes_figure, report_figures
from solo_qscore.report.result import as_report

CLASS_NAMES = [f"class-{c}" for c in range(8)]


@pytest.fixture(scope="module")
def named(data):
    """A report with class names and at most 3 classes in the heat map, without the compression study."""
    return qscore_report(*data, ReportConfig(compression=None, heatmap_max_classes=3), class_names=CLASS_NAMES)


def test_a_fresh_report_draws_every_figure_in_order(report):
    figures = report_figures(report)
    assert tuple(figures) == FIGURE_NAMES
    assert all(fig.axes for fig in figures.values())


def test_a_report_read_back_draws_what_probe_json_holds(report):
    loaded = json.loads(json.dumps(report.to_json()))
    assert list(report_figures(loaded)) == ["pr_curve", "roc_curve", "compression"]
    pr = report_figures(as_report(loaded))["pr_curve"].axes[0]
    assert len(pr.lines[0].get_xdata()) == len(loaded["curves"]["pr"]["recall"])  # the subsampled points
    with pytest.raises(ValueError, match="fresh report"):
        heatmap_figure(loaded)


def test_heatmap_shows_the_classes_with_most_errors(named):
    heat = named.arrays.heatmap
    assert len(heat.classes) == 3
    wrong = heat.count_misclassified
    assert set(heat.classes) == set(np.argsort(-wrong, kind="stable")[:3])
    fig = heatmap_figure(named, title_prefix="run A: ")
    assert fig._suptitle.get_text().startswith("run A: ") and "the 3 of 8 classes with most errors" in \
        fig._suptitle.get_text()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert [label.split()[0] for label in labels] == [CLASS_NAMES[c] for c in heat.classes]


def test_extreme_rows_pick_the_lowest_and_highest_q(named, monkeypatch):
    from solo_qscore import plotting

    seen = {}

    def capture(rows, title=""):
        seen["rows"], seen["title"] = rows, title
        return None

    monkeypatch.setattr(plotting, "q_extremes_figure", capture)
    samples = named.arrays.samples
    # each thumbnail's width tells which sample it is: 4 + its index
    q_extremes_figure(samples, lambda i: np.zeros((4, 4 + i), dtype=np.uint8), k=3, class_names=CLASS_NAMES)
    (low_name, low), (high_name, high) = seen["rows"]
    assert "lowest" in low_name and "highest" in high_name and len(low) == len(high) == 3
    assert "val split, n = 600" in seen["title"]
    q = samples.q
    low_index = [t["image"].shape[1] - 4 for t in low]
    high_index = [t["image"].shape[1] - 4 for t in high]
    assert sorted(q[low_index]) == sorted(np.sort(q)[:3])
    assert sorted(q[high_index]) == sorted(np.sort(q)[-3:])
    for tile, i in zip(low + high, low_index + high_index):
        assert tile["wrong"] == (samples.prediction[i] != samples.label[i])
        assert CLASS_NAMES[samples.label[i]] in tile["title"]
        assert f"pred: {CLASS_NAMES[samples.prediction[i]]}" in tile["title"] and "Q = " in tile["title"]
