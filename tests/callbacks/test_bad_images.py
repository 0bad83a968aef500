"""BadImagesCallback (callbacks/bad_images.py) in a real Trainer: an image folder handed to ``trainer.fit`` (as
solo-learn's own ``main_pretrain.py`` hands its datasets) follows ``data.bad_images`` also in DataLoader
worker processes (issue 22, item 3).

A tiny conv module (tests/helpers/tiny_lightning.py) on a torchvision ``ImageFolder`` of 8 PNG/JPEG files
with one truncated; solo-learn's own script on such folders is in tests/adapters/test_solo_main.py.
"""

from __future__ import annotations

import warnings

import pytest
from helpers.image_folders import labelled_folder, truncate
from helpers.tiny_lightning import TinyModule, trainer
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from solo_qscore.callbacks import BadImagesCallback
from solo_qscore.data import BadImageError, SkippedImages


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.fixture
def loader(tmp_path):
    root = labelled_folder(tmp_path / "images", classes=("ant", "bee"), per_class=4)
    truncate(root / "bee" / "02.jpg")
    dataset = ImageFolder(str(root), transform=transforms.ToTensor())
    # one worker process: the guard must reach the dataset before Lightning starts it
    return DataLoader(dataset, batch_size=4, num_workers=1)


def test_an_unreadable_image_stops_the_run_naming_it(tmp_path, loader):
    with pytest.raises(BadImageError) as err:
        trainer(tmp_path, [BadImagesCallback("error")], max_epochs=1).fit(TinyModule(), loader)
    assert str(err.value).startswith(f"cannot read image {loader.dataset.root}/bee/02.jpg (OSError")
    assert "data.bad_images=skip" in str(err.value) and "\n" not in str(err.value)


def test_skip_trains_on_and_lists_the_file_at_the_end(tmp_path, loader):
    callback = BadImagesCallback("skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [callback], max_epochs=2).fit(TinyModule(), loader)
    notes = [str(w.message) for w in caught if "solo-qscore: skipped" in str(w.message)]
    bad = f"{loader.dataset.root}/bee/02.jpg"
    assert notes == [f"solo-qscore: skipped 1 unreadable image (data.bad_images=skip): {bad}"]
    assert not callback.skipped.path.exists()  # a temporary list is removed; a run folder's stays


def test_a_bad_policy_is_refused():
    with pytest.raises(ValueError, match="data.bad_images must be one of error, skip"):
        BadImagesCallback("ignore", SkippedImages())
