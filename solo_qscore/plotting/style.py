"""What every figure shares: the colours, the resolution, a pyplot-free Agg figure, axis styling.

The colour scheme is shared by all figures: blue for correctly classified samples (and Q as a
predictor of correctness), red for misclassified samples, green for the discriminative band,
grey for random subsets, purple/brown for the lower/upper tails and orange for PCA.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["COLORS", "DPI", "as_array", "fmt", "new_figure", "no_data", "style_axes"]


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


def new_figure(width: float, height: float, dpi: int = DPI) -> Figure:
    """A constrained-layout figure on its own Agg canvas (no pyplot state: safe in threads)."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def style_axes(ax: Axes, grid: bool = True) -> None:
    """No top and right spines; a light grid behind the data."""
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    if grid:
        ax.grid(True, color="#dddddd", linewidth=0.7)
        ax.set_axisbelow(True)


def fmt(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, ``n/a`` when missing or not finite."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def as_array(x) -> np.ndarray:
    """A tensor, list or array as a float numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def no_data(ax: Axes, message: str) -> None:
    """``message`` in the middle of an empty panel."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555555", wrap=True)


