r"""Label-free representation metrics users already know, to compare Q-Score against.

* RankMe (Garrido et al., 2023): :math:`\exp(-\sum_k p_k \log p_k)` with
  :math:`p_k = \sigma_k / \lVert\sigma\rVert_1 + \epsilon`, over the singular values
  :math:`\sigma` of the ``[N, r]`` embedding matrix.
* Std of L2-normalised embeddings (the collapse signal of lightly): mean over features of the
  std over samples of :math:`h_i/\lVert h_i\rVert`; about :math:`1/\sqrt r` when healthy, 0 when collapsed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rankme(h: Tensor, eps: float = 1e-7) -> float:
    """Effective rank of ``h`` ``[N, r]`` (between 1 and min(N, r))."""
    singular = torch.linalg.svdvals(h.detach().float())
    p = singular / (singular.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_embedding_std(h: Tensor) -> float:
    """Mean over features of the std over samples of the L2-normalised embeddings."""
    return float(F.normalize(h.detach().float(), dim=1).std(dim=0).mean())
