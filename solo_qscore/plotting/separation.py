"""Figures of Q as a predictor of correct classification: the PR and ROC curves, the Q histograms (paper Fig. 4).

Each takes arrays and returns a :class:`matplotlib.figure.Figure` (save it with :mod:`solo_qscore.plotting.save`)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from solo_qscore.plotting.style import COLORS, as_array, fmt, new_figure, no_data, style_axes

__all__ = ["pr_curve_figure", "q_histogram_figure", "roc_curve_figure"]


def _pr_steps(recall, precision) -> tuple[np.ndarray, np.ndarray]:
    """Sort a PR curve by recall so that a ``steps-pre`` line encloses exactly the average precision."""
    recall, precision = as_array(recall), as_array(precision)
    order = np.lexsort((-precision, recall))
    return recall[order], precision[order]


def pr_curve_figure(
    recall,
    precision,
    auprc: float | None,
    base_rate: float | None,
    recall_misclassified=None,
    precision_misclassified=None,
    auprc_misclassified: float | None = None,
    title: str = "Q-Score as a predictor of correct classification: PR curve",
) -> Figure:
    """Precision-recall curve of Q for the class *correct* (and of -Q for *misclassified*, if given).

    Dashed lines are the chance levels (the base rates): a random score has precision = base rate.
    """
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    style_axes(ax)
    recall, precision = _pr_steps(recall, precision)
    if recall.size:
        ax.plot(
            recall,
            precision,
            drawstyle="steps-pre",
            color=COLORS["correct"],
            lw=2,
            label=f"positive = correct, score Q (AUPRC {fmt(auprc)})",
        )
        if base_rate is not None:
            ax.axhline(
                base_rate,
                color=COLORS["correct"],
                ls="--",
                lw=1,
                alpha=0.7,
                label=f"chance = accuracy ({fmt(base_rate)})",
            )
    else:
        no_data(ax, "PR curve undefined\n(all validation samples are correct or all are wrong)")
    if recall_misclassified is not None and len(recall_misclassified):
        ax.plot(
            *_pr_steps(recall_misclassified, precision_misclassified),
            drawstyle="steps-pre",
            color=COLORS["misclassified"],
            lw=2,
            label=f"positive = misclassified, score -Q (AUPRC {fmt(auprc_misclassified)})",
        )
        if base_rate is not None:
            ax.axhline(
                1.0 - base_rate,
                color=COLORS["misclassified"],
                ls="--",
                lw=1,
                alpha=0.7,
                label=f"chance = error rate ({fmt(1.0 - base_rate)})",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return fig


def roc_curve_figure(
    fpr, tpr, auroc: float | None, title: str = "Q-Score as a predictor of correct classification: ROC curve"
) -> Figure:
    """ROC curve of Q for the class *correct*, with the diagonal of a random score."""
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    style_axes(ax)
    fpr, tpr = as_array(fpr), as_array(tpr)
    ax.plot([0, 1], [0, 1], color=COLORS["chance"], ls="--", lw=1, label="chance (AUROC 0.5)")
    if fpr.size:
        ax.plot(fpr, tpr, color=COLORS["correct"], lw=2, label=f"Q-Score (AUROC {fmt(auroc)})")
        ax.fill_between(fpr, tpr, fpr, where=tpr >= fpr, color=COLORS["correct"], alpha=0.08, lw=0)
    else:
        no_data(ax, "ROC curve undefined\n(all validation samples are correct or all are wrong)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (misclassified with Q above threshold)")
    ax.set_ylabel("true positive rate (correct with Q above threshold)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return fig


def q_histogram_figure(
    q,
    correct,
    auroc: float | None = None,
    title: str = "Q-Score of correctly classified vs misclassified samples",
) -> Figure:
    """Histograms (densities, shared bins) of Q for correct and misclassified validation samples."""
    q = as_array(q)
    correct = np.asarray(correct, dtype=bool)
    fig = new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    style_axes(ax)
    finite = np.isfinite(q)
    if q.size == 0 or not finite.any():
        no_data(ax, "no Q values")
        return fig
    lo, hi = float(q[finite].min()), float(q[finite].max())
    constant = not hi - lo > 1e-12 * max(1.0, abs(lo))
    if constant:  # e.g. an empty discriminative set: one bar, on a readable axis
        half = max(abs(lo) * 0.1, 0.01)
        lo, hi = lo - half, hi + half
        ax.text(
            0.03,
            0.95,
            f"Q is constant ({q[finite][0]:.4g}) for every sample",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            color="#555555",
        )
    bins = np.linspace(lo, hi, 41)
    for mask, name, color in (
        (correct, "correct", COLORS["correct"]),
        (~correct, "misclassified", COLORS["misclassified"]),
    ):
        values = q[mask & finite]
        if values.size == 0:
            continue
        ax.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.3, color=color)
        zero = float(np.mean(values == 0.0))
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.6,
            color=color,
            label=f"{name} (n = {values.size}, mean Q = {values.mean():.4f}, Q = 0: {100 * zero:.1f}%)",
        )
        ax.axvline(values.mean(), color=color, ls="--", lw=1.2)
    ax.set_xlabel(r"Q-Score $Q_i$ (mean deviation of highly activating discriminative features)")
    if bool(np.any(q == 0.0)):
        ax.annotate(
            "Q = 0: no highly activating\ndiscriminative feature",
            xy=(0.0, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(16, 48),
            textcoords="offset points",
            fontsize=7,
            color="#555555",
            arrowprops={"arrowstyle": "->", "color": "#888888", "lw": 0.8},
        )
    ax.set_ylabel("density")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend
    suffix = f"  (AUROC {fmt(auroc)})" if auroc is not None else ""
    ax.set_title(title + suffix, fontsize=11)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return fig
