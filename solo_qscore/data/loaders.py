"""DataLoaders for pre-training (solo-learn 1.0.2's batch format) and for evaluation (linear probe, Q-Score).

Subsets (``train_subset`` / ``val_subset``) are seeded random subsets drawn with the fixed
:data:`SUBSET_SEED`, independent of the run seed, so the pre-training loader and the
evaluation loaders always see the same training images.

solo-learn's image folders (``custom``, ``imagenet``, ``imagenet100``) without a validation folder
(``val_path`` null) get one for the probe: :data:`HELDOUT_FRACTION` of each class of the training
folder, seeded (:func:`heldout_split`); the probe's classifier is fit on the rest. The encoder
pre-trains on the whole folder (as solo-learn does), without its labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .bad_images import guard_images
from .datasets import FOLDER_DATASETS, class_folders
from .registry import load_dataset
from .transforms import NCropAugmentation, build_crop_pipelines, dataset_stats, eval_transform

__all__ = [
    "HELDOUT_FRACTION",
    "SUBSET_SEED",
    "LabelledSubset",
    "PretrainDataset",
    "TransformDataset",
    "heldout_split",
    "make_eval_loader",
    "make_eval_loaders",
    "missing_labels",
    "make_pretrain_loader",
    "num_classes_of",
    "subset_indices",
]

#: Seed of the random ``train_subset`` / ``val_subset`` choice (fixed, so every loader agrees).
SUBSET_SEED = 0
#: Part of each class of an image folder held out as the probe's validation set when there is no ``val_path``.
HELDOUT_FRACTION = 0.2


def subset_indices(n: int, k: int | None, seed: int = SUBSET_SEED) -> torch.Tensor | None:
    """Sorted indices of a seeded random ``k`` of ``n`` items; ``None`` (use all) if ``k`` is None or >= n."""
    if k is None:
        return None
    k = int(k)
    if k < 1:
        raise ValueError(f"subset size must be positive, got {k}")
    if k >= n:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:k].sort().values


class LabelledSubset(Dataset):
    """A subset that keeps ``name``, ``num_classes`` and ``targets`` of its base dataset."""

    def __init__(self, dataset: Dataset, indices: Sequence[int] | torch.Tensor) -> None:
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long)[self.indices]
        self.name = dataset.name
        self.num_classes = dataset.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


class PretrainDataset(Dataset):
    """Items ``(index, [crop_1, ..., crop_n], label)``, solo-learn 1.0.2's pre-training format."""

    def __init__(
        self, dataset: Dataset, n_crop_transform: Callable[[Image.Image], list[torch.Tensor]],
    ) -> None:
        self.dataset = dataset
        self.transform = n_crop_transform
        self.targets = getattr(dataset, "targets", None)
        self.name = getattr(dataset, "name", None)
        self.num_classes = getattr(dataset, "num_classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, list[torch.Tensor], int]:
        img, label = self.dataset[index]
        return index, self.transform(img), int(label)


class TransformDataset(Dataset):
    """Items ``(transform(image), label)``."""

    def __init__(self, dataset: Dataset, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform
        self.targets = getattr(dataset, "targets", None)
        self.name = getattr(dataset, "name", None)
        self.num_classes = getattr(dataset, "num_classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.dataset[index]
        return self.transform(img), int(label)


def heldout_split(targets: torch.Tensor, fraction: float = HELDOUT_FRACTION,
                  seed: int = SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(kept, held_out)`` indices: a seeded ``fraction`` of each class (at least one image of
    every class that has two or more) is held out."""
    gen = torch.Generator().manual_seed(int(seed))
    targets = torch.as_tensor(targets, dtype=torch.long)
    held = []
    for c in targets.unique().tolist():
        members = (targets == c).nonzero().flatten()
        k = max(1, round(fraction * len(members))) if len(members) >= 2 else 0
        held.append(members[torch.randperm(len(members), generator=gen)[:k]])
    mask = torch.zeros(len(targets), dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return (~mask).nonzero().flatten(), mask.nonzero().flatten()


def missing_labels(data_cfg: Mapping[str, object]) -> str | None:
    """Why the probe has no labelled classes to work with (an image folder that is unlabelled or has
    a single class); ``None`` when it has them (every dataset but such folders)."""
    name, root = str(data_cfg.get("dataset", "cifar10")).lower(), Path(str(data_cfg.get("root", "datasets")))
    if name not in FOLDER_DATASETS or not root.is_dir():
        return None
    classes = class_folders(root)
    if not classes:
        return f"{root} has no class sub-folders (unlabelled images)"
    if data_cfg.get("no_labels"):
        return "data.no_labels=true"
    if len(classes) == 1:
        return f"{root} has a single class sub-folder ({classes[0]})"
    return None


def _load(data_cfg: Mapping[str, object], train: bool, skipped=None) -> Dataset:
    name = str(data_cfg.get("dataset", "cifar10")).lower()
    heldout = name in FOLDER_DATASETS and not data_cfg.get("val_root") and missing_labels(data_cfg) is None
    dataset = load_dataset(
        name,
        root=Path(str(data_cfg.get("root", "datasets"))),
        train=train or heldout,
        image_size=int(data_cfg.get("image_size", 32)),
        fallback=data_cfg.get("fallback"),
        val_root=data_cfg.get("val_root"),
        no_labels=bool(data_cfg.get("no_labels", False)),
    )
    # an unreadable image file: refused naming it, or skipped and listed (data.bad_images)
    guard_images(dataset, str(data_cfg.get("bad_images", "error")), skipped)
    if not heldout:
        return dataset
    kept, held_out = heldout_split(dataset.targets)
    return LabelledSubset(dataset, kept if train else held_out)


def _subset(dataset: Dataset, k: int | None) -> Dataset:
    idx = subset_indices(len(dataset), k)
    return dataset if idx is None else LabelledSubset(dataset, idx)


def _loader_kwargs(data_cfg: Mapping[str, object]) -> dict:
    workers = int(data_cfg.get("num_workers", 0) or 0)
    return {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }


def make_pretrain_loader(
    data_cfg: Mapping[str, object], aug_cfgs: Sequence[Mapping[str, object]], seed: int = 0,
    shuffle: bool = True, drop_last: bool = True,
) -> DataLoader:
    """Pre-training loader; batches are ``[indexes LongTensor[B], [X_1, ..., X_n] (FloatTensor[B,3,s,s]),
    targets LongTensor[B]]``, one ``X`` per crop of ``aug_cfgs``.

    Uses ``data_cfg``'s dataset/root/fallback/image_size/train_subset/batch_size/num_workers;
    normalisation statistics are those of the dataset actually loaded (after a fallback).
    ``seed`` fixes the shuffling order and the augmentation RNG of the worker processes.
    """
    dataset = _subset(_load(data_cfg, train=True), data_cfg.get("train_subset"))
    mean, std = dataset_stats(dataset.name)
    pipelines = build_crop_pipelines(aug_cfgs, mean, std)
    large, small = data_cfg.get("num_large_crops"), data_cfg.get("num_small_crops")
    if large is not None and int(large) + int(small or 0) != len(pipelines):
        raise ValueError(
            f"data.num_large_crops + data.num_small_crops = {int(large) + int(small or 0)} but the "
            f"augmentations produce {len(pipelines)} crops (sum of num_crops)"
        )
    batch_size = int(data_cfg.get("batch_size", 256))
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the training set has {len(dataset)} images, fewer than batch_size={batch_size}, "
            "so drop_last would leave no batch; lower data.batch_size or raise data.train_subset"
        )
    return DataLoader(
        PretrainDataset(dataset, NCropAugmentation(pipelines)),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(int(seed)),
        **_loader_kwargs(data_cfg),
    )


def _eval_loader(data_cfg: Mapping[str, object], ds: Dataset, key: str, batch_size: int | None) -> DataLoader:
    ds = _subset(ds, data_cfg.get(key))
    mean, std = dataset_stats(ds.name)
    bs = int(batch_size if batch_size is not None else data_cfg.get("batch_size", 256))
    return DataLoader(
        TransformDataset(ds, eval_transform(int(data_cfg.get("image_size", 32)), mean, std)),
        batch_size=bs, shuffle=False, drop_last=False, **_loader_kwargs(data_cfg),
    )


def make_eval_loaders(
    data_cfg: Mapping[str, object], batch_size: int | None = None, skipped=None,
) -> tuple[DataLoader, DataLoader]:
    """Deterministic ``(train_loader, val_loader)`` of ``(X FloatTensor[B,3,s,s], Y LongTensor[B])``.

    No augmentation (:func:`eval_transform`), no shuffling, no dropped batches; ``train_subset``
    and ``val_subset`` applied (the train subset equals the pre-training loader's). An unlabelled
    image folder has no validation split (:class:`DatasetUnavailableError`; see :func:`missing_labels`).
    ``skipped``: the :class:`~solo_qscore.data.bad_images.SkippedImages` list of ``data.bad_images=skip``.
    """
    train_set, val_set = _load(data_cfg, train=True, skipped=skipped), _load(data_cfg, train=False, skipped=skipped)
    if train_set.name != val_set.name:
        raise RuntimeError(f"train split is {train_set.name!r} but validation split is {val_set.name!r}")
    return (_eval_loader(data_cfg, train_set, "train_subset", batch_size),
            _eval_loader(data_cfg, val_set, "val_subset", batch_size))


def make_eval_loader(
    data_cfg: Mapping[str, object], train: bool = True, batch_size: int | None = None, skipped=None,
) -> DataLoader:
    """One split of :func:`make_eval_loaders` (the training split of an unlabelled folder too)."""
    return _eval_loader(data_cfg, _load(data_cfg, train=train, skipped=skipped),
                        "train_subset" if train else "val_subset", batch_size)


def num_classes_of(data_cfg: Mapping[str, object]) -> int:
    """Number of classes of the dataset ``data_cfg`` actually loads (the fallback's, if it falls back)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(_load(data_cfg, train=True).num_classes)
