r"""The per-sample Q-Score (SPEC §2.4).

Given the discriminative set :math:`D` and the highly activating set :math:`L_i`,

.. math:: Q_i = \frac{1}{|L_i \cap D|} \sum_{j \in L_i \cap D} (\hat h_{ij} - \mu_i),
          \qquad Q_i = 0 \text{ when } L_i \cap D = \emptyset .

A high :math:`Q_i` means a few discriminative features stand out strongly for sample i;
the paper shows that low-Q samples are the ones a linear probe gets wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor

from solo_qscore._validation import check_mask, check_representations
from solo_qscore.activations import RowStats, row_stats


def _q_from_stats(stats: RowStats, discriminative: Tensor) -> Tensor:
    # sum over S_i = L_i ∩ D of (h_ij - mean_i) / ||h_i||, done on the raw row: no normalised copy.
    selected = (stats.h > stats.threshold[:, None]) & discriminative
    count = selected.sum(1)
    total = torch.where(selected, stats.h, 0.0).sum(1)
    q = (total / count.clamp_min(1) - stats.mean) / stats.norm
    return torch.where(count > 0, q, torch.zeros_like(q))


def q_score(h: Tensor, discriminative: Tensor, eps: float = 4.0) -> Tensor:
    r"""Q-Score of each sample, ``FloatTensor[N]`` (no gradients; see the regulariser for those).

    Args:
        h: raw representations ``[N, r]`` (normalised internally; any float dtype and device).
        discriminative: ``BoolTensor[r]``, the discriminative set :math:`D`.
        eps: threshold of the highly activating sets in standard deviations.

    Raises:
        ValueError: NaN/Inf in ``h``, or a mask that is not a bool ``[r]`` tensor.
    """
    check_representations(h)
    check_mask(discriminative, h.shape[1])
    with torch.no_grad():
        stats = row_stats(h, eps)
        return _q_from_stats(stats, discriminative.to(stats.h.device))
