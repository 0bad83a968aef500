"""The highly activating sets L_i (solo_qscore.core.activations) on hand-computed examples, and their properties."""

from __future__ import annotations

import torch
from helpers.hand_example import HAND

from solo_qscore import highly_activating, q_score


def test_highly_activating_hand_example():
    L = highly_activating(HAND, eps=1.0)
    assert L.tolist() == [[False, False, False, True]] * 3
    # e_9 in r = 10: mu = .1, sigma = .3; eps = 2 -> threshold .7 (in L); eps = 4 -> 1.3 (empty)
    h = torch.zeros(1, 10)
    h[0, 9] = 10.0
    assert highly_activating(h, eps=2.0)[0].nonzero().flatten().tolist() == [9]
    assert not highly_activating(h, eps=4.0).any()


def test_highly_activating_is_scale_invariant_and_strict():
    h = torch.randn(64, 32)
    assert torch.equal(highly_activating(h), highly_activating(h * 7.5))
    # a row equal to its threshold is not "greater": two values, eps chosen to hit the top exactly
    # row [0, 1]: mu = .5, sigma = .5 -> eps = 1 puts the threshold at 1 = max -> empty
    assert not highly_activating(torch.tensor([[0.0, 1.0]]), eps=1.0).any()


def test_constant_representation_has_empty_set_and_zero_q():
    h = torch.full((3, 16), 2.5)
    assert not highly_activating(h).any()
    assert torch.equal(q_score(h, torch.ones(16, dtype=torch.bool)), torch.zeros(3))
    zeros = torch.zeros(2, 16)  # the zero vector: norm clamps to 1e-12, no NaN
    assert torch.equal(q_score(zeros, torch.ones(16, dtype=torch.bool)), torch.zeros(2))
