"""Sparse, SSL-like representations with planted class concepts (the report tests' data)."""

from __future__ import annotations

import numpy as np
import torch


def planted_features(
    n: int, seed: int, r: int = 128, num_classes: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse, non-negative, SSL-like representations with planted class concepts.

    Each class owns 8 "concept" features (moderately frequent: the discriminative band); 6 generic
    features fire for half of all samples (the upper tail); the rest is low background noise.
    A per-sample quality q ~ U(0, 1) scales the sample's own concept activations and, as 1 - q,
    those of a confusing class: low-quality samples are both misclassified more often and have
    a lower Q-Score, which is the structure the paper reports.
    """
    rng = np.random.default_rng(seed)
    roles = np.random.default_rng(1234).permutation(r)  # the same feature roles in every split
    concept = roles[: num_classes * 8].reshape(num_classes, 8)
    generic = roles[num_classes * 8 : num_classes * 8 + 6]
    y = rng.integers(0, num_classes, n)
    quality = rng.uniform(0, 1, n)
    h = np.abs(rng.normal(0, 0.08, (n, r)))
    for i in range(n):
        own = rng.choice(concept[y[i]], 2, replace=False)
        h[i, own] += 0.3 + 1.2 * quality[i] * rng.uniform(0.8, 1.2, 2)
        other = (y[i] + rng.integers(1, num_classes)) % num_classes
        h[i, rng.choice(concept[other], 2, replace=False)] += (1 - quality[i]) * rng.uniform(0.5, 1.5, 2)
        if rng.uniform() < 0.5:
            h[i, rng.choice(generic, 2, replace=False)] += rng.uniform(0.6, 1.0, 2)
    return torch.tensor(h, dtype=torch.float32), torch.tensor(y)
