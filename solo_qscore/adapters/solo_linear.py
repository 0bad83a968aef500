"""solo-learn main's own linear evaluation of a frozen backbone, as a second reference for "misclassified".

The Q-Score paper labels a validation sample misclassified by solo-learn's linear evaluation
(``main_linear.py``: SGD, 100 epochs); the library's report labels it with its own probe (standardised
frozen features, full-batch L-BFGS: :mod:`solo_qscore.probe.linear`). :func:`solo_linear_eval` trains
solo's :class:`solo.methods.linear.LinearModel` with a real Lightning ``Trainer`` and returns its
per-sample correctness in the order of :func:`solo_qscore.data.make_eval_loaders`' validation loader,
so ``correct[i]`` lines up with ``Q[i]`` of the report.

What is solo-learn's (installed ``solo`` package, called, not copied):

* ``LinearModel``: the classifier on the frozen backbone (``requires_grad`` off, the backbone in eval
  mode in every training step), cross-entropy, its ``configure_optimizers`` (SGD, ``MultiStepLR`` with
  gamma 0.1), its top-1 validation accuracy (``val_acc1``);
* ``solo.args.linear.parse_cfg``: its defaults, SGD momentum 0.9, the lr scaled by batch size / 256;
* ``main_linear.py``'s model set-up: ``make_contiguous``, channels-last, ``nn.CrossEntropyLoss`` (no
  mixup, cutmix or label smoothing: its configs' defaults);
* ``solo.data.classification_dataloader.prepare_dataloaders``: shuffled training batches with
  ``drop_last``, the validation set in order;
* the operations of its train-time pipeline (``prepare_transforms``: ``RandomResizedCrop`` with its
  scale (0.08, 1) and interpolation, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``), taken
  from the pipeline object itself;
* its linear configs' settings (solo-learn main's ``scripts/linear/imagenet-100/<method>.yaml``; it
  ships none for CIFAR): SGD, batch 256, weight decay 0, the lr of :data:`SOLO_LINEAR_LR`, the lr
  divided by 10 at epochs 60 and 80 of 100 (at 60 % and 80 % of ``epochs`` when fewer).

What is ours:

* the images: solo's ``prepare_datasets`` reads torchvision's CIFAR/STL files (md5-checked, whole
  splits) or image folders; our eval datasets read the same files when present, otherwise the offline
  stand-in (CIFAR-10 -> Fashion-MNIST at 32 px), with the same subsets as the Q-Score report;
* in the training pipeline, the crop size (``data.image_size``: 32 for CIFAR, as solo's) and the
  normalisation statistics (the pre-training's, ``dataset_stats`` of the data actually loaded: solo's
  own values for CIFAR);
* the validation inputs: the eval loader's items (bicubic resize to ``data.image_size``, ``ToTensor``,
  ``Normalize``: solo's CIFAR ``T_val`` plus a resize that is the identity at that size), the same
  inputs the report's features come from;
* the Trainer: CPU (or ``accelerator``), float32, no logger or checkpoints, validation once after the
  last epoch (solo validates every epoch for its logs only: no early stopping, so training is the
  same), the seed of the classifier's initialisation and of the shuffling and crops.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from solo_qscore.adapters.lightning import solo_lightning

__all__ = ["PAPER_EPOCHS", "SOLO_LINEAR_LR", "SoloLinearResult", "solo_linear_config", "solo_linear_eval",
           "solo_train_transform"]

#: The Q-Score paper's linear evaluation: 100 epochs (solo-learn's linear configs' ``max_epochs``).
PAPER_EPOCHS = 100
#: ``optimizer.lr`` of solo-learn main's linear configs (``scripts/linear/imagenet-100/<file>.yaml``, batch
#: 256), keyed by ``pretrain_method``; a method without a config gets :data:`DEFAULT_LR` (barlow's, the lowest).
SOLO_LINEAR_LR = {"barlow_twins": 0.1, "byol": 0.3, "deepclusterv2": 0.15, "dino": 0.3, "mocov2plus": 3.0,
                  "mocov3": 0.3, "nnclr": 0.3, "ressl": 3.0, "simclr": 1.0, "simsiam": 30.0, "swav": 0.15,
                  "vibcreg": 0.3, "vicreg": 0.3}
DEFAULT_LR = 0.1
_SOLO_PIPELINES = ("cifar10", "cifar100", "stl10", "imagenet100", "imagenet", "custom")
_SOLO_CLASS_COUNTS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100")


@dataclass(frozen=True)
class SoloLinearResult:
    """solo-learn's linear evaluation of one backbone: ``correct`` and ``targets`` in the eval loader's order."""

    correct: torch.Tensor  #: bool ``[N_val]``: the trained classifier's top-1 prediction is the label
    targets: torch.Tensor  #: long ``[N_val]``: the labels, in the eval loader's order
    accuracy: float  #: ``correct``'s mean (0..1)
    solo_val_acc1: float  #: solo's own ``val_acc1`` of the last epoch, / 100 (the same weights and images)
    epochs: int
    steps: int  #: optimiser steps taken
    num_train: int
    train_seconds: float  #: ``Trainer.fit`` wall time
    config: dict  #: solo's linear config after ``parse_cfg`` (optimizer, scheduler, ...)
    model: Any = field(repr=False, compare=False)  #: the trained ``LinearModel``


def solo_linear_config(method: str, data_cfg: Mapping[str, Any], num_classes: int, *, epochs: int = PAPER_EPOCHS,
                       batch_size: int = 256, lr: float | None = None, backbone_name: str = "resnet18",
                       num_workers: int = 0):
    """solo's linear config for ``method`` (its yaml's keys), through ``solo.args.linear.parse_cfg``."""
    from omegaconf import OmegaConf
    from solo.args.linear import parse_cfg

    from solo_qscore.config import OFFLINE_DATASETS

    dataset, root = str(data_cfg.get("dataset", "cifar10")), str(data_cfg.get("root", "datasets"))
    epochs = int(epochs)
    cfg = OmegaConf.create({
        "name": f"{method}-linear", "pretrained_feature_extractor": None, "pretrain_method": method,
        "backbone": {"name": backbone_name},
        # solo's checks know only its datasets (it reads the name for the class count, replaced below)
        "data": {"dataset": "cifar10" if dataset in OFFLINE_DATASETS else dataset, "train_path": root,
                 "val_path": root, "format": "image_folder", "num_workers": int(num_workers)},
        "optimizer": {"name": "sgd", "batch_size": int(batch_size),
                      "lr": float(SOLO_LINEAR_LR.get(method, DEFAULT_LR) if lr is None else lr), "weight_decay": 0},
        "scheduler": {"name": "step", "lr_decay_steps": [round(0.6 * epochs), round(0.8 * epochs)]},
        "checkpoint": {"enabled": False}, "auto_resume": {"enabled": False}, "wandb": {"enabled": False},
        "max_epochs": epochs, "devices": [0], "accelerator": "cpu", "strategy": "auto", "precision": "32-true",
    })
    OmegaConf.set_struct(cfg, False)
    cfg = parse_cfg(cfg)
    cfg.data.dataset, cfg.data.num_classes = dataset, int(num_classes)
    return cfg


def solo_train_transform(dataset: str, image_size: int, mean: Sequence[float], std: Sequence[float]):
    """solo's train-time linear pipeline (``prepare_transforms``) of ``dataset`` (CIFAR's for a dataset solo
    has none for), with our crop size and normalisation statistics; every other operation is solo's object."""
    from solo.data.classification_dataloader import prepare_transforms
    from torchvision import transforms as T

    solo_train, _ = prepare_transforms(dataset if dataset in _SOLO_PIPELINES else "cifar10")
    ops = []
    for op in solo_train.transforms:
        if isinstance(op, T.RandomResizedCrop):
            op = T.RandomResizedCrop(int(image_size), scale=op.scale, ratio=op.ratio,
                                     interpolation=op.interpolation, antialias=op.antialias)
        elif isinstance(op, T.Normalize):
            op = T.Normalize(tuple(mean), tuple(std))
        ops.append(op)
    return T.Compose(ops)


def _loaders(data_cfg: Mapping[str, Any], batch_size: int, num_workers: int):
    """solo's ``prepare_dataloaders`` over our eval datasets: training items through solo's train-time
    pipeline, validation items exactly as the eval loader gives them (same order)."""
    from solo.data.classification_dataloader import prepare_dataloaders

    from solo_qscore.data import TransformDataset, dataset_stats, make_eval_loaders

    train_eval, val_eval = make_eval_loaders(data_cfg, batch_size=batch_size)
    images = train_eval.dataset.dataset  # the (sub)set of images, before our eval transform
    mean, std = dataset_stats(images.name)
    transform = solo_train_transform(str(data_cfg.get("dataset", "cifar10")), int(data_cfg.get("image_size", 32)),
                                     mean, std)
    train_set = TransformDataset(images, transform)
    if len(train_set) < batch_size:
        raise ValueError(f"solo's linear evaluation drops incomplete batches: {len(train_set)} training images "
                         f"give no batch of {batch_size}; lower batch_size")
    return prepare_dataloaders(train_set, val_eval.dataset, batch_size=batch_size, num_workers=num_workers)


def _predict(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    correct, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            correct.append(model(x)["logits"].argmax(dim=1) == y)
            targets.append(y)
    return torch.cat(correct).bool(), torch.cat(targets).long()


def solo_linear_eval(backbone: torch.nn.Module, data_cfg: Mapping[str, Any], *, method: str = "simclr",
                     epochs: int = PAPER_EPOCHS, batch_size: int = 256, lr: float | None = None,
                     backbone_name: str = "resnet18", seed: int = 0, num_workers: int | None = None,
                     accelerator: str = "cpu", callbacks: Sequence[Any] = ()) -> SoloLinearResult:
    """Train solo-learn's ``LinearModel`` on a copy of ``backbone`` (frozen; the caller's is untouched) on the
    training split of ``data_cfg`` (a run view's ``data``), and score the validation split.

    ``method`` picks solo's lr (:data:`SOLO_LINEAR_LR`; ``lr`` overrides it, before solo's batch-size
    scaling); ``epochs`` defaults to the paper's 100. ``callbacks`` go to the Trainer. solo's steps compute
    top-5 accuracy too, so the data needs at least 5 classes (``ValueError`` otherwise).
    """
    from omegaconf import OmegaConf
    from solo.methods.linear import LinearModel
    from solo.utils.misc import make_contiguous

    pl = solo_lightning()
    epochs, batch_size = int(epochs), int(batch_size)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    workers = int(data_cfg.get("num_workers", 0) or 0) if num_workers is None else int(num_workers)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")  # solo's loaders pin memory, on a CPU too
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        train_loader, val_loader = _loaders(data_cfg, batch_size, workers)
        num_classes = int(train_loader.dataset.num_classes)
        if num_classes < 5:
            raise ValueError(f"solo's linear evaluation computes top-5 accuracy: the data has {num_classes} "
                             "classes, it needs at least 5")
        cfg = solo_linear_config(method, data_cfg, num_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                                 backbone_name=backbone_name, num_workers=workers)
        with torch.random.fork_rng():  # the caller's RNG is left as it was
            torch.manual_seed(int(seed))
            model = LinearModel(copy.deepcopy(backbone).cpu(), loss_func=torch.nn.CrossEntropyLoss(), cfg=cfg)
            make_contiguous(model)
            if not cfg.performance.disable_channel_last:
                model = model.to(memory_format=torch.channels_last)
            trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs, precision="32-true",
                                 logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, num_sanity_val_steps=0,
                                 check_val_every_n_epoch=epochs, callbacks=list(callbacks))
            start = time.time()
            trainer.fit(model, train_loader, val_loader)
            seconds = time.time() - start
        model = model.cpu()
        correct, targets = _predict(model, val_loader)
    return SoloLinearResult(
        correct=correct, targets=targets, accuracy=float(correct.float().mean()),
        solo_val_acc1=float(trainer.callback_metrics["val_acc1"]) / 100.0, epochs=epochs,
        steps=int(trainer.global_step), num_train=len(train_loader.dataset), train_seconds=seconds,
        config=OmegaConf.to_container(cfg, resolve=True), model=model)
