"""InfoNCE loss vs linear-readout error across encoders (solo_qscore.analysis.loss_readout, IFM paper Fig. 2):
the pure functions against numpy and ``ifm_simclr_loss``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from solo_qscore import ifm_simclr_loss
from solo_qscore.analysis.loss_readout import (
    MIN_ENCODERS,
    correlation_matrix,
    heldout_infonce,
    loss_readout_correlation,
    pearson,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pearson_equals_numpy_corrcoef():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, generator=g), torch.randn(7, generator=g)
    assert pearson(x, y).item() == pytest.approx(np.corrcoef(x.numpy(), y.numpy())[0, 1], abs=1e-12)
    assert pearson(x, 3 * x - 2).item() == pytest.approx(1.0, abs=1e-12)
    assert pearson(x, -x).item() == pytest.approx(-1.0, abs=1e-12)
    # by hand: x - mean = (-1, 0, 1), y - mean = (-1, 1, 0): r = 1 / sqrt(2 * 2) = 0.5
    assert pearson(torch.tensor([1.0, 2, 3]), torch.tensor([1.0, 3, 2])).item() == pytest.approx(0.5, abs=1e-12)


def test_correlation_matrix_and_loss_columns_equal_numpy():
    g = torch.Generator().manual_seed(1)
    values = torch.rand(9, 4, generator=g, dtype=torch.float64)
    ref = np.corrcoef(values.numpy().T)
    np.testing.assert_allclose(correlation_matrix(values).numpy(), ref, atol=1e-12)
    losses, errors = values[:, 0], values[:, 1:] * 100
    np.testing.assert_allclose(loss_readout_correlation(losses, errors).numpy(), ref[0, 1:], atol=1e-12)


def test_constant_column_gives_nan_like_numpy():
    values = torch.tensor([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    corr = correlation_matrix(values)
    assert torch.isnan(corr[0, 1]) and torch.isnan(corr[1, 1]) and corr[0, 0].item() == pytest.approx(1.0)


def test_fewer_than_three_encoders_or_bad_values_raise():
    with pytest.raises(ValueError, match=f"at least {MIN_ENCODERS}"):
        pearson(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        pearson(torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="same length"):
        pearson(torch.arange(4.0), torch.arange(3.0))
    with pytest.raises(ValueError, match="errors"):
        loss_readout_correlation(torch.arange(4.0), torch.zeros(3, 2))


def test_heldout_infonce_equals_ifm_simclr_loss_per_batch():
    g = torch.Generator().manual_seed(2)
    n, b, d, tau = 70, 16, 8, 0.5
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    per_batch = [
        ifm_simclr_loss(torch.cat([z1[k:k + b], z2[k:k + b]]), torch.arange(b).repeat(2), tau, epsilon=0)
        for k in range(0, n - b + 1, b)  # the last 6 rows do not fill a batch and are dropped
    ]
    assert len(per_batch) == 4
    expected = torch.stack(per_batch).mean().item()
    assert heldout_infonce(z1, z2, tau, b).item() == pytest.approx(expected, abs=1e-6)
    # identical views in orthogonal directions: pos = e^{1/tau}, 2B-2 negatives at e^0
    eye = torch.eye(4)
    exact = np.log(np.exp(1 / tau) + 6) - 1 / tau
    assert heldout_infonce(eye, eye, tau, 4).item() == pytest.approx(exact, abs=1e-6)


def test_heldout_infonce_bad_input():
    z = torch.randn(8, 4)
    with pytest.raises(ValueError, match="fewer than one batch"):
        heldout_infonce(z, z, 0.5, 16)
    with pytest.raises(ValueError, match="batch_size"):
        heldout_infonce(z, z, 0.5, 1)
    with pytest.raises(ValueError, match="temperature"):
        heldout_infonce(z, z, 0.0, 4)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        heldout_infonce(z, z[:4], 0.5, 4)
