"""The discriminative set D and the other feature masks (solo_qscore.core.discriminative): rank bands, ties, tails."""

from __future__ import annotations

import torch

from solo_qscore import discriminative_mask, feature_ranks, lower_tail_mask, random_mask, upper_tail_mask


def test_discriminative_mask_rank_band_with_ties():
    # r = 10: band [round(5), round(9.5)) = ranks 5..9 (halves round up)
    A = torch.tensor([3.0, 1.0, 1.0, 0.0, 2.0, 2.0, 5.0, 4.0, 0.0, 1.0])
    # stable ascending sort: 3,8 (0) | 1,2,9 (1) | 4,5 (2) | 0 (3) | 7 (4) | 6 (5)
    assert feature_ranks(A).tolist() == [7, 2, 3, 0, 5, 6, 9, 8, 1, 4]
    assert discriminative_mask(A, 50, 95).nonzero().flatten().tolist() == [0, 4, 5, 6, 7]
    assert discriminative_mask(A, 0, 30).nonzero().flatten().tolist() == [1, 3, 8]
    assert lower_tail_mask(A, 2).nonzero().flatten().tolist() == [3, 8]
    assert upper_tail_mask(A, 2).nonzero().flatten().tolist() == [6, 7]


def test_discriminative_mask_default_band_size_r512():
    A = torch.rand(512)
    D = discriminative_mask(A)
    assert int(D.sum()) == 230
    ranks = feature_ranks(A)
    assert ranks[D].min() == 256 and ranks[D].max() == 485


def test_random_mask_is_seeded_and_sized():
    a, b = random_mask(100, 30, seed=3), random_mask(100, 30, seed=3)
    assert torch.equal(a, b) and int(a.sum()) == 30
    assert not torch.equal(a, random_mask(100, 30, seed=4))


def test_sizes_and_seeds_must_be_whole_numbers():
    """Issue 22 (6): the masks truncated ``size``/``seed`` with ``int()`` (``random_mask(10, 2.5)`` had 2 features)."""
    import pytest

    from solo_qscore.core.discriminative import band_ranks

    A = torch.rand(10)
    calls = [(lambda: random_mask(10, 2.5), "subset size"), (lambda: random_mask(10, True), "subset size"),
             (lambda: lower_tail_mask(A, 2.0), "subset size"), (lambda: upper_tail_mask(A, 11), "subset size"),
             (lambda: random_mask(10.5, 2), "num_features"), (lambda: random_mask(10, 2, seed=1.5), "seed"),
             (lambda: band_ranks(2.5), "num_features")]
    for call, name in calls:
        with pytest.raises(ValueError, match=f"{name} must be a whole number"):
            call()
    assert int(random_mask(10, torch.tensor(3), seed=-1).sum()) == 3
