"""The formulas of docs/CONVENTIONS.md on hand-computed examples, plus their properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from solo_qscore import (
    ActivationStatistics,
    discriminative_mask,
    feature_ranks,
    highly_activating,
    ifm_moco_loss,
    ifm_nnclr_loss,
    ifm_simclr_loss,
    lasso_penalty,
    lower_tail_mask,
    q_score,
    qscore_regularizer,
    qscore_regularizer_terms,
    random_mask,
    upper_tail_mask,
)

# Three rows of r = 4 worked by hand (eps = 1, D = {3}):
#   [0,0,0,10]: h^ = e_3, mu = .25, sigma = .433, threshold .683 -> L = {3}, Q = 1 - .25 = .75
#   [1,1,1,3]:  h^ = [1,1,1,3]/sqrt(12), mu = 1.5/sqrt(12), L = {3}, Q = 1.5/sqrt(12)
#   [1,1,1,2]:  h^ = [1,1,1,2]/sqrt(7),  mu = 1.25/sqrt(7), L = {3}, Q = .75/sqrt(7)
HAND = torch.tensor([[0.0, 0.0, 0.0, 10.0], [1.0, 1.0, 1.0, 3.0], [1.0, 1.0, 1.0, 2.0]])
HAND_Q = torch.tensor([0.75, 1.5 / math.sqrt(12), 0.75 / math.sqrt(7)])
D3 = torch.tensor([False, False, False, True])


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


def test_regularizer_hand_example():
    # Q = [.75, .433, .2835], alpha = mean = .4888 -> rows 2 and 3 are below the mean
    terms = qscore_regularizer_terms(HAND, D3, eps=1.0, lambda1=1.0, lambda2=0.0)
    want_q = -(HAND_Q[1] + HAND_Q[2]) / 3
    torch.testing.assert_close(terms.qscore_term, want_q)
    # column L1 norms of the normalised rows; beta is their mean; only column 3 is above it
    h_hat = F.normalize(HAND, dim=1)
    col = h_hat.abs().sum(0)
    assert (col > col.mean()).tolist() == [False, False, False, True]
    terms = qscore_regularizer_terms(HAND, D3, eps=1.0, lambda1=0.0, lambda2=1.0)
    torch.testing.assert_close(terms.l1_term, col[3])
    total = qscore_regularizer(HAND, D3, eps=1.0, lambda1=2.0, lambda2=3.0)
    torch.testing.assert_close(total, 2.0 * want_q + 3.0 * col[3])


def test_regularizer_gradients_flow_only_through_selected_terms():
    h = HAND.clone().requires_grad_(True)
    qscore_regularizer(h, D3, eps=1.0, lambda1=1.0, lambda2=0.0).backward()
    assert torch.count_nonzero(h.grad[0]) == 0  # Q_1 >= alpha: not selected
    assert torch.count_nonzero(h.grad[1]) > 0 and torch.count_nonzero(h.grad[2]) > 0
    # raising a below-mean Q lowers R: moving along -grad increases Q of row 2
    h2 = HAND.clone()
    h2[1] -= 0.01 * h.grad[1]
    assert q_score(h2, D3, eps=1.0)[1] > HAND_Q[1]
    # the L1 term's gradient is zero for columns at or below beta... through h^ every row gets
    # some gradient, but with a single selected column it is the gradient of ||H^_{*,3}||_1 alone
    g = HAND.clone().requires_grad_(True)
    qscore_regularizer(g, D3, eps=1.0, lambda1=0.0, lambda2=1.0).backward()
    ref = HAND.clone().requires_grad_(True)
    F.normalize(ref, dim=1)[:, 3].abs().sum().backward()
    torch.testing.assert_close(g.grad, ref.grad)


def test_regularizer_thresholds_are_batch_means():
    torch.manual_seed(2)
    h = torch.randn(32, 48).relu() + 0.05
    D = torch.zeros(48, dtype=torch.bool)
    D[::2] = True
    terms = qscore_regularizer_terms(h, D, lambda1=1.0, lambda2=0.0)
    q = q_score(h, D)
    torch.testing.assert_close(terms.q, q)
    torch.testing.assert_close(terms.qscore_term, -(q * (q < q.mean())).sum() / 32)


def test_empty_discriminative_set_turns_everything_off():
    h = torch.randn(8, 16, requires_grad=True)
    empty = torch.zeros(16, dtype=torch.bool)
    assert torch.equal(q_score(h, empty), torch.zeros(8))
    reg = qscore_regularizer(h, empty)
    assert reg.item() == 0.0
    reg.backward()
    assert torch.count_nonzero(h.grad) == 0


def test_lasso_penalty():
    want = 2.0 * F.normalize(HAND, dim=1).abs().sum(1).mean()
    torch.testing.assert_close(lasso_penalty(HAND, weight=2.0), want)


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


# ----------------------------------------------------------------------------------------- IFM


def _nt_xent_reference(z1, z2, tau):
    """Two-view NT-Xent, one anchor at a time (the textbook definition)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        logits = torch.stack([z[i] @ z[k] / tau for k in range(2 * n) if k != i])
        target = p if p < i else p - 1
        total += F.cross_entropy(logits[None], torch.tensor([target]))
    return total / (2 * n)


def test_ifm_moco_hand_example():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # columns [0,1] and [-1,0]: logits 0 and -1
    clean = -1.0 + math.log(math.e + 1.0 + math.exp(-1.0))
    perturbed = -0.5 + math.log(2 * math.exp(0.5) + math.exp(-0.5))  # [1-.5, 0+.5, -1+.5]
    got = ifm_moco_loss(q, k, queue, temperature=1.0, epsilon=0.5, alpha=1.0)
    assert got.item() == pytest.approx((clean + perturbed) / 2, rel=1e-6)
    got = ifm_moco_loss(q, k, queue, temperature=1.0, epsilon=0.5, alpha=3.0)
    assert got.item() == pytest.approx((clean + 3 * perturbed) / 4, rel=1e-6)
    only = ifm_moco_loss(q, k, queue, temperature=1.0, epsilon=0.5, ifm_only=True)
    assert only.item() == pytest.approx(perturbed, rel=1e-6)
    assert ifm_moco_loss(q, k, queue, 1.0, epsilon=0.0).item() == pytest.approx(clean, rel=1e-6)


def test_ifm_simclr_epsilon_zero_is_nt_xent():
    torch.manual_seed(4)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    idx = torch.arange(6).repeat(2)
    got = ifm_simclr_loss(torch.cat([z1, z2]), idx, temperature=0.5, epsilon=0.0)
    torch.testing.assert_close(got, _nt_xent_reference(z1, z2, 0.5))


def test_ifm_simclr_equals_nt_xent_on_shifted_logits():
    # eps > 0: L_eps is NT-Xent with the positive logit lowered and the negatives raised by eps
    torch.manual_seed(5)
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    idx = torch.arange(4).repeat(2)
    eps, tau = 0.2, 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    want_eps = 0.0
    for i in range(8):
        p = (i + 4) % 8
        logits = torch.stack([(z[i] @ z[k] + (-eps if k == p else eps)) / tau for k in range(8) if k != i])
        want_eps += F.cross_entropy(logits[None], torch.tensor([p if p < i else p - 1]))
    want_eps = want_eps / 8
    got_only = ifm_simclr_loss(torch.cat([z1, z2]), idx, tau, epsilon=eps, ifm_only=True)
    torch.testing.assert_close(got_only, want_eps)
    got = ifm_simclr_loss(torch.cat([z1, z2]), idx, tau, epsilon=eps)
    torch.testing.assert_close(got, (_nt_xent_reference(z1, z2, tau) + want_eps) / 2)
    assert got_only > _nt_xent_reference(z1, z2, tau)  # the adversarial term is harder


def test_ifm_gradient_on_negative_is_parallel_to_anchor():
    """Paper Lemma 1: d L / d v^-_i is a positive multiple of the anchor v, with or without IFM."""
    torch.manual_seed(6)
    q = F.normalize(torch.randn(1, 8), dim=1)
    k = F.normalize(torch.randn(1, 8), dim=1)
    for eps, only in [(0.0, False), (0.1, True), (0.3, False)]:
        queue = F.normalize(torch.randn(8, 5), dim=0).requires_grad_(True)
        ifm_moco_loss(q, k, queue, 0.2, epsilon=eps, ifm_only=only).backward()
        for col in queue.grad.T:
            cos = F.cosine_similarity(col, q[0], dim=0)
            assert cos.item() == pytest.approx(1.0, abs=1e-5)


def test_ifm_argument_errors():
    z, idx = torch.randn(4, 3), torch.arange(2).repeat(2)
    with pytest.raises(ValueError, match="epsilon"):
        ifm_simclr_loss(z, idx, 0.5, epsilon=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        ifm_simclr_loss(z, idx, 0.0)
    with pytest.raises(ValueError, match="indexes"):
        ifm_simclr_loss(z, idx[:3], 0.5)
    with pytest.raises(ValueError, match=r"queue \[d, K\]"):
        ifm_moco_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 5), 0.2)


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


def test_ifm_nnclr_loss_shifts_logits():
    torch.manual_seed(9)
    nn_, p = torch.randn(5, 4), torch.randn(5, 4)
    sim = F.normalize(nn_, dim=1) @ F.normalize(p, dim=1).T
    labels = torch.arange(5)
    clean = F.cross_entropy(sim / 0.2, labels)
    torch.testing.assert_close(ifm_nnclr_loss(nn_, p, 0.2, epsilon=0.0), clean)
    shifted = sim + 0.1 - 0.2 * torch.eye(5)  # +eps everywhere, -eps on the positives
    perturbed = F.cross_entropy(shifted / 0.2, labels)
    torch.testing.assert_close(ifm_nnclr_loss(nn_, p, 0.2, epsilon=0.1, alpha=1.0), (clean + perturbed) / 2)
