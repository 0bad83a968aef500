"""ActivationStatistics (solo_qscore.core.statistics): A_j in batches, update_and_score, the fused CPU kernel."""

from __future__ import annotations

import pytest
import torch
from helpers.hand_example import HAND

from solo_qscore import ActivationStatistics, discriminative_mask, highly_activating, q_score


def test_activation_statistics_hand_example_and_batches():
    stats = ActivationStatistics(num_features=4, eps=1.0)
    stats.update(HAND[:2])
    stats.update(HAND[2:])
    stats.update(torch.full((1, 4), 3.0))  # constant row: counted in N, empty L
    torch.testing.assert_close(stats.compute(), torch.tensor([0.0, 0.0, 0.0, 75.0]))
    assert int(stats.num_samples) == 4
    assert stats.mean_active == pytest.approx(0.75)


def test_activation_statistics_batches_equal_whole_set():
    torch.manual_seed(1)
    h = torch.randn(1000, 64).relu()
    whole = ActivationStatistics(64)
    whole.update(h)
    batched = ActivationStatistics(64)
    for chunk in h.split(77):
        batched.update(chunk)
    assert torch.equal(whole.counts, batched.counts)
    assert torch.equal(whole.compute(), batched.compute())
    assert torch.equal(whole.compute(), highly_activating(h).float().mean(0) * 100)


def test_update_and_score_is_update_plus_q_score():
    torch.manual_seed(8)
    h = torch.randn(200, 64).relu()
    D = discriminative_mask(torch.rand(64))
    a, b = ActivationStatistics(64), ActivationStatistics(64)
    q = a.update_and_score(h, D)
    b.update(h)
    torch.testing.assert_close(q, q_score(h, D))
    assert torch.equal(a.compute(), b.compute())
    a.update(h)  # the cached compute() result is invalidated by updates, as in any torchmetrics Metric
    assert int(a.num_samples) == 400


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_fused_cpu_kernel_matches_torch_path(parallel, monkeypatch):
    from solo_qscore.core import _kernels
    from solo_qscore.core._kernels import HAVE_NUMBA, _summary_torch, activation_summary

    assert HAVE_NUMBA, "the [test] extra installs numba ([fast]): the fused CPU kernel must be in use here"
    # small batches take the one-thread kernel; lower the threshold to exercise the parallel one too
    monkeypatch.setattr(_kernels, "PARALLEL_MIN_ELEMENTS", 1 if parallel else 1 << 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(7)
    h = torch.randn(300, 96).relu() + 0.01
    h[5] = float("nan")
    h[9, 3] = float("inf")
    h[11] = 1.0  # constant
    D = torch.rand(96) > 0.5
    fast, ref = activation_summary(h, D), _summary_torch(h, D, 4.0)
    assert torch.equal(fast.counts, ref.counts)
    assert torch.equal(fast.num_active, ref.num_active)
    assert torch.equal(fast.finite, ref.finite)
    torch.testing.assert_close(fast.q, ref.q, atol=1e-6, rtol=1e-5)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("bad", [2.5, 4.0, True, 0, -3, "4", None])
def test_feature_count_must_be_a_whole_number(bad):
    """Issue 22 (6): ``ActivationStatistics(2.5)`` silently counted 2 features (``int()`` truncated)."""
    with pytest.raises(ValueError, match=r"num_features must be a whole number >= 1, got"):
        ActivationStatistics(bad)


def test_feature_count_accepts_numpy_and_tensor_integers():
    import numpy as np

    assert ActivationStatistics(np.int64(4)).num_features == 4
    assert ActivationStatistics(torch.tensor(3)).num_features == 3
    assert type(ActivationStatistics(np.int64(4)).num_features) is int
