"""A figure to a PNG: a file written atomically, or bytes for a logger."""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

from solo_qscore._files import atomic_file
from solo_qscore.plotting.style import DPI

__all__ = ["figure_to_png_bytes", "save_figure_atomic", "save_figure_quantized"]


def save_figure_atomic(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically: a temp file in the same directory, then ``os.replace``.

    A reader never sees a half-written PNG, and a failure leaves any previous file intact.
    """
    with atomic_file(path, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=dpi, facecolor="white")
    return Path(path)


def figure_to_png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """Render ``fig`` to PNG bytes (for loggers that take images)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def save_figure_quantized(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write ``fig`` as a 256-colour PNG, atomically: grids of heat-map overlays (Grad-CAM) compress about
    3x better than in RGB, with no visible change."""
    from PIL import Image

    with Image.open(io.BytesIO(figure_to_png_bytes(fig, dpi=dpi))) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    with atomic_file(path, binary=True) as handle:
        small.save(handle, format="png", optimize=True)
    return Path(path)
