"""A figure to a PNG (solo_qscore.plotting.save): an atomic file, or bytes."""

from __future__ import annotations

import pytest

from solo_qscore.plotting.save import figure_to_png_bytes, save_figure_atomic
from solo_qscore.plotting.style import new_figure


def _figure():
    fig = new_figure(2.0, 1.5)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_png_bytes_and_file_at_the_figures_resolution(tmp_path):
    import io

    from PIL import Image

    fig = _figure()
    data = figure_to_png_bytes(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    path = save_figure_atomic(fig, tmp_path / "sub" / "f.png")  # the folder is created
    with Image.open(io.BytesIO(data)) as a, Image.open(path) as b:
        assert a.size == b.size == (260, 195)  # 2 x 1.5 inches at 130 dpi


def test_png_write_is_atomic(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "q.png"
    fig = _figure()
    save_figure_atomic(fig, target)
    before = target.read_bytes()

    def broken_savefig(self, fname, *args, **kwargs):
        fname.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        save_figure_atomic(fig, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.png"]


def test_quantized_png_has_at_most_256_colours_and_the_same_size(tmp_path):
    """The Grad-CAM grids (explain.png, miou.png): a palette PNG, written whole, at the dpi asked for."""
    import numpy as np
    from PIL import Image

    from solo_qscore.plotting.save import save_figure_quantized

    fig = new_figure(2.0, 1.5, dpi=100)
    fig.add_subplot().imshow(np.random.default_rng(0).random((16, 16)), cmap="jet")
    path = save_figure_quantized(fig, tmp_path / "grid.png", dpi=100)
    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (200, 150) and len(img.getcolors(256) or []) <= 256
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
