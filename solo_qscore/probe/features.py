"""Frozen backbone features of a dataset: the input of the probe, the report and the analysis tools."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, loader, device: torch.device,
                     desc: str = "extracting features",
                     autocast_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor]:
    """Backbone features and labels of a loader of ``(X, Y)`` batches, in eval mode.

    With ``autocast_dtype`` (``torch.bfloat16`` for a ``bf16-mixed`` run) the pass runs under
    ``torch.autocast`` with channels-last inputs, as training does; the features are returned in
    float32 either way (the statistics and the probe stay in float32).

    A progress bar (``desc``) appears on a terminal when the pass takes more than a few seconds;
    never when the environment variable ``CI`` is set (see :mod:`solo_qscore._progress`).
    """
    from solo_qscore._progress import progress

    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype,
                                                    enabled=autocast_dtype is not None):
            for x, y in progress(loader, desc=desc, unit="batch"):
                x = x.to(device)
                if autocast_dtype is not None and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                feats.append(backbone(x).float())
                labels.append(y.to(device))
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def dataset_in_order(loader) -> Optional[Any]:
    """The loader's dataset when the loader reads it in order (so feature row i is dataset item i: the
    images of the report's samples), else ``None`` (a shuffling or custom sampler, no indexable dataset)."""
    from torch.utils.data import SequentialSampler

    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__"):
        return None
    sampler = getattr(loader, "sampler", None)
    return dataset if sampler is None or isinstance(sampler, SequentialSampler) else None
