"""Q-Score (solo_qscore.core.qscore, Q-Score paper eq. 1): the worked example, the definition, half precision."""

from __future__ import annotations

import pytest
import torch
from helpers.hand_example import D3, HAND, HAND_Q

from solo_qscore import ActivationStatistics, discriminative_mask, q_score, qscore_regularizer


def test_q_score_hand_example():
    torch.testing.assert_close(q_score(HAND, D3, eps=1.0), HAND_Q)
    # feature 3 not discriminative -> L_i ∩ D empty -> Q = 0
    assert torch.equal(q_score(HAND, ~D3, eps=1.0), torch.zeros(3))


def test_q_score_matches_definition_on_random_data():
    torch.manual_seed(0)
    h = torch.randn(50, 40).relu() + 0.01 * torch.randn(50, 40)
    D = torch.rand(40) > 0.4
    got = q_score(h, D, eps=1.5)
    for i in range(h.shape[0]):  # the paper's definition, one sample at a time
        x = h[i] / h[i].norm()
        mu, sigma = x.mean(), x.std(unbiased=False)
        S = [j for j in range(40) if x[j] > mu + 1.5 * sigma and D[j]]
        want = sum(float(x[j] - mu) for j in S) / len(S) if S else 0.0
        assert got[i].item() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    torch.manual_seed(3)
    h = torch.randn(512, 256).relu()
    h_low = h.to(dtype)
    ref = h_low.float()  # same values, so only the arithmetic precision differs
    D = discriminative_mask(torch.rand(256))
    torch.testing.assert_close(q_score(h_low, D), q_score(ref, D), atol=1e-4, rtol=1e-3)
    s_low, s_ref = ActivationStatistics(256), ActivationStatistics(256)
    s_low.update(h_low)
    s_ref.update(ref)
    assert (s_low.compute() - s_ref.compute()).abs().max() <= 0.5  # percent
    # and against the unrounded float32 data, within the rounding of the inputs
    assert (q_score(h_low, D) - q_score(h, D)).abs().mean() < 2e-2
    reg = qscore_regularizer(h_low, D)
    torch.testing.assert_close(reg, qscore_regularizer(ref, D), atol=1e-5, rtol=1e-3)


def test_q_quantiles_one_definition_for_the_report_and_the_logs():
    from solo_qscore.core.qscore import Q_QUANTILES, q_quantiles, quantile_log_name

    q = torch.arange(101, dtype=torch.float32) / 100
    assert q_quantiles(q) == pytest.approx({p: p for p in Q_QUANTILES})
    assert [quantile_log_name(p) for p in Q_QUANTILES] == ["q_p05", "q_p25", "q_p50", "q_p75", "q_p95"]
