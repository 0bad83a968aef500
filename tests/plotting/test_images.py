"""Sample images in figures (solo_qscore.plotting.images): any image source to a displayable array, thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from solo_qscore.plotting.images import display_image, q_extremes_figure


def test_display_image_formats():
    chw = torch.stack([torch.linspace(-2, 2, 64).reshape(8, 8), torch.full((8, 8), 3.0), torch.randn(8, 8)])
    out = display_image((chw, 1))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255  # stretched per channel
    assert (out[..., 1] == 0).all()  # a constant channel
    assert display_image(torch.rand(1, 5, 7)).shape == (5, 7)
    uint8 = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert display_image(uint8) is uint8
    with pytest.raises(ValueError, match="not an image"):
        display_image(np.zeros(5))


def test_thumbnail_rows_mark_the_misclassified():
    tile = {"image": np.zeros((6, 6), dtype=np.uint8), "title": "t", "wrong": False}
    fig = q_extremes_figure([("low", [tile, {**tile, "wrong": True}]), ("high", [tile])], title="extremes")
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3 and fig._suptitle.get_text() == "extremes"
    assert [ax.spines["top"].get_linewidth() for ax in axes[:2]] == [0.8, 3.0]  # a red frame when wrong
    empty = q_extremes_figure([])
    assert "no samples" in [t.get_text() for t in empty.axes[0].texts]
