"""solo-learn 1.0.2 adapter: Q-Score regularisation and IFM as a mixin over solo's method classes.

Everything solo-learn-specific lives in ``solo_qscore.adapters``; the core never imports it.

* :class:`QScoreIFMMixin` captures the backbone features of every crop during ``training_step``
  (a forward hook on ``self.encoder``: no second forward pass, gradients kept), adds
  :func:`~solo_qscore.qscore_regularizer_terms` when Q-Score is on, and, for InfoNCE methods
  with IFM on, computes the contrastive term with the IFM loss instead of solo's own, so the
  total is ``(L + alpha*L_eps)/(1 + alpha)`` plus solo's online-classifier loss.
* ``hard_negatives.enabled`` (SimCLR only, not with IFM) computes SimCLR's contrastive term with
  :func:`~solo_qscore.hard_negatives.hard_negative_simclr_loss` (Robinson et al., ICLR 2021)
  instead of solo's InfoNCE, plus solo's online-classifier loss.
* ``lasso.enabled`` adds the paper's lasso baseline, :func:`~solo_qscore.lasso_penalty`, on the
  same captured features.
* The discriminative set is the boolean buffer ``qscore_discriminative`` (in checkpoints). It is
  empty, so the regulariser is off, until the activation-statistics callback fills it at the end
  of the first epoch (or before training, when further-training from a checkpoint).
* :func:`build_method` turns a run config (``solo_qscore.config``) into a module.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_qscore.adapters import solo_v1_compat  # noqa: F401  (patches solo on import)
from solo_qscore.backbone import find_backbone
from solo_qscore.config import ConfigError
from solo_qscore.hard_negatives import hard_negative_simclr_loss
from solo_qscore.ifm import IFM_METHODS, ifm_moco_loss, ifm_nnclr_loss, ifm_simclr_loss
from solo_qscore.regularizer import lasso_penalty, qscore_regularizer_terms

CHECKPOINT_KEY = "solo_qscore"


def solo_init_parameters(solo_cls: type) -> set[str]:
    """Named ``__init__`` arguments of a solo-learn class and its solo-learn bases (which receive
    the rest through ``**kwargs``)."""
    names: set[str] = set()
    for klass in solo_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or not klass.__module__.startswith("solo."):
            continue
        for param in list(inspect.signature(init).parameters.values())[1:]:
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                names.add(param.name)
    return names


def method_classes() -> dict[str, type]:
    """solo-learn 1.0.2's method classes by config name."""
    from solo.methods import BYOL, DINO, NNCLR, BarlowTwins, MoCoV2Plus, SimCLR, SimSiam, SwAV, VICReg

    return {
        "simclr": SimCLR, "mocov2plus": MoCoV2Plus, "byol": BYOL, "dino": DINO, "simsiam": SimSiam,
        "vicreg": VICReg, "barlow_twins": BarlowTwins, "swav": SwAV, "nnclr": NNCLR,
    }


class QScoreIFMMixin:
    """Mixin placed before a solo-learn method class; see the module docstring."""

    def __init__(self, *, qscore: dict | None = None, ifm: dict | None = None, lasso: dict | None = None,
                 hard_negatives: dict | None = None, run_config: dict | None = None, **solo_kwargs: Any) -> None:
        super().__init__(**solo_kwargs)
        self.qscore_cfg = dict(qscore or {"enabled": False})
        self.ifm_cfg = dict(ifm or {"enabled": False})
        self.lasso_cfg = dict(lasso or {"enabled": False})
        self.hard_negatives_cfg = dict(hard_negatives or {"enabled": False})
        self.run_config = run_config
        method = getattr(type(self), "solo_method_name", None)
        if self.ifm_cfg.get("enabled") and method not in IFM_METHODS:
            raise ConfigError(
                f"IFM applies to InfoNCE methods only (supported: {', '.join(IFM_METHODS)}); got '{method}'"
            )
        if self.ifm_cfg.get("enabled") and getattr(self, "supervised", False):
            raise ConfigError("IFM is not defined for supervised SimCLR (method_kwargs.supervised=true)")
        if self.hard_negatives_cfg.get("enabled"):
            if method != "simclr":
                raise ConfigError(f"hard negative sampling is a SimCLR loss; got '{method}' "
                                  "(config key 'hard_negatives.enabled')")
            if self.ifm_cfg.get("enabled"):
                raise ConfigError("config keys 'hard_negatives.enabled' and 'ifm.enabled' cannot both be true")
            if getattr(self, "supervised", False):
                raise ConfigError("hard negative sampling is not defined for supervised SimCLR "
                                  "(method_kwargs.supervised=true)")
        self.register_buffer("qscore_discriminative", torch.zeros(self.features_dim, dtype=torch.bool))
        self._captured: list[Tensor] = []
        self._capturing = False
        find_backbone(self).register_forward_hook(self._capture_features)

    # -- feature capture -------------------------------------------------------------------
    def _capture_features(self, module, inputs, output) -> None:
        if self._capturing:
            self._captured.append(output)

    @property
    def qscore_enabled(self) -> bool:
        return bool(self.qscore_cfg.get("enabled"))

    def training_step(self, batch, batch_idx):
        self._captured = []
        self._capturing = True
        try:
            if self.ifm_cfg.get("enabled"):
                loss = self._ifm_training_step(batch, batch_idx)
            elif self.hard_negatives_cfg.get("enabled"):
                loss = self._hard_negative_training_step(batch, batch_idx)
            else:
                loss = super().training_step(batch, batch_idx)
        finally:
            self._capturing = False
        features = torch.cat(self._captured) if self._captured else None
        self._captured = []
        # the statistics callback reads this (detached) instead of running the backbone again
        self.qscore_batch_features = None if features is None else features.detach()
        if self.qscore_enabled and features is not None:
            cfg = self.qscore_cfg
            terms = qscore_regularizer_terms(
                features, self.qscore_discriminative, eps=cfg.get("eps", 4.0),
                lambda1=cfg.get("lambda1", 1e-4), lambda2=cfg.get("lambda2", 1e-4), validate=False,
            )
            loss = loss + terms.total
            self.log_dict(
                {"train_qscore_reg": terms.total, "train_qscore_q_term": terms.qscore_term,
                 "train_qscore_l1_term": terms.l1_term, "train_qscore_batch_q": terms.q.mean()},
                on_step=True, on_epoch=True,
            )
        if self.lasso_cfg.get("enabled") and features is not None:
            # the paper's baseline (Table 1): an L1 penalty on the normalised representations
            penalty = lasso_penalty(features, weight=self.lasso_cfg.get("weight", 1e-4), validate=False)
            loss = loss + penalty
            self.log("train_lasso", penalty, on_step=True, on_epoch=True)
        return loss

    # -- IFM ---------------------------------------------------------------------------------
    def _ifm_training_step(self, batch, batch_idx) -> Tensor:
        from solo.methods.base import BaseMomentumMethod
        from solo.utils.misc import gather

        cfg = self.ifm_cfg
        eps, alpha = float(cfg.get("epsilon", 0.1)), float(cfg.get("alpha", 1.0))
        method = type(self).solo_method_name
        if method == "simclr":
            return self._simclr_step(
                batch, batch_idx, lambda z, idx: ifm_simclr_loss(z, idx, self.temperature, epsilon=eps, alpha=alpha))
        if method == "nnclr":
            return self._ifm_nnclr_step(batch, batch_idx, eps, alpha)
        # mocov2plus: solo's symmetric loss, both terms perturbed (SPEC §3)
        out = BaseMomentumMethod.training_step(self, batch, batch_idx)
        feats1, feats2 = out["feats"]
        momentum_feats1, momentum_feats2 = out["momentum_feats"]
        q1 = F.normalize(self.projector(feats1), dim=-1)
        q2 = F.normalize(self.projector(feats2), dim=-1)
        with torch.no_grad():
            k1 = F.normalize(self.momentum_projector(momentum_feats1), dim=-1)
            k2 = F.normalize(self.momentum_projector(momentum_feats2), dim=-1)
        queue = self.queue.clone().detach()
        nce_loss = (
            ifm_moco_loss(q1, k2, queue[1], self.temperature, epsilon=eps, alpha=alpha)
            + ifm_moco_loss(q2, k1, queue[0], self.temperature, epsilon=eps, alpha=alpha)
        ) / 2
        self._dequeue_and_enqueue(torch.stack((gather(k1), gather(k2))))
        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        return nce_loss + out["loss"]

    def _hard_negative_training_step(self, batch, batch_idx) -> Tensor:
        """solo's SimCLR step with its InfoNCE replaced by the hard-negative loss (same views, projector)."""
        cfg = self.hard_negatives_cfg
        beta, tau_plus = float(cfg.get("beta", 1.0)), float(cfg.get("tau_plus", 0.1))
        return self._simclr_step(
            batch, batch_idx,
            lambda z, idx: hard_negative_simclr_loss(z, idx, self.temperature, beta=beta, tau_plus=tau_plus))

    def _simclr_step(self, batch, batch_idx, contrastive_loss) -> Tensor:
        """solo's SimCLR step with ``contrastive_loss(z, indexes)`` in place of its InfoNCE (+ classifier loss)."""
        from solo.methods.base import BaseMethod

        out = BaseMethod.training_step(self, batch, batch_idx)
        feats = out["feats"]
        z = torch.cat([self.projector(f) for f in feats])
        nce_loss = contrastive_loss(z, batch[0].repeat(len(feats)))
        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        return nce_loss + out["loss"]

    def _ifm_nnclr_step(self, batch, batch_idx, eps: float, alpha: float) -> Tensor:
        """solo's NNCLR step with each ``nnclr_loss_func`` term replaced by its IFM form."""
        from solo.methods.base import BaseMethod

        targets = batch[-1]
        out = BaseMethod.training_step(self, batch, batch_idx)
        feats1, feats2 = out["feats"]
        z1, z2 = self.projector(feats1), self.projector(feats2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        idx1, nn1 = self.find_nn(z1)
        _, nn2 = self.find_nn(z2)
        nnclr_loss = (
            ifm_nnclr_loss(nn1, p2, self.temperature, epsilon=eps, alpha=alpha) / 2
            + ifm_nnclr_loss(nn2, p1, self.temperature, epsilon=eps, alpha=alpha) / 2
        )
        nn_acc = (targets == self.queue_y[idx1]).sum() / targets.size(0)
        self.dequeue_and_enqueue(z1, targets)
        self.log_dict({"train_nnclr_loss": nnclr_loss, "train_nn_acc": nn_acc}, on_epoch=True, sync_dist=True)
        return nnclr_loss + out["loss"]

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super_hook = getattr(super(), "on_save_checkpoint", None)
        if super_hook is not None:
            super_hook(checkpoint)
        # solo-learn 1.0.2 saves no hyper-parameters: keep the run config to rebuild the module
        checkpoint[CHECKPOINT_KEY] = {"config": self.run_config, "solo_version": solo_v1_compat.SOLO_VERSION}


@functools.cache
def mixin_class(method: str) -> type:
    """``QScoreIFM<Method>``: the mixin over solo-learn's class for ``method`` (cached per name)."""
    classes = method_classes()
    if method not in classes:
        raise ConfigError(f"unknown method '{method}'; choose one of {', '.join(classes)}")
    base = classes[method]
    return type(f"QScoreIFM{base.__name__}", (QScoreIFMMixin, base),
                {"solo_method_name": method, "__module__": __name__})


def solo_kwargs(cfg: dict, num_classes: int, num_devices: int = 1) -> dict:
    """solo-learn 1.0.2 constructor arguments from a run config (lr scaled as solo's args do)."""
    opt, sched, data, trainer = cfg["optimizer"], cfg["scheduler"], cfg["data"], cfg["trainer"]
    scale = data["batch_size"] * num_devices / 256  # solo.args.utils: lr * batch_size * gpus / 256
    return {
        "encoder": cfg["backbone"]["name"],
        "num_classes": num_classes,
        "backbone_args": {k: cfg["backbone"][k] for k in ("cifar", "zero_init_residual")},
        "max_epochs": int(trainer.get("max_epochs") or 1),
        "batch_size": data["batch_size"],
        "optimizer": opt["name"],
        "lars": opt["lars"],
        "lr": opt["lr"] * scale,
        "weight_decay": opt["weight_decay"],
        "classifier_lr": opt["classifier_lr"],
        "exclude_bias_n_norm": opt["exclude_bias_n_norm"],
        "accumulate_grad_batches": int(trainer.get("accumulate_grad_batches") or 1),
        "extra_optimizer_args": dict(opt["extra_args"]),
        "scheduler": sched["name"],
        "min_lr": sched["min_lr"],
        "warmup_start_lr": sched["warmup_start_lr"],
        "warmup_epochs": sched["warmup_epochs"],
        "num_large_crops": data["num_large_crops"],
        "num_small_crops": data["num_small_crops"],
        "eta_lars": opt["eta_lars"],
        "grad_clip_lars": opt["grad_clip_lars"],
        "lr_decay_steps": sched["lr_decay_steps"],
        "knn_eval": False,
        **cfg["method_kwargs"],
    }


def build_method(cfg: dict, num_classes: int, num_devices: int = 1) -> torch.nn.Module:
    """The solo-learn module of ``cfg['method']`` with the Q-Score/IFM mixin, per the run config."""
    cls = mixin_class(cfg["method"])
    kwargs = solo_kwargs(cfg, num_classes, num_devices)
    solo_cls = method_classes()[cfg["method"]]
    unknown = sorted(set(cfg["method_kwargs"]) - solo_init_parameters(solo_cls))
    if unknown:
        raise ConfigError(
            f"config key 'method_kwargs': solo-learn's {solo_cls.__name__} takes no argument(s) {', '.join(unknown)}"
        )
    try:
        return cls(qscore=cfg["qscore"], ifm=cfg["ifm"], lasso=cfg["lasso"], hard_negatives=cfg["hard_negatives"],
                   run_config=cfg, **kwargs)
    except TypeError as err:
        raise ConfigError(f"config key 'method_kwargs' does not fit solo-learn's {cfg['method']}: {err}") from err


def load_method(checkpoint_path: str, map_location: str = "cpu", num_classes: int | None = None):
    """Rebuild a module saved by a ``solo-qscore pretrain`` run and load its weights and buffers."""
    checkpoint = torch.load(checkpoint_path, map_location=map_location, weights_only=False)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not meta or not meta.get("config"):
        raise ValueError(f"{checkpoint_path} was not written by solo-qscore (no '{CHECKPOINT_KEY}' entry)")
    from solo_qscore.config import load_config

    cfg = load_config(meta["config"])  # fills config sections added after the checkpoint was written
    state = checkpoint["state_dict"]
    if num_classes is None:
        num_classes = state["classifier.weight"].shape[0]
    model = build_method(cfg, num_classes)
    model.load_state_dict(state)
    return model, cfg, checkpoint
