"""solo-learn main's own linear evaluation (solo_qscore.adapters.solo_linear): solo's ``LinearModel`` trained by a
real Lightning Trainer on a tiny real checkpoint, scored in the eval loader's order."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers.data_configs import data_cfg
from helpers.image_folders import labelled_folder

from solo_qscore.adapters.solo_linear import SOLO_LINEAR_LR, solo_linear_config, solo_linear_eval
from solo_qscore.cli.open_run import load_checkpoint
from solo_qscore.data import make_eval_loaders
from solo_qscore.probe.backbone import find_backbone
from solo_qscore.probe.features import extract_features

SOLO_LINEAR_CONFIGS = Path(__file__).resolve().parents[3] / "shared" / "solo-learn-main" / "scripts" / "linear"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


class _ClassifierAtStart(pl.Callback):
    """The classifier's weights when training starts (after solo's initialisation)."""

    def on_train_start(self, trainer, pl_module):
        self.weight = pl_module.classifier.weight.detach().clone()


def test_solos_linear_model_is_trained_and_scored_in_the_eval_loaders_order(tiny_run):
    """One epoch (2 steps of 16 of the run's 32 training images): the correct flags are solo's classifier's on
    the eval loader's 24 validation images, in its order; the backbone is frozen and the caller's untouched."""
    from solo.methods.linear import LinearModel

    model, view, _ = load_checkpoint(str(tiny_run))
    backbone = find_backbone(model)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    start = _ClassifierAtStart()
    result = solo_linear_eval(backbone, view["data"], method=view["method"], epochs=1, batch_size=16,
                              callbacks=[start])

    _, val_loader = make_eval_loaders(view["data"])
    h, labels = extract_features(backbone, val_loader, torch.device("cpu"))
    assert result.correct.dtype == torch.bool and result.correct.shape == (24,) == labels.shape
    assert torch.equal(result.targets, labels)  # the eval loader's order
    with torch.no_grad():
        assert torch.equal(result.model.classifier(h).argmax(dim=1) == labels, result.correct)
    assert 0.0 <= result.accuracy <= 1.0 and result.accuracy == pytest.approx(float(result.correct.float().mean()))
    assert result.accuracy == pytest.approx(result.solo_val_acc1, abs=1e-6)  # solo's own val_acc1
    # solo's LinearModel was trained: its classifier moved, its backbone did not (BatchNorm statistics too)
    assert isinstance(result.model, LinearModel) and result.steps == 2 and result.num_train == 32
    assert not torch.equal(start.weight, result.model.classifier.weight)
    assert all(not p.requires_grad for p in result.model.backbone.parameters())
    for key, value in result.model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    assert all(p.requires_grad for p in backbone.parameters())  # the caller's backbone is not frozen by it
    # solo's linear config: SGD (momentum 0.9), lr 1.0 (simclr) scaled by 16/256, the step schedule
    opt = result.config["optimizer"]
    assert (opt["name"], opt["weight_decay"], opt["kwargs"]["momentum"]) == ("sgd", 0, 0.9)
    assert opt["lr"] == pytest.approx(1.0 * 16 / 256) and result.config["scheduler"]["name"] == "step"


def test_the_paper_schedule_is_solos_and_scales_with_fewer_epochs():
    cfg = solo_linear_config("byol", data_cfg(), 10)
    assert (cfg.max_epochs, list(cfg.scheduler.lr_decay_steps), cfg.optimizer.lr) == (100, [60, 80], 0.3)
    assert cfg.data.num_classes == 10 and cfg.data.dataset == "fashion_mnist"
    assert list(solo_linear_config("byol", data_cfg(), 10, epochs=10).scheduler.lr_decay_steps) == [6, 8]


@pytest.mark.skipif(not SOLO_LINEAR_CONFIGS.is_dir(), reason="solo-learn main's scripts are not beside the checkout")
def test_the_learning_rates_are_those_of_solo_learns_linear_configs():
    import yaml

    found = {}
    for path in sorted((SOLO_LINEAR_CONFIGS / "imagenet-100").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        found.setdefault(cfg["pretrain_method"], set()).add(float(cfg["optimizer"]["lr"]))
        assert (cfg["optimizer"]["name"], cfg["optimizer"]["batch_size"], cfg["scheduler"]["lr_decay_steps"],
                cfg["max_epochs"]) == ("sgd", 256, [60, 80], 100), path.name
    assert {m: {lr} for m, lr in SOLO_LINEAR_LR.items()} == found


def test_fewer_than_five_classes_is_refused_before_training(tiny_run, tmp_path):
    """solo's training and validation steps take the top 5 logits: 3 classes failed in ``topk`` at the first step."""
    model, _, _ = load_checkpoint(str(tiny_run))
    folder = labelled_folder(tmp_path / "three", per_class=10)
    cfg = data_cfg(dataset="custom", root=str(folder), image_size=16, train_subset=None, val_subset=None)
    with pytest.raises(ValueError, match="the data has 3 classes, it needs at least 5"):
        solo_linear_eval(find_backbone(model), cfg, epochs=1, batch_size=4)
