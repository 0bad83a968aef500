"""The loss-readout figure (solo_qscore.plotting.loss_readout): the correlation matrix and one scatter per attribute."""

from __future__ import annotations

import numpy as np

from solo_qscore.plotting.loss_readout import loss_readout_figure


def test_matrix_scatters_and_undefined_correlations():
    loss = [3.0, 3.5, 4.0]
    errors = {"shape": [10.0, 20.0, 30.0], "texture": [5.0, 5.0, 5.0]}
    corr = np.array([[1.0, 1.0, np.nan], [1.0, 1.0, np.nan], [np.nan, np.nan, 1.0]])
    fig = loss_readout_figure(loss, errors, corr, {"shape": 1.0, "texture": float("nan")}, ["a", "b", "c"], 0.5,
                              title="three encoders")
    matrix = fig.subfigs[0].axes[0]
    assert [t.get_text() for t in matrix.texts].count("n/a") == 4 and matrix.get_title() == "Pearson r over 3 encoders"
    shape, texture = fig.subfigs[1].axes[:2]
    assert shape.get_title() == "shape: r = +1.00" and texture.get_title() == "texture: r = n/a"
    assert len(shape.lines) == 4 and len(texture.lines) == 3  # a fitted line only where the error varies
    assert fig._suptitle.get_text() == "three encoders"
