"""solo-learn main (1.0.6: ``lightning.pytorch``, Hydra configs, ``Method(cfg)``) adapter.

Everything specific to solo-learn main lives here; the core never imports it. A user who keeps
solo-learn's own ``main_pretrain.py`` adds two lines::

    model = with_qscore(METHODS[cfg.method])(cfg)
    callbacks += qscore_callbacks(cfg)

* :func:`with_qscore` returns a subclass of any solo-learn method that captures the backbone
  features of every crop during ``training_step`` (a forward hook on ``self.backbone``: gradients
  kept, no second forward pass) and

  - adds the Q-Score regulariser (Kalibhat et al., AAAI 2024, eq. 3) when ``cfg.qscore.enabled``;
  - for the InfoNCE methods (SimCLR, MoCo V2+, NNCLR, MoCo V3) computes the contrastive term with
    IFM (Robinson et al., NeurIPS 2021, eq. 2) when ``cfg.ifm.enabled``, so the total is
    ``(L + alpha*L_eps)/(1 + alpha)`` plus solo's own online-classifier loss;
  - adds the lasso baseline (``cfg.lasso``) or replaces SimCLR's loss by the hard-negative loss
    (``cfg.hard_negatives``; Robinson et al., ICLR 2021).

  The discriminative set is the boolean buffer ``qscore_discriminative`` (saved in checkpoints);
  it is empty, so the regulariser is off, until the activation-statistics callback fills it.
* :func:`qscore_callbacks` returns the statistics and probe callbacks a run needs.
* :func:`prepare_config`, :func:`build_model`, :func:`make_pretrain_loader` and :func:`load_run`
  are what ``solo-qscore pretrain`` and the analysis commands use.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from solo_qscore.config import (
    OFFLINE_DATASETS,
    ConfigError,
    check_method_options,
    to_container,
    with_plugin_defaults,
)
from solo_qscore.core.regularizer import lasso_penalty, qscore_regularizer_terms
from solo_qscore.losses.hard_negatives import hard_negative_simclr_loss
from solo_qscore.losses.ifm import ifm_moco_loss, ifm_nnclr_loss, ifm_simclr_loss

CHECKPOINT_KEY = "solo_qscore"
CHECKPOINT_FORMAT = 2  # 1: solo-learn 1.0.2 runs (retired); 2: solo-learn main
SOLO_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "custom")
_FOLDER_DATASETS = ("custom", "imagenet", "imagenet100")  # solo_qscore.data.FOLDER_DATASETS: read from folders
#: the list of unreadable images a run skipped (data.bad_images=skip), in its output folder
SKIPPED_IMAGES_FILE = Path("logs") / "skipped_images.jsonl"
_SOLO_DATA_MARKERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}


def solo_version() -> str:
    import solo

    return getattr(solo, "__version__", "unknown")


# -- configuration -----------------------------------------------------------------------------
def _global_batch(z: Tensor, indexes: Tensor) -> dict[str, Any]:
    """Under DDP, the candidates of every process for SimCLR's loss (as solo's ``simclr_loss_func``):
    ``z`` gathered with gradients (solo's ``GatherLayer``), the indexes, and this process's offset."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1):
        return {}
    from solo.utils.misc import gather

    return {"candidates": gather(z), "candidate_indexes": gather(indexes),
            "offset": torch.distributed.get_rank() * z.shape[0]}


def _cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def adapt_to_machine(cfg: DictConfig) -> list[str]:
    """Run a GPU config on a machine without one: CPU, one device, bf16 where the CPU has it.

    solo-learn's configs ask for ``accelerator: gpu``, ``devices: [0]``, ``strategy: ddp`` and
    ``precision: 16-mixed``; on a CPU-only machine these become ``cpu``, ``1``, ``auto`` and
    ``bf16-mixed`` (AMX/AVX512-BF16 CPUs; float32 otherwise). Returns what was changed.
    """
    changes: list[str] = []
    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        cfg.accelerator = "cpu"
        changes.append(f"accelerator {accelerator} -> cpu (no GPU here)")
    if str(cfg.get("accelerator")) == "cpu":
        devices = cfg.get("devices", 1)
        if not isinstance(devices, int) or isinstance(devices, bool):
            cfg.devices = 1
            shown = OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices
            changes.append(f"devices {shown} -> 1")
        if cfg.get("strategy") == "ddp" and cfg.devices == 1 and int(cfg.get("num_nodes", 1) or 1) == 1:
            cfg.strategy = "auto"
            changes.append("strategy ddp -> auto (one process)")
        if cfg.get("sync_batchnorm") and cfg.devices == 1:
            cfg.sync_batchnorm = False
        precision = str(cfg.get("precision", "32-true"))
        if precision in ("16", "16-mixed"):
            cfg.precision = "bf16-mixed" if _cpu_supports_bf16() else "32-true"
            changes.append(f"precision {precision} -> {cfg.precision} (CPU)")
    return changes


def eval_data_config(cfg: DictConfig, batch_size: Optional[int] = None) -> dict[str, Any]:
    """The settings of :mod:`solo_qscore.data`'s loaders for this run (no augmentation).

    solo-learn's image folders (``custom``, ``imagenet``, ``imagenet100``) add their validation folder
    (``val_root``: ``data.val_path``; none: a held-out part of the training folder), ``no_labels`` and
    ``format`` (``dali`` data is an image folder too, read here as solo-learn's own validation loader
    reads it).
    """
    data = cfg.data
    settings = {
        "dataset": str(data.dataset), "root": str(data.get("train_path") or "datasets"),
        "fallback": data.get("fallback"), "image_size": int(cfg.augmentations[0].crop_size),
        "batch_size": int(batch_size or cfg.probe.get("batch_size", 256)),
        "num_workers": int(data.get("num_workers", 0) or 0),
        "train_subset": data.get("train_subset"), "val_subset": data.get("val_subset"),
        "bad_images": str(data.get("bad_images") or "error"),
    }
    if str(data.dataset) in _FOLDER_DATASETS:
        settings.update(val_root=None if data.get("val_path") is None else str(data.val_path),
                        no_labels=bool(data.get("no_labels", False)), format=_data_format(cfg))
    return settings


def _data_format(cfg: DictConfig) -> str:
    return str(cfg.data.get("format") or "image_folder")


def _check_image_folders(cfg: DictConfig) -> None:
    """solo-learn's image-folder datasets, checked before solo-learn reads them (it fails deep inside,
    or not at all: a flat folder trains as one class). A flat ``custom`` folder is unlabelled
    (``data.no_labels`` set, as solo-learn needs for it)."""
    from solo_qscore.data.datasets import class_folders

    data, dataset = cfg.data, str(cfg.data.dataset)
    if dataset not in _FOLDER_DATASETS:
        return
    if _data_format(cfg) == "h5":
        if cfg.probe.enabled or cfg.qscore.statistics == "dataloader":
            _check_eval_format(cfg)  # refused now, not after the model is built
        return
    root = Path(str(data.get("train_path") or ""))
    shape = "one sub-folder of images per class, or images directly in it with data.no_labels=true"
    if not data.get("train_path") or not root.is_dir():
        raise ConfigError(f"config key 'data.train_path': {root} is not a folder (data.dataset={dataset} reads "
                          f"an image folder: {shape})")
    if data.get("val_path") is not None and not Path(str(data.val_path)).is_dir():
        raise ConfigError(f"config key 'data.val_path': {data.val_path} is not a folder (one sub-folder of images "
                          "per class, as data.train_path); data.val_path=null holds out a part of data.train_path "
                          "for the probe")
    classes = class_folders(root)
    if dataset != "custom" and not classes:
        raise ConfigError(f"config key 'data.train_path': {root} has no class sub-folders, which "
                          f"data.dataset={dataset} needs; for unlabelled images use data.dataset=custom")
    if not classes:
        data.no_labels = True  # solo-learn reads a flat folder only as unlabelled images
    elif data.get("no_labels") and not _has_image_files(root):
        raise ConfigError(f"config key 'data.no_labels': true reads the images directly in {root}, but it holds "
                          f"only sub-folders ({', '.join(classes[:5])}); drop data.no_labels to use them as classes")


def _has_image_files(folder: Path) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    with os.scandir(folder) as entries:
        return any(e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)


def _solo_data_present(cfg: DictConfig) -> bool:
    dataset, root = str(cfg.data.dataset), Path(str(cfg.data.train_path or "datasets"))
    if dataset in _SOLO_DATA_MARKERS:
        return (root / _SOLO_DATA_MARKERS[dataset]).is_dir()
    return dataset in SOLO_DATASETS and root.is_dir()


def prepare_config(cfg: DictConfig) -> DictConfig:
    """solo-learn's ``parse_cfg`` (defaults, crops, lr scaling) for a composed run config.

    Datasets solo-learn does not know (our offline ones, or CIFAR's offline stand-in) get their
    class count from :mod:`solo_qscore.data`. Call once per run: it scales the learning rate.
    """
    from solo.args.pretrain import parse_cfg

    cfg = with_plugin_defaults(cfg)
    check_method_options(cfg)
    dataset = str(cfg.data.dataset)
    if dataset not in SOLO_DATASETS and dataset not in OFFLINE_DATASETS:
        raise ConfigError(f"config key 'data.dataset': unknown dataset {dataset!r}; choose one of "
                          f"{', '.join(SOLO_DATASETS + OFFLINE_DATASETS)}")
    _check_image_folders(cfg)
    devices = cfg.get("devices", 1)
    if isinstance(devices, int):  # solo scales the lr by len(devices)
        cfg.devices = [0] * devices
    if dataset in OFFLINE_DATASETS:
        cfg.data.dataset = "cifar10"  # solo's own checks know only its datasets; restored below
    try:
        cfg = parse_cfg(cfg)
    except AssertionError as err:
        reason = err or "an assertion in solo.args.pretrain failed"
        raise ConfigError(f"solo-learn rejected the config: {reason}") from err
    finally:
        cfg.data.dataset = dataset
    if isinstance(devices, int):
        cfg.devices = devices
    if dataset in OFFLINE_DATASETS or not _solo_data_present(cfg):
        from solo_qscore.data import num_classes_of

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg.data.num_classes = num_classes_of(eval_data_config(cfg))
    return cfg


# -- the method wrapper ------------------------------------------------------------------------
def _cifar_stem(backbone: torch.nn.Module) -> None:
    backbone.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    backbone.maxpool = torch.nn.Identity()


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
        # solo gives CIFAR a 3x3 stem without max-pool; our 32 px offline datasets need the same
        if not (self.cfg.data.dataset in OFFLINE_DATASETS and self.backbone_name.startswith("resnet")
                and int(self.cfg.augmentations[0].crop_size) <= 64):
            return
        _cifar_stem(self.backbone)
        momentum = getattr(self, "momentum_backbone", None)
        if momentum is not None:
            _cifar_stem(momentum)
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
                loss = self._ifm_training_step(batch, batch_idx)
            elif self.cfg.hard_negatives.enabled:
                hn = self.cfg.hard_negatives
                loss = self._simclr_step(batch, batch_idx, lambda z, idx: hard_negative_simclr_loss(
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
        if self.cfg.lasso.enabled:
            # the Q-Score paper's baseline (Table 1): an L1 penalty on the normalised representations
            penalty = lasso_penalty(features, weight=float(self.cfg.lasso.weight), validate=False)
            loss = loss + penalty
            self.log("train_lasso", penalty, on_step=True, on_epoch=True)
        return loss

    # -- IFM ---------------------------------------------------------------------------------
    def _ifm_kwargs(self) -> dict[str, Any]:
        ifm = self.cfg.ifm
        # validate=False: no host sync per step (the inputs come from the module, the loss is checked by Lightning)
        kwargs: dict[str, Any] = {"epsilon": float(ifm.epsilon), "alpha": float(ifm.alpha), "validate": False}
        if ifm.variant != "default":
            kwargs.update(variant=str(ifm.variant), pre_norm_steps=int(ifm.pre_norm_steps))
        return kwargs

    def _ifm_training_step(self, batch, batch_idx) -> Tensor:
        method, kw = self.solo_method_name, self._ifm_kwargs()
        if method == "simclr":
            return self._simclr_step(batch, batch_idx,
                                     lambda z, idx: ifm_simclr_loss(z, idx, self.temperature, **kw,
                                                                    **_global_batch(z, idx)))
        if method == "mocov2plus":
            return self._ifm_mocov2plus_step(batch, batch_idx, kw)
        if method == "nnclr":
            return self._ifm_nnclr_step(batch, batch_idx, kw)
        return self._ifm_mocov3_step(batch, batch_idx, kw)

    def _simclr_step(self, batch, batch_idx, contrastive_loss) -> Tensor:
        """solo's SimCLR step with ``contrastive_loss(z, indexes)`` in place of its InfoNCE (+ classifier loss)."""
        from solo.methods.base import BaseMethod

        out = BaseMethod.training_step(self, batch, batch_idx)
        z = torch.cat(out["z"])
        nce_loss = contrastive_loss(z, batch[0].repeat(self.num_large_crops + self.num_small_crops))
        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        return nce_loss + out["loss"]

    def _ifm_mocov2plus_step(self, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
        """solo's symmetric MoCo V2+ loss (q1.k2 and q2.k1 against each view's queue), both terms with IFM."""
        from solo.methods.base import BaseMomentumMethod
        from solo.utils.misc import gather

        out = BaseMomentumMethod.training_step(self, batch, batch_idx)
        q1, q2 = out["z"]
        k1, k2 = out["momentum_z"]
        queue = self.queue.clone().detach()
        nce_loss = (ifm_moco_loss(q1, k2, queue[1], self.temperature, **kw)
                    + ifm_moco_loss(q2, k1, queue[0], self.temperature, **kw)) / 2
        self._dequeue_and_enqueue(torch.stack((gather(k1), gather(k2))))
        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        return nce_loss + out["loss"]

    def _ifm_nnclr_step(self, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
        """solo's NNCLR step with each ``nnclr_loss_func`` term in its IFM form."""
        from solo.methods.base import BaseMethod

        targets = batch[-1]
        out = BaseMethod.training_step(self, batch, batch_idx)
        z1, z2 = out["z"]
        p1, p2 = out["p"]
        idx1, nn1 = self.find_nn(z1)
        _, nn2 = self.find_nn(z2)
        nnclr_loss = (ifm_nnclr_loss(nn1, p2, self.temperature, **kw) / 2
                      + ifm_nnclr_loss(nn2, p1, self.temperature, **kw) / 2)
        nn_acc = (targets == self.queue_y[idx1]).sum() / targets.size(0)
        self.dequeue_and_enqueue(z1, targets)
        self.log_dict({"train_nnclr_loss": nnclr_loss, "train_nn_acc": nn_acc}, on_epoch=True, sync_dist=True)
        return nnclr_loss + out["loss"]

    def _ifm_mocov3_step(self, batch, batch_idx, kw: dict[str, Any]) -> Tensor:
        """solo's MoCo V3 loss: InfoNCE of q against the other view's keys (in-batch negatives),
        scaled by 2*tau as solo does, with IFM on the logits."""
        from solo.methods.base import BaseMomentumMethod
        from solo.utils.misc import concat_all_gather_no_grad

        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise ConfigError("IFM with MoCo V3 runs on one process only (its keys are gathered across processes)")
        out = BaseMomentumMethod.training_step(self, batch, batch_idx)
        Q, K = out["q"], out["momentum_k"]
        tau = self.temperature
        loss = (ifm_nnclr_loss(Q[0], concat_all_gather_no_grad(F.normalize(K[1], dim=1)), tau, **kw)
                + ifm_nnclr_loss(Q[1], concat_all_gather_no_grad(F.normalize(K[0], dim=1)), tau, **kw)) * (2 * tau)
        self.log_dict({"train_contrastive_loss": loss}, on_epoch=True, sync_dist=True)
        return loss + out["loss"]

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


# -- callbacks ---------------------------------------------------------------------------------
def qscore_callbacks(cfg: DictConfig, output_dir: Optional[str | Path] = None,
                     seed_from_train_set: bool = False) -> list:
    """The callbacks a run needs: a stop at the first non-finite training loss (which never lets a
    checkpoint of NaN weights be written), activation statistics (refreshing D each epoch) and, when
    ``cfg.probe.enabled``, the Q-Score probe (its report written to ``output_dir/probe``), and
    ``data.bad_images`` applied to every image folder the run reads (solo-learn's own datasets too).

    The probe needs labelled classes: on an image folder without them (``data.no_labels``, no class
    sub-folders, a single class) it is skipped with a one-line warning; the statistics and D are not.

    Args:
        seed_from_train_set: fill D by one pass over the train set before training (further-training
            a pre-trained encoder, as the paper does), so the regulariser is on from the first step.
    """
    from solo_qscore.adapters.lightning import rank_zero_warn
    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.callbacks import (
        ActivationStatisticsCallback,
        BadImagesCallback,
        FiniteLossCallback,
        QScoreProbeCallback,
    )
    from solo_qscore.data import SkippedImages, make_eval_loader, make_eval_loaders, missing_labels
    from solo_qscore.report.config import ReportConfig

    cfg = with_plugin_defaults(cfg)
    qcfg = cfg.qscore
    band = (float(qcfg.band[0]), float(qcfg.band[1]))
    exact = qcfg.statistics == "dataloader"
    data_cfg = eval_data_config(cfg)
    policy = _bad_images_policy(cfg)
    skipped = SkippedImages(None if output_dir is None else Path(output_dir) / SKIPPED_IMAGES_FILE)
    no_labels = missing_labels(data_cfg) if cfg.probe.enabled else None
    if no_labels is not None:
        rank_zero_warn(f"solo-qscore: the probe is skipped: {no_labels}, so it has no classes to predict; "
                       "the activation statistics and D are computed as usual")
    probe = bool(cfg.probe.enabled) and no_labels is None
    train_loader = val_loader = None
    if probe or exact or seed_from_train_set:
        _check_eval_format(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback warning was given when training data loaded
            if probe:
                train_loader, val_loader = make_eval_loaders(data_cfg, skipped=skipped)
            else:
                train_loader = make_eval_loader(data_cfg, skipped=skipped)
    callbacks: list = [FiniteLossCallback(), ActivationStatisticsCallback(  # first: stop a NaN loss before all else
        eps=float(qcfg.eps), band=band, dataloader=train_loader if (exact or seed_from_train_set) else None,
        exact=exact)]
    if probe:
        out = None if output_dir is None else str(Path(output_dir) / "probe")
        callbacks.append(QScoreProbeCallback(
            train_loader, val_loader, every_n_epochs=int(cfg.probe.every_n_epochs),
            config=ReportConfig.from_run(cfg), out_dir=out,
            class_names=dataset_class_names(train_loader.dataset)))
    callbacks.append(BadImagesCallback(policy, skipped))
    return callbacks


def _bad_images_policy(cfg: DictConfig) -> str:
    from solo_qscore.data import BAD_IMAGE_POLICIES

    policy = str(cfg.data.get("bad_images") or "error")
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"config key 'data.bad_images' must be one of {', '.join(BAD_IMAGE_POLICIES)}, "
                          f"got {policy!r}")
    return policy


def _check_eval_format(cfg: DictConfig) -> None:
    """Our evaluation loaders read image folders (``dali`` data is one); solo-learn's h5 files they do not."""
    if str(cfg.data.dataset) in _FOLDER_DATASETS and _data_format(cfg) == "h5":
        raise ConfigError("config key 'data.format': h5 files are read by solo-learn's own loaders only, not by "
                          "the probe's or qscore.statistics=dataloader's; use the image folders "
                          "(data.format=image_folder), or set probe.enabled=false to train with the statistics "
                          "of the training steps")


def validation_loader(cfg: DictConfig, batch_size: Optional[int] = None) -> Optional[torch.utils.data.DataLoader]:
    """The validation loader ``solo-qscore pretrain`` gives solo-learn's online classifier: the probe's
    validation split; ``None`` when the data has none (an unlabelled image folder, h5 files)."""
    from solo_qscore.data import make_eval_loader, missing_labels

    data_cfg = eval_data_config(cfg, batch_size=batch_size)
    if missing_labels(data_cfg) is not None or (str(cfg.data.dataset) in _FOLDER_DATASETS
                                                and _data_format(cfg) == "h5"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning was given when training data loaded
        return make_eval_loader(data_cfg, train=False)


# -- data --------------------------------------------------------------------------------------
class _IndexedCrops(torch.utils.data.Dataset):
    """``(index, [crops], label)`` items, solo-learn's pre-training batch format."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform
        self.name = getattr(dataset, "name", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return index, self.transform(image), int(label)


def make_pretrain_loader(cfg: DictConfig) -> torch.utils.data.DataLoader:
    """solo-learn's pre-training loader for ``cfg``: its augmentation pipelines (``cfg.augmentations``)
    over solo's own dataset (CIFAR, STL, image folders present on disk) or over one of our offline
    datasets (Fashion-MNIST, MNIST, Trifeature, digits_grid; or the ``data.fallback`` stand-in)."""
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        build_transform_pipeline,
        prepare_dataloader,
        prepare_datasets,
    )

    from solo_qscore.data import LabelledSubset, guard_images, load_dataset, subset_indices
    from solo_qscore.data.transforms import dataset_stats

    data = cfg.data
    use_solo = str(data.dataset) in SOLO_DATASETS and _solo_data_present(cfg)
    base = None
    if not use_solo:
        base = load_dataset(str(data.dataset), root=str(data.train_path or "datasets"), train=True,
                            image_size=int(cfg.augmentations[0].crop_size), fallback=data.get("fallback"))
    stats_name = str(data.dataset) if use_solo else base.name
    pipelines = []
    for aug in cfg.augmentations:
        aug = copy.deepcopy(aug)
        if not use_solo and "mean" not in aug:
            mean, std = dataset_stats(stats_name)
            OmegaConf.set_struct(aug, False)
            aug.mean, aug.std = list(mean), list(std)
        pipelines.append(NCropAugmentation(build_transform_pipeline(stats_name, aug), aug.num_crops))
    transform = FullTransformPipeline(pipelines)
    if use_solo:
        dataset = prepare_datasets(str(data.dataset), transform, train_data_path=data.train_path,
                                   data_format=data.get("format", "image_folder"),
                                   no_labels=bool(data.get("no_labels", False)),
                                   data_fraction=float(data.get("fraction", -1)))
        guard_images(dataset, _bad_images_policy(cfg))  # an unreadable file: named (or skipped), not OSError
        idx = subset_indices(len(dataset), data.get("train_subset"))
        if idx is not None:  # solo's items keep their own (unique) index
            dataset = torch.utils.data.Subset(dataset, idx.tolist())
    else:
        idx = subset_indices(len(base), data.get("train_subset"))
        # the same subset as the probe's train loader (make_eval_loaders)
        dataset = _IndexedCrops(base if idx is None else LabelledSubset(base, idx), transform)
    batch_size = int(cfg.optimizer.batch_size)
    if len(dataset) < batch_size:
        raise ConfigError(f"the training set has {len(dataset)} images, fewer than optimizer.batch_size="
                          f"{batch_size} (batches are dropped when incomplete); lower the batch size or "
                          "raise data.train_subset")
    loader = prepare_dataloader(dataset, batch_size=batch_size, num_workers=int(data.num_workers))
    loader.dataset_name = stats_name  # what was actually loaded (after a fallback)
    return loader


# -- checkpoints -------------------------------------------------------------------------------
def _checkpoint_globals() -> list:
    """Classes a solo-qscore checkpoint may hold besides tensors and plain containers."""
    import collections

    return [collections.OrderedDict, collections.defaultdict, dict, list, tuple, set]


class CheckpointError(ValueError):
    """A file is not a checkpoint this version can load; the message says what it is."""


def _first_line(err: BaseException) -> str:
    """``Type: first line`` of an exception, without the terminal colour codes torch puts in its messages;
    torch's weights-only boilerplate gives way to the line that says what went wrong."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    cause = next((line for line in lines if line.startswith(("Unsupported operand", "Unsupported global"))), None)
    text = cause or (lines[0] if lines else "")
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


# what torch.save writes: a zip archive (torch >= 1.6), or a pickle of protocol 2 (the legacy format)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _check_checkpoint_header(path: Path) -> None:
    """Random bytes, text or a truncated download are "not a checkpoint", said before torch reads a byte
    (torch's weights-only loader would call them unsafe pickles)."""
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head[:2] in _PICKLE_PROTOCOLS):
        raise CheckpointError(f"{path}: not a checkpoint: it is neither a torch zip archive nor a pickle (it starts "
                              f"with {head!r}); expected a Lightning .ckpt written by solo-qscore pretrain")


def read_checkpoint(path: str | Path, trusted: bool = False, lightning: bool = True) -> dict:
    """``torch.load`` a checkpoint safely: ``weights_only=True`` (tensors and plain containers, no
    code runs). ``trusted=True`` allows arbitrary pickles, for files you made yourself; it warns."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; expected a Lightning checkpoint (.ckpt) of a solo-qscore run")
    _check_checkpoint_header(path)
    if trusted:
        warnings.warn(f"loading {path} with weights_only=False (--trust-checkpoint): it can run code", stacklevel=2)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({_first_line(err)})") from err
    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:  # a real pickle that names a function or class outside tensors and plain containers
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects that could run code (the global "
                f"{unsafe.group(1)}); load it only if you trust the file, with --trust-checkpoint.") from err
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)}); "
                              "expected a Lightning .ckpt written by solo-qscore pretrain") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: a torch file holding a {type(checkpoint).__name__}, not a checkpoint")
    if lightning and "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: a torch file but not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_run(path: str | Path, trusted: bool = False, map_location: str = "cpu"
             ) -> tuple[torch.nn.Module, DictConfig, dict]:
    """Rebuild the module of a ``solo-qscore pretrain`` checkpoint: ``(model, config, checkpoint)``."""
    checkpoint = read_checkpoint(path, trusted=trusted)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or not meta.get("config"):
        raise CheckpointError(f"{path}: a Lightning checkpoint, but not of a solo-qscore run "
                              f"(no '{CHECKPOINT_KEY}' entry)")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: written by a solo-qscore for solo-learn 1.0.2 (retired); "
                              "re-train with solo-learn main")
    cfg = _saved_config(meta["config"], path, "run config")
    try:
        model = build_model(cfg)
    except (AssertionError, KeyError, AttributeError, TypeError, ValueError, OmegaConfBaseException) as err:
        raise CheckpointError(f"{path}: its saved run config does not build a {cfg.method} model ({_first_line(err)}); "
                              "was the file edited?") from err
    _check_weights_fit(model, checkpoint["state_dict"], path, f"{cfg.method} {cfg.backbone.name}")
    model.load_state_dict(checkpoint["state_dict"])
    model.to(map_location)
    return model, cfg, checkpoint


def _saved_config(config: Any, path: str | Path, what: str) -> DictConfig:
    """A config saved in a checkpoint, with the plugin sections (defaults for those added since), its
    method and backbone checked: a hand-edited or foreign file is a ``CheckpointError`` naming it."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its saved {what} is a {type(config).__name__}, not a config; "
                              "was the file edited?")
    try:
        cfg = OmegaConf.create(config)
        OmegaConf.set_struct(cfg, False)
        cfg = with_plugin_defaults(cfg)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its saved {what}: {err}") from err
    except OmegaConfBaseException as err:
        raise CheckpointError(f"{path}: its saved {what}: {_first_line(err)}") from err
    from solo.methods import METHODS
    from solo.methods.base import BaseMethod

    methods = [m for m in METHODS if m not in ("base", "linear")]
    if cfg.get("method") not in methods:
        raise CheckpointError(f"{path}: its saved {what} names method {cfg.get('method')!r}, which solo-learn "
                              f"does not have (it has {', '.join(methods)}); was the file edited?")
    backbone = OmegaConf.select(cfg, "backbone.name")
    if backbone not in BaseMethod._BACKBONES:
        raise CheckpointError(f"{path}: its saved {what} names backbone {backbone!r}, which solo-learn "
                              "does not have; was the file edited?")
    return cfg


def _check_weights_fit(model: torch.nn.Module, state: Any, path: str | Path, what: str) -> None:
    """``CheckpointError`` naming what is missing, extra or of another shape when ``state`` (a checkpoint's
    ``state_dict``) is not exactly the weights of ``model`` (built from the checkpoint's own config)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its 'state_dict' is a {type(state).__name__}, not a dict of weights")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and getattr(state[k], "shape", None) != own[k].shape]
    problems = []
    for label, keys in (("no weights for", missing), ("weights the model does not have:", unexpected),
                        ("weights of another shape:", mismatched)):
        if keys:
            modules = ", ".join(sorted({k.split(".")[0] for k in keys}))
            problems.append(f"{label} {modules} ({len(keys)} tensors, e.g. {keys[0]})")
    if problems:
        raise CheckpointError(f"{path}: its weights do not fit its own {what} config: {'; '.join(problems)}; "
                              "was the file edited?")


def check_resume_checkpoint(path: str | Path, cfg: DictConfig, trusted: bool = False) -> None:
    """``--resume``: refuse, in one line and before Lightning reads it, a checkpoint that is not of a
    solo-qscore run, or of a run of another method or backbone than ``cfg`` (Lightning would fail
    part-way with a traceback of mismatched weights)."""
    checkpoint = read_checkpoint(path, trusted=trusted)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"--resume {path}: a Lightning checkpoint, but not of a solo-qscore run (no "
                              f"'{CHECKPOINT_KEY}' entry); --resume continues a run of solo-qscore pretrain")
    saved = meta["config"]
    theirs = (saved.get("method"), (saved.get("backbone") or {}).get("name"))
    ours = (cfg.get("method"), OmegaConf.select(cfg, "backbone.name"))
    if theirs != ours:
        raise CheckpointError(f"--resume {path}: a checkpoint of a {theirs[0]} run ({theirs[1]}), but the config is "
                              f"{ours[0]} ({ours[1]}); resume with the config that run was trained with")


def source_config(checkpoint: dict, path: str | Path = "checkpoint") -> DictConfig:
    """The composed config a run started from (before solo's ``parse_cfg``), for further training."""
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: a Lightning checkpoint, but not of a solo-qscore run "
                              f"(no '{CHECKPOINT_KEY}' entry)")
    source = meta.get("source_config")
    if not source:
        raise CheckpointError(f"{path}: holds no source config (only checkpoints written by `solo-qscore pretrain` "
                              "have one); to further-train it, use `solo-qscore pretrain --config-name NAME --from "
                              f"{path} --qscore`")
    return _saved_config(source, path, "source config")


def load_weights_into(model: torch.nn.Module, path: str | Path, trusted: bool = False,
                      checkpoint: Optional[dict] = None) -> None:
    """Load a checkpoint's weights (and discriminative set) into ``model`` for further training
    (``checkpoint``: the file already read by :func:`read_checkpoint`, so it is not read twice)."""
    state = (checkpoint if checkpoint is not None else read_checkpoint(path, trusted=trusted))["state_dict"]
    model_state = model.state_dict()
    mismatched = [k for k, v in state.items() if k in model_state and model_state[k].shape != v.shape]
    missing = [k for k in model_state if k not in state and k != "qscore_discriminative"]
    unexpected = [k for k in state if k not in model_state]
    if mismatched or missing or unexpected:
        raise ConfigError(f"--from {path}: checkpoint does not match the config's method/backbone "
                          f"(mismatched {mismatched[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)


def _flat_augmentation(aug: DictConfig) -> dict[str, Any]:
    """solo-learn main's nested augmentation entry in :mod:`solo_qscore.data.transforms`' flat form."""
    get = lambda dotted, default: OmegaConf.select(aug, dotted, default=default)  # noqa: E731
    return {
        "num_crops": int(aug.num_crops), "crop_size": int(aug.crop_size),
        "min_scale": float(get("rrc.crop_min_scale", 0.08)), "max_scale": float(get("rrc.crop_max_scale", 1.0)),
        "brightness": float(get("color_jitter.brightness", 0.4)), "contrast": float(get("color_jitter.contrast", 0.4)),
        "saturation": float(get("color_jitter.saturation", 0.2)), "hue": float(get("color_jitter.hue", 0.1)),
        "color_jitter_prob": float(get("color_jitter.prob", 0.8)), "gray_scale_prob": float(get("grayscale.prob", 0.2)),
        "gaussian_prob": float(get("gaussian_blur.prob", 0.0)),
        "solarization_prob": float(get("solarization.prob", 0.0)),
        "horizontal_flip_prob": float(get("horizontal_flip.prob", 0.5)),
    }


def run_view(cfg: DictConfig) -> dict[str, Any]:
    """What the probe and the analysis commands need of a run, as plain dicts (no solo-learn types).

    ``data`` holds :mod:`solo_qscore.data`'s loader settings, ``augmentations`` the flat crop
    pipelines, and the plugin sections are copied as they are.
    """
    cfg = with_plugin_defaults(cfg)
    plain = to_container(cfg)
    dataset = str(cfg.data.dataset)
    cifar_stem = dataset in ("cifar10", "cifar100") or (dataset in OFFLINE_DATASETS
                                                         and int(cfg.augmentations[0].crop_size) <= 64)
    view = {k: plain.get(k) for k in ("method", "name", "seed", "output_dir", "method_kwargs", "qscore", "ifm",
                                       "lasso", "hard_negatives", "probe")}
    view["data"] = {**eval_data_config(cfg), "num_large_crops": plain["data"].get("num_large_crops"),
                    "num_small_crops": plain["data"].get("num_small_crops"),
                    "dataset_used": plain["data"].get("dataset_used")}
    view["augmentations"] = [_flat_augmentation(a) for a in cfg.augmentations]
    view["backbone"] = {"name": str(cfg.backbone.name), "cifar": cifar_stem}
    return view


def run_environment() -> dict[str, str]:
    """Versions recorded with a run."""
    import lightning

    return {"solo_learn": solo_version(), "lightning": lightning.__version__, "torch": torch.__version__,
            "pid": str(os.getpid())}
