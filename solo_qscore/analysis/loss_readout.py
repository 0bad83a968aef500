r"""InfoNCE loss against linear-readout error across encoders (IFM paper, Robinson et al. 2021, §2.2, Fig. 2).

Given :math:`n` encoders (checkpoints) with held-out InfoNCE losses :math:`L_1, \dots, L_n`, all
evaluated at one common temperature (the paper uses :math:`\tau = 0.5` whatever each encoder was
trained with, so that losses are comparable), and linear-readout errors :math:`e_{1a}, \dots, e_{na}`
for each downstream attribute :math:`a` (Trifeature: colour, shape, texture), the paper reports the
Pearson correlation

.. math::
    \rho_a = \frac{\sum_c (L_c - \bar L)(e_{ca} - \bar e_a)}
                  {\sqrt{\sum_c (L_c - \bar L)^2}\,\sqrt{\sum_c (e_{ca} - \bar e_a)^2}} ,

and the correlations between the errors of different attributes. :math:`\rho_a > 0`: lower loss goes
with lower error on :math:`a`; :math:`\rho_a < 0`: lower loss goes with *higher* error, the
feature-suppression signature the paper finds for shape and texture.

The held-out InfoNCE is SimCLR's two-view loss over consecutive batches of :math:`B` held-out images
(each view's negatives are the other :math:`2B - 2` views of its batch), averaged over batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MIN_ENCODERS", "correlation_matrix", "heldout_infonce", "loss_readout_correlation", "pearson"]

#: Fewest encoders a correlation is computed over (with 2 points any correlation is +-1).
MIN_ENCODERS = 3


def _check_vector(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 1-D tensor, got {shape}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def correlation_matrix(values: Tensor, min_samples: int = MIN_ENCODERS) -> Tensor:
    r"""Pearson correlations between the columns of ``values`` ``[n, k]`` -> ``[k, k]`` (float64).

    ``C_ab = cov(x_a, x_b) / (std(x_a) std(x_b))``; a constant column has no correlation, so its row
    and column are NaN (``numpy.corrcoef`` gives NaN too).

    Raises:
        ValueError: ``values`` is not 2-D, is not finite, or has fewer than ``min_samples`` rows.
    """
    if not isinstance(values, Tensor) or values.ndim != 2:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a 2-D tensor [n, k], got {shape}")
    n = values.shape[0]
    if n < min_samples:
        raise ValueError(
            f"a correlation across encoders needs at least {min_samples} of them, got {n} "
            "(with 2 points every correlation is +-1, with 1 it is undefined)"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError("values contain NaN or Inf")
    x = values.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    norm = x.norm(dim=0)
    corr = (x.T @ x) / (norm[:, None] * norm[None, :])
    constant = norm <= 1e-12 * (1.0 + values.to(torch.float64).abs().amax(0))
    corr = corr.masked_fill(constant[:, None] | constant[None, :], float("nan"))
    return corr.clamp(-1.0, 1.0)  # rounding can leave |C| a hair above 1; NaN stays NaN


def pearson(x: Tensor, y: Tensor, min_samples: int = MIN_ENCODERS) -> Tensor:
    """Pearson correlation of two 1-D tensors of equal length (float64 scalar; NaN if one is constant)."""
    _check_vector(x, "x")
    _check_vector(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    return correlation_matrix(torch.stack([x, y], dim=1), min_samples)[0, 1]


def loss_readout_correlation(losses: Tensor, errors: Tensor, min_samples: int = MIN_ENCODERS) -> Tensor:
    r""":math:`\rho_a` of the module docstring for every attribute.

    Args:
        losses: ``[n]`` held-out InfoNCE loss of each encoder (one common temperature).
        errors: ``[n, k]`` linear-readout error of each encoder on each of ``k`` attributes.

    Returns:
        ``[k]`` float64 correlations (NaN where the losses or an attribute's errors are constant).
    """
    _check_vector(losses, "losses")
    if not isinstance(errors, Tensor) or errors.ndim != 2 or errors.shape[0] != losses.shape[0]:
        shape = tuple(errors.shape) if isinstance(errors, Tensor) else type(errors).__name__
        raise ValueError(f"errors must be [n, k] with n = {losses.shape[0]} encoders, got {shape}")
    return correlation_matrix(torch.cat([losses[:, None].to(errors.dtype), errors], dim=1), min_samples)[0, 1:]


def heldout_infonce(z1: Tensor, z2: Tensor, temperature: float = 0.5, batch_size: int = 256) -> Tensor:
    r"""SimCLR's two-view InfoNCE of held-out projections, batch by batch, averaged over batches.

    Rows ``b*B .. (b+1)*B - 1`` of ``z1`` and ``z2`` (the two views of the same images) form batch
    ``b``; within it, the anchor :math:`z^{(1)}_i` has positive :math:`z^{(2)}_i` and negatives the
    other :math:`2B - 2` views, and symmetrically for :math:`z^{(2)}_i`:

    .. math::
        \mathcal{L} = \frac{1}{2B}\sum_{u} -\log
            \frac{e^{\hat u\cdot \hat u^+/\tau}}{\sum_{w \ne u} e^{\hat u\cdot \hat w/\tau}}

    (the value of :func:`solo_qscore.ifm_simclr_loss` with ``epsilon=0`` on that batch). A final
    incomplete batch is dropped, so every term has the same number of negatives.

    Args:
        z1, z2: ``[n, d]`` projections of the two views (normalised here).
        temperature: :math:`\tau` (one value for all encoders makes their losses comparable).
        batch_size: :math:`B \ge 2`; ``n`` must be at least ``B``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be [n, d]; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    batch_size = int(batch_size)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (each view needs a negative), got {batch_size}")
    n = z1.shape[0]
    if n < batch_size:
        raise ValueError(f"{n} held-out images are fewer than one batch of {batch_size}; lower the batch size")
    nb = n // batch_size
    views = torch.cat([z1[: nb * batch_size].reshape(nb, batch_size, -1),
                       z2[: nb * batch_size].reshape(nb, batch_size, -1)], dim=1)  # [nb, 2B, d]
    views = F.normalize(views.float(), dim=-1)
    logits = views @ views.transpose(1, 2) / temperature  # [nb, 2B, 2B]
    eye = torch.eye(2 * batch_size, dtype=torch.bool, device=logits.device)
    partner = torch.arange(2 * batch_size, device=logits.device).roll(batch_size)  # i <-> i + B
    positive = logits[:, torch.arange(2 * batch_size, device=logits.device), partner]  # [nb, 2B]
    log_denominator = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=2)
    return (log_denominator - positive).mean()
