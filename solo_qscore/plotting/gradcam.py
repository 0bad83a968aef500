"""Grad-CAM heat maps over images: the ``explain`` grid (Q-Score paper Fig. 1, A.11-A.14) and the ``miou``
examples with the masks' outlines (Fig. 7).

The grids hold many small images: they are drawn at :data:`DPI` and written as 256-colour PNGs
(:func:`solo_qscore.plotting.save.save_figure_quantized`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from solo_qscore.plotting.style import new_figure

__all__ = ["DPI", "HEAT_ALPHA", "draw_overlay", "explain_figure", "label_text", "miou_figure"]

DPI = 100
HEAT_ALPHA = 0.45  #: opacity of the heat map over the image


def label_text(label: int, names: Sequence[str] | None) -> str:
    """The class name of ``label`` when ``names`` has it, else the number."""
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


def draw_overlay(ax: Axes, image, heat, mask=None) -> None:
    """Image with the heat map (jet, 0..1) over it and, if given, the mask's outline in white."""
    ax.imshow(image, interpolation="nearest")
    ax.imshow(heat, cmap="jet", alpha=HEAT_ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
    if mask is not None and mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def explain_figure(display, heat, features, A, positions, labels, h_sel, z_sel, num_samples: int,
                   names: Sequence[str] | None = None) -> Figure:
    """Grid: one row per feature, one column per sample; heat maps over the images.

    ``display`` ``[K*M, H, W, 3]`` images in [0, 1] and ``heat`` ``[K*M, H, W]`` maps in [0, 1], row-major
    (feature, then sample); ``features`` the K feature indices and ``A`` their activation frequencies (indexed
    by feature); ``positions`` ``[K, M]`` the samples' dataset indices; ``labels``, ``h_sel``, ``z_sel`` per
    cell the label, the activation and its standardised value.
    """
    k = len(features)
    fig = new_figure(1.25 * num_samples + 0.5, 1.4 * k + 0.3, dpi=DPI)
    axes = fig.subplots(k, num_samples, squeeze=False)
    for row in range(k):
        for col in range(num_samples):
            ax = axes[row][col]
            cell = row * num_samples + col
            draw_overlay(ax, display[cell], heat[cell])
            ax.set_title(f"#{int(positions[row, col])} {label_text(int(labels[cell]), names)}\n"
                         f"h={float(h_sel[cell]):.2f} z={float(z_sel[cell]):.1f}", fontsize=6.5)
        axes[row][0].set_ylabel(f"feature {int(features[row])}\nA={float(A[features[row]]):.1f}%", fontsize=8)
    fig.suptitle("Grad-CAM of discriminative features (rows, by A_j) on their most activating samples "
                 "(#dataset index, label, h activation, z standardised)", fontsize=8)
    return fig


def miou_figure(picks: Sequence[tuple[str, Sequence[int]]], display: Mapping[int, object], heat, masks, iou, index,
                labels, names: Sequence[str] | None, summary: Mapping, title: str) -> Figure:
    """One row per group of ``picks`` (``(group, rows)``: ``all``, or ``correct`` and ``misclassified``),
    each image with its heat map and its mask's outline.

    ``display[row]`` is the image of heat-map row ``row``; ``heat``, ``masks``, ``iou``, ``index`` (dataset
    index) and ``labels`` are indexed by row; ``summary`` holds ``miou`` and ``num_scored`` (per group under
    its name, or at the top for ``all``).
    """
    cols = max(1, max(len(rows) for _, rows in picks))
    fig = new_figure(1.3 * cols + 0.6, 1.65 * len(picks) + 0.5, dpi=DPI)
    axes = fig.subplots(len(picks), cols, squeeze=False)
    for r, (name, rows) in enumerate(picks):
        part = summary if name == "all" else summary[name]
        value = "n/a" if part["miou"] is None else f"{part['miou']:.3f}"
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(rows):
                ax.axis("off")
                continue
            i = int(rows[c])
            draw_overlay(ax, display[i], heat[i], masks[i])
            ax.set_title(f"#{int(index[i])} {label_text(int(labels[i]), names)}\nIoU {iou[i]:.2f}", fontsize=7)
        axes[r][0].set_ylabel(f"{name}\nmIoU {value}\n(n={part['num_scored']})", fontsize=8)
    fig.suptitle(title, fontsize=8)
    return fig
