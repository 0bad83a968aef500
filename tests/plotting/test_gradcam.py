"""Grad-CAM heat maps over images (solo_qscore.plotting.gradcam): the explain grid and the mIoU examples."""

from __future__ import annotations

import numpy as np
import torch

from solo_qscore.plotting.gradcam import DPI, HEAT_ALPHA, draw_overlay, explain_figure, label_text, miou_figure


def test_explain_grid_one_row_per_feature_with_titles():
    k, m = 2, 3
    rng = np.random.default_rng(0)
    display, heat = rng.random((k * m, 8, 8, 3)), rng.random((k * m, 8, 8))
    A = torch.tensor([10.0, 70.0, 55.5])
    fig = explain_figure(display, heat, torch.tensor([1, 2]), A, torch.tensor([[5, 6, 7], [8, 9, 10]]),
                         [0, 1, 2, 0, 1, 2], torch.arange(6.0), torch.zeros(6), m, names=["cat", "dog"])
    assert fig.dpi == DPI and len(fig.axes) == k * m
    first, last = fig.axes[0], fig.axes[-1]
    assert first.get_title() == "#5 cat\nh=0.00 z=0.0" and last.get_title() == "#10 2\nh=5.00 z=0.0"
    assert first.get_ylabel() == "feature 1\nA=70.0%" and fig.axes[m].get_ylabel() == "feature 2\nA=55.5%"
    image, overlay = first.images
    assert overlay.get_alpha() == HEAT_ALPHA and overlay.get_clim() == (0.0, 1.0)


def test_miou_rows_per_group_outline_only_partial_masks():
    heat = np.full((3, 8, 8), 0.5)
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, :4] = True  # a partial mask: outlined
    masks[1] = True  # covers the image: no outline
    summary = {"correct": {"miou": 0.25, "num_scored": 2}, "misclassified": {"miou": None, "num_scored": 0}}
    picks = [("correct", np.array([0, 1])), ("misclassified", np.array([], dtype=int))]
    display = {0: np.zeros((8, 8, 3)), 1: np.ones((8, 8, 3))}
    fig = miou_figure(picks, display, heat, masks, np.array([0.5, 1.0, np.nan]), np.array([40, 41, 42]),
                      np.array([1, 0, 0]), ["a", "b"], summary, "title")
    axes = np.array(fig.axes).reshape(2, 2)
    assert axes[0, 0].get_title() == "#40 b\nIoU 0.50" and axes[0, 1].get_title() == "#41 a\nIoU 1.00"
    assert len(axes[0, 0].collections) > 0 and len(axes[0, 1].collections) == 0  # the white outline
    assert axes[0, 0].get_ylabel() == "correct\nmIoU 0.250\n(n=2)"
    assert axes[1, 0].get_ylabel() == "misclassified\nmIoU n/a\n(n=0)" and not axes[1, 0].axison
    assert fig._suptitle.get_text() == "title"


def test_label_text_and_overlay():
    assert label_text(1, ["a", "b"]) == "b" and label_text(5, ["a"]) == "5" and label_text(0, None) == "0"
    from solo_qscore.plotting.style import new_figure

    ax = new_figure(1, 1).add_subplot()
    draw_overlay(ax, np.zeros((4, 4, 3)), np.zeros((4, 4)), np.ones((4, 4), dtype=bool))
    assert len(ax.images) == 2 and not ax.collections and not ax.get_xticks().size
