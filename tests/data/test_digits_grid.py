"""STL-digits-style data (IFM paper §2.2, App. C.2.1): MNIST digits on a 3x3 grid over background images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from solo_qscore.data import DATASET_NAMES, DigitsGridDataset, compose_digits_grid, load_dataset
from solo_qscore.data import digits_grid as dg_mod
from solo_qscore.data.digits_grid import digit_cell_boxes, resize_images

torch.set_num_threads(1)


def _mnist(train: bool = False):
    return load_dataset("mnist", train=train)


def _fashion(train: bool = False):
    return load_dataset("fashion_mnist", train=train)


def test_cell_geometry_is_the_papers_at_96_px():
    d, boxes = digit_cell_boxes(96)
    assert d == 28  # native MNIST size: no resizing
    assert boxes == [(r, c) for r in (2, 34, 66) for c in (2, 34, 66)]  # centred in 32 px cells
    d32, boxes32 = digit_cell_boxes(32)
    assert d32 == 9 and len(boxes32) == 9
    with pytest.raises(ValueError, match="image_size"):
        digit_cell_boxes(8)
    with pytest.raises(ValueError, match="grid"):
        digit_cell_boxes(96, grid=0)


def test_digit_pixels_are_exactly_where_the_grid_says():
    mnist = _mnist()
    digits = torch.from_numpy(mnist.images[:5].copy())
    backgrounds = torch.randint(0, 256, (5, 96, 96, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images, mask = compose_digits_grid(backgrounds, digits)
    assert images.dtype == torch.uint8 and images.shape == (5, 96, 96, 3)
    assert mask.dtype == torch.bool and mask.shape == (5, 96, 96)
    expected = backgrounds.clone()
    expected_mask = torch.zeros(5, 96, 96, dtype=torch.bool)
    for r in (2, 34, 66):
        for c in (2, 34, 66):
            on = digits >= 100  # the paper masks MNIST pixels with intensity < 100
            region = expected[:, r:r + 28, c:c + 28]
            region[on] = digits[on].unsqueeze(-1).expand(-1, 3)  # grey value on all channels
            expected_mask[:, r:r + 28, c:c + 28] = on
    assert torch.equal(images, expected)
    assert torch.equal(mask, expected_mask)
    # the same digit, same pixels, in all 9 cells
    on = digits >= 100
    for r in (2, 34, 66):
        for c in (2, 34, 66):
            assert torch.equal(mask[:, r:r + 28, c:c + 28], on)
            assert torch.equal(images[:, r:r + 28, c:c + 28, 1][on], digits[on])
    # nothing changes outside the 28 px boxes
    outside = torch.ones(96, 96, dtype=torch.bool)
    for r in (2, 34, 66):
        for c in (2, 34, 66):
            outside[r:r + 28, c:c + 28] = False
    assert torch.equal(images[:, outside], backgrounds[:, outside])


def test_compose_bad_input():
    bg = torch.zeros(2, 96, 96, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="backgrounds"):
        compose_digits_grid(bg.float(), torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="digits"):
        compose_digits_grid(bg, torch.zeros(3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="threshold"):
        compose_digits_grid(bg, torch.zeros(2, 28, 28, dtype=torch.uint8), threshold=-1)
    with pytest.raises(ValueError, match="uint8"):
        resize_images(np.zeros((2, 5, 5, 4), dtype=np.uint8), 8)


def test_dataset_at_96_px_labels_and_pixels_match_the_sources():
    ds = DigitsGridDataset(train=False, num_samples=40, image_size=96, seed=3, background="fashion_mnist")
    assert ds.name == "digits_grid" and ds.num_classes == 10 and len(ds) == 40
    assert ds.background_source == "fashion_mnist"
    assert ds.images.dtype == np.uint8 and ds.images.shape == (40, 96, 96, 3)
    assert ds.digit_masks.shape == (40, 96, 96) and ds.digit_masks.dtype == bool
    mnist, fashion = _mnist(), _fashion()
    assert set(ds.attributes) == {"digit", "background"}
    assert all(v.dtype == torch.long and v.shape == (40,) for v in ds.attributes.values())
    assert torch.equal(ds.attributes["digit"], mnist.targets[ds.digit_indices])
    assert torch.equal(ds.attributes["background"], fashion.targets[ds.background_indices])
    assert torch.equal(ds.targets, ds.attributes["digit"])  # default target: the digit
    # pixels: the source digit where masked, the (resized) source background elsewhere
    digits = mnist.images[ds.digit_indices.numpy()]
    backgrounds = resize_images(fashion.images[ds.background_indices.numpy()], 96).numpy()
    images, masks = compose_digits_grid(torch.from_numpy(backgrounds), torch.from_numpy(digits))
    assert np.array_equal(ds.images, images.numpy()) and np.array_equal(ds.digit_masks, masks.numpy())
    assert np.array_equal(ds.images[~ds.digit_masks], backgrounds[~ds.digit_masks])
    box = ds.images[:, 34:62, 34:62, 0]  # the centre cell
    on = digits >= 100
    assert np.array_equal(box[on], digits[on])
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (96, 96)
    assert label == int(ds.attributes["digit"][0])
    by_background = DigitsGridDataset(train=False, num_samples=40, image_size=96, seed=3,
                                      background="fashion_mnist", target="background")
    assert torch.equal(by_background.targets, ds.attributes["background"])


def test_deterministic_given_a_seed():
    kw = {"train": False, "num_samples": 30, "image_size": 32, "background": "fashion_mnist"}
    a = DigitsGridDataset(seed=1, **kw)
    dg_mod._digits_grid_arrays.cache_clear()  # regenerate, not the cached arrays
    b = DigitsGridDataset(seed=1, **kw)
    assert a.images is not b.images and np.array_equal(a.images, b.images)
    assert torch.equal(a.digit_indices, b.digit_indices) and torch.equal(a.background_indices, b.background_indices)
    c = DigitsGridDataset(seed=2, **kw)
    assert not torch.equal(a.digit_indices, c.digit_indices)
    train = DigitsGridDataset(seed=1, **{**kw, "train": True})
    assert not np.array_equal(train.images, a.images)
    # digits and backgrounds are drawn independently, without repeats while the source lasts
    assert len(a.digit_indices.unique()) == 30 and len(a.background_indices.unique()) == 30
    assert a.images.shape == (30, 32, 32, 3)
    # at 32 px the composite is built at 96 px and shrunk, so the digit pixels stay bright
    assert a.images[a.digit_masks].mean() > a.images[~a.digit_masks].mean()


def test_fashion_mnist_fallback_says_so(tmp_path, offline_sockets):
    with pytest.warns(UserWarning, match="fashion_mnist images, not STL-10"):
        ds = DigitsGridDataset(root=tmp_path, train=False, num_samples=20, image_size=32)
    assert ds.background_source == "fashion_mnist"
    with pytest.warns(UserWarning, match="fashion_mnist"):  # warned again when served from the cache
        DigitsGridDataset(root=tmp_path, train=False, num_samples=20, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for Fashion-MNIST explicitly is not a fallback
        DigitsGridDataset(root=tmp_path, train=False, num_samples=20, image_size=32, background="fashion_mnist")


def test_bad_arguments():
    with pytest.raises(ValueError, match="target"):
        DigitsGridDataset(num_samples=5, target="shape")
    with pytest.raises(ValueError, match="background"):
        DigitsGridDataset(num_samples=5, background="imagenet")
    with pytest.raises(ValueError, match="num_samples"):
        DigitsGridDataset(num_samples=0)
    with pytest.raises(ValueError, match="image_size"):
        DigitsGridDataset(num_samples=5, image_size=6)


def test_registered_for_configs_and_loaders(tmp_path, offline_sockets):
    from conftest import tiny_config

    from solo_qscore.adapters.solo_main import eval_data_config, make_pretrain_loader, prepare_config
    from solo_qscore.data import make_eval_loaders, num_classes_of

    assert "digits_grid" in DATASET_NAMES
    # solo-learn's SimCLR config at 32 px (the CIFAR size), batch 8, on digits_grid
    cfg = prepare_config(tiny_config("simclr", "data.dataset=digits_grid", "data.fallback=null",
                                     f"data.train_path={tmp_path}", "optimizer.batch_size=8",
                                     "data.train_subset=16", "data.val_subset=8", "data.num_workers=0",
                                     "augmentations.0.crop_size=32"))
    assert cfg.data.num_classes == 10
    with pytest.warns(UserWarning, match="digits_grid"):
        loader = make_pretrain_loader(cfg)
    indexes, crops, targets = next(iter(loader))
    assert len(crops) == 2 and all(c.shape == (8, 3, 32, 32) and c.dtype == torch.float32 for c in crops)
    base = loader.dataset.dataset.dataset  # indexed crops -> LabelledSubset -> DigitsGridDataset
    assert isinstance(base, DigitsGridDataset) and len(base) == 10_000
    subset = loader.dataset.dataset
    assert torch.equal(targets, base.attributes["digit"][subset.indices[indexes]])
    data = eval_data_config(cfg, batch_size=8)
    with pytest.warns(UserWarning):
        train_loader, val_loader = make_eval_loaders(data)
        assert num_classes_of(data) == 10
    x, y = next(iter(val_loader))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long
    assert train_loader.dataset.name == "digits_grid"
