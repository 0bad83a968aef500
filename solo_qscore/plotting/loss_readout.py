"""The loss-readout figure (IFM paper Fig. 2): does a lower InfoNCE loss mean a better linear readout?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["loss_readout_figure"]


def loss_readout_figure(
    loss: Sequence[float],
    errors: Mapping[str, Sequence[float]],
    correlation,
    loss_error_correlation: Mapping[str, float],
    names: Sequence[str],
    temperature: float,
    title: str = "",
) -> Figure:
    """Heat map of the correlation matrix (the paper's Fig. 2) and one loss-vs-error scatter per attribute.

    ``loss``: the held-out InfoNCE of each encoder; ``errors``: per attribute, the readout error (%) of
    each encoder; ``correlation``: the Pearson matrix of [loss, *errors] (NaN where undefined);
    ``loss_error_correlation``: per attribute, r(loss, error); ``names``: the encoders' legend labels.
    """
    attributes = list(errors)
    labels = ["InfoNCE loss", *(f"{a} error" for a in attributes)]
    corr = np.array(correlation, dtype=float)
    loss = np.asarray(loss, dtype=float)
    k = len(attributes)
    fig = Figure(figsize=(3.4 * max(k, 2) + 0.4, 7.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.05, 1.0])
    top_grid = top.add_gridspec(1, 2, width_ratios=[1.0, 1.25])

    ax = top.add_subplot(top_grid[0, 0])
    shown = np.where(np.isfinite(corr), corr, 0.0)
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{corr[i, j]:+.2f}" if np.isfinite(corr[i, j]) else "n/a"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if np.isfinite(corr[i, j]) and abs(corr[i, j]) > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(f"Pearson r over {len(names)} encoders", fontsize=10)
    top.colorbar(image, ax=ax, shrink=0.8)

    markers = "osD^v<>pP*Xh"
    colors = [f"C{i % 10}" for i in range(len(names))]
    legend_ax = top.add_subplot(top_grid[0, 1])
    legend_ax.axis("off")
    handles = [legend_ax.plot([], [], markers[i % len(markers)], color=colors[i], label=name)[0]
               for i, name in enumerate(names)]
    legend_ax.legend(handles=handles, loc="center left", fontsize=8, frameon=False, title="checkpoints",
                     title_fontsize=9)
    fig.suptitle(title, fontsize=10)

    scatter_axes = bottom.subplots(1, max(k, 2), squeeze=False)[0]
    for ax in scatter_axes[k:]:
        ax.axis("off")
    for ax, a in zip(scatter_axes, attributes):
        err = np.asarray(errors[a], dtype=float)
        for i in range(len(names)):
            ax.plot(loss[i], err[i], markers[i % len(markers)], color=colors[i], markersize=7)
        if np.ptp(loss) > 0 and np.ptp(err) > 0:  # least-squares line, only to guide the eye
            slope, icpt = np.polyfit(loss, err, 1)
            xs = np.array([loss.min(), loss.max()])
            ax.plot(xs, slope * xs + icpt, "--", color="#777777", lw=1)
        r_value = loss_error_correlation[a]
        ax.set_title(f"{a}: r = {r_value:+.2f}" if np.isfinite(r_value) else f"{a}: r = n/a", fontsize=10)
        ax.set_xlabel(f"held-out InfoNCE (τ={temperature})", fontsize=8)
        ax.set_ylabel("linear readout error (%)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.grid(True, color="#dddddd", linewidth=0.7)
    return fig
