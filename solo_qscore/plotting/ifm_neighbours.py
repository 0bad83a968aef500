"""IFM's latent perturbations seen through nearest-neighbour retrieval (IFM paper §3.1, Fig. 4): one strip of
images per anchor (``solo-qscore ifm-neighbours``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "neighbours_figure"]

DPI = 100
_ANCHOR, _POSITIVE, _NEGATIVE = "#1b7837", "#2166ac", "#d6604d"


def _show(ax: Axes, img, title: str, caption: str, color: str = "black") -> None:
    """One framed thumbnail with a title above (first row only) and a caption below."""
    ax.imshow(np.asarray(img), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_edgecolor(color)
        side.set_linewidth(1.2)
    if title:
        ax.set_title(title, fontsize=7, pad=2)
    ax.text(0.5, -0.04, caption, transform=ax.transAxes, ha="center", va="top", fontsize=5.5)


def neighbours_figure(record: Mapping, images: Mapping[int, np.ndarray], views) -> Figure:
    """The strip: per row the anchor, its view, NN(v+ - eps v) per eps, the negative, NN(v- + eps v) per eps.

    ``record``: the content of ``ifm_neighbours.json`` (``eps``, ``rows`` with the bank indices, labels and
    similarities, ``space``, ``bank_size``, ``dataset``); ``images``: the memory bank's images by bank index
    (``HxWx3`` arrays, at least those ``rows`` name); ``views``: the anchors' augmented views, ``[K, H, W, 3]``
    in [0, 1].
    """
    eps, rows = record["eps"], record["rows"]
    ncols = 3 + 2 * len(eps)
    cell = 0.95
    fig = Figure(figsize=(ncols * cell + 0.3, len(rows) * cell * 1.18 + 0.55), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), ncols + 1, wspace=0.06, hspace=0.42,
                            width_ratios=[1, 1] + [1] * len(eps) + [0.25, 1] + [1] * len(eps),
                            left=0.01, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.02)
    for r, row in enumerate(rows):
        top = r == 0
        _show(fig.add_subplot(grid[r, 0]), images[row["anchor_index"]], "anchor x" if top else "",
              f"y={row['anchor_label']}", _ANCHOR)
        _show(fig.add_subplot(grid[r, 1]), views[r], "view x+" if top else "", f"cos {row['cos_view_anchor']:.3f}",
              _POSITIVE)
        for j, e in enumerate(eps):
            _show(fig.add_subplot(grid[r, 2 + j]), images[row["positive_retrieved"][j]],
                  f"NN(v+ − {e:g}v)" if top else "",
                  f"y={row['positive_retrieved_labels'][j]} cos {row['positive_retrieved_cos_to_anchor'][j]:.3f}",
                  _POSITIVE)
        base = 3 + len(eps)
        _show(fig.add_subplot(grid[r, base]), images[row["negative_index"]], "negative x−" if top else "",
              f"y={row['negative_label']} cos {row['cos_negative_anchor']:.3f}", _NEGATIVE)
        for j, e in enumerate(eps):
            _show(fig.add_subplot(grid[r, base + 1 + j]), images[row["negative_retrieved"][j]],
                  f"NN(v− + {e:g}v)" if top else "",
                  f"y={row['negative_retrieved_labels'][j]} cos {row['negative_retrieved_cos_to_anchor'][j]:.3f}",
                  _NEGATIVE)
    space = "normalised projector output" if record["space"] == "projection" else "normalised backbone output"
    fig.suptitle(f"IFM latent perturbations, 1-NN (cosine) in {record['bank_size']} {record['dataset']} train "
                 f"images; {space}; caption: label, cos to anchor", fontsize=7.5, y=1 - 0.08 / fig.get_figheight(),
                 va="top")
    return fig
