r"""Robust vs non-robust features of a frozen encoder (IFM paper §4.3, after Ilyas et al. 2019).

Given an encoder :math:`f` and a linear probe :math:`h` fitted on clean train features, each train
example :math:`(x, y)` gets a target label :math:`t` drawn uniformly at random, and the input is
moved towards :math:`t` by repeated targeted FGSM steps

.. math::

    x_k = \operatorname{clip}_{[0,1]}\big(x_{k-1} - \varepsilon\, \operatorname{sign}
          \nabla_x \ell(h \circ f(x_{k-1}), t)\big), \qquad x_0 = x,

stopping at the first :math:`k` with :math:`\arg\max_i h \circ f(x_k)_i = t`
(:math:`x_\text{adv} = x_k`; :math:`k = 0` when :math:`h \circ f` already predicts :math:`t`). Then

.. math::

    \mathcal{D}_R = \{(f(x_\text{adv}), y)\}, \qquad \mathcal{D}_{NR} = \{(f(x_\text{adv}), t)\}:

:math:`\mathcal{D}_R` keeps the true label (only features that survive the attack, the *robust* ones,
still predict it), :math:`\mathcal{D}_{NR}` the target label (to a human mislabelled, yet
:math:`x_\text{adv}` carries *non-robust* features predictive of :math:`t`). A linear classifier is
re-fitted on each set and evaluated on the clean test set; accuracy above chance on
:math:`\mathcal{D}_{NR}` means the encoder represents non-robust features.

Choices the paper leaves open: the attack is in pixel space (images in :math:`[0, 1]`, clipped after
every step, the encoder's normalisation applied inside the model); the paper's step is
:math:`\varepsilon = 0.01`; examples still not predicted as :math:`t` after ``max_steps`` steps are
left out of both sets (their count is reported); :math:`t` is uniform over all classes, so it can
equal :math:`y` (``exclude_true=True`` draws it from the other classes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo_qscore.probe.linear import LinearProbe, fit_linear_probe

__all__ = [
    "FGSMResult",
    "PixelSpaceClassifier",
    "attack_loader",
    "iterative_targeted_fgsm",
    "probe_logits",
    "robust_feature_accuracies",
    "sample_targets",
    "split_robust_nonrobust",
    "targeted_fgsm_step",
]


@dataclass
class FGSMResult:
    """Outcome of :func:`iterative_targeted_fgsm` for a batch of ``B`` inputs."""

    x_adv: Tensor  # [B, ...]: the first iterate predicted as the target (the last one if never)
    success: Tensor  # BoolTensor[B]: the model predicts the target at x_adv
    steps: Tensor  # LongTensor[B]: FGSM steps applied


def probe_logits(probe: LinearProbe, features: Tensor) -> Tensor:
    r"""Differentiable logits :math:`W (h - m)/s + b` of a fitted probe (its ``forward`` runs without grad)."""
    return torch.addmm(probe.bias, probe.transform(features), probe.weight.t())


class PixelSpaceClassifier(nn.Module):
    r""":math:`x \mapsto h(f((x - \mu)/\sigma))`: backbone ``f`` and probe ``h`` on images in :math:`[0, 1]`."""

    def __init__(self, backbone: nn.Module, probe: LinearProbe, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.probe = probe
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def features(self, x: Tensor) -> Tensor:
        """Backbone representation of pixel-space images ``[B, 3, H, W]``."""
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return probe_logits(self.probe, self.features(x))


def _clip(x: Tensor, clamp: tuple[float, float] | None) -> Tensor:
    return x if clamp is None else x.clamp(float(clamp[0]), float(clamp[1]))


def targeted_fgsm_step(
    model: nn.Module, x: Tensor, target: Tensor, step: float, clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    r"""One targeted FGSM step :math:`x - \varepsilon \operatorname{sign}\nabla_x \ell(\text{model}(x), t)`.

    ``ell`` is the cross-entropy; it is summed over the batch, so each sample's gradient is its own
    (the model must treat samples independently, e.g. batch norm in eval mode). The result is
    clipped to ``clamp`` (``None``: no clipping).
    """
    if float(step) < 0:
        raise ValueError(f"the FGSM step must be >= 0, got {step}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return _clip(x.detach() - float(step) * grad.sign(), clamp)


def iterative_targeted_fgsm(
    model: nn.Module, x: Tensor, target: Tensor, step: float = 0.01, max_steps: int = 20,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> FGSMResult:
    r"""Repeated targeted FGSM until each input is predicted as its target (paper §4.3).

    All inputs of the batch are attacked together; an input stops moving at the first iterate
    :math:`x_k` (:math:`k \ge 0`) whose prediction :math:`\arg\max` equals its target. One forward and
    backward pass per step serves both the check of :math:`x_k` and the step to :math:`x_{k+1}`.

    Args:
        model: maps ``x`` to logits ``[B, C]``; samples must not interact (eval mode).
        x: inputs ``[B, ...]``; target: LongTensor ``[B]``.
        step: :math:`\varepsilon` (the paper: 0.01); max_steps: give up after this many steps.
        clamp: valid input range, applied after every step (``None``: none).
    """
    if not isinstance(target, Tensor) or target.ndim != 1 or target.shape[0] != x.shape[0]:
        raise ValueError(f"target must be a LongTensor [{x.shape[0]}], got {getattr(target, 'shape', target)}")
    if int(max_steps) < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if float(step) < 0:
        raise ValueError(f"the FGSM step must be >= 0, got {step}")
    target = target.to(x.device)
    x_cur = x.detach().clone()
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for k in range(int(max_steps) + 1):
        active = (~success).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        with torch.enable_grad():
            xa = x_cur[active].requires_grad_(True)
            logits = model(xa)
            hit = logits.argmax(dim=1) == target[active]
            success[active[hit]] = True
            if k == int(max_steps) or bool(hit.all()):
                break
            loss = F.cross_entropy(logits, target[active], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa)
        move = ~hit
        moved = active[move]
        x_cur[moved] = _clip(x_cur[moved] - float(step) * grad[move].sign(), clamp)
        steps[moved] += 1
    return FGSMResult(x_adv=x_cur, success=success, steps=steps)


def sample_targets(
    labels: Tensor, num_classes: int, generator: torch.Generator | None = None, exclude_true: bool = False,
) -> Tensor:
    """Target labels uniform over the ``num_classes`` classes (over the other classes with ``exclude_true``)."""
    if int(num_classes) < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    n = labels.shape[0]
    if exclude_true:
        # uniform over the C - 1 other classes: shift by 1..C-1 modulo C
        offset = torch.randint(1, int(num_classes), (n,), generator=generator)
        return (labels.cpu() + offset) % int(num_classes)
    return torch.randint(0, int(num_classes), (n,), generator=generator)


def split_robust_nonrobust(
    features: Tensor, labels: Tensor, targets: Tensor, success: Tensor | None = None,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    r""":math:`\mathcal{D}_R = (f(x_\text{adv}), y)` and :math:`\mathcal{D}_{NR} = (f(x_\text{adv}), t)`.

    Only the successful attacks are kept (all when ``success`` is None); returns
    ``((features, labels), (features, targets))``.
    """
    n = features.shape[0]
    for t, name in ((labels, "labels"), (targets, "targets")):
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"{name} must be a 1-D tensor of {n} labels, got {tuple(t.shape)}")
    if success is None:
        success = torch.ones(n, dtype=torch.bool)
    if success.dtype != torch.bool or success.shape != (n,):
        raise ValueError(f"success must be a BoolTensor [{n}], got {success.dtype} {tuple(success.shape)}")
    keep = success.to(features.device)
    kept = features[keep]
    return (kept, labels.to(keep.device)[keep]), (kept, targets.to(keep.device)[keep])


def _accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
              probe_kwargs: dict) -> float:
    if train_x.shape[0] == 0:
        return float("nan")
    probe = fit_linear_probe(train_x, train_y, num_classes=num_classes, **probe_kwargs)
    return float((probe.predict(test_x) == test_y.to(probe.weight.device)).double().mean())


def robust_feature_accuracies(
    adv_features: Tensor, labels: Tensor, targets: Tensor, success: Tensor, test_features: Tensor,
    test_labels: Tensor, num_classes: int, clean_features: Tensor | None = None,
    probe_kwargs: dict | None = None,
) -> dict[str, float]:
    r"""Clean-test accuracy of linear probes re-fitted on :math:`\mathcal{D}`, :math:`\mathcal{D}_R` and
    :math:`\mathcal{D}_{NR}`.

    Returns ``{"D": acc, "D_R": acc, "D_NR": acc}`` (fractions in [0, 1]; ``D`` only with
    ``clean_features``, the clean train features with ``labels``; NaN for an empty set).
    """
    kwargs = dict(probe_kwargs or {})
    (xr, yr), (xnr, tnr) = split_robust_nonrobust(adv_features, labels, targets, success)
    out = {}
    if clean_features is not None:
        out["D"] = _accuracy(clean_features, labels, test_features, test_labels, num_classes, kwargs)
    out["D_R"] = _accuracy(xr, yr, test_features, test_labels, num_classes, kwargs)
    out["D_NR"] = _accuracy(xnr, tnr, test_features, test_labels, num_classes, kwargs)
    return out


def attack_loader(
    classifier: PixelSpaceClassifier, batches: Iterable[tuple[Tensor, Tensor]], targets: Tensor, step: float,
    max_steps: int = 20, device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Attack every image of ``batches`` (pixel-space ``[B, 3, H, W]`` in [0, 1], labels) towards ``targets``.

    Returns CPU tensors ``features`` (``f(x_adv)``, ``[N, r]``), ``labels``, ``targets``, ``success``
    and ``steps``, in the order of the batches. The classifier must be in eval mode.
    """
    feats, labels, success, steps = [], [], [], []
    start = 0
    for x, y in batches:
        t = targets[start:start + x.shape[0]].to(device)
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"{targets.shape[0]} targets for more than {start} images")
        start += x.shape[0]
        result = iterative_targeted_fgsm(classifier, x.to(device), t, step=step, max_steps=max_steps)
        with torch.no_grad():
            feats.append(classifier.features(result.x_adv).float().cpu())
        labels.append(y.cpu())
        success.append(result.success.cpu())
        steps.append(result.steps.cpu())
    if start != targets.shape[0]:
        raise ValueError(f"{targets.shape[0]} targets but {start} images")
    return {"features": torch.cat(feats), "labels": torch.cat(labels), "targets": targets.cpu(),
            "success": torch.cat(success), "steps": torch.cat(steps)}
