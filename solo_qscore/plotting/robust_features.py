"""Robust vs non-robust features (IFM paper §4.3, Fig. 8): clean test accuracy of linear probes re-fitted on
FGSM-built sets (``solo-qscore robust-features``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "eps_label", "robust_features_figure"]

DPI = 100


def eps_label(value: float) -> str:
    """``0.01`` -> "0.01", ``8/255`` -> "8/255" (a multiple of 1/255 without a short decimal form)."""
    short = f"{value:g}"
    k = value * 255
    if len(short) > 5 and abs(k - round(k)) < 1e-9:
        return f"{round(k)}/255"
    return short


def robust_features_figure(accuracy_D: float, runs: Sequence[Mapping[str, float]], chance: float, dataset: str,
                           num_train: int, num_test: int) -> Figure:
    """Bars: clean-test accuracy of the probe on D, and of probes re-fitted on D_R and D_NR per step size.

    ``runs``: one mapping per FGSM step size with ``eps``, ``accuracy_D_R``, ``accuracy_D_NR`` (NaN: no image
    reached its target, drawn as "n/a"), ``attack_success_rate`` and ``mean_steps_successful``;
    ``chance`` (1 / classes) is the dashed line.
    """
    fig = Figure(figsize=(2.6 + 1.4 * len(runs), 3.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels, values, colors = ["D (clean)"], [accuracy_D], ["#222222"]
    for r in runs:
        e = eps_label(r["eps"])
        labels += [f"D_R\nε={e}", f"D_NR\nε={e}"]
        values += [r["accuracy_D_R"], r["accuracy_D_NR"]]
        colors += ["#2166ac", "#d6604d"]
    xs = np.arange(len(values))
    ax.bar(xs, [0 if v != v else 100 * v for v in values], color=colors, width=0.7)
    for x, v in zip(xs, values):
        ax.text(x, (0 if v != v else 100 * v) + 1.0, "n/a" if v != v else f"{100 * v:.1f}", ha="center",
                va="bottom", fontsize=8)
    ax.axhline(100 * chance, color="#9e9e9e", linestyle="--", linewidth=1)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("clean test accuracy of the linear probe (%)", fontsize=8)
    ax.set_ylim(0, 105)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    rates = "\n".join(f"FGSM step ε={eps_label(r['eps'])}: {100 * r['attack_success_rate']:.0f}% of the images "
                      f"reached t, in {r['mean_steps_successful']:.1f} steps on average" for r in runs)
    ax.set_title(f"Robust vs non-robust features: {dataset}, {num_train} train / {num_test} clean test\n{rates}\n"
                 "(dashed line: chance)", fontsize=8)
    return fig
