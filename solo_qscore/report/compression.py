r"""The compression study (paper Fig. 2, A.5, A.7): how much of the probe's accuracy do ``k`` features keep?

For each size ``k`` (fractions of ``r`` and ``|D|``), a linear probe is fitted on ``k`` features only:
the discriminative band (a window of ``k`` ranks of ``A`` centred on it), random subsets (mean and
std over seeds), the lower and upper tails of ``A``, and the top-``k`` principal components.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from solo_qscore.core.discriminative import (
    feature_ranks,
    lower_tail_mask,
    random_mask,
    rank_band_mask,
    upper_tail_mask,
)
from solo_qscore.probe.linear import feature_mean_std, fit_linear_probe
from solo_qscore.report.config import CompressionSettings
from solo_qscore.report.result import Compression

__all__ = ["band_window_mask", "compression_masks", "compression_sizes", "compression_study", "principal_components"]


def band_window_mask(A: Tensor, discriminative: Tensor, size: int) -> Tensor:
    """``size`` consecutive ranks of ``A`` centred on the discriminative band (the band itself at ``|D|``).

    The paper grows and shrinks the band by moving both percentile limits; here the window of
    ``size`` ranks keeps the centre of ``D`` and is shifted inwards when it would leave ``[0, r)``.
    """
    r = A.numel()
    size = int(size)
    if not 0 <= size <= r:
        raise ValueError(f"size must be in [0, {r}], got {size}")
    ranks = feature_ranks(A)
    n_d = int(discriminative.sum())
    if n_d:
        first = int(ranks[discriminative.to(ranks.device)].min())
    else:
        first = r // 2
    start = min(max(first + (n_d - size) // 2, 0), r - size)
    return rank_band_mask(A, start, start + size)


def compression_masks(
    A: Tensor, discriminative: Tensor, size: int, num_random_seeds: int = 5
) -> dict[str, Any]:
    """The feature subsets of size ``size`` compared in the compression study.

    Returns ``{"band": mask, "random": [mask per seed], "lower_tail": mask, "upper_tail": mask}``,
    boolean ``[r]`` masks; random subsets use seeds ``0 .. num_random_seeds-1``.
    """
    r = A.numel()
    return {
        "band": band_window_mask(A, discriminative, size),
        "random": [random_mask(r, size, seed=seed, device=A.device) for seed in range(int(num_random_seeds))],
        "lower_tail": lower_tail_mask(A, size),
        "upper_tail": upper_tail_mask(A, size),
    }


def compression_sizes(r: int, n_d: int, fractions: Sequence[float]) -> list[int]:
    """The sizes ``k = round(f r)`` (at least 1, at most ``r``) and ``|D|`` when it is not empty, ascending."""
    sizes = {min(r, max(1, int(math.floor(float(f) * r + 0.5)))) for f in fractions if float(f) > 0}
    if n_d > 0:
        sizes.add(n_d)
    return sorted(sizes)


def compression_study(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    A: Tensor,
    discriminative: Tensor,
    full_accuracy: float,
    num_classes: int,
    settings: CompressionSettings,
    probe_kwargs: Mapping[str, Any],
    bar: Any = None,
) -> Compression:
    """Probe accuracy on the validation set with ``k`` features kept, for every size and method.

    ``full_accuracy`` is the accuracy of the report's own probe (all features, all train samples);
    it is reused instead of refitting. ``bar`` (a progress bar) gets one step per probe fit.
    """
    fractions, num_random_seeds, max_train = settings.fractions, settings.num_random_seeds, settings.max_train
    r = train_x.shape[1]
    num_train = train_x.shape[0]
    subsampled = max_train is not None and 0 < int(max_train) < num_train
    if subsampled:
        keep = torch.randperm(num_train, generator=torch.Generator().manual_seed(0))[: int(max_train)]
        keep = keep.sort().values.to(train_x.device)
        train_x, train_y = train_x[keep], train_y[keep]
    n_d = int(discriminative.sum())
    sizes = compression_sizes(r, n_d, fractions)
    cache: dict[bytes, float] = {}
    if not subsampled:  # the all-features probe is the report's own probe
        cache[torch.ones(r, dtype=torch.bool).numpy().tobytes()] = full_accuracy

    plan = [(k, compression_masks(A, discriminative, k, num_random_seeds)) for k in sizes]
    if bar is not None:  # one PCA fit per size and one per distinct feature subset
        keys = {m.cpu().numpy().tobytes() for _, masks in plan
                for m in (masks["band"], *masks["random"], masks["lower_tail"], masks["upper_tail"])}
        bar.total = (bar.total or 0) + len(sizes) + len(keys - set(cache))
        bar.refresh()

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    def accuracy_of(mask: Tensor) -> float:
        key = mask.cpu().numpy().tobytes()
        if key not in cache:
            idx = mask.nonzero().flatten().to(train_x.device)
            probe = fit_linear_probe(train_x[:, idx], train_y, num_classes=num_classes, **probe_kwargs)
            cache[key] = float((probe.predict(val_x[:, idx]) == val_y).double().mean())
            tick()
        return cache[key]

    # PCA: principal axes of the train features as the probe sees them (standardised unless
    # probe_kwargs says otherwise), largest variance first. The probe on the top-k projections is
    # then fitted without re-standardising, so k = r is a rotation of the full problem (the L2
    # penalty is rotation invariant) and gives the full probe's accuracy.
    train_pc, val_pc = principal_components(train_x, val_x, bool(probe_kwargs.get("standardize", True)))
    pca_kwargs = {**probe_kwargs, "standardize": False}

    out: dict[str, Any] = {
        "sizes": sizes,
        "fractions": [k / r for k in sizes],
        "band": [],
        "random_mean": [],
        "random_std": [],
        "lower_tail": [],
        "upper_tail": [],
        "pca": [],
    }
    for k, masks in plan:
        out["band"].append(accuracy_of(masks["band"]))
        rnd = np.array([accuracy_of(m) for m in masks["random"]], dtype=float)
        out["random_mean"].append(float(rnd.mean()) if rnd.size else None)
        out["random_std"].append(float(rnd.std()) if rnd.size else None)
        out["lower_tail"].append(accuracy_of(masks["lower_tail"]))
        out["upper_tail"].append(accuracy_of(masks["upper_tail"]))
        probe = fit_linear_probe(train_pc[:, :k].contiguous(), train_y, num_classes=num_classes, **pca_kwargs)
        out["pca"].append(float((probe.predict(val_pc[:, :k].contiguous()) == val_y).double().mean()))
        tick()
    return Compression(
        **out,
        full_accuracy=full_accuracy,
        num_features=r,
        num_discriminative=n_d,
        num_random_seeds=int(num_random_seeds),
        num_train=int(train_x.shape[0]),
        band_rule="window of k consecutive ranks of A centred on the discriminative band",
    )


def principal_components(train_x: Tensor, val_x: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    """Train and validation features projected on the principal axes of the train features (largest
    variance first), after standardising them (or only centring them without ``standardize``)."""
    r = train_x.shape[1]
    if standardize:
        mean, scale = feature_mean_std(train_x)
    else:
        mean, scale = feature_mean_std(train_x)[0], torch.ones(r, device=train_x.device)
    mean64, scale64 = mean.double(), scale.double()
    cov = torch.zeros(r, r, dtype=torch.float64, device=train_x.device)
    for start in range(0, train_x.shape[0], 16384):
        chunk = (train_x[start : start + 16384].double() - mean64) / scale64
        cov += chunk.t() @ chunk
    _, eigvecs = torch.linalg.eigh(cov / max(train_x.shape[0], 1))
    basis = eigvecs.flip(1).to(train_x.dtype)
    return ((train_x - mean) / scale) @ basis, ((val_x - mean) / scale) @ basis

