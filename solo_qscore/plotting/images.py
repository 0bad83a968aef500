"""Sample images in figures: any image source to a displayable array, and labelled thumbnail rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from solo_qscore.plotting.style import COLORS, new_figure, no_data

__all__ = ["display_image", "q_extremes_figure"]


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
    fig = new_figure(max(1.55 * ncols, 6.0), 0.7 + 2.05 * max(len(rows), 1))
    if not rows or all(not tiles for _, tiles in rows):
        ax = fig.add_subplot()
        ax.set_axis_off()
        no_data(ax, "no samples")
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
