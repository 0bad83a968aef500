"""Label-free collapse metrics (solo_qscore.core.collapse): RankMe and the std of normalised embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from solo_qscore.core.collapse import normalized_embedding_std, rankme


def test_rankme_counts_equal_singular_values():
    # r orthogonal directions of equal length: p_k = 1/r, entropy log r, effective rank r
    assert rankme(torch.eye(8) * 3.0) == pytest.approx(8.0, rel=1e-4)
    assert rankme(torch.eye(8)[:, :5]) == pytest.approx(5.0, rel=1e-4)
    rank_one = torch.randn(64, 1) @ torch.randn(1, 16)
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-3)
    h = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    assert 1.0 < rankme(h) <= 32.0 and rankme(h) > 0.8 * 32  # a full-rank Gaussian matrix


def test_normalized_embedding_std_is_zero_when_collapsed_and_about_one_over_sqrt_r_when_healthy():
    collapsed = torch.randn(1, 64).repeat(100, 1)
    assert normalized_embedding_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    healthy = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    assert normalized_embedding_std(healthy) == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert normalized_embedding_std(healthy * 100.0) == pytest.approx(normalized_embedding_std(healthy), rel=1e-5)
