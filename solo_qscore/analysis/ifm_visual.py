r"""Visualising implicit feature modification (IFM paper §3.1, Fig. 4): latent perturbation + 1-NN retrieval.

IFM's adversary moves the (L2-normalised) positive away from the anchor and the negatives towards it
(paper Lemma 1 and eq. 2):

.. math::

    v^+_\varepsilon = v^+ - \varepsilon v, \qquad v^-_\varepsilon = v^- + \varepsilon v,

so that, for a unit anchor :math:`\lVert v \rVert = 1`, the logits shift exactly as in the IFM loss:
:math:`v^\top v^+_\varepsilon = v^\top v^+ - \varepsilon` and :math:`v^\top v^-_\varepsilon = v^\top v^- + \varepsilon`.
The default IFM does not re-normalise the perturbed vectors (the ``+norm`` variant of App. B.1
does; ``renormalize=True``). A synthesised point :math:`s` is shown as its nearest neighbour by
cosine similarity in a memory bank :math:`\{f(x)\}_{x \in \mathcal{M}}` (the train set):
:math:`\arg\max_{x \in \mathcal{M}} \operatorname{sim}(s, f(x))` (the paper writes ``arg min``, a
typo: the nearest neighbour maximises the similarity). Cosine similarity ignores the length of
:math:`s`, so re-normalising does not change the retrieved image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_nearest_neighbours", "ifm_perturb"]


def _check_matrix(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor [N, d], got {shape}")
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")


def ifm_perturb(
    anchor: Tensor, positive: Tensor, negative: Tensor, eps: float | Sequence[float] | Tensor,
    normalize_inputs: bool = True, renormalize: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""IFM's latent perturbations :math:`v^+ - \varepsilon v` and :math:`v^- + \varepsilon v` for every ε.

    Args:
        anchor, positive, negative: ``[B, d]`` embeddings (row ``i`` of each is one triplet).
        eps: one budget or a sequence of ``E`` budgets (each ``>= 0``).
        normalize_inputs: L2-normalise the three inputs first, as the InfoNCE loss does (so the
            logit identity :math:`v^\top(v^+ - \varepsilon v) = v^\top v^+ - \varepsilon` holds).
        renormalize: L2-normalise the perturbed vectors (the paper's ``+norm`` variant; off in IFM).

    Returns:
        ``(positive_eps, negative_eps)``, each ``[E, B, d]`` (``E = 1`` for a scalar ``eps``).
    """
    for x, name in ((anchor, "anchor"), (positive, "positive"), (negative, "negative")):
        _check_matrix(x, name)
    if not (anchor.shape == positive.shape == negative.shape):
        raise ValueError(f"anchor, positive and negative must have the same shape, got {tuple(anchor.shape)}, "
                         f"{tuple(positive.shape)}, {tuple(negative.shape)}")
    eps_t = torch.as_tensor(eps, dtype=anchor.dtype, device=anchor.device).reshape(-1)
    if eps_t.numel() == 0 or not torch.isfinite(eps_t).all() or (eps_t < 0).any():
        raise ValueError(f"eps must be one or more finite budgets >= 0, got {eps}")
    if normalize_inputs:
        anchor, positive, negative = (F.normalize(x, dim=-1) for x in (anchor, positive, negative))
    shift = eps_t[:, None, None] * anchor.unsqueeze(0)  # [E, B, d]: the adversary's step along ±v
    pos, neg = positive.unsqueeze(0) - shift, negative.unsqueeze(0) + shift
    if renormalize:
        pos, neg = F.normalize(pos, dim=-1), F.normalize(neg, dim=-1)
    return pos, neg


def cosine_nearest_neighbours(queries: Tensor, bank: Tensor, chunk_size: int = 8192) -> tuple[Tensor, Tensor]:
    r"""Index and cosine similarity of each query's nearest bank row: :math:`\arg\max_j \hat q_i^\top \hat b_j`.

    The bank is scanned in chunks of ``chunk_size`` rows (one matrix product per chunk, so memory
    stays ``O(Q · chunk_size)``). Ties go to the lowest bank index. A zero query (e.g.
    :math:`v^+ - 1 \cdot v` with :math:`v^+ = v`) has similarity 0 with every row and gets index 0.

    Args:
        queries: ``[Q, d]``; bank: ``[N, d]`` (``N >= 1``), neither needs to be normalised.

    Returns:
        ``(indices LongTensor[Q], similarities FloatTensor[Q])``.
    """
    _check_matrix(queries, "queries")
    _check_matrix(bank, "bank")
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions but the bank {bank.shape[1]}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    q = F.normalize(queries, dim=-1)
    best_sim = torch.full((q.shape[0],), -float("inf"), dtype=q.dtype, device=q.device)
    best_idx = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for start in range(0, bank.shape[0], int(chunk_size)):
        b = F.normalize(bank[start:start + int(chunk_size)].to(device=q.device, dtype=q.dtype), dim=-1)
        sims = q @ b.T  # [Q, chunk]
        # first maximum within the chunk (argmax of "is max" picks the lowest index)
        chunk_max = sims.max(dim=1).values
        chunk_idx = (sims == chunk_max[:, None]).to(torch.uint8).argmax(dim=1) + start
        better = chunk_max > best_sim  # strict: an earlier chunk keeps ties
        best_sim = torch.where(better, chunk_max, best_sim)
        best_idx = torch.where(better, chunk_idx, best_idx)
    return best_idx, best_sim
