"""Trifeature (solo_qscore.data.trifeature): deterministic, balanced, visible attributes, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from solo_qscore.data import ATTRIBUTES, TrifeatureDataset, generate_trifeature, load_dataset, trifeature_masks
from solo_qscore.data import trifeature as tri_mod


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
