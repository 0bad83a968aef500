r"""The per-sample Q-Score (Kalibhat et al., AAAI 2024, eq. 1; docs/CONVENTIONS.md §5).

Given the discriminative set :math:`D` and the highly activating set :math:`L_i`,

.. math:: Q_i = \frac{1}{|L_i \cap D|} \sum_{j \in L_i \cap D} (\hat h_{ij} - \mu_i),
          \qquad Q_i = 0 \text{ when } L_i \cap D = \emptyset .

A high :math:`Q_i` means a few discriminative features stand out strongly for sample i;
the paper shows that low-Q samples are the ones a linear probe gets wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor

from solo_qscore.core._kernels import activation_summary
from solo_qscore.core._validation import check_finite, check_mask, check_representations
from solo_qscore.core.activations import check_eps


def q_score(h: Tensor, discriminative: Tensor, eps: float = 4.0) -> Tensor:
    r"""Q-Score of each sample, ``FloatTensor[N]`` (no gradients; see the regulariser for those).

    Args:
        h: raw representations ``[N, r]`` (normalised internally; any float dtype and device).
        discriminative: ``BoolTensor[r]``, the discriminative set :math:`D`.
        eps: threshold of the highly activating sets in standard deviations, ``>= 0``.

    Returns ``Q`` in the dtype of the computation (float32, float64 for float64 inputs); an empty
    batch (``N = 0``) gives an empty tensor.

    Raises:
        ValueError: NaN/Inf in ``h``, a mask that is not a bool ``[r]`` tensor, or ``eps < 0``.
    """
    check_representations(h)
    check_mask(discriminative, h.shape[1])
    check_eps(eps)
    summary = activation_summary(h, discriminative.to(h.device), eps)
    if not bool(summary.finite.all()):
        check_finite(torch.where(summary.finite, 0.0, float("nan")))
    return summary.q


#: the quantiles of Q that are reported: ``q_quantiles`` of ``probe.json`` and the ``qscore/q_p*`` logs
Q_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


def q_quantiles(q: Tensor) -> dict[float, float]:
    """The :data:`Q_QUANTILES` of the Q-Scores ``q`` (computed in float64), ``{p: value}``.

    The one definition that the report (``q_quantiles``, keyed ``f"{p:g}"``) and the training logs
    (``qscore/q_p05`` ... ``qscore/q_p95``, :func:`quantile_log_name`) both use.
    """
    values = torch.quantile(q.double(), torch.tensor(Q_QUANTILES, dtype=torch.float64, device=q.device))
    return {p: float(v) for p, v in zip(Q_QUANTILES, values.tolist())}


def quantile_log_name(p: float) -> str:
    """The log key of the ``p`` quantile of Q: ``q_p05`` for 0.05, ``q_p50`` for the median."""
    return f"q_p{round(100 * p):02d}"
