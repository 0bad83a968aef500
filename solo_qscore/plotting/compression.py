"""The compression figure: linear probe accuracy against the number of kept features (paper Fig. 2, A.5, A.7)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from solo_qscore.plotting.style import COLORS, as_array, new_figure, no_data, style_axes

__all__ = ["compression_figure"]


def compression_figure(
    compression: Mapping,
    title: str = "Linear probe accuracy on feature subsets",
) -> Figure:
    """Probe accuracy against the number of kept features (paper Fig. 2, A.5, A.7).

    ``compression`` is the ``compression`` entry of the report: ``sizes`` and, per method,
    accuracies as fractions (``band``, ``random_mean``/``random_std``, ``lower_tail``,
    ``upper_tail``, ``pca``), ``full_accuracy``, ``num_features`` and ``num_discriminative``.
    """
    fig = new_figure(7.6, 4.8)
    ax = fig.add_subplot()
    style_axes(ax)
    sizes = as_array(compression.get("sizes", []))
    if sizes.size == 0:
        no_data(ax, "no compression sizes were evaluated")
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
