"""Unreadable image files (solo_qscore.data.bad_images): refused naming the file, or skipped and listed.

Issue 22 (3): a truncated or corrupt image in a user's folder ended the run with PIL's ``OSError``
traceback, naming no file. Real files written with PIL, real torchvision and solo-learn datasets.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from helpers.image_folders import flat_folder, labelled_folder, truncate
from torch.utils.data import Subset

from solo_qscore.data import BadImageError, SkippedImages, guard_images, load_dataset, make_eval_loaders


def _images(root, policy: str = "error", skipped=None):
    """``data.dataset=custom`` on ``root``, guarded as the loaders guard it."""
    dataset = load_dataset("custom", root=root, image_size=16)
    assert guard_images(dataset, policy, skipped)
    return dataset


@pytest.fixture
def folder(tmp_path):
    """Two classes of three images; ``bee/01.png`` truncated (a copy that stopped half-way)."""
    root = labelled_folder(tmp_path / "train", classes=("ant", "bee"), per_class=3)
    truncate(root / "bee" / "01.png")
    return root


def test_an_unreadable_image_is_refused_naming_the_file_and_the_key(folder):
    with pytest.raises(OSError):  # what a user got before: PIL's error, naming no file
        load_dataset("custom", root=folder, image_size=16)[4]
    ds = _images(folder)
    assert ds[0][1] == 0  # readable files are served as usual
    with pytest.raises(BadImageError) as err:
        ds[4]
    message = str(err.value)
    assert str(folder / "bee" / "01.png") in message and "data.bad_images=skip" in message
    assert "\n" not in message
    (folder / "ant" / "02.jpg").write_bytes(b"random bytes, not an image")
    with pytest.raises(BadImageError, match="02.jpg .*UnidentifiedImageError"):
        ds[2]


def test_skip_serves_the_next_readable_image_and_names_each_file_once(folder, tmp_path):
    skipped = SkippedImages(tmp_path / "logs" / "skipped.jsonl")
    ds = _images(folder, "skip", skipped)
    with pytest.warns(UserWarning, match="skipped unreadable image .*01.png .*1 so far"):
        image, label = ds[4]
    assert label == 1 and list(image.getdata()) == list(ds[5][0].getdata())  # bee/02 in its place, its label
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file again (another epoch, another worker): no warning
        ds[4]
        SkippedImages(skipped.path).add(str(folder / "bee" / "01.png"), OSError("again"))
    assert list(skipped.entries()) == [str(folder / "bee" / "01.png")]
    summary = skipped.summary()
    assert summary.startswith("solo-qscore: skipped 1 unreadable image (data.bad_images=skip): ")
    assert str(skipped.path) in summary and "\n" not in summary
    skipped.discard()
    assert skipped.path.is_file()  # a list in a run's folder is the run's record


def test_a_temporary_list_is_removed_and_all_bad_is_an_error(tmp_path):
    root = flat_folder(tmp_path / "flat", n=2)
    for path in root.iterdir():
        truncate(path, keep=0.1)
    skipped = SkippedImages()
    ds = _images(root, "skip", skipped)
    with pytest.warns(UserWarning), pytest.raises(BadImageError, match="none of the 2 images can be read"):
        ds[0]
    assert len(skipped.entries()) == 2 and skipped.summary().endswith(".png")  # no path of a temporary list
    skipped.discard()
    assert not skipped.path.exists()


def test_guard_reaches_solo_learns_and_torchvisions_datasets_through_wrappers(folder, tmp_path):
    """solo-learn builds its own datasets (``dataset_with_index(ImageFolder)``, ``CustomDatasetWithoutLabels``);
    guarded in place, through subsets, they name the file too; and they still pickle (spawned workers)."""
    from solo.data.pretrain_dataloader import CustomDatasetWithoutLabels, dataset_with_index
    from torchvision.datasets import ImageFolder

    solo_set = dataset_with_index(ImageFolder)(str(folder))
    with pytest.raises(OSError) as plain:  # what a user got before
        solo_set[4]
    assert not isinstance(plain.value, BadImageError)
    wrapped = Subset(solo_set, [4, 5])
    assert guard_images(wrapped, "error")
    with pytest.raises(BadImageError, match="01.png"):
        wrapped[0]
    guard_images(wrapped, "skip", SkippedImages(tmp_path / "s.jsonl"))  # again: the policy is updated
    with pytest.warns(UserWarning, match="01.png"):
        index, _, label = wrapped[0]
    assert (index, label) == (5, 1)  # solo's index is the image's own: bee/02

    flat = flat_folder(tmp_path / "flat", n=2)
    truncate(flat / "00.png")
    unlabelled = CustomDatasetWithoutLabels(flat)
    assert guard_images(unlabelled, "error")
    with pytest.raises(BadImageError, match="00.png"):
        unlabelled[unlabelled.images.index("00.png")]

    plain_folder = ImageFolder(str(folder))
    guard_images(plain_folder, "error")
    copy = pickle.loads(pickle.dumps(plain_folder))
    with pytest.raises(BadImageError, match="01.png"):
        copy[4]
    assert not guard_images(torch.utils.data.TensorDataset(torch.zeros(2)), "error")


def test_a_worker_process_error_is_still_one_line(folder, tmp_path):
    """In a DataLoader worker the error is raised again in the main process, wrapped in the worker's traceback:
    the message stays our one line. With ``skip``, what a worker skipped is in the main process's list."""
    cfg = {"dataset": "custom", "root": str(folder), "image_size": 16, "batch_size": 6, "num_workers": 1}
    train, _ = make_eval_loaders(cfg)
    with pytest.raises(BadImageError) as err:
        next(iter(train))
    assert str(err.value).startswith("cannot read image ") and "\n" not in str(err.value)
    skipped = SkippedImages(tmp_path / "skipped.jsonl")
    train, _ = make_eval_loaders({**cfg, "bad_images": "skip"}, skipped=skipped)
    x, y = next(iter(train))
    assert x.shape[0] == len(train.dataset) and list(skipped.entries()) == [str(folder / "bee" / "01.png")]
