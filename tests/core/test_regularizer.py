"""The Q-Score regulariser (solo_qscore.core.regularizer, Q-Score paper eq. 3) and the lasso penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers.hand_example import D3, HAND, HAND_Q

from solo_qscore import lasso_penalty, q_score, qscore_regularizer, qscore_regularizer_terms


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
