"""The IFM nearest-neighbour strip (solo_qscore.plotting.ifm_neighbours): one row per anchor, drawn from arrays."""

from __future__ import annotations

import numpy as np

from solo_qscore.plotting.ifm_neighbours import DPI, neighbours_figure


def _row(anchor: int, negative: int) -> dict:
    return {"anchor_index": anchor, "anchor_label": 1, "negative_index": negative, "negative_label": 2,
            "cos_view_anchor": 0.9, "cos_negative_anchor": 0.1,
            "positive_retrieved": [anchor, 3], "positive_retrieved_labels": [1, 0],
            "positive_retrieved_cos_to_anchor": [1.0, 0.5],
            "negative_retrieved": [negative, anchor], "negative_retrieved_labels": [2, 1],
            "negative_retrieved_cos_to_anchor": [0.1, 1.0]}


def test_one_strip_per_anchor_with_the_named_images():
    record = {"eps": [0.0, 10.0], "rows": [_row(0, 1), _row(2, 4)], "space": "backbone", "bank_size": 5,
              "dataset": "toy"}
    images = {i: np.full((4, 4, 3), 50 * i, dtype=np.uint8) for i in range(5)}
    views = np.zeros((2, 4, 4, 3))
    fig = neighbours_figure(record, images, views)
    assert fig.dpi == DPI and len(fig.axes) == 2 * (3 + 2 * 2)
    first = fig.axes[:7]
    assert [ax.get_title() for ax in first] == ["anchor x", "view x+", "NN(v+ − 0v)", "NN(v+ − 10v)", "negative x−",
                                                "NN(v− + 0v)", "NN(v− + 10v)"]
    assert all(ax.get_title() == "" for ax in fig.axes[7:])  # titles on the first row only
    # each cell shows the bank image its row names: the second row's anchor is image 2, its last cell image 2
    second = fig.axes[7:]
    assert np.array_equal(second[0].images[0].get_array(), images[2])
    assert np.array_equal(second[-1].images[0].get_array(), images[2])
    assert second[4].texts[0].get_text() == "y=2 cos 0.100"
    assert "5 toy train images; normalised backbone output" in fig._suptitle.get_text()
