"""Opening a dataset by name (solo_qscore.data.registry.load_dataset): the dispatch over every dataset module,
unknown names, the fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.data_configs import data_cfg

from solo_qscore.data import DatasetUnavailableError, load_dataset, num_classes_of
from solo_qscore.data.registry import GENERATED_DATASETS


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet22k")
    with pytest.raises(ValueError, match="unknown fallback"):
        load_dataset("mnist", fallback="nope")


def test_cifar_fallback_warns_and_returns_fashion_mnist(tmp_path: Path, offline_sockets):
    with pytest.warns(UserWarning, match="'fashion_mnist' instead of 'cifar10'"):
        ds = load_dataset("cifar10", root=tmp_path / "none", fallback="fashion_mnist")
    assert ds.name == "fashion_mnist" and len(ds) == 60000 and ds[0][0].size == (32, 32)
    cfg = data_cfg(dataset="cifar100", root=str(tmp_path / "none"), fallback="fashion_mnist")
    assert num_classes_of(cfg) == 10  # the classes of the dataset actually used
    with pytest.raises(DatasetUnavailableError):
        num_classes_of({**cfg, "fallback": None})


def test_unavailable_fallback_reports_both(tmp_path: Path, offline_sockets):
    with pytest.warns(UserWarning), pytest.raises(DatasetUnavailableError, match="unavailable too"):
        load_dataset("cifar10", root=tmp_path / "none", fallback="imagefolder")


def test_generated_datasets_are_registered_by_name():
    """trifeature and digits_grid live in their own modules (tests/data/test_trifeature.py and
    test_digits_grid.py open them through load_dataset); the registry is the one place that names them."""
    from solo_qscore.data import DATASET_NAMES, DigitsGridDataset, TrifeatureDataset

    assert GENERATED_DATASETS == {"trifeature": TrifeatureDataset, "digits_grid": DigitsGridDataset}
    assert set(GENERATED_DATASETS) <= set(DATASET_NAMES)
