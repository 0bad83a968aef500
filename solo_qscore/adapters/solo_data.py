"""solo-learn's pre-training loader for a run (its augmentation pipelines, over its datasets or ours),
and the validation loader ``solo-qscore pretrain`` gives solo-learn's online classifier."""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from solo_qscore.adapters.solo_config import (
    FOLDER_DATASETS,
    SOLO_DATASETS,
    bad_images_policy,
    data_format,
    eval_data_config,
    solo_data_present,
)
from solo_qscore.config import ConfigError


def validation_loader(cfg: DictConfig, batch_size: Optional[int] = None) -> Optional[torch.utils.data.DataLoader]:
    """The validation loader ``solo-qscore pretrain`` gives solo-learn's online classifier: the probe's
    validation split; ``None`` when the data has none (an unlabelled image folder, h5 files)."""
    from solo_qscore.data import make_eval_loader, missing_labels

    data_cfg = eval_data_config(cfg, batch_size=batch_size)
    if missing_labels(data_cfg) is not None or (str(cfg.data.dataset) in FOLDER_DATASETS
                                                and data_format(cfg) == "h5"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning was given when training data loaded
        return make_eval_loader(data_cfg, train=False)



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
    use_solo = str(data.dataset) in SOLO_DATASETS and solo_data_present(cfg)
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
        guard_images(dataset, bad_images_policy(cfg))  # an unreadable file: named (or skipped), not OSError
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

