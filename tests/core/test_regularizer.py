"""The Q-Score regulariser (solo_qscore.core.regularizer, Q-Score paper eq. 3) and the lasso penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers.hand_example import D3, HAND, HAND_Q

from solo_qscore import (
    lasso_penalty,
    q_score,
    qscore_regularizer,
    qscore_regularizer_terms,
    regularizer_term_gradient_norms,
)


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


def _relu_batch(seed: int = 3, rows: int = 24, cols: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    h = (torch.randn(rows, cols, dtype=torch.float64).relu() + 0.05).requires_grad_(True)
    D = torch.zeros(cols, dtype=torch.bool)
    D[::2] = True
    return h, D


def test_term_gradient_norms_equal_each_terms_own_gradient():
    """Each norm is ||dterm/dh|| of that term alone (a backward with the other lambda at 0), and the norm of a
    gradient is the derivative along it (a central finite difference, float64). eps 1: Q_i > 0 in 40 features."""
    h, D = _relu_batch()
    norms = regularizer_term_gradient_norms(h, qscore_regularizer_terms(h, D, 1.0, 2.0, 0.5))
    assert h.grad is None  # nothing accumulated
    for lambdas, got in (((2.0, 0.0), norms.qscore), ((0.0, 0.5), norms.l1)):
        (grad,) = torch.autograd.grad(qscore_regularizer(h, D, 1.0, *lambdas), h)
        torch.testing.assert_close(got, torch.linalg.vector_norm(grad))
        step = 1e-6 * grad / torch.linalg.vector_norm(grad)
        with torch.no_grad():
            up = qscore_regularizer(h + step, D, 1.0, *lambdas)
            down = qscore_regularizer(h - step, D, 1.0, *lambdas)
        torch.testing.assert_close((up - down) / 2e-6, got, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(norms.ratio, norms.qscore / norms.l1)


def test_term_gradient_norms_leave_the_loss_gradient_unchanged():
    """h made by a layer (not a leaf): the norms go back to h only, and the loss's gradient is as without them."""
    D = torch.zeros(32, dtype=torch.bool)
    D[::2] = True
    grads = []
    for with_norms in (False, True):
        torch.manual_seed(4)
        layer = torch.nn.Linear(8, 32, dtype=torch.float64)
        h = layer(torch.randn(16, 8, dtype=torch.float64)).relu()
        terms = qscore_regularizer_terms(h, D, eps=1.0, lambda1=1.0, lambda2=1.0)
        if with_norms:
            norms = regularizer_term_gradient_norms(h, terms)
            assert norms.qscore > 0 and norms.l1 > 0 and layer.weight.grad is None
        (h.square().mean() + terms.total).backward()
        grads.append(layer.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_term_gradient_norms_of_terms_that_do_not_act_are_zero():
    h, D = _relu_batch()
    off = regularizer_term_gradient_norms(h, qscore_regularizer_terms(h, torch.zeros_like(D), eps=1.0))  # empty D
    assert (off.qscore.item(), off.l1.item(), off.ratio.item()) == (0.0, 0.0, 0.0)
    no_q = regularizer_term_gradient_norms(h, qscore_regularizer_terms(h, D, 1.0, 0.0, 1.0))
    assert no_q.qscore.item() == 0.0 and no_q.l1.item() > 0 and no_q.ratio.item() == 0.0
    no_l1 = regularizer_term_gradient_norms(h, qscore_regularizer_terms(h, D, 1.0, 1.0, 0.0))
    assert no_l1.qscore.item() > 0 and no_l1.l1.item() == 0.0 and no_l1.ratio.item() == 0.0  # not inf/NaN
    with torch.no_grad():
        plain = h.detach()
        none = regularizer_term_gradient_norms(plain, qscore_regularizer_terms(plain, D, eps=1.0))
    assert (none.qscore.item(), none.l1.item()) == (0.0, 0.0)
