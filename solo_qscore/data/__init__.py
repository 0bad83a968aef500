"""Datasets, augmentations and loaders: real datasets when present, offline ones (Fashion-MNIST,
MNIST, Trifeature, digits_grid) otherwise; solo-learn 1.0.2's pre-training batch format."""

from .datasets import (
    DATASET_NAMES,
    ArrayImageDataset,
    DatasetUnavailableError,
    ImageFolderDataset,
    load_dataset,
)
from .digits_grid import DIGITS_GRID_ATTRIBUTES, DigitsGridDataset, compose_digits_grid
from .loaders import (
    SUBSET_SEED,
    LabelledSubset,
    PretrainDataset,
    TransformDataset,
    make_eval_loaders,
    make_pretrain_loader,
    num_classes_of,
    subset_indices,
)
from .transforms import (
    AUGMENTATION_DEFAULTS,
    NCropAugmentation,
    build_crop_pipelines,
    dataset_stats,
    eval_transform,
    validate_augmentation,
)
from .trifeature import ATTRIBUTES, TrifeatureDataset, generate_trifeature, trifeature_masks

__all__ = [
    "ATTRIBUTES",
    "AUGMENTATION_DEFAULTS",
    "DATASET_NAMES",
    "DIGITS_GRID_ATTRIBUTES",
    "SUBSET_SEED",
    "ArrayImageDataset",
    "DatasetUnavailableError",
    "DigitsGridDataset",
    "ImageFolderDataset",
    "LabelledSubset",
    "NCropAugmentation",
    "PretrainDataset",
    "TransformDataset",
    "TrifeatureDataset",
    "build_crop_pipelines",
    "compose_digits_grid",
    "dataset_stats",
    "eval_transform",
    "generate_trifeature",
    "load_dataset",
    "make_eval_loaders",
    "make_pretrain_loader",
    "num_classes_of",
    "subset_indices",
    "trifeature_masks",
    "validate_augmentation",
]
