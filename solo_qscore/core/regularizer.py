r"""Q-Score regularisation (Kalibhat et al., AAAI 2024, eq. 3) and its lasso baseline (Table 1); docs/CONVENTIONS.md §6.

For a batch :math:`\hat H \in \mathbb{R}^{B \times r}` of L2-normalised representations (all
crops of the batch),

.. math::
    \alpha = \operatorname{mean}_i Q_i, \qquad
    \beta = \operatorname{mean}_k \lVert \hat H_{*,k} \rVert_1 \quad (\text{both detached})

.. math::
    R = -\frac{\lambda_1}{B} \sum_i \mathbb{1}[Q_i < \alpha]\, Q_i
        + \lambda_2 \sum_k \mathbb{1}[\lVert \hat H_{*,k} \rVert_1 > \beta]\, \lVert \hat H_{*,k} \rVert_1

:math:`R` is *added* to the loss being minimised: it raises the Q-Score of the samples below the
batch mean and shrinks the features whose column L1 norm is above the batch mean. The index
sets :math:`L_i` and :math:`D` are constants; gradients flow through :math:`\hat h_{ij}-\mu_i`
and the selected column norms only. With an empty :math:`D` the regulariser is off (``R = 0``).

Edge cases: a zero row has :math:`\sigma_i = 0`, so an empty :math:`L_i` and :math:`Q_i = 0`
(and zero gradient); an empty batch (:math:`B = 0`) gives :math:`R = 0` and an empty ``q``. The
sets :math:`L_i`, the means and the norms come from the row statistics :func:`~solo_qscore.q_score` uses
(:func:`solo_qscore.core.activations.row_stats`: each row rescaled by a power of two, exact, then
centred, two passes), so ``q`` equals ``q_score`` even on rows whose mean is large against their spread,
and rows of any finite magnitude (``1e-25`` or ``1e25`` in float32) neither overflow nor underflow.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from solo_qscore.core._validation import check_finite, check_mask, check_nonnegative, check_representations
from solo_qscore.core.activations import NORM_EPS, check_eps, compute_dtype, row_scale, row_stats


class RegularizerTerms(NamedTuple):
    """The regulariser and its two parts (for logging)."""

    total: Tensor  # the scalar to add to the loss
    qscore_term: Tensor  # -lambda1/B * sum_{Q_i < alpha} Q_i
    l1_term: Tensor  # lambda2 * sum_{|H_k|_1 > beta} |H_k|_1
    q: Tensor  # [B] Q_i (detached), handy for logging Q histograms


def _normalise(h: Tensor, validate: bool) -> Tensor:
    r""":math:`\hat h_i = h_i / \max(\lVert h_i \rVert_2, 10^{-12})`, computed as
    :math:`y_i / \max(\lVert y_i \rVert_2, 2^{-e_i} 10^{-12})` with :math:`y_i = 2^{-e_i} h_i` (the same
    function of :math:`h`, so the same gradient; :math:`2^{-e_i}` is a constant that keeps the norm
    in range, see :func:`solo_qscore.core.activations.row_scale`)."""
    check_representations(h)
    h = h.to(compute_dtype(h))
    scale, amax = row_scale(h)
    if validate:
        check_finite(amax)
    y = h * scale[:, None]
    norm = torch.linalg.vector_norm(y, dim=1, keepdim=True)  # zero gradient at a zero row, not NaN
    return y / torch.maximum(norm, NORM_EPS * scale[:, None])


def qscore_regularizer_terms(
    h: Tensor,
    discriminative: Tensor,
    eps: float = 4.0,
    lambda1: float = 1e-4,
    lambda2: float = 1e-4,
    validate: bool = True,
) -> RegularizerTerms:
    """The regulariser of the Q-Score paper's eq. 3 with its parts; see :func:`qscore_regularizer`."""
    check_representations(h)
    check_mask(discriminative, h.shape[1])
    eps = check_eps(eps)
    lambda1 = check_nonnegative(lambda1, "lambda1")
    lambda2 = check_nonnegative(lambda2, "lambda2")
    # q_score's own row statistics (the sets L_i, the centre c_i, the offset: detached), then the same
    # rescaled, centred row rebuilt with gradients. Normalising first (h / ||h||, then the mean) rounds
    # every coordinate anew, which drifts from q_score on rows whose mean is large against their spread.
    stats = row_stats(h, eps, validate)
    y = h.to(compute_dtype(h)) * stats.scale[:, None]  # exact: a power of two
    centred = y - stats.centre[:, None]  # equals stats.centred, with gradients
    offset = centred.mean(dim=1)  # mean(y_i) - c_i
    norm = torch.maximum(torch.linalg.vector_norm(y, dim=1), NORM_EPS * stats.scale)  # zero row: grad 0
    selected = (stats.centred > stats.threshold[:, None]) & discriminative.to(y.device)
    count = selected.sum(1)
    total = torch.where(selected, centred, 0.0).sum(1)  # sum of y_ij - c_i over L_i ∩ D
    q = (total / count.clamp_min(1) - offset) / norm  # (mean over L_i ∩ D of y_ij - mean(y_i)) / ||y_i||
    q = torch.where(count > 0, q, 0.0)  # 0 when the set is empty
    h_hat = y / norm[:, None]
    alpha = q.detach().mean()
    below = (q.detach() < alpha).to(q.dtype)
    qscore_term = -lambda1 * (below * q).sum() / max(h_hat.shape[0], 1)  # 0 for an empty batch

    column_l1 = h_hat.abs().sum(0)
    beta = column_l1.detach().mean()
    above = (column_l1.detach() > beta).to(column_l1.dtype)
    l1_term = lambda2 * (above * column_l1).sum()

    # Off until a discriminative set exists; a multiply, not an `if`, so no host sync.
    on = discriminative.any().to(h_hat.dtype)
    qscore_term, l1_term = qscore_term * on, l1_term * on
    return RegularizerTerms(qscore_term + l1_term, qscore_term, l1_term, q.detach())


class TermGradientNorms(NamedTuple):
    """How hard each part of the regulariser pushes on the representations (for logging)."""

    qscore: Tensor  # ||d qscore_term / dh||_2
    l1: Tensor  # ||d l1_term / dh||_2
    ratio: Tensor  # qscore / l1, 0 where l1 is 0


def regularizer_term_gradient_norms(h: Tensor, terms: RegularizerTerms) -> TermGradientNorms:
    r"""The L2 norms of :math:`\partial(\text{Q term})/\partial h` and :math:`\partial(\text{L1 term})/\partial h`
    and their ratio: which of the two terms of eq. 3 acts on ``h`` (the values alone do not say: at the
    paper's :math:`\lambda_1 = \lambda_2` the Q term's gradient can be orders of magnitude below the L1
    term's, so the regulariser then acts as a column-L1 penalty).

    ``terms`` must come from :func:`qscore_regularizer_terms` of this ``h`` (any tensor of the graph
    that the regulariser saw, a leaf or not). Each norm comes from its own ``torch.autograd.grad`` with
    ``retain_graph=True``: it runs back through the regulariser's few operations to ``h`` only, not
    through whatever made ``h``, and writes no ``.grad``, so a later ``backward`` of the loss is
    unchanged. A term that does not depend on ``h`` (switched off, or ``h`` without gradients) has norm
    0. All three results are detached scalars, computed without a host sync.
    """
    norms = []
    for term in (terms.qscore_term, terms.l1_term):
        if h.requires_grad and term.requires_grad:
            (grad,) = torch.autograd.grad(term, h, retain_graph=True, allow_unused=True, materialize_grads=True)
            norms.append(torch.linalg.vector_norm(grad.detach()))
        else:
            norms.append(h.new_zeros((), dtype=term.dtype))
    q_norm, l1_norm = norms
    ratio = torch.where(l1_norm > 0, q_norm / torch.where(l1_norm > 0, l1_norm, 1.0), 0.0)
    return TermGradientNorms(q_norm, l1_norm, ratio)


def qscore_regularizer(
    h: Tensor,
    discriminative: Tensor,
    eps: float = 4.0,
    lambda1: float = 1e-4,
    lambda2: float = 1e-4,
    validate: bool = True,
) -> Tensor:
    r"""Differentiable Q-Score regulariser :math:`R` (scalar) to add to the training loss.

    Args:
        h: raw representations ``[B, r]`` of all crops of the batch (with gradients).
        discriminative: ``BoolTensor[r]``, the current discriminative set :math:`D`.
        eps: threshold of the highly activating sets, ``>= 0`` (default 4, as in the paper).
        lambda1, lambda2: weights of the Q-Score and column-L1 terms, ``>= 0`` (default 1e-4, as in the paper).
        validate: check ``h`` for NaN/Inf (a host sync on GPUs; the training adapter turns it off).

    Returns:
        The scalar :math:`R` (``0`` for an empty batch); :func:`qscore_regularizer_terms` also
        returns its two parts.

    Raises:
        ValueError: bad shapes, a negative ``eps``/``lambda1``/``lambda2``, or (with ``validate``) NaN/Inf in ``h``.
    """
    return qscore_regularizer_terms(h, discriminative, eps, lambda1, lambda2, validate).total


def lasso_penalty(h: Tensor, weight: float = 1e-4, validate: bool = True) -> Tensor:
    r"""Lasso baseline of the paper (Table 1).

    .. math:: \lambda \cdot \operatorname{mean}_i \lVert \hat h_i \rVert_1

    ``weight`` is :math:`\lambda \ge 0`; an empty batch gives ``0``. ``validate`` checks ``h`` for
    NaN/Inf (a host sync; the training adapter turns it off).
    """
    weight = check_nonnegative(weight, "weight")
    h_hat = _normalise(h, validate)
    return weight * h_hat.abs().sum() / max(h_hat.shape[0], 1)
