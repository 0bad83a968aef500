r"""Grad-CAM heat maps of representation features (Q-Score paper Fig. 1, 5, 6, A.11-A.14).

For an image :math:`x`, a backbone whose output is the representation :math:`h(x) \in \mathbb{R}^r`,
the activations :math:`A \in \mathbb{R}^{C \times u \times v}` of a convolutional layer (the last
block, ResNet ``layer4``) and a target :math:`t = \sum_j W_j h_j` (one feature, :math:`W = e_j`, or
the sample's discriminative features :math:`L_i \cap D`), Grad-CAM (Selvaraju et al.) is

.. math::

    w_c = \frac{1}{uv} \sum_{a,b} \frac{\partial t}{\partial A_{cab}}, \qquad
    G = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big) \in \mathbb{R}^{u \times v},

upsampled bilinearly to the image size and divided by its maximum, so :math:`H = G / \max G \in [0, 1]`
(an all-zero map stays zero). Dividing by the maximum, not min-max scaling, keeps the zero level of
the map: the heat-map sums of :mod:`solo_qscore.analysis.miou` then weigh pixels by their real share.

A batch of images costs one forward and one backward pass: with the network in eval mode the
samples do not interact, so the gradient of :math:`\sum_i t_i` with respect to sample i's
activations is the gradient of :math:`t_i` alone.

Implemented with a forward hook and :func:`torch.autograd.grad` rather than the ``grad-cam``
package: that package works sample by sample in numpy (per-image OpenCV resize, CPU copies),
min-max scales the maps, and calls ``model.zero_grad()`` / ``backward()`` on the caller's model;
here nothing leaves the device and no parameter ``.grad`` is touched.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo_qscore.core._validation import check_mask
from solo_qscore.core.activations import highly_activating

__all__ = ["discriminative_targets", "grad_cam", "resolve_layer"]


def resolve_layer(model: nn.Module, layer: Union[nn.Module, str]) -> nn.Module:
    """``layer`` itself, or the submodule of ``model`` with that dotted name (e.g. ``"layer4"``)."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(str(layer))
    except AttributeError as err:
        children = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"the model has no layer '{layer}' (its top-level layers: {children})") from err


def _target_weights(targets: Tensor, batch: int, num_features: int, device, dtype) -> Tensor:
    """``[B, r]`` weights of the target ``t_i = sum_j W_ij h_ij`` from feature indices or weights."""
    if not isinstance(targets, Tensor):
        targets = torch.as_tensor(targets)
    if targets.ndim == 1 and not targets.is_floating_point() and targets.dtype != torch.bool:
        if targets.shape[0] != batch:
            raise ValueError(f"targets has {targets.shape[0]} feature indices for a batch of {batch} images")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_features):
            raise ValueError(f"target feature indices must lie in [0, {num_features}), got "
                             f"[{int(targets.min())}, {int(targets.max())}]")
        return F.one_hot(targets.to(device=device, dtype=torch.long), num_features).to(dtype)
    if targets.ndim != 2 or tuple(targets.shape) != (batch, num_features):
        raise ValueError(
            f"targets must be feature indices [B] or weights [B, r] = [{batch}, {num_features}], "
            f"got shape {tuple(targets.shape)}"
        )
    return targets.to(device=device, dtype=dtype)


def grad_cam(
    model: nn.Module,
    images: Tensor,
    layer: Union[nn.Module, str],
    targets: Tensor,
    normalize: bool = True,
) -> Tensor:
    r"""Grad-CAM maps ``[B, H, W]`` of targets on the representation ``h = model(images)``.

    Args:
        model: a backbone returning representations ``[B, r]`` (e.g. a ResNet with ``fc = Identity``).
        images: ``[B, C, H, W]`` (as the model takes them, i.e. normalised).
        layer: the convolutional layer whose output is :math:`A` (module or dotted name, e.g. ``"layer4"``).
        targets: ``LongTensor[B]`` feature index :math:`j_i` per image (:math:`t_i = h_{i j_i}`), or
            weights ``[B, r]`` (bool or float) giving :math:`t_i = \sum_j W_{ij} h_{ij}`, e.g.
            :func:`discriminative_targets`.
        normalize: divide each map by its maximum (to ``[0, 1]``); otherwise the raw upsampled
            :math:`\mathrm{ReLU}(\sum_c w_c A_c)`.

    The model is run in eval mode (restored afterwards) with gradients on, whatever the caller's
    grad mode; parameter ``.grad`` fields are left untouched.

    Raises:
        ValueError: bad shapes, an unknown layer, a layer that is not run or whose output is not
            ``[B, C, u, v]``, a model output that is not ``[B, r]``.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating-point tensor [B, C, H, W], got {got}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # a leaf that needs a gradient makes A part of the graph even if the parameters are frozen
            x = images.detach().requires_grad_(True)
            h = model(x)
            if not captured:
                raise ValueError(f"layer {layer!r} was not run by the model's forward pass")
            acts = captured[-1]
            if not isinstance(acts, Tensor) or acts.ndim != 4 or acts.shape[0] != images.shape[0]:
                shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
                raise ValueError(f"layer {layer!r} must output activations [B, C, u, v], got {shape}")
            if not isinstance(h, Tensor) or h.ndim != 2 or h.shape[0] != images.shape[0]:
                shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
                raise ValueError(f"the model must return representations [B, r], got {shape}")
            weights = _target_weights(targets, h.shape[0], h.shape[1], h.device, h.dtype)
            (grads,) = torch.autograd.grad((h * weights).sum(), acts)
    finally:
        handle.remove()
        model.train(was_training)
    acts = acts.detach()
    channel_weights = grads.mean(dim=(2, 3), keepdim=True)  # w_c: spatially averaged gradients
    cam = F.relu((channel_weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    cam = cam.squeeze(1).clamp_min(0.0)  # bilinear weights are non-negative; clamp only rounding
    if normalize:
        peak = cam.amax(dim=(1, 2), keepdim=True)
        cam = cam / torch.where(peak > 0, peak, torch.ones_like(peak))
    return cam


def discriminative_targets(h: Tensor, discriminative: Tensor, eps: float = 4.0) -> Tensor:
    r"""Target weights ``FloatTensor[N, r]``: :math:`W_{ij} = \mathbb{1}[j \in L_i \cap D]`.

    With these, :func:`grad_cam` maps :math:`t_i = \sum_{j \in L_i \cap D} h_{ij}`, the sample's
    highly activating discriminative features together (the paper's "heat map of the discriminative
    features"). Rows with an empty :math:`L_i \cap D` are all zero and give an all-zero map.

    Args:
        h: raw representations ``[N, r]``.
        discriminative: the set :math:`D` as a ``BoolTensor[r]``.
        eps: threshold of :math:`L_i` in standard deviations.
    """
    active = highly_activating(h, eps)  # validates h: float [N, r], finite
    check_mask(discriminative, h.shape[1])
    return (active & discriminative.to(active.device)[None, :]).to(h.dtype)
