r"""Heat-map-weighted IoU of a heat map and a mask (Q-Score paper, "Quantifying Representation Interpretability").

The paper scores how well the heat map of a sample's discriminative features lies on an annotated
region (Salient ImageNet's *core* or *spurious* masks) with

.. math::

    \mathrm{mIoU} = \frac{1}{N} \sum_i \frac{s_i(Ar_i \cap M_i)}{s_i(Ar_i \cup M_i)}, \qquad
    s_i(S) = \sum_{p \in S} H_{ip},

where :math:`H_i \in [0, 1]^{h \times w}` is the heat map, :math:`M_i` the binary mask and
:math:`Ar_i` "the area of the heat map"; :math:`s` sums the heat-map values over an area. We take
:math:`Ar_i = \{p : H_{ip} > \tau\}` with :math:`\tau = 0` by default (the paper gives no
threshold), so that

.. math:: \mathrm{IoU}_i = \frac{\sum_p H_{ip} M_{ip}}{\sum_p H_{ip}} \quad (\tau = 0),

the share of the heat map's mass that falls inside the mask, which is how the paper reads it
("a higher percentage of the feature heat map overlaps with the annotated core region"). It is 1
when all the heat lies in the mask (even if it covers only part of the mask) and 0 when none does.
With :math:`\tau > 0`, faint heat (:math:`H \le \tau`) outside the mask is ignored, and mask pixels
outside :math:`Ar_i` add their (faint) heat to the union only.

:math:`\mathrm{IoU}_i` is undefined (NaN) when :math:`s_i(Ar_i \cup M_i) = 0`, e.g. an all-zero heat
map (a sample with no highly activating discriminative feature); means leave such images out and
count them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["heatmap_iou", "load_masks", "match_masks", "mean_iou"]

_RANGE_TOLERANCE = 1e-5
MASK_SUFFIXES = (".npy", ".pt", ".pth")


def _check_pair(heatmaps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(heatmaps, Tensor) or heatmaps.ndim != 3 or not heatmaps.is_floating_point():
        got = tuple(heatmaps.shape) if isinstance(heatmaps, Tensor) else type(heatmaps).__name__
        raise ValueError(f"heat maps must be a floating-point tensor [N, H, W], got {got}")
    if not isinstance(masks, Tensor):
        masks = torch.as_tensor(np.asarray(masks))
    if tuple(masks.shape) != tuple(heatmaps.shape):
        raise ValueError(f"masks have shape {tuple(masks.shape)} but the heat maps have {tuple(heatmaps.shape)}; "
                         "need one mask [H, W] per heat map, at the image size")
    if heatmaps.numel():
        low, high = float(heatmaps.min()), float(heatmaps.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError("heat maps contain NaN or Inf")
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"heat maps must lie in [0, 1] (normalised), got values in [{low:.4g}, {high:.4g}]")
    return heatmaps, (masks != 0).to(heatmaps.device)


def heatmap_iou(heatmaps: Tensor, masks: Tensor, threshold: float = 0.0) -> Tensor:
    r"""Per-image :math:`\mathrm{IoU}_i = s_i(Ar_i \cap M_i) / s_i(Ar_i \cup M_i)` (see the module docstring).

    Args:
        heatmaps: ``[N, H, W]`` with values in ``[0, 1]``.
        masks: ``[N, H, W]``, bool or numeric (non-zero = inside).
        threshold: :math:`\tau`, the area of a heat map is :math:`\{p : H_p > \tau\}`; ``0 <= tau < 1``.

    Returns:
        ``FloatTensor[N]`` (the heat maps' dtype), NaN where :math:`s_i(Ar_i \cup M_i) = 0`.

    Raises:
        ValueError: shapes differ, heat maps outside ``[0, 1]`` or not finite, bad threshold.
    """
    threshold = float(threshold)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    heatmaps, inside = _check_pair(heatmaps, masks)
    area = heatmaps > threshold
    intersection = (heatmaps * (area & inside)).sum(dim=(1, 2))
    union = (heatmaps * (area | inside)).sum(dim=(1, 2))
    return torch.where(union > 0, intersection / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.full_like(union, float("nan")))


def _summary(iou: Tensor) -> dict:
    scored = ~torch.isnan(iou)
    n = int(scored.sum())
    return {"miou": float(iou[scored].double().mean()) if n else None,
            "num_images": int(iou.numel()), "num_scored": n, "num_undefined": int(iou.numel()) - n}


def mean_iou(
    heatmaps: Tensor, masks: Tensor, correct: Optional[Tensor] = None, threshold: float = 0.0,
) -> dict:
    r"""mIoU over images (NaN images left out and counted), split by correctness when given.

    Args:
        heatmaps, masks, threshold: as in :func:`heatmap_iou`.
        correct: optional ``[N]`` bool (or 0/1) flags, e.g. linear-probe correctness.

    Returns:
        ``{"miou", "num_images", "num_scored", "num_undefined"}`` (``miou`` is ``None`` when no image is
        scored), plus the same under ``"correct"`` and ``"misclassified"`` when ``correct`` is given.
    """
    iou = heatmap_iou(heatmaps, masks, threshold)
    out = _summary(iou)
    if correct is not None:
        flags = torch.as_tensor(correct).to(iou.device)
        if flags.ndim != 1 or flags.shape[0] != iou.shape[0]:
            raise ValueError(f"correct must be a flag per image [{iou.shape[0]}], got shape {tuple(flags.shape)}")
        if flags.dtype != torch.bool:
            if bool(((flags != 0) & (flags != 1)).any()):
                raise ValueError("correct must hold booleans or 0/1 values")
            flags = flags != 0
        out["correct"] = _summary(iou[flags])
        out["misclassified"] = _summary(iou[~flags])
    return out


def load_masks(path: Union[str, os.PathLike]) -> tuple[Tensor, Tensor]:
    """Read masks and the dataset indices they belong to: ``(BoolTensor[K, H, W], LongTensor[K])``.

    Formats (non-zero = inside the mask):

    * a ``.npy`` file (``numpy.save``) or ``.pt``/``.pth`` file (``torch.save`` of a tensor) holding an
      array ``[N, H, W]``: row ``k`` is the mask of dataset index ``k`` of the evaluated split;
    * a folder of grey or RGB PNG files named by dataset index (``17.png``, ``00017.png``); images
      without a file are not scored.

    Raises:
        ValueError: missing path, unknown format, a file name that is not an index, shapes that differ.
    """
    path = Path(path)
    if path.is_dir():
        return _load_mask_folder(path)
    if not path.is_file():
        raise ValueError(f"mask path {path} does not exist")
    if path.suffix == ".npy":
        array = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix in (".pt", ".pth"):
        array = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(array, Tensor):
            raise ValueError(f"{path} must hold one tensor [N, H, W], got {type(array).__name__}")
    else:
        raise ValueError(f"unknown mask format {path.name}: use a folder of <index>.png files, a .npy or a .pt file")
    if array.ndim != 3:
        raise ValueError(f"masks in {path} must have shape [N, H, W], got {tuple(array.shape)}")
    return array != 0, torch.arange(array.shape[0])


def _load_mask_folder(folder: Path) -> tuple[Tensor, Tensor]:
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    if not files:
        raise ValueError(f"mask folder {folder} holds no .png files (expected <dataset index>.png)")
    bad = [f.name for f in files if not f.stem.isdigit()]
    if bad:
        raise ValueError(f"mask files must be named by dataset index (e.g. 17.png); got {bad[:3]} in {folder}")
    arrays = []
    for f in files:  # file reading: one decode per image is unavoidable
        with Image.open(f) as img:
            arrays.append(np.asarray(img.convert("L")) != 0)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"masks in {folder} have different sizes {sorted(shapes)[:3]}; they must all match the images")
    indices = torch.tensor([int(f.stem) for f in files], dtype=torch.long)
    if indices.unique().numel() != indices.numel():
        raise ValueError(f"mask folder {folder} has several files for the same index (e.g. 7.png and 007.png)")
    return torch.from_numpy(np.stack(arrays)), indices


def match_masks(masks: Tensor, mask_indices: Tensor, wanted: Tensor) -> tuple[Tensor, Tensor]:
    """Masks of the dataset indices ``wanted`` that have one: ``(masks[K', H, W], found BoolTensor[len(wanted)])``.

    ``masks[k]`` belongs to dataset index ``mask_indices[k]``; the result keeps the order of ``wanted``.
    """
    wanted = torch.as_tensor(wanted, dtype=torch.long)
    mask_indices = torch.as_tensor(mask_indices, dtype=torch.long)
    size = int(max(int(mask_indices.max()) if mask_indices.numel() else -1,
                   int(wanted.max()) if wanted.numel() else -1)) + 1
    lookup = torch.full((size,), -1, dtype=torch.long)  # dataset index -> row of masks
    lookup[mask_indices] = torch.arange(mask_indices.numel())
    rows = lookup[wanted] if wanted.numel() else wanted
    found = rows >= 0
    return masks[rows[found]], found
