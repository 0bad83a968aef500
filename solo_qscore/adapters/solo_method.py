"""The method wrapper: :func:`with_qscore` makes any solo-learn main method a Q-Score/IFM one.

``with_qscore(METHODS[cfg.method])`` is a subclass (``QScore<Method>``) that captures the backbone features
of every crop during ``training_step`` (a forward hook on ``self.backbone``: gradients kept, no second
forward pass) and

- adds the Q-Score regulariser (Kalibhat et al., AAAI 2024, eq. 3) when ``cfg.qscore.enabled``, logging
  its two terms and, on the steps Lightning logs, their gradient norms (which of the two acts);
- for the InfoNCE methods computes the contrastive term with IFM (:mod:`solo_qscore.adapters.solo_ifm`)
  when ``cfg.ifm.enabled``;
- adds the lasso baseline (``cfg.lasso``) or replaces SimCLR's loss by the hard-negative loss
  (``cfg.hard_negatives``; Robinson et al., ICLR 2021).

The discriminative set is the boolean buffer ``qscore_discriminative`` (saved in checkpoints); it is empty,
so the regulariser is off, until the activation-statistics callback fills it. The run config goes into
every checkpoint under :data:`CHECKPOINT_KEY` (:mod:`solo_qscore.adapters.solo_checkpoint` reads it back).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from solo_qscore.adapters.solo_backbone import SOLO_CIFAR_DATASETS, apply_cifar_stem, uses_cifar_stem
from solo_qscore.adapters.solo_config import solo_version
from solo_qscore.adapters.solo_ifm import ifm_training_step, simclr_step
from solo_qscore.config import ConfigError, check_method_options, to_container, with_plugin_defaults
from solo_qscore.core.regularizer import lasso_penalty, qscore_regularizer_terms, regularizer_term_gradient_norms
from solo_qscore.losses.hard_negatives import hard_negative_simclr_loss

CHECKPOINT_KEY = "solo_qscore"
CHECKPOINT_FORMAT = 2  # 1: solo-learn 1.0.2 runs (retired); 2: solo-learn main


def _labelled_loss(out: dict, targets: Tensor) -> dict:
    """solo's online-classifier loss as the mean cross-entropy over the labelled samples, 0 when there are
    none: solo's own (``ignore_index=-1``, mean) is NaN on a batch of unlabelled images (targets -1,
    ``data.no_labels``), which would stop the run (a non-finite loss) though the encoder's loss is fine.
    The same value otherwise; no host sync."""
    if "loss" not in out or "logits" not in out:
        return out
    labelled = (targets >= 0).sum().clamp(min=1)
    out["loss"] = F.cross_entropy(out["logits"], targets, ignore_index=-1, reduction="sum") / labelled
    return out


class QScoreMixin:
    """Placed before a solo-learn method class by :func:`with_qscore`; see the module docstring."""

    solo_method_name: str = ""

    def __init__(self, cfg: DictConfig) -> None:
        cfg = with_plugin_defaults(cfg)
        check_method_options(cfg)
        super().__init__(cfg)
        self._small_image_stem()
        self.register_buffer("qscore_discriminative", torch.zeros(self.features_dim, dtype=torch.bool))
        self._captured: list[Tensor] = []
        self._capturing = False
        self.qscore_batch_features: Optional[Tensor] = None
        self.backbone.register_forward_hook(self._capture_features)

    def _small_image_stem(self) -> None:
        """The CIFAR stem (:mod:`solo_qscore.adapters.solo_backbone`) where solo-learn did not give it."""
        data = self.cfg.data
        if (str(data.dataset) in SOLO_CIFAR_DATASETS  # solo's BaseMethod did
                or not uses_cifar_stem(str(data.dataset), self.backbone_name, self.cfg.augmentations[0].crop_size)):
            return
        apply_cifar_stem(self.backbone)
        momentum = getattr(self, "momentum_backbone", None)
        if momentum is not None:
            apply_cifar_stem(momentum)
            momentum.load_state_dict(self.backbone.state_dict())
            for p in momentum.parameters():
                p.requires_grad = False

    # -- solo's online classifier on unlabelled images ---------------------------------------
    def _base_shared_step(self, X: Tensor, targets: Tensor) -> dict:
        return _labelled_loss(super()._base_shared_step(X, targets), targets)

    def _shared_step_momentum(self, X: Tensor, targets: Tensor) -> dict:
        return _labelled_loss(super()._shared_step_momentum(X, targets), targets)

    # -- feature capture -------------------------------------------------------------------
    def _capture_features(self, module, inputs, output) -> None:
        if self._capturing:
            self._captured.append(output)

    def training_step(self, batch, batch_idx):
        self._captured = []
        self._capturing = True
        try:
            if self.cfg.ifm.enabled:
                loss = ifm_training_step(self, self.solo_method_name, batch, batch_idx)
            elif self.cfg.hard_negatives.enabled:
                hn = self.cfg.hard_negatives
                loss = simclr_step(self, batch, batch_idx, lambda z, idx: hard_negative_simclr_loss(
                    z, idx, self.temperature, beta=float(hn.beta), tau_plus=float(hn.tau_plus), validate=False))
            else:
                loss = super().training_step(batch, batch_idx)
        finally:
            self._capturing = False
        # float32 for the statistics and the regulariser, whatever the training precision
        features = torch.cat(self._captured).float() if self._captured else None
        self._captured = []
        # the statistics callback reads this (detached) instead of running the backbone again
        self.qscore_batch_features = None if features is None else features.detach()
        return self._add_regularisers(loss, features)

    def _add_regularisers(self, loss: Tensor, features: Optional[Tensor]) -> Tensor:
        if features is None:
            return loss
        qcfg = self.cfg.qscore
        if qcfg.enabled:
            terms = qscore_regularizer_terms(
                features, self.qscore_discriminative, eps=float(qcfg.eps),
                lambda1=float(qcfg.lambda1), lambda2=float(qcfg.lambda2), validate=False,
            )
            loss = loss + terms.total
            self.log_dict(
                {"train_qscore_reg": terms.total, "train_qscore_q_term": terms.qscore_term,
                 "train_qscore_l1_term": terms.l1_term, "train_qscore_batch_q": terms.q.mean()},
                on_step=True, on_epoch=True,
            )
            if self._logs_this_step():
                norms = regularizer_term_gradient_norms(features, terms)
                self.log_dict(
                    {"train_qscore_q_grad_norm": norms.qscore, "train_qscore_l1_grad_norm": norms.l1,
                     "train_qscore_grad_ratio": norms.ratio},
                    on_step=True, on_epoch=True,
                )
        if self.cfg.lasso.enabled:
            # the Q-Score paper's baseline (Table 1): an L1 penalty on the normalised representations
            penalty = lasso_penalty(features, weight=float(self.cfg.lasso.weight), validate=False)
            loss = loss + penalty
            self.log("train_lasso", penalty, on_step=True, on_epoch=True)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this training step's metrics (``(step + 1) % log_every_n_steps == 0``,
        its own rule). The regulariser's gradient norms (two extra small backward passes) are computed on
        these steps only: Lightning writes the last value of every key logged so far in the epoch, so
        norms of other steps would be written late, at a step they do not belong to. No trainer: never."""
        trainer = getattr(self, "_trainer", None)  # `self.trainer` raises when there is none
        every = getattr(trainer, "log_every_n_steps", 0) if trainer is not None else 0
        return every > 0 and (trainer.global_step + 1) % every == 0

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super_hook = getattr(super(), "on_save_checkpoint", None)
        if super_hook is not None:
            super_hook(checkpoint)
        # solo-learn saves no hyper-parameters: keep the (plain, resolved) run config to rebuild it
        # "config" is solo's parsed config (what rebuilds the module); "source_config" the composed one
        # before parse_cfg (what a further-training run starts from: lr not yet scaled)
        checkpoint[CHECKPOINT_KEY] = {"format": CHECKPOINT_FORMAT, "config": to_container(self.cfg),
                                      "source_config": getattr(self, "source_config", None),
                                      "solo_version": solo_version()}


def method_name(method_cls: type) -> str:
    """The key of ``method_cls`` in solo-learn's ``METHODS`` registry."""
    from solo.methods import METHODS

    for name, cls in METHODS.items():
        if cls is method_cls:
            return name
    raise ConfigError(f"{method_cls.__name__} is not one of solo-learn's methods (solo.methods.METHODS)")


@functools.cache
def with_qscore(method_cls: type) -> type:
    """``QScore<Method>``: ``method_cls`` (a solo-learn main method class) with Q-Score, IFM, lasso
    and hard negatives, switched by the ``qscore``/``ifm``/``lasso``/``hard_negatives`` config sections."""
    if isinstance(method_cls, type) and issubclass(method_cls, QScoreMixin):
        return method_cls
    name = method_name(method_cls)
    return type(f"QScore{method_cls.__name__}", (QScoreMixin, method_cls),
                {"solo_method_name": name, "__module__": __name__, "__doc__": QScoreMixin.__doc__})


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The module of ``cfg.method`` wrapped by :func:`with_qscore`, laid out as solo's script does."""
    from solo.methods import METHODS
    from solo.utils.misc import make_contiguous

    model = with_qscore(METHODS[cfg.method])(cfg)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)
    return model

