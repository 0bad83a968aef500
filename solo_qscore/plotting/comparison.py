"""Before vs after: the distributions of :math:`|L_i|` and of the probe confidence of two runs (paper Fig. A.10)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from solo_qscore.plotting.style import COLORS, new_figure, no_data, style_axes

__all__ = ["regularization_comparison_figure"]


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def regularization_comparison_figure(
    before: Mapping,
    after: Mapping,
    labels: tuple[str, str] = ("before", "after"),
    eps: float = 4.0,
    title: str = "Before vs after Q-Score regularisation (validation set)",
) -> Figure:
    r"""Distributions of :math:`|L_i|` and of the probe confidence, before vs after (paper Fig. A.10).

    ``before`` and ``after`` hold per-sample arrays of the same validation set: ``num_active``
    (:math:`|L_i|`), ``confidence`` (max softmax of the linear probe) and ``correct`` (bool).
    Rows: :math:`|L_i|`, confidence. Columns: correctly classified, misclassified (densities, dashed
    lines at the means) and the means of all / correct / misclassified samples as bars (the paper's
    Fig. A.10 shows the means over the whole population).
    """
    colors = ("#9e9e9e", COLORS["band"])
    fig = new_figure(13.0, 7.0)
    axes = fig.subplots(2, 3, gridspec_kw={"width_ratios": [1.0, 1.0, 0.9]})
    metrics = [("num_active", rf"$|L_i|$: highly activating features ($\epsilon$ = {eps:g})", True),
               ("confidence", "probe confidence (max softmax)", False)]
    data = [{k: np.asarray(d[k], dtype=float if k != "correct" else bool) for k in ("num_active", "confidence",
                                                                                   "correct")}
            for d in (before, after)]
    for row, (key, name, integer) in enumerate(metrics):
        values = [d[key] for d in data]
        finite = np.concatenate([v[np.isfinite(v)] for v in values])
        if integer:
            top = int(finite.max()) if finite.size else 1
            bins = np.arange(-0.5, max(top, 1) + 1.5, max(1, int(np.ceil((top + 1) / 40))))
        else:
            lo = float(finite.min()) if finite.size else 0.0
            bins = np.linspace(min(lo, 1.0) - 1e-9, 1.0 + 1e-9, 41)
        for col, (group, group_name, group_color) in enumerate(
            ((True, "correctly classified", COLORS["correct"]), (False, "misclassified", COLORS["misclassified"]))
        ):
            ax = axes[row, col]
            style_axes(ax)
            for d, label, color in zip(data, labels, colors):
                v = d[key][d["correct"] == group]
                if v.size == 0:
                    continue
                ax.hist(v, bins=bins, density=True, histtype="stepfilled", alpha=0.25, color=color)
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.6, color=color,
                        label=f"{label} (n = {v.size}, mean {v.mean():.3g})")
                ax.axvline(v.mean(), color=color, ls="--", lw=1.2)
            if not ax.get_legend_handles_labels()[0]:
                no_data(ax, f"no {group_name} samples")
            else:  # room above the histograms for the legend
                ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
                ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
            ax.set_title(group_name, color=group_color, fontsize=10)
            ax.set_xlabel(name, fontsize=9)
            ax.set_ylabel("density", fontsize=9)
        ax = axes[row, 2]
        style_axes(ax)
        ax.grid(False, axis="x")
        groups = ("all", "correct", "misclassified")
        x = np.arange(len(groups))
        width = 0.38
        for k, (d, label, color) in enumerate(zip(data, labels, colors)):
            means = [_mean_or_nan(d[key]), _mean_or_nan(d[key][d["correct"]]),
                     _mean_or_nan(d[key][~d["correct"]])]
            bars = ax.bar(x + (k - 0.5) * width, np.nan_to_num(means), width, color=color, label=label)
            for bar, m in zip(bars, means):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "n/a" if np.isnan(m) else f"{m:.3g}",
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels=groups, fontsize=9)
        ax.set_ylabel(f"mean {name.split(':')[0]}", fontsize=9)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
        ax.set_title("means", fontsize=10)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9, ncols=2)
    fig.suptitle(title, fontsize=12)
    return fig
