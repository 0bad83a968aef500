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
    """The settings of :mod:`solo_qscore.data`'s loaders for this run (no augmentation)."""
    data = cfg.data
    return {
        "dataset": str(data.dataset), "root": str(data.get("train_path") or "datasets"),
        "fallback": data.get("fallback"), "image_size": int(cfg.augmentations[0].crop_size),
        "batch_size": int(batch_size or cfg.probe.get("batch_size", 256)),
        "num_workers": int(data.get("num_workers", 0) or 0),
        "train_subset": data.get("train_subset"), "val_subset": data.get("val_subset"),
    }


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
    """The callbacks a run needs: activation statistics (refreshing D each epoch) and, when
    ``cfg.probe.enabled``, the Q-Score probe (its report written to ``output_dir/probe``).

    Args:
        seed_from_train_set: fill D by one pass over the train set before training (further-training
            a pre-trained encoder, as the paper does), so the regulariser is on from the first step.
    """
    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.callbacks import ActivationStatisticsCallback, QScoreProbeCallback
    from solo_qscore.data import make_eval_loaders

    cfg = with_plugin_defaults(cfg)
    qcfg = cfg.qscore
    band = (float(qcfg.band[0]), float(qcfg.band[1]))
    exact = qcfg.statistics == "dataloader"
    needs_loaders = cfg.probe.enabled or exact or seed_from_train_set
    train_loader = val_loader = None
    if needs_loaders:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback warning was given when training data loaded
            train_loader, val_loader = make_eval_loaders(eval_data_config(cfg))
    callbacks: list = [ActivationStatisticsCallback(
        eps=float(qcfg.eps), band=band, dataloader=train_loader if (exact or seed_from_train_set) else None,
        exact=exact)]
    if cfg.probe.enabled:
        out = None if output_dir is None else str(Path(output_dir) / "probe")
        callbacks.append(QScoreProbeCallback(
            train_loader, val_loader, every_n_epochs=int(cfg.probe.every_n_epochs), eps=float(qcfg.eps),
            band=band, out_dir=out,
            report_kwargs={"probe_kwargs": {"max_iter": int(cfg.probe.max_iter),
                                            "weight_decay": float(cfg.probe.weight_decay)},
                           "class_names": dataset_class_names(train_loader.dataset)}))
    return callbacks


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

    from solo_qscore.data import LabelledSubset, load_dataset, subset_indices
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


def read_checkpoint(path: str | Path, trusted: bool = False, lightning: bool = True) -> dict:
    """``torch.load`` a checkpoint safely: ``weights_only=True`` (tensors and plain containers, no
    code runs). ``trusted=True`` allows arbitrary pickles, for files you made yourself; it warns."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file; expected a Lightning checkpoint (.ckpt) of a solo-qscore run")
    if trusted:
        warnings.warn(f"loading {path} with weights_only=False (--trust-checkpoint): it can run code", stacklevel=2)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({reason})") from err
    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch's message carries terminal colour codes
        text = plain.strip().splitlines()[0] if plain.strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects that could run code ({text[:160]}). "
                "Only load checkpoints you trust, with --trust-checkpoint") from err
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {text[:160]}); "
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
    cfg = with_plugin_defaults(OmegaConf.create(meta["config"]))  # fills sections added since
    model = build_model(cfg)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the run's own config: {str(err).splitlines()[0]}") from err
    model.to(map_location)
    return model, cfg, checkpoint


def source_config(checkpoint: dict, path: str | Path = "checkpoint") -> DictConfig:
    """The composed config a run started from (before solo's ``parse_cfg``), for further training."""
    meta = checkpoint.get(CHECKPOINT_KEY) or {}
    source = meta.get("source_config")
    if not source:
        raise CheckpointError(f"{path}: holds no source config (written by a pretrain of another version)")
    cfg = OmegaConf.create(source)
    OmegaConf.set_struct(cfg, False)
    return with_plugin_defaults(cfg)


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
