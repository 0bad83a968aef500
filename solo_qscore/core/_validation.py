"""Input checks shared by the core functions (clear errors instead of silent NaNs)."""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor


def check_representations(h: Tensor, name: str = "h", num_features: int | None = None) -> None:
    """Raise ``ValueError`` unless ``h`` is a floating ``[N, r]`` tensor (with ``r == num_features``)."""
    if not isinstance(h, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(h).__name__}")
    if h.ndim != 2:
        raise ValueError(f"{name} must have shape [N, r] (samples x features), got {tuple(h.shape)}")
    if not h.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {h.dtype}")
    if h.shape[1] == 0:
        raise ValueError(f"{name} has no features: shape {tuple(h.shape)}")
    if num_features is not None and h.shape[1] != num_features:
        raise ValueError(f"{name} has {h.shape[1]} features but {num_features} were expected")


def check_nonnegative(value: float, name: str) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless it is a finite number ``>= 0``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_count(value: int, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an ``int``; ``ValueError`` naming ``name`` unless it is a whole number in range.

    Whole numbers are what ``range`` takes (``int``, NumPy integers, one-element integer tensors);
    ``int()`` would silently truncate ``2.5`` to 2 and accept ``True`` as 1, so neither is coerced.
    """
    is_bool = isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool)
    try:
        number = None if is_bool else operator.index(value)
    except TypeError:
        number = None
    bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
    wanted = " ".join([f"{name} must be a whole number", " and ".join(bounds)]).rstrip()
    if number is None:
        raise ValueError(f"{wanted}, got {value!r}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{wanted}, got {number}")
    return number


def check_finite_inputs(result: Tensor, **inputs: Tensor) -> None:
    """Raise ``ValueError`` if any of ``inputs`` holds NaN/Inf, or if ``result`` (a loss) is not finite.

    One host sync in all: the flags of every tensor are reduced on their device and read once;
    only when something is wrong are the inputs examined one by one for the message.
    """
    flags = [torch.isfinite(result).all()] + [torch.isfinite(t).all().to(result.device) for t in inputs.values()]
    if bool(torch.stack(flags).all()):
        return
    for name, tensor in inputs.items():
        if tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{name} contains NaN or Inf values ({bad} of {tensor.numel()} entries); "
                "the representation has diverged or the input is corrupt"
            )
    empty = [name for name, tensor in inputs.items() if tensor.numel() == 0]
    if empty:
        raise ValueError(f"the loss is undefined on an empty input ({', '.join(empty)} has no entries)")
    raise ValueError(
        "the loss is not finite although its inputs are: the logits overflow "
        "(are the inputs L2-normalised, and the temperature not too small?)"
    )


def check_finite(row_stat: Tensor, name: str = "h") -> None:
    """Raise ``ValueError`` if a per-row statistic is NaN/Inf.

    A NaN or Inf anywhere in a row propagates into that row's sum of squares, so checking
    the ``N`` row statistics is as strict as checking all ``N x r`` entries, at ``1/r`` the cost.
    """
    bad = ~torch.isfinite(row_stat)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{name} contains NaN or Inf values ({int(bad.sum())} of {bad.numel()} rows, "
            f"first rows {rows}); the representation has diverged or the input is corrupt"
        )


def check_finite_rows(h: Tensor, name: str = "h") -> None:
    """Raise ``ValueError`` if any row of ``h`` holds NaN/Inf (for cached features off the hot path)."""
    check_finite(torch.where(torch.isfinite(h).all(dim=1), 0.0, float("nan")), name)


def check_mask(mask: Tensor, num_features: int, name: str = "discriminative") -> None:
    """Raise ``ValueError`` unless ``mask`` is a boolean ``[r]`` feature mask."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor of shape [r], got {got}")
    if mask.ndim != 1 or mask.shape[0] != num_features:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the representation has {num_features} features"
        )


def check_class_labels(labels: Tensor, n: int, name: str = "labels") -> None:
    """``labels`` must be a 1-D integer tensor of ``n`` non-negative class indices."""
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != n:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a 1-D tensor of {n} class indices, got {shape}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if n and int(labels.min()) < 0:
        raise ValueError(f"{name} contains negative class indices")
