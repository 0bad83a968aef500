"""Figures of the features: activation frequencies with the discriminative band (paper Fig. 1), the class
heat maps of the discriminative features (Fig. 3), the class-feature association bar plots (Fig. 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from solo_qscore.plotting.style import COLORS, as_array, new_figure, no_data, style_axes

__all__ = ["activation_frequency_figure", "associations_figure", "discriminative_heatmap_figure"]


def activation_frequency_figure(
    A,
    band_ranks: tuple[int, int],
    band: tuple[float, float] = (50.0, 95.0),
    eps: float = 4.0,
    mean_active: float | None = None,
    title: str | None = None,
) -> Figure:
    r"""Sorted activation frequencies :math:`A_j` with the discriminative band shaded (paper Fig. 1).

    ``band_ranks = (first, stop)``: the discriminative features are the ranks ``first .. stop-1``
    of ``A`` sorted ascending.
    """
    A_sorted = np.sort(as_array(A), kind="stable")
    r = A_sorted.size
    first, stop = int(band_ranks[0]), int(band_ranks[1])
    ranks = np.arange(r)
    fig = new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    style_axes(ax)
    regions = [
        (0, first, COLORS["lower_tail"], f"lower tail ({first})"),
        (
            first,
            stop,
            COLORS["band"],
            f"discriminative, percentiles [{band[0]:g}, {band[1]:g}) ({stop - first})",
        ),
        (stop, r, COLORS["upper_tail"], f"upper tail ({r - stop})"),
    ]
    for lo, hi, color, label in regions:
        if hi > lo:
            sl = slice(lo, hi)
            ax.fill_between(ranks[sl], 0, A_sorted[sl], step="mid", color=color, alpha=0.35, lw=0)
            ax.step(ranks[sl], A_sorted[sl], where="mid", color=color, lw=1.4, label=label)
    if stop > first:
        ax.axvspan(first - 0.5, stop - 0.5, color=COLORS["band"], alpha=0.07, lw=0)
        for edge in (first - 0.5, stop - 0.5):
            ax.axvline(edge, color=COLORS["band"], ls=":", lw=1)
    ax.set_xlim(-0.5, r - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"feature rank (sorted by $A_j$ ascending, r = {r})")
    ax.set_ylabel(r"$A_j$: % of train samples with $j \in L_i$")
    if title is None:
        title = rf"Activation frequency of each feature ($\epsilon$ = {eps:g})"
        if mean_active is not None:
            title += rf", mean $|L_i|$ = {mean_active:.2f}"
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9, title="features (count)", title_fontsize=8)
    return fig

def discriminative_heatmap_figure(
    correct_means,
    misclassified_means,
    class_labels: Sequence[str],
    count_correct: Sequence[int] | None = None,
    count_misclassified: Sequence[int] | None = None,
    title: str = "Mean discriminative-feature activations per class",
) -> Figure:
    r"""Two heat maps side by side (paper Fig. 3): per class (rows), the mean of :math:`\hat h_{ij}` over
    correctly classified (left) and misclassified (right) samples, for the discriminative features
    (columns, same order in both panels). Classes without samples in a panel are grey.
    """
    correct = as_array(correct_means)
    wrong = as_array(misclassified_means)
    n_rows, n_cols = correct.shape if correct.ndim == 2 else (0, 0)
    height = min(9.0, 2.2 + 0.32 * max(n_rows, 1))
    fig = new_figure(12.0, height)
    axes = fig.subplots(1, 2, sharey=True)
    if n_rows == 0 or n_cols == 0:
        for ax in axes:
            ax.set_axis_off()
        no_data(axes[0], "no discriminative feature (empty D) or no class to show")
        fig.suptitle(title, fontsize=11)
        return fig
    both = np.concatenate([correct[np.isfinite(correct)], wrong[np.isfinite(wrong)]])
    vmax = float(np.percentile(both, 99.5)) if both.size else 1.0
    vmin = float(min(0.0, np.percentile(both, 0.5))) if both.size else 0.0
    if not vmax > vmin:
        vmax = vmin + 1e-6
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#c8c8c8")
    panels = [
        (axes[0], correct, count_correct, "correctly classified", COLORS["correct"]),
        (axes[1], wrong, count_misclassified, "misclassified", COLORS["misclassified"]),
    ]
    image = None
    for ax, data, counts, name, color in panels:
        image = ax.imshow(
            np.ma.masked_invalid(data),
            aspect="auto",
            interpolation="nearest" if n_cols <= 400 else "antialiased",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
        )
        total = int(np.sum(counts)) if counts is not None else None
        ax.set_title(f"{name}" + (f" (n = {total})" if total is not None else ""), color=color, fontsize=11)
        ax.set_xlabel(f"discriminative feature ({n_cols}, grouped by the class they peak on)")
        for spine in ax.spines.values():
            spine.set_visible(False)
    if n_rows <= 40:
        labels = list(class_labels)
        if count_correct is not None:
            labels = [f"{name}  (n={int(c)})" for name, c in zip(labels, count_correct)]
        axes[0].set_yticks(np.arange(n_rows), labels=labels, fontsize=8)
        if count_misclassified is not None:
            sec = axes[1].secondary_yaxis("right")
            sec.set_yticks(np.arange(n_rows), labels=[f"n={int(c)}" for c in count_misclassified], fontsize=8)
            sec.tick_params(length=0)
            for spine in sec.spines.values():
                spine.set_visible(False)
        axes[1].tick_params(axis="y", length=0)
    axes[0].set_ylabel("class (true label)")
    fig.colorbar(
        image, ax=list(axes), shrink=0.9, pad=0.02, label=r"mean $\hat h_{ij}$ (L2-normalised representation)"
    )
    fig.suptitle(title, fontsize=12)
    return fig

def associations_figure(
    rows: Sequence[Mapping],
    class_names: Sequence[str] | None = None,
    ncols: int = 4,
    title: str = "Classes of the samples that highly activate each discriminative feature",
) -> Figure:
    r"""A grid of small bar plots, one per feature (the bar plots of the paper's Fig. 1).

    ``rows`` are the rows of :func:`solo_qscore.analysis.associations.association_table`: per feature, the
    shares :math:`F_{cj}` (%) of its top classes among the samples with :math:`j \in L_i`. A black tick
    on each bar marks the class prior :math:`\pi_c` (the share a class-blind feature would have).
    Class names label the bars when given, class indices otherwise.
    """
    rows = list(rows)
    if not rows:
        fig = new_figure(6.0, 2.6)
        ax = fig.add_subplot()
        ax.set_axis_off()
        no_data(ax, "no discriminative feature is highly activated by any sample:\nno class association")
        fig.suptitle(title, fontsize=11)
        return fig
    ncols = max(1, min(int(ncols), len(rows)))
    nrows = -(-len(rows) // ncols)
    fig = new_figure(2.75 * ncols, 0.6 + 2.45 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(rows):]:
        ax.set_axis_off()
    for ax, row in zip(axes, rows):
        style_axes(ax)
        ax.grid(False, axis="x")
        classes = list(row.get("top_classes", []))
        shares = 100.0 * np.asarray(row.get("top_fractions", []), dtype=float)
        priors = 100.0 * np.asarray(row.get("top_priors", [np.nan] * len(classes)), dtype=float)
        if class_names is not None:
            labels = [str(class_names[c]) for c in classes]
        else:
            labels = list(row.get("top_class_names") or [str(c) for c in classes])
        x = np.arange(len(classes))
        colors = [COLORS["band"]] + ["#a6d1a8"] * max(len(classes) - 1, 0)
        ax.bar(x, shares, color=colors[: len(classes)], width=0.72)
        ax.scatter(x, priors, marker="_", s=260, color="#222222", lw=1.6, zorder=3,
                   label="class prior" if ax is axes[0] else None)
        for xi, share, prior in zip(x, shares, priors):  # the label above both the bar and the prior tick
            ax.text(xi, np.nanmax([share, prior]) + 1.5, f"{share:.0f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels=labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=7)
        ax.set_xlim(-0.6, max(len(classes), 3) - 0.4)
        ax.set_ylim(0, 109)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(
            f"feature {row['feature']}:  A = {row['activation_frequency']:.2f}%, n = {row['support']}",
            fontsize=8,
        )
    for ax in axes[::ncols]:
        ax.set_ylabel("% of activating samples", fontsize=8)
    axes[0].legend(loc="upper right", fontsize=7, framealpha=0.9, handletextpad=0.2)
    fig.suptitle(title, fontsize=11)
    return fig
