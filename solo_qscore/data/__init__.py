"""Datasets, augmentations and loaders: real datasets when present, offline ones (Fashion-MNIST,
MNIST, Trifeature, digits_grid) otherwise; solo-learn 1.0.2's pre-training batch format."""

from .bad_images import BAD_IMAGE_POLICIES, BadImageError, SkippedImages, guard_images
from .datasets import (
    DATASET_NAMES,
    FOLDER_DATASETS,
    ArrayImageDataset,
    DatasetUnavailableError,
    ImageFilesDataset,
    ImageFolderDataset,
)
from .digits_grid import DIGITS_GRID_ATTRIBUTES, DigitsGridDataset, compose_digits_grid
from .loaders import (
    HELDOUT_FRACTION,
    SUBSET_SEED,
    LabelledSubset,
    PretrainDataset,
    TransformDataset,
    heldout_split,
    make_eval_loader,
    make_eval_loaders,
    make_pretrain_loader,
    missing_labels,
    num_classes_of,
    subset_indices,
)
from .registry import load_dataset
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
    "BAD_IMAGE_POLICIES",
    "DATASET_NAMES",
    "DIGITS_GRID_ATTRIBUTES",
    "FOLDER_DATASETS",
    "HELDOUT_FRACTION",
    "SUBSET_SEED",
    "ArrayImageDataset",
    "BadImageError",
    "DatasetUnavailableError",
    "DigitsGridDataset",
    "ImageFilesDataset",
    "ImageFolderDataset",
    "LabelledSubset",
    "NCropAugmentation",
    "PretrainDataset",
    "SkippedImages",
    "TransformDataset",
    "TrifeatureDataset",
    "build_crop_pipelines",
    "compose_digits_grid",
    "dataset_stats",
    "eval_transform",
    "generate_trifeature",
    "guard_images",
    "heldout_split",
    "load_dataset",
    "make_eval_loader",
    "make_eval_loaders",
    "make_pretrain_loader",
    "missing_labels",
    "num_classes_of",
    "subset_indices",
    "trifeature_masks",
    "validate_augmentation",
]
