"""Pre-training and evaluation loaders (solo_qscore.data.loaders)."""

from __future__ import annotations

import pytest
import torch
from helpers.data_configs import AUG, data_cfg

from solo_qscore.data import PretrainDataset, make_eval_loaders, make_pretrain_loader, num_classes_of


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


# ----------------------------------------------------------------------------- solo-learn's image folders
def _folder_cfg(root, **extra) -> dict:
    return {"dataset": "custom", "root": str(root), "image_size": 16, "batch_size": 4, "num_workers": 0,
            "val_root": None, **extra}


def test_heldout_split_is_seeded_per_class_and_disjoint():
    from solo_qscore.data import heldout_split

    targets = torch.tensor([0] * 10 + [1] * 5 + [2])
    kept, held = heldout_split(targets)
    assert set(kept.tolist()).isdisjoint(held.tolist()) and len(kept) + len(held) == 16
    assert torch.bincount(targets[held], minlength=3).tolist() == [2, 1, 0]  # 20% of each; a lone image stays
    assert torch.equal(held, heldout_split(targets)[1]) and torch.equal(held, held.sort().values)


def test_eval_loaders_on_an_image_folder(tmp_path):
    """Issue 22 (3): the probe's loaders read solo-learn's ``custom`` folders. Without ``val_path`` they hold
    out a seeded 20% of each class; with it they read that folder; an unlabelled folder has no probe split."""
    from helpers.image_folders import flat_folder, labelled_folder

    from solo_qscore.data import make_eval_loader, missing_labels

    folder = labelled_folder(tmp_path / "train", classes=("ant", "bee"), per_class=5)
    train, val = make_eval_loaders(_folder_cfg(folder))
    assert (len(train.dataset), len(val.dataset)) == (8, 2)
    assert sorted(val.dataset.targets.tolist()) == [0, 1]
    x, y = next(iter(val))
    assert x.shape == (2, 3, 16, 16) and y.dtype == torch.long
    assert missing_labels(_folder_cfg(folder)) is None

    val_folder = labelled_folder(tmp_path / "val", classes=("ant", "bee"), per_class=2)
    train, val = make_eval_loaders(_folder_cfg(folder, val_root=str(val_folder)))
    assert (len(train.dataset), len(val.dataset)) == (10, 4)

    flat = flat_folder(tmp_path / "flat", n=6)
    assert "no class sub-folders" in missing_labels(_folder_cfg(flat))
    assert missing_labels(_folder_cfg(folder, no_labels=True)) == "data.no_labels=true"
    single = labelled_folder(tmp_path / "one", classes=("ant",), per_class=3)
    assert "a single class sub-folder (ant)" in missing_labels(_folder_cfg(single))
    assert len(make_eval_loader(_folder_cfg(flat)).dataset) == 6  # the statistics pass still reads it
    assert missing_labels({"dataset": "cifar10", "root": str(tmp_path)}) is None
