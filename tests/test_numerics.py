"""Numerics of the core: precision, range, degenerate inputs and argument checks (docs/CONVENTIONS.md).

Issue "Nothing lost, nothing executed, every bad input answered", numerics part.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from solo_qscore import (
    ActivationStatistics,
    discriminative_mask,
    hard_negative_infonce,
    hard_negative_simclr_loss,
    hard_negative_weights,
    highly_activating,
    ifm_moco_loss,
    ifm_nnclr_loss,
    ifm_simclr_loss,
    lasso_penalty,
    q_score,
    qscore_regularizer,
    qscore_regularizer_terms,
)
from solo_qscore.core import _kernels
from solo_qscore.core._kernels import HAVE_NUMBA, _summary_torch, activation_summary
from solo_qscore.core.discriminative import band_ranks
from solo_qscore.probe.linear import fit_linear_probe

SCALES = [1e-25, 1e-20, 1e-3, 1.0, 1e3, 1e19, 1e25]


@pytest.fixture(params=["serial", "parallel"])
def kernel_mode(request, monkeypatch):
    """Run the numba kernel single-threaded or multi-threaded (whatever the size of the input)."""
    assert HAVE_NUMBA, "the [test] extra installs numba ([fast]): the fused CPU kernel must be in use here"
    parallel = request.param == "parallel"
    monkeypatch.setattr(_kernels, "PARALLEL_MIN_ELEMENTS", 1 if parallel else 1 << 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield request.param
    torch.set_num_threads(threads)


def _reference(h: torch.Tensor, discriminative: torch.Tensor, eps: float = 4.0):
    """docs/CONVENTIONS.md in float64 NumPy, two-pass statistics, one row at a time: (|L_i|, counts, Q_i)."""
    x = h.double().numpy()
    disc = discriminative.numpy()
    num_active = np.zeros(x.shape[0], dtype=np.int64)
    counts = np.zeros(x.shape[1], dtype=np.int64)
    q = np.zeros(x.shape[0])
    for i, row in enumerate(x):
        scale = np.abs(row).max()
        y = row / scale if scale > 0 else row  # same L_i; avoids overflow of the float64 squares
        mu = y.mean()
        sigma = np.sqrt(((y - mu) ** 2).mean())
        active = y > mu + eps * sigma
        num_active[i] = active.sum()
        counts += active
        selected = active & disc
        if selected.any():  # h^ = h / max(||h||, 1e-12) = y * scale / max(||y|| * scale, 1e-12)
            q[i] = (y[selected] - mu).mean() * scale / max(np.linalg.norm(y) * scale, 1e-12)
    return torch.from_numpy(num_active), torch.from_numpy(counts), torch.from_numpy(q)


def _row_norms(x: torch.Tensor) -> torch.Tensor:
    """||x_i|| in float64 without overflow or underflow of the squares."""
    x = x.double()
    amax = x.abs().amax(dim=1).clamp_min(1e-300)
    return (x / amax[:, None]).norm(dim=1) * amax


def _spiky_rows(n: int, r: int, ratio: float, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """Rows with mean/std about ``ratio``: N(ratio, 1) plus a few spikes of 3-8 std (so L_i is non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, r, generator=g, dtype=torch.float64)
    spikes = torch.rand(n, r, generator=g) < 8.0 / r
    h = h + spikes * (3.0 + 5.0 * torch.rand(n, r, generator=g, dtype=torch.float64))
    return (h + ratio).to(dtype)


# ------------------------------------------------------------------ 1. two-pass row variance


@pytest.mark.parametrize("ratio", [0.0, 1e2, 1e4, 1e6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_and_torch_path_agree_on_large_means(ratio, dtype, kernel_mode):
    """The one-pass E[h^2] - E[h]^2 of the old kernel disagreed on 1/256 rows at mean/std = 100 and
    189/256 at 1e4 (float32); with two passes both paths give the exact sets up to mean/std = 1e6."""
    h = _spiky_rows(256, 512, ratio, dtype)
    D = torch.rand(512, generator=torch.Generator().manual_seed(1)) > 0.5
    fast, ref = activation_summary(h, D), _summary_torch(h, D, 4.0)
    num_active, counts, q = _reference(h, D)
    assert int(num_active.sum()) > 256  # the spikes make the sets non-trivial
    assert torch.equal(fast.num_active, num_active)
    assert torch.equal(ref.num_active, num_active)
    assert torch.equal(fast.counts, counts) and torch.equal(ref.counts, counts)
    assert fast.finite.all() and ref.finite.all()
    # Q is a difference from the mean: resolved to the float resolution of the data (ulp of the mean / norm)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast.q.double(), q, atol=tol, rtol=1e-5)
    torch.testing.assert_close(ref.q.double(), q, atol=tol, rtol=1e-5)
    # scaled copies: a power of two is exact, so the sets are those of h; any other factor rounds each
    # value anew (by up to 0.03 std at mean/std = 1e6 in float32), so both paths must give c*h's own sets
    for c in (2.0**-40, 2.0**40):
        assert torch.equal(activation_summary(h * c, D).num_active, num_active)
        assert torch.equal(_summary_torch(h * c, D, 4.0).num_active, num_active)
    for c in (1e-3, 1e3):
        scaled = h * c
        want = _reference(scaled, D)[0]
        assert torch.equal(activation_summary(scaled, D).num_active, want)
        assert torch.equal(_summary_torch(scaled, D, 4.0).num_active, want)


def test_kernel_statistics_and_q_score_exact_at_large_means():
    """The public entry points (statistics counts, Q) on rows with mean/std = 1e4, float32."""
    h = _spiky_rows(300, 256, 1e4)
    D = discriminative_mask(torch.rand(256, generator=torch.Generator().manual_seed(2)))
    num_active, counts, q = _reference(h, D)
    stats = ActivationStatistics(256)
    stats.update(h)
    assert torch.equal(stats.counts, counts)
    assert int(stats.num_active) == int(num_active.sum())
    torch.testing.assert_close(q_score(h, D).double(), q, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("ratio", [1e4, 1e5, 1e6])
def test_regularizer_q_equals_q_score_at_large_means(ratio):
    """Issue 22 (6): the regulariser normalised each row before taking its mean and std, so every coordinate
    was rounded anew and its Q drifted from q_score's (float32: 3/200 rows off by > 1e-3 at mean/std = 1e4,
    140/200 at 1e5, median 2e-2 at 1e6). It now uses q_score's row statistics; its gradients still flow and
    are those of the same rows in float64."""
    h = _spiky_rows(200, 256, ratio)
    D = discriminative_mask(torch.rand(256, generator=torch.Generator().manual_seed(2)))
    x = h.clone().requires_grad_(True)
    terms = qscore_regularizer_terms(x, D, lambda1=1.0, lambda2=1.0)
    q = q_score(h, D)
    assert int((q != 0).sum()) > 100  # the spikes make most L_i ∩ D non-empty
    torch.testing.assert_close(terms.q, q, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(terms.q, _summary_torch(h, D, 4.0).q, rtol=1e-6, atol=0.0)  # the GPU's path
    # the Q term's gradient (not the L1 term's: which column L1 norms lie above their mean is decided by
    # rounding when every normalised coordinate is about 1/sqrt(r), in float32 and float64 alike)
    terms.qscore_term.backward()
    x64 = h.double().requires_grad_(True)
    qscore_regularizer_terms(x64, D, lambda1=1.0, lambda2=1.0).qscore_term.backward()
    assert x.grad.abs().max() > 0
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5 * float(x64.grad.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_rows_have_empty_sets_even_at_eps_zero(dtype, kernel_mode):
    """sigma = 0 gives an empty L_i (docs/CONVENTIONS.md), also when the float mean of the row is rounded."""
    torch.manual_seed(14)
    h = (torch.rand(500, 1, dtype=dtype) * 10).expand(500, 333).contiguous()
    D = torch.ones(333, dtype=torch.bool)
    for eps in (0.0, 4.0):
        for got in (activation_summary(h, D, eps), _summary_torch(h, D, eps)):
            assert not got.num_active.any() and not got.q.any()
        assert not highly_activating(h, eps=eps).any()


def test_torch_path_in_row_chunks_equals_whole(monkeypatch):
    torch.manual_seed(15)
    h, D = torch.randn(100, 64), torch.rand(64) > 0.5
    whole = _summary_torch(h, D, 2.0)
    monkeypatch.setattr(_kernels, "TORCH_CHUNK_ELEMENTS", 64 * 7)  # 7 rows per step
    chunked = _summary_torch(h, D, 2.0)
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ 2. range: no overflow, no underflow


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_highly_activating_sets_are_scale_invariant_over_the_whole_range(dtype, kernel_mode):
    torch.manual_seed(10)
    h = torch.randn(128, 512, dtype=dtype)
    h[:64] = h[:64].relu()  # post-ReLU rows and signed rows
    D = torch.rand(512) > 0.5
    base_fast, base_ref = activation_summary(h, D), _summary_torch(h, D, 4.0)
    assert torch.equal(base_fast.num_active, base_ref.num_active)
    base_sets = highly_activating(h)
    scales = SCALES + ([1e-200, 1e200] if dtype == torch.float64 else [])
    for c in scales:
        scaled = h * c
        fast, ref = activation_summary(scaled, D), _summary_torch(scaled, D, 4.0)
        assert fast.finite.all() and ref.finite.all(), f"finite values at scale {c} taken for NaN/Inf"
        for got in (fast, ref):
            assert torch.equal(got.num_active, base_fast.num_active), f"L_i changed at scale {c}"
            assert torch.equal(got.counts, base_fast.counts), f"counts changed at scale {c}"
        assert torch.equal(highly_activating(scaled), base_sets)
        # Q is scale-invariant while ||h|| >= 1e-12, and follows h / 1e-12 below (docs/CONVENTIONS.md)
        torch.testing.assert_close(fast.q, ref.q, atol=1e-6, rtol=1e-5)
        shrink = torch.clamp(_row_norms(scaled) / 1e-12, max=1.0)
        want = (base_fast.q.double() * shrink).to(dtype)
        torch.testing.assert_close(fast.q, want, atol=1e-6 * float(shrink.max()), rtol=1e-4)


def test_largest_finite_float32_values_are_finite():
    h = torch.rand(8, 64) * 3e38  # close to float32's max (3.4e38): the squares overflow float32
    h[:, 0] = torch.finfo(torch.float32).max
    D = torch.ones(64, dtype=torch.bool)
    assert torch.isfinite(q_score(h, D)).all()
    assert torch.equal(highly_activating(h), highly_activating(h.double()))
    stats = ActivationStatistics(64)
    stats.update(h)
    assert stats.compute().shape == (64,)  # no NaN/Inf error
    assert torch.isfinite(qscore_regularizer(h, D)) and torch.isfinite(lasso_penalty(h))


@pytest.mark.parametrize("c", [1e-10, 1e-3, 1e3, 1e19, 1e25])
def test_regularizer_and_lasso_are_scale_invariant(c):
    torch.manual_seed(11)
    h = torch.randn(32, 128).relu() + 0.01
    D = discriminative_mask(torch.rand(128))
    reg, lasso = qscore_regularizer_terms(h, D, eps=2.0), lasso_penalty(h)
    scaled = (h * c).requires_grad_(True)
    got = qscore_regularizer_terms(scaled, D, eps=2.0)
    torch.testing.assert_close(got.total, reg.total, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(got.q, reg.q, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(lasso_penalty(h * c), lasso, rtol=1e-5, atol=0.0)
    got.total.backward()
    assert torch.isfinite(scaled.grad).all()


def test_kernel_detects_nan_and_inf_in_every_lane(kernel_mode):
    """The kernel's finiteness test survives vectorisation (a fast-math flag set once folded it away)."""
    for dtype in (torch.float32, torch.float64):
        for r in (1, 7, 16, 33, 512):
            for value in (float("nan"), float("inf"), -float("inf")):
                h = torch.randn(r + 1, r, dtype=dtype)
                h[torch.arange(r), torch.arange(r)] = value  # row j has the bad value at position j
                finite = activation_summary(h, torch.ones(r, dtype=torch.bool)).finite
                assert not finite[:r].any() and finite[r], (dtype, r, value)


# ------------------------------------------------------------------ 3. zero rows and empty batches


def test_regularizer_on_zero_rows_is_zero_and_finite():
    D = torch.tensor([True, False] * 8)
    zeros = torch.zeros(4, 16, requires_grad=True)
    terms = qscore_regularizer_terms(zeros, D)
    assert terms.total.item() == 0.0 and terms.qscore_term.item() == 0.0 and terms.l1_term.item() == 0.0
    assert torch.equal(terms.q, torch.zeros(4))  # sigma = 0: empty L_i, Q = 0
    terms.total.backward()
    assert torch.equal(zeros.grad, torch.zeros(4, 16))
    # zero rows in a batch of ordinary rows: Q = 0 there, finite value and gradients, none for the zero rows
    torch.manual_seed(12)
    h = torch.randn(6, 16).relu()
    h[[1, 4]] = 0.0
    h.requires_grad_(True)
    terms = qscore_regularizer_terms(h, D, eps=1.0)
    assert terms.q[1].item() == 0.0 and terms.q[4].item() == 0.0
    assert torch.isfinite(terms.total)
    terms.total.backward()
    assert torch.isfinite(h.grad).all()
    assert torch.equal(h.grad[[1, 4]], torch.zeros(2, 16))
    assert torch.equal(q_score(torch.zeros(3, 16), D), torch.zeros(3))


def test_empty_batches_give_defined_results():
    D = torch.ones(8, dtype=torch.bool)
    empty = torch.zeros(0, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "degrees of freedom" or mean-of-empty warnings either
        assert q_score(empty, D).shape == (0,)
        assert highly_activating(empty).shape == (0, 8)
        stats = ActivationStatistics(8)
        stats.update(torch.rand(5, 8))
        before = stats.compute()
        stats.update(empty)  # no state changes
        assert stats.update_and_score(empty, D).shape == (0,)
        assert int(stats.num_samples) == 5 and torch.equal(stats.compute(), before)
        h = torch.zeros(0, 8, requires_grad=True)
        terms = qscore_regularizer_terms(h, D)
        assert terms.total.item() == 0.0 and terms.q.shape == (0,)  # R = 0 on an empty batch
        terms.total.backward()
        assert h.grad.shape == (0, 8)
        assert lasso_penalty(empty).item() == 0.0
    fresh = ActivationStatistics(8)
    fresh.update(empty)
    with pytest.raises(ValueError, match="before any sample"):  # still nothing to average
        fresh.compute()


def test_representations_without_features_are_rejected():
    with pytest.raises(ValueError, match="no features"):
        q_score(torch.zeros(3, 0), torch.zeros(0, dtype=torch.bool))
    with pytest.raises(ValueError, match="no features"):
        highly_activating(torch.zeros(3, 0))


# ------------------------------------------------------------------ 4. NaN/Inf in the contrastive losses


def _contrastive_calls():
    torch.manual_seed(13)
    z, idx = torch.randn(8, 5), torch.arange(4).repeat(2)
    q, k = F.normalize(torch.randn(4, 5), dim=1), F.normalize(torch.randn(4, 5), dim=1)
    queue = F.normalize(torch.randn(5, 16), dim=0)
    nn_, p = torch.randn(4, 5), torch.randn(4, 5)
    pos, neg = torch.rand(4) * 2 - 1, torch.rand(4, 6) * 2 - 1
    return {
        "ifm_simclr": (lambda t, **kw: ifm_simclr_loss(t["z"], idx, 0.5, **kw), {"z": z}),
        "ifm_simclr_eps0": (lambda t, **kw: ifm_simclr_loss(t["z"], idx, 0.5, epsilon=0.0, **kw), {"z": z}),
        "ifm_moco": (lambda t, **kw: ifm_moco_loss(t["query"], t["key"], t["queue"], 0.2, **kw),
                     {"query": q, "key": k, "queue": queue}),
        "ifm_nnclr": (lambda t, **kw: ifm_nnclr_loss(t["nn"], t["p"], 0.2, **kw), {"nn": nn_, "p": p}),
        "hard_negative_infonce": (lambda t, **kw: hard_negative_infonce(t["pos_sim"], t["neg_sim"], 0.5, **kw),
                                  {"pos_sim": pos, "neg_sim": neg}),
        "hard_negative_simclr": (lambda t, **kw: hard_negative_simclr_loss(t["z"], idx, 0.5, **kw), {"z": z}),
        "hard_negative_weights": (lambda t, **kw: hard_negative_weights(t["neg_sim"], 0.5, 1.0, **kw),
                                  {"neg_sim": neg}),
    }


@pytest.mark.parametrize("name", list(_contrastive_calls()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_contrastive_losses_reject_nan_and_inf_inputs(name, bad):
    call, inputs = _contrastive_calls()[name]
    assert torch.isfinite(call(inputs)).all()
    for arg in inputs:
        corrupt = dict(inputs)
        corrupt[arg] = inputs[arg].clone()
        corrupt[arg].view(-1)[1] = bad
        with pytest.raises(ValueError, match=rf"{arg} contains NaN or Inf"):
            call(corrupt)
        # no check, no sync: the training step checks the loss (a NaN negative can even give a finite
        # hard-negative loss, through the clamp of N_g: only the input check catches that)
        call(corrupt, validate=False)


def test_contrastive_loss_overflow_is_reported():
    # finite but unnormalised MoCo inputs: the logits overflow; the message says so
    q = torch.full((2, 4), 1e20)
    queue = F.normalize(torch.randn(4, 8), dim=0)
    with pytest.raises(ValueError, match="not finite although its inputs are"):
        ifm_moco_loss(q, -q, queue, 0.2)


# ------------------------------------------------------------------ 5. the library checks what the config checks


def test_negative_hyper_parameters_raise_naming_the_argument():
    h, D = torch.randn(4, 8), torch.ones(8, dtype=torch.bool)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            q_score(h, D, eps=bad)
        with pytest.raises(ValueError, match="eps"):
            highly_activating(h, eps=bad)
        with pytest.raises(ValueError, match="eps"):
            ActivationStatistics(8, eps=bad)
        with pytest.raises(ValueError, match="eps"):
            qscore_regularizer(h, D, eps=bad)
        with pytest.raises(ValueError, match="lambda1"):
            qscore_regularizer(h, D, lambda1=bad)
        with pytest.raises(ValueError, match="lambda2"):
            qscore_regularizer(h, D, lambda2=bad)
        with pytest.raises(ValueError, match="weight"):
            lasso_penalty(h, weight=bad)
    z, idx = torch.randn(4, 3), torch.arange(2).repeat(2)
    for loss in (lambda **kw: ifm_simclr_loss(z, idx, 0.5, **kw),
                 lambda **kw: ifm_moco_loss(z, z, torch.randn(3, 5), 0.5, **kw),
                 lambda **kw: ifm_nnclr_loss(z, z, 0.5, **kw)):
        with pytest.raises(ValueError, match="epsilon"):
            loss(epsilon=-0.1)
        with pytest.raises(ValueError, match="alpha"):
            loss(alpha=-1.0)
    # zero is allowed: eps = 0 (mean as threshold), lambda = 0 (term off), IFM epsilon = 0 (plain loss)
    assert torch.isfinite(q_score(h, D, eps=0.0)).all()
    assert qscore_regularizer(h, D, lambda1=0.0, lambda2=0.0).item() == 0.0


def test_probe_and_band_arguments():
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    for max_iter in (0, -3, 2.5):
        with pytest.raises(ValueError, match="max_iter"):
            fit_linear_probe(x, y, max_iter=max_iter)
    with pytest.raises(ValueError, match="weight_decay"):
        fit_linear_probe(x, y, weight_decay=-1e-4)
    assert fit_linear_probe(x, y, max_iter=1).num_iterations <= 1
    for low, high in [(-1, 50), (50, 101), (60, 40), (50, 50), (float("nan"), 50)]:
        with pytest.raises(ValueError, match=r"invalid band .*low < high <= 100"):
            band_ranks(100, low, high)
        with pytest.raises(ValueError, match="invalid band"):
            discriminative_mask(torch.rand(100), low, high)
    assert band_ranks(512, 50, 95) == (256, 486)


# ------------------------------------------------------------------ 6. r = 1


def test_activation_statistics_with_one_feature_keeps_shape():
    stats = ActivationStatistics(1)
    stats.update(torch.randn(6, 1))
    A = stats.compute()
    assert A.shape == (1,) and A.dtype == torch.float32
    assert A.item() == 0.0  # one coordinate: sigma = 0, no highly activating feature
    assert stats.compute().shape == (1,)  # the cached value too
    assert discriminative_mask(A, 0.0, 100.0).tolist() == [True]  # usable downstream
    assert q_score(torch.randn(3, 1), torch.ones(1, dtype=torch.bool)).tolist() == [0.0, 0.0, 0.0]
    assert math.isfinite(qscore_regularizer(torch.randn(3, 1), torch.ones(1, dtype=torch.bool)).item())


# ------------------------------------------------------------------ 7. the float32 kernel (issue 15, item 4)


def _fields_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _awkward_float32_rows(seed: int = 21) -> torch.Tensor:
    """Ordinary rows mixed with every row that leaves the float32 kernel's fast path."""
    g = torch.Generator().manual_seed(seed)
    r = 300
    ordinary = torch.randn(24, r, generator=g).relu()
    rows = [ordinary,
            torch.randn(2, r, generator=g) * 1e30,  # squares overflow float32
            torch.rand(2, r, generator=g) * 3e38 * torch.where(torch.rand(2, r, generator=g) > 0.5, 1.0, -1.0),
            torch.randn(2, r, generator=g) * 1e-30,  # squares underflow float32
            torch.randn(2, r, generator=g) * 1e-41,  # subnormal values
            torch.full((2, r), 3.25), torch.zeros(2, r),  # constant and zero rows
            _spiky_rows(4, r, 1e6, seed=seed)]  # mean/std 1e6
    h = torch.cat(rows)
    h[-1, 0] = torch.finfo(torch.float32).max  # its shifted float32 sum overflows
    return h


def test_float32_kernel_fallback_rows_match_the_reference(kernel_mode):
    """Rows whose float32 squares overflow or underflow, subnormal, constant and zero rows, values near
    float32's max: the float32 kernel rescales them (its fallback) and gives the float64 reference's sets."""
    h = _awkward_float32_rows()
    D = torch.rand(h.shape[1], generator=torch.Generator().manual_seed(3)) > 0.5
    fast = activation_summary(h, D, 2.0)
    num_active, counts, q = _reference(h, D, 2.0)
    assert fast.finite.all()
    assert torch.equal(fast.num_active, num_active) and torch.equal(fast.counts, counts)
    torch.testing.assert_close(fast.q.double(), q, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(fast.q).all()
    # with NaN/Inf in some of those rows, only those rows change
    bad = h.clone()
    bad[[0, 25, 33], [5, 0, 299]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    got = activation_summary(bad, D, 2.0)
    keep = torch.ones(h.shape[0], dtype=torch.bool)
    keep[[0, 25, 33]] = False
    assert torch.equal(got.finite, keep)
    assert torch.equal(got.num_active[keep], fast.num_active[keep]) and torch.equal(got.q[keep], fast.q[keep])


def test_float32_kernel_threshold_is_rounded_down_to_float32(kernel_mode):
    """x_j > limit is tested as x_j > (largest float32 <= limit): a limit just below a float32 value must
    not round up to it. Here the mean is 1 - 2^-24 / r, between the two float32 values 1 - 2^-24 and 1."""
    r = 257
    h = torch.ones(3, r)
    h[:, -1] = 1.0 - 2.0**-24
    D = torch.ones(r, dtype=torch.bool)
    fast = activation_summary(h, D, 0.0)
    assert fast.num_active.tolist() == [r - 1] * 3  # every 1.0 is above the mean
    assert torch.equal(fast.num_active, _reference(h, D, 0.0)[0])
    assert torch.equal(fast.num_active, _summary_torch(h, D, 0.0).num_active)


def test_float32_kernel_parallel_equals_serial(monkeypatch):
    """Each row is summarised the same way whichever thread takes it: identical results, bit for bit."""
    h = torch.cat([_awkward_float32_rows(), torch.randn(300, 300, generator=torch.Generator().manual_seed(4))])
    h[7, 3] = float("nan")
    D = torch.rand(300, generator=torch.Generator().manual_seed(5)) > 0.5
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(_kernels, "PARALLEL_MIN_ELEMENTS", 1)
        parallel = activation_summary(h, D, 1.5)
        monkeypatch.setattr(_kernels, "PARALLEL_MIN_ELEMENTS", 1 << 40)
        serial = activation_summary(h, D, 1.5)
    finally:
        torch.set_num_threads(threads)
    assert _fields_equal(parallel, serial)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_on_non_contiguous_input(dtype, kernel_mode):
    g = torch.Generator().manual_seed(6)
    base = torch.randn(400, 90, generator=g, dtype=dtype).relu()
    D = torch.rand(45, generator=g) > 0.5
    for view in (base[:, ::2], base.t().contiguous().t()[:, :45], base[::3, 10:55]):
        assert not view.is_contiguous() or view.data_ptr() != base.data_ptr()
        got, want = activation_summary(view, D, 2.0), activation_summary(view.contiguous(), D, 2.0)
        assert _fields_equal(got, want)
        assert torch.equal(got.num_active, _reference(view, D, 2.0)[0])


def test_float32_kernel_counts_are_exact_over_many_rows(kernel_mode):
    """The per-thread counts are kept in int8 and flushed every 127 rows: no count is lost or wraps."""
    n = 40_000
    h = torch.tensor([[0.0, 1.0, 0.0, 0.0]]).repeat(n, 1)  # eps = 0: the 1.0 is above the mean
    h[::2, 0] = 2.0  # every other row: [2, 1, 0, 0], mean 0.75: the 2.0 and the 1.0 are above it
    summary = activation_summary(h, torch.ones(4, dtype=torch.bool), 0.0)
    assert summary.counts.tolist() == [n // 2, n, 0, 0]
    assert summary.num_active.tolist() == [2, 1] * (n // 2)


@pytest.mark.parametrize("eps", [0.0, 1.0, 4.0])
def test_float32_kernel_equals_the_float64_accumulating_kernel(eps, kernel_mode, monkeypatch):
    """float32 rows through the float32 kernel and through the float64-accumulating kernel (which float64
    rows take, and float32 rows too beyond F32_MAX_FEATURES): the same sets, Q to float32 precision."""
    g = torch.Generator().manual_seed(7)
    h = torch.cat([torch.randn(200, 512, generator=g).relu(), torch.randn(200, 512, generator=g),
                   _spiky_rows(100, 512, 1e4, seed=8), torch.randn(50, 512, generator=g).exp()])
    D = torch.rand(512, generator=g) > 0.5
    fast = activation_summary(h, D, eps)
    monkeypatch.setattr(_kernels, "F32_MAX_FEATURES", 0)
    wide = activation_summary(h, D, eps)
    assert torch.equal(fast.counts, wide.counts) and torch.equal(fast.num_active, wide.num_active)
    assert torch.equal(fast.finite, wide.finite)
    torch.testing.assert_close(fast.q, wide.q, atol=1e-7, rtol=1e-5)
    assert fast.q.dtype == wide.q.dtype == torch.float32
