"""The matplotlib figures (solo_qscore.plotting.figures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_display_image_formats():
    from solo_qscore.plotting.figures import display_image

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
