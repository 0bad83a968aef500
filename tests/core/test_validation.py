"""The core's input checks (solo_qscore.core._validation): NaN/Inf, shapes and arguments give clear errors."""

from __future__ import annotations

import pytest
import torch

from solo_qscore import (
    ActivationStatistics,
    discriminative_mask,
    highly_activating,
    q_score,
    qscore_regularizer,
    random_mask,
)


def test_nan_and_inf_raise_clear_errors():
    h = torch.randn(10, 8)
    h[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        q_score(h, torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN or Inf"):
        highly_activating(h)
    with pytest.raises(ValueError, match="NaN or Inf"):
        qscore_regularizer(h, torch.ones(8, dtype=torch.bool))
    h[5, 0] = float("inf")
    stats = ActivationStatistics(8)
    stats.update(h)  # no host sync on the hot path: counted, reported at compute()
    assert int(stats.num_nonfinite) == 2 and int(stats.num_samples) == 8
    with pytest.raises(ValueError, match="2 representation"):
        stats.compute()


def test_shape_and_argument_errors():
    with pytest.raises(ValueError, match="has 8 features but 16"):
        ActivationStatistics(16).update(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"shape \[N, r\]"):
        q_score(torch.randn(8), torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="4 features"):
        q_score(torch.randn(2, 4), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        q_score(torch.randn(2, 4), torch.ones(4))
    with pytest.raises(ValueError, match="floating-point"):
        q_score(torch.ones(2, 4, dtype=torch.long), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="before any sample"):
        ActivationStatistics(4).compute()
    for low, high in [(95, 50), (50, 50), (-1, 50), (50, 101)]:
        with pytest.raises(ValueError, match="invalid band"):
            discriminative_mask(torch.rand(10), low, high)
    with pytest.raises(ValueError, match="subset size"):
        random_mask(10, 11)
