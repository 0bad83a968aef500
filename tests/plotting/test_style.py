"""What every figure shares (solo_qscore.plotting.style): an Agg figure without pyplot, the number format."""

from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg

from solo_qscore.plotting.style import COLORS, DPI, fmt, new_figure, no_data, style_axes


def test_new_figure_needs_no_pyplot():
    fig = new_figure(3.0, 2.0)
    assert isinstance(fig.canvas, FigureCanvasAgg) and fig.dpi == DPI
    ax = fig.add_subplot()
    style_axes(ax)
    no_data(ax, "nothing")
    assert not ax.spines["top"].get_visible() and ax.texts[0].get_text() == "nothing"


def test_fmt_and_colors():
    assert fmt(0.12345) == "0.123" and fmt(None) == "n/a" and fmt(math.nan) == "n/a" and fmt(2.0, 1) == "2.0"
    assert {"correct", "misclassified", "band", "random", "pca"} <= set(COLORS)
