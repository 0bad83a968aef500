"""Matplotlib figures of the Q-Score report (the paper's Fig. 1, 2, 3, 4, A.5, A.7 and A.10).

Every builder returns a :class:`matplotlib.figure.Figure` drawn with the Agg canvas; no pyplot
state is touched, so the builders are safe in training processes and threads. Save with
:func:`save_figure_atomic`.

The colour scheme is shared by all figures: blue for correctly classified samples (and Q as a
predictor of correctness), red for misclassified samples, green for the discriminative band,
grey for random subsets, purple/brown for the lower/upper tails and orange for PCA.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "activation_frequency_figure",
    "associations_figure",
    "atomic_file",
    "compression_figure",
    "discriminative_heatmap_figure",
    "display_image",
    "figure_to_png_bytes",
    "pr_curve_figure",
    "q_extremes_figure",
    "q_histogram_figure",
    "regularization_comparison_figure",
    "roc_curve_figure",
    "save_figure_atomic",
]

COLORS: dict[str, str] = {
    "correct": "#2166ac",
    "misclassified": "#d6604d",
    "band": "#1b7837",
    "random": "#7f7f7f",
    "lower_tail": "#762a83",
    "upper_tail": "#8c510a",
    "pca": "#e08214",
    "full": "#222222",
    "chance": "#9e9e9e",
}

DPI = 130


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax: Axes, grid: bool = True) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    if grid:
        ax.grid(True, color="#dddddd", linewidth=0.7)
        ax.set_axisbelow(True)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _as_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555", wrap=True)


def _pr_steps(recall, precision) -> tuple[np.ndarray, np.ndarray]:
    """Sort a PR curve by recall so that a ``steps-pre`` line encloses exactly the average precision."""
    recall, precision = _as_np(recall), _as_np(precision)
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
    fig = _new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    _style(ax)
    recall, precision = _pr_steps(recall, precision)
    if recall.size:
        ax.plot(
            recall,
            precision,
            drawstyle="steps-pre",
            color=COLORS["correct"],
            lw=2,
            label=f"positive = correct, score Q (AUPRC {_fmt(auprc)})",
        )
        if base_rate is not None:
            ax.axhline(
                base_rate,
                color=COLORS["correct"],
                ls="--",
                lw=1,
                alpha=0.7,
                label=f"chance = accuracy ({_fmt(base_rate)})",
            )
    else:
        _no_data(ax, "PR curve undefined\n(all validation samples are correct or all are wrong)")
    if recall_misclassified is not None and len(recall_misclassified):
        ax.plot(
            *_pr_steps(recall_misclassified, precision_misclassified),
            drawstyle="steps-pre",
            color=COLORS["misclassified"],
            lw=2,
            label=f"positive = misclassified, score -Q (AUPRC {_fmt(auprc_misclassified)})",
        )
        if base_rate is not None:
            ax.axhline(
                1.0 - base_rate,
                color=COLORS["misclassified"],
                ls="--",
                lw=1,
                alpha=0.7,
                label=f"chance = error rate ({_fmt(1.0 - base_rate)})",
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
    fig = _new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    _style(ax)
    fpr, tpr = _as_np(fpr), _as_np(tpr)
    ax.plot([0, 1], [0, 1], color=COLORS["chance"], ls="--", lw=1, label="chance (AUROC 0.5)")
    if fpr.size:
        ax.plot(fpr, tpr, color=COLORS["correct"], lw=2, label=f"Q-Score (AUROC {_fmt(auroc)})")
        ax.fill_between(fpr, tpr, fpr, where=tpr >= fpr, color=COLORS["correct"], alpha=0.08, lw=0)
    else:
        _no_data(ax, "ROC curve undefined\n(all validation samples are correct or all are wrong)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (misclassified with Q above threshold)")
    ax.set_ylabel("true positive rate (correct with Q above threshold)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return fig


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
    A_sorted = np.sort(_as_np(A), kind="stable")
    r = A_sorted.size
    first, stop = int(band_ranks[0]), int(band_ranks[1])
    ranks = np.arange(r)
    fig = _new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    _style(ax)
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


def compression_figure(
    compression: Mapping,
    title: str = "Linear probe accuracy on feature subsets",
) -> Figure:
    """Probe accuracy against the number of kept features (paper Fig. 2, A.5, A.7).

    ``compression`` is the ``compression`` entry of the report: ``sizes`` and, per method,
    accuracies as fractions (``band``, ``random_mean``/``random_std``, ``lower_tail``,
    ``upper_tail``, ``pca``), ``full_accuracy``, ``num_features`` and ``num_discriminative``.
    """
    fig = _new_figure(7.6, 4.8)
    ax = fig.add_subplot()
    _style(ax)
    sizes = _as_np(compression.get("sizes", []))
    if sizes.size == 0:
        _no_data(ax, "no compression sizes were evaluated")
        return fig

    def pct(key: str) -> np.ndarray:
        return 100.0 * np.array([np.nan if v is None else v for v in compression.get(key, [])], dtype=float)

    series = [
        ("band", "discriminative band", COLORS["band"], "o", 2.4),
        ("pca", "PCA (top-k components)", COLORS["pca"], "s", 1.6),
        ("lower_tail", "lower tail of A", COLORS["lower_tail"], "v", 1.4),
        ("upper_tail", "upper tail of A", COLORS["upper_tail"], "^", 1.4),
    ]
    rnd_mean = pct("random_mean")
    if rnd_mean.size == sizes.size:
        rnd_std = pct("random_std")
        seeds = compression.get("num_random_seeds", "?")
        ax.fill_between(
            sizes, rnd_mean - rnd_std, rnd_mean + rnd_std, color=COLORS["random"], alpha=0.25, lw=0
        )
        ax.plot(
            sizes,
            rnd_mean,
            color=COLORS["random"],
            marker="D",
            ms=4,
            lw=1.6,
            label=f"random subsets (mean ± std, {seeds} seeds)",
        )
    for key, label, color, marker, lw in series:
        values = pct(key)
        if values.size == sizes.size:
            ax.plot(
                sizes,
                values,
                color=color,
                marker=marker,
                ms=5,
                lw=lw,
                label=label,
                zorder=3 if key == "band" else 2,
            )
    full = compression.get("full_accuracy")
    if full is not None:
        ax.axhline(
            100.0 * full, color=COLORS["full"], ls="--", lw=1, label=f"all features ({100 * full:.1f}%)"
        )
    n_d = compression.get("num_discriminative")
    if n_d:
        ax.axvline(n_d, color=COLORS["band"], ls=":", lw=1.2)
        ax.annotate(
            f"|D| = {n_d}",
            xy=(n_d, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(0, 0),
            textcoords="offset points",
            color=COLORS["band"],
            fontsize=8,
            ha="center",
            va="center",
            rotation=90,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.9},
        )
    r = compression.get("num_features")
    ax.set_xlabel("number of features kept (k)")
    ax.set_ylabel("linear probe top-1 accuracy (%)")
    ax.set_xlim(0, (r or sizes.max()) * 1.02)
    if r:
        top = ax.secondary_xaxis("top", functions=(lambda k: 100.0 * k / r, lambda p: p * r / 100.0))
        top.set_xlabel("% of the representation kept", fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
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
    correct = _as_np(correct_means)
    wrong = _as_np(misclassified_means)
    n_rows, n_cols = correct.shape if correct.ndim == 2 else (0, 0)
    height = min(9.0, 2.2 + 0.32 * max(n_rows, 1))
    fig = _new_figure(12.0, height)
    axes = fig.subplots(1, 2, sharey=True)
    if n_rows == 0 or n_cols == 0:
        for ax in axes:
            ax.set_axis_off()
        _no_data(axes[0], "no discriminative feature (empty D) or no class to show")
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


def q_histogram_figure(
    q,
    correct,
    auroc: float | None = None,
    title: str = "Q-Score of correctly classified vs misclassified samples",
) -> Figure:
    """Histograms (densities, shared bins) of Q for correct and misclassified validation samples."""
    q = _as_np(q)
    correct = np.asarray(correct, dtype=bool)
    fig = _new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    _style(ax)
    finite = np.isfinite(q)
    if q.size == 0 or not finite.any():
        _no_data(ax, "no Q values")
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
    suffix = f"  (AUROC {_fmt(auroc)})" if auroc is not None else ""
    ax.set_title(title + suffix, fontsize=11)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
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
        fig = _new_figure(6.0, 2.6)
        ax = fig.add_subplot()
        ax.set_axis_off()
        _no_data(ax, "no discriminative feature is highly activated by any sample:\nno class association")
        fig.suptitle(title, fontsize=11)
        return fig
    ncols = max(1, min(int(ncols), len(rows)))
    nrows = -(-len(rows) // ncols)
    fig = _new_figure(2.75 * ncols, 0.6 + 2.45 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(rows):]:
        ax.set_axis_off()
    for ax, row in zip(axes, rows):
        _style(ax)
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


def display_image(image) -> np.ndarray:
    """An image as a displayable ``HxW`` or ``HxWxC`` (C = 3 or 4) uint8 array.

    Accepts a dataset item ``(image, label, ...)`` (its first element), a PIL image, a tensor or an
    array, ``CxHxW`` (channels first, as networks take them) or ``HxWxC``. Floating-point images
    (e.g. normalised with the dataset mean and std) are stretched to [0, 255] per channel by their
    min and max; a constant channel becomes black.
    """
    if isinstance(image, (tuple, list)):
        image = image[0]
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = image.convert("RGB") if image.mode not in ("L", "RGB", "RGBA") else image
        image = np.asarray(image)
    elif hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CxHxW -> HxWxC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"not an image: shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    axes = (0, 1)
    lo = np.nanmin(values, axis=axes, keepdims=True)
    hi = np.nanmax(values, axis=axes, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = np.where(hi > lo, (values - lo) / span, 0.0)
    return np.clip(np.round(255.0 * np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def q_extremes_figure(
    rows: Sequence[tuple[str, Sequence[Mapping]]],
    title: str = "Lowest- and highest-Q samples",
) -> Figure:
    """Rows of labelled thumbnails, e.g. the lowest-Q and the highest-Q samples.

    ``rows`` is a list of ``(row label, tiles)``; each tile is a mapping with ``image`` (``HxW`` or
    ``HxWxC`` uint8, see :func:`display_image`), ``title`` and ``wrong`` (bool: the probe
    misclassified the sample; drawn with a red frame and a red title).
    """
    rows = [(str(name), list(tiles)) for name, tiles in rows]
    ncols = max([len(tiles) for _, tiles in rows] + [1])
    fig = _new_figure(max(1.55 * ncols, 6.0), 0.7 + 2.05 * max(len(rows), 1))
    if not rows or all(not tiles for _, tiles in rows):
        ax = fig.add_subplot()
        ax.set_axis_off()
        _no_data(ax, "no samples")
        fig.suptitle(title, fontsize=11)
        return fig
    subfigs = np.atleast_1d(fig.subfigures(len(rows), 1))
    for subfig, (name, tiles) in zip(subfigs, rows):
        axes = np.atleast_1d(subfig.subplots(1, ncols, squeeze=False)).ravel()
        subfig.supylabel(name, fontsize=10, fontweight="bold")
        for ax in axes[len(tiles):]:
            ax.set_axis_off()
        for ax, tile in zip(axes, tiles):
            image = np.asarray(tile["image"])
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest" if max(image.shape[:2]) <= 64 else "antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            wrong = bool(tile.get("wrong", False))
            color = COLORS["misclassified"] if wrong else "#bbbbbb"
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(color)
                spine.set_linewidth(3.0 if wrong else 0.8)
            ax.set_title(str(tile.get("title", "")), fontsize=7.5,
                         color=COLORS["misclassified"] if wrong else "#222222")
    fig.suptitle(title, fontsize=10)
    return fig


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
    fig = _new_figure(13.0, 7.0)
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
            _style(ax)
            for d, label, color in zip(data, labels, colors):
                v = d[key][d["correct"] == group]
                if v.size == 0:
                    continue
                ax.hist(v, bins=bins, density=True, histtype="stepfilled", alpha=0.25, color=color)
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.6, color=color,
                        label=f"{label} (n = {v.size}, mean {v.mean():.3g})")
                ax.axvline(v.mean(), color=color, ls="--", lw=1.2)
            if not ax.get_legend_handles_labels()[0]:
                _no_data(ax, f"no {group_name} samples")
            else:  # room above the histograms for the legend
                ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
                ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
            ax.set_title(group_name, color=group_color, fontsize=10)
            ax.set_xlabel(name, fontsize=9)
            ax.set_ylabel("density", fontsize=9)
        ax = axes[row, 2]
        _style(ax)
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


def _default_file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


@contextmanager
def atomic_file(path: str | os.PathLike, binary: bool = True) -> Iterator[IO]:
    """Open a temp file next to ``path`` for writing; on success it replaces ``path`` (``os.replace``).

    On any exception the temp file is removed and ``path`` is left as it was. The file gets the
    usual permissions (``0o666`` minus the umask), not the private mode of ``mkstemp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_figure_atomic(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically: a temp file in the same directory, then ``os.replace``.

    A reader never sees a half-written PNG, and a failure leaves any previous file intact.
    """
    with atomic_file(path, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=dpi, facecolor="white")
    return Path(path)


def figure_to_png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """Render ``fig`` to PNG bytes (for loggers that take images)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()
