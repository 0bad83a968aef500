"""Opening a dataset by name: :func:`load_dataset`, over every dataset module of ``data/``.

The dataset modules import nothing back: :mod:`~solo_qscore.data.datasets` serves the datasets read from
files or downloaded (:func:`~solo_qscore.data.datasets.load_stored`), :mod:`~solo_qscore.data.trifeature`
and :mod:`~solo_qscore.data.digits_grid` the generated ones (built on ``datasets``' array dataset and
sources). Only this module knows them all, so ``data/`` has no import cycle.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch.utils.data import Dataset

from .datasets import DATASET_NAMES, FOLDER_DATASETS, DatasetUnavailableError, load_stored
from .digits_grid import DigitsGridDataset
from .trifeature import TrifeatureDataset

__all__ = ["GENERATED_DATASETS", "load_dataset"]

#: the generated datasets: name -> class, called as ``cls(root, train=..., image_size=...)`` (``root``: the cache)
GENERATED_DATASETS = {"trifeature": TrifeatureDataset, "digits_grid": DigitsGridDataset}


def _load(name: str, root: Path, train: bool, image_size: int, **folder_opts: object) -> Dataset:
    if name in GENERATED_DATASETS:
        return GENERATED_DATASETS[name](root, train=train, image_size=image_size)
    return load_stored(name, root, train, image_size, **folder_opts)


def load_dataset(
    name: str, root: str | Path = "datasets", train: bool = True, image_size: int = 32,
    fallback: str | None = None, val_root: str | Path | None = None, no_labels: bool = False,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`~solo_qscore.data.datasets.DATASET_NAMES`) as ``(PIL RGB image,
    int label)`` items.

    The result has ``.name`` (the dataset actually used), ``.num_classes`` and ``.targets``
    (LongTensor ``[N]``). If ``name`` cannot be loaded, raise :class:`DatasetUnavailableError`,
    or, with ``fallback`` set, warn (``UserWarning``) and return the ``fallback`` dataset instead.

    solo-learn's image-folder datasets (:data:`~solo_qscore.data.datasets.FOLDER_DATASETS`) read ``root`` as
    the training folder and ``val_root`` as the validation one; a folder without class sub-folders, or
    ``no_labels``, is unlabelled (targets -1, no validation split). A missing folder of the user's is an
    error, never a fallback. Unreadable files raise PIL's ``OSError`` when read, unless the dataset is
    guarded (:func:`solo_qscore.data.bad_images.guard_images`, as the loaders do).
    """
    name = name.lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if fallback is not None and fallback.lower() not in DATASET_NAMES:
        raise ValueError(f"unknown fallback dataset {fallback!r}; choose one of {', '.join(DATASET_NAMES)}")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    root = Path(root)
    folder_opts = {"val_root": val_root, "no_labels": bool(no_labels)} if name in FOLDER_DATASETS else {}
    try:
        return _load(name, root, train, int(image_size), **folder_opts)
    except DatasetUnavailableError as e:
        if fallback is None or fallback.lower() == name or name in FOLDER_DATASETS:
            raise
        warnings.warn(
            f"Using the dataset {fallback.lower()!r} instead of {name!r} (data.fallback). {e}",
            UserWarning, stacklevel=2,
        )
        try:
            return _load(fallback.lower(), root, train, int(image_size))
        except DatasetUnavailableError as e2:
            message = f"{e}\nThe fallback {fallback.lower()!r} is unavailable too: {e2}"
            raise DatasetUnavailableError(message) from e2
