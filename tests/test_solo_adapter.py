"""solo-learn 1.0.2 under pytorch-lightning 2.x: the compat fixes and the Q-Score/IFM adapter.

Real solo-learn classes, a real ``pytorch_lightning.Trainer`` on CPU and real Fashion-MNIST
images (32x32, batch 8, two crops), shrunk only in width (projector, prototypes, queues) so that
each training run takes a couple of optimiser steps in a few seconds.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from solo_qscore import IFM_METHODS, ifm_moco_loss, ifm_simclr_loss
from solo_qscore.adapters import solo_v1_compat
from solo_qscore.adapters.solo_v1 import (
    CHECKPOINT_KEY,
    build_method,
    find_backbone,
    load_method,
    method_classes,
    solo_kwargs,
)
from solo_qscore.adapters.warmup_cosine import LinearWarmupCosineAnnealingLR
from solo_qscore.config import ConfigError, load_config
from solo_qscore.data import make_eval_loaders, make_pretrain_loader

CONFIG_DIR = Path(__file__).resolve().parents[1] / "method_configs" / "cifar10"
METHODS = ("simclr", "mocov2plus", "byol", "dino", "simsiam", "vicreg", "barlow_twins", "swav", "nnclr")
NON_INFONCE = ("byol", "dino", "simsiam", "vicreg", "barlow_twins", "swav")
NUM_CLASSES = 10
IFM_CASES = ["simclr", "mocov2plus", "nnclr"]  # the InfoNCE methods (SPEC §3)
BATCH = 8

# width overrides per method (kwarg names as in method_configs/cifar10/<method>.yaml)
_PROJ = ["method_kwargs.proj_hidden_dim=64", "method_kwargs.proj_output_dim=32"]
SHRINK = {
    "simclr": _PROJ,
    "mocov2plus": _PROJ + ["method_kwargs.queue_size=64"],
    "byol": _PROJ + ["method_kwargs.pred_hidden_dim=64"],
    "dino": _PROJ + ["method_kwargs.num_prototypes=64"],
    "simsiam": _PROJ + ["method_kwargs.pred_hidden_dim=64"],
    "vicreg": _PROJ,
    "barlow_twins": _PROJ,
    "swav": _PROJ + ["method_kwargs.num_prototypes=16", "method_kwargs.queue_size=64"],
    "nnclr": _PROJ + ["method_kwargs.pred_hidden_dim=64", "method_kwargs.queue_size=64"],
}
DATA = [
    "data.dataset=fashion_mnist", "data.train_subset=64", "data.val_subset=16", "data.num_workers=0",
    f"data.batch_size={BATCH}", "wandb.enabled=false",
]


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Batches of 8 at 32x32 gain nothing from a second thread, and on a busy 2-core machine the
    OpenMP barriers of two threads make every ResNet-18 pass ~15x slower; use one, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def seeded():
    """Same initial weights and augmentations (global torch RNG) in every run of a test."""
    torch.manual_seed(0)


def small_config(method: str, *overrides: str) -> dict:
    return load_config(CONFIG_DIR / f"{method}.yaml", [*SHRINK[method], *DATA, *overrides])


def pretrain_loader(cfg: dict):
    return make_pretrain_loader(cfg["data"], cfg["augmentations"], seed=0)


def make_trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu", devices=1, enable_progress_bar=False, logger=False, enable_checkpointing=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def some_mask(features_dim: int) -> torch.Tensor:
    mask = torch.zeros(features_dim, dtype=torch.bool)
    mask[::3] = True
    return mask


def float_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}


def assert_changed(before: dict, module: torch.nn.Module) -> None:
    after = float_state(module)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight changed"


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def pl_bolts_lr(epoch: int, base: float, start: float, eta_min: float, warmup: int, epochs: int) -> float:
    """pl_bolts' ``LinearWarmupCosineAnnealingLR._get_closed_form_lr`` (lightning-bolts 0.4-0.7)."""
    if epoch < warmup:
        return start + epoch * (base - start) / (warmup - 1)
    return eta_min + 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


# --------------------------------------------------------------------------------------------
# Fix 1: pl_bolts shim and the warm-up/cosine schedule
# --------------------------------------------------------------------------------------------
def test_pl_bolts_shim_is_our_scheduler_with_pl_bolts_values():
    from pl_bolts.optimizers.lr_scheduler import LinearWarmupCosineAnnealingLR as FromShim
    from solo.methods import base

    assert sys.modules["pl_bolts"].__dict__.get("__solo_qscore_shim__")
    assert FromShim is LinearWarmupCosineAnnealingLR
    assert base.LinearWarmupCosineAnnealingLR is LinearWarmupCosineAnnealingLR

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = LinearWarmupCosineAnnealingLR(opt, warmup_epochs=4, max_epochs=10, warmup_start_lr=0.1, eta_min=0.01)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # hand values: warm-up 0.1 -> 1.0 in W-1 = 3 epochs, held at epoch W, cosine to eta_min at E, then eta_min
    expected = {0: 0.1, 1: 0.4, 2: 0.7, 3: 1.0, 4: 1.0, 7: 0.01 + 0.495, 10: 0.01, 12: 0.01}
    for epoch, value in expected.items():
        assert lrs[epoch] == pytest.approx(value, abs=1e-12), epoch
    for epoch in range(11):
        assert lrs[epoch] == pytest.approx(pl_bolts_lr(epoch, 1.0, 0.1, 0.01, 4, 10), abs=1e-12)


def test_solo_configure_optimizers_uses_the_schedule_with_lars():
    cfg = small_config("simclr", "scheduler.warmup_epochs=3", "trainer.max_epochs=8", "scheduler.min_lr=0.001")
    model = build_method(cfg, NUM_CLASSES)
    (optimizer,), (scheduler,) = model.configure_optimizers()
    assert type(optimizer.optim).__name__ == "SGD" and hasattr(optimizer, "eta")  # solo's LARSWrapper
    assert isinstance(scheduler, LinearWarmupCosineAnnealingLR)
    base = cfg["optimizer"]["lr"] * BATCH / 256
    classifier = cfg["optimizer"]["classifier_lr"]
    for epoch in range(8):
        lrs = [group["lr"] for group in optimizer.param_groups]
        assert lrs[0] == pytest.approx(pl_bolts_lr(epoch, base, 0.003, 0.001, 3, 8), rel=1e-12)
        assert lrs[1] == pytest.approx(pl_bolts_lr(epoch, classifier, 0.003, 0.001, 3, 8), rel=1e-12)
        scheduler.step()


# --------------------------------------------------------------------------------------------
# Fix 2: validation_epoch_end re-driven (and fix 8: the momentum version's super() call)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_validation_loop_logs_solo_metrics(method):
    cfg = small_config(method, "data.val_subset=12")  # batches of 8 and 4: a weighted mean
    _, val_loader = make_eval_loaders(cfg["data"], batch_size=BATCH)
    model = build_method(cfg, NUM_CLASSES)
    (metrics,) = make_trainer().validate(model, val_loader)

    X = torch.cat([x for x, _ in val_loader])
    Y = torch.cat([y for _, y in val_loader])
    assert len(Y) == 12
    model.eval()
    with torch.no_grad():
        logits = model.classifier(model.encoder(X))
    assert metrics["val_loss"] == pytest.approx(F.cross_entropy(logits, Y).item(), rel=1e-4)
    assert metrics["val_acc1"] == pytest.approx(100 * (logits.argmax(1) == Y).float().mean().item(), abs=1e-3)
    assert 0 <= metrics["val_acc5"] <= 100
    if method == "byol":  # BaseMomentumMethod's epoch end calls super().validation_epoch_end
        with torch.no_grad():
            momentum_logits = model.momentum_classifier(model.momentum_encoder(X))
        expected = F.cross_entropy(momentum_logits, Y).item()
        assert metrics["momentum_val_loss"] == pytest.approx(expected, rel=1e-4)
    assert not callable(getattr(model, "validation_epoch_end", None))  # still hidden from Lightning


def test_fit_with_validation_loop_runs():
    cfg = small_config("mocov2plus")
    _, val_loader = make_eval_loaders(cfg["data"], batch_size=BATCH)
    trainer = make_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(build_method(cfg, NUM_CLASSES), pretrain_loader(cfg), val_loader)
    for key in ("val_loss", "val_acc1", "momentum_val_loss"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


# --------------------------------------------------------------------------------------------
# Fix 3: momentum update without dataloader_idx
# --------------------------------------------------------------------------------------------
def test_momentum_encoder_updates_and_tau_is_logged():
    cfg = small_config("byol")
    loader = pretrain_loader(cfg)
    model = build_method(cfg, NUM_CLASSES)
    momentum_before = float_state(model.momentum_encoder)
    trainer = make_trainer(max_steps=2, max_epochs=1)
    trainer.fit(model, loader)
    assert trainer.global_step == 2
    assert_changed(momentum_before, model.momentum_encoder)
    online, momentum = model.encoder.conv1.weight, model.momentum_encoder.conv1.weight
    assert not torch.equal(online, momentum)
    # tau logged at step 2 is the value after the cosine update at step 1 of len(loader) * max_epochs
    base, final = cfg["method_kwargs"]["base_tau_momentum"], cfg["method_kwargs"]["final_tau_momentum"]
    tau_1 = final - (final - base) * (math.cos(math.pi * 1 / (len(loader) * 1)) + 1) / 2
    assert trainer.callback_metrics["tau"].item() == pytest.approx(tau_1, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Fix 4 (and fix 7): WeightedKNNClassifier under torchmetrics 1.x
# --------------------------------------------------------------------------------------------
def _fill_knn(knn, train_x, train_y, test_x, test_y):
    assert knn(train_features=train_x, train_targets=train_y) is None  # forward only updates
    assert knn(test_features=test_x, test_targets=test_y) is None


def test_knn_classifier_constructs_updates_and_matches_solo():
    from solo.utils import knn as solo_knn

    cls = solo_knn.WeightedKNNClassifier
    original = cls.__bases__[0]  # solo-learn's own class
    torch.manual_seed(0)
    train_x, test_x = torch.randn(40, 6), torch.randn(15, 6)
    train_y, test_y = torch.arange(40) % 4, torch.arange(15) % 4  # every class in both splits
    for distance in ("cosine", "euclidean"):
        knn = cls(k=5, distance_fx=distance)
        _fill_knn(knn, train_x, train_y, test_x, test_y)
        ours = knn.compute()
        assert len(knn.train_features) == 0 and len(knn.test_features) == 0  # reset after compute
        _fill_knn(knn, train_x, train_y, test_x, test_y)
        theirs = original.compute(knn)  # solo-learn's own compute on the same memory banks
        assert ours == pytest.approx(theirs, abs=1e-9)


def test_knn_with_a_class_missing_from_validation_warns_and_gives_nan():
    from solo.utils.knn import WeightedKNNClassifier

    knn = WeightedKNNClassifier(k=2, distance_fx="euclidean")
    train_x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [20.0], [21.0]])
    train_y = torch.tensor([0, 0, 2, 2, 1, 1])
    # test labels {0, 2}: solo-learn 1.0.2 sizes its one-hot by 2 classes and would fail on label 2
    _fill_knn(knn, train_x, train_y, torch.tensor([[0.2], [10.4], [15.6]]), torch.tensor([0, 2, 2]))
    with pytest.warns(UserWarning, match=r"no sample of class\(es\) \[1\]"):
        top1, top5 = knn.compute()
    assert math.isnan(top1) and math.isnan(top5)
    assert len(knn.train_features) == 0  # reset: the next epoch starts clean


def test_knn_eval_runs_in_a_lightning_fit():
    cfg = small_config("simclr", "method_kwargs.knn_eval=true", "method_kwargs.knn_k=5")
    model = build_method(cfg, NUM_CLASSES)
    assert type(model.knn).__solo_qscore_patched__
    # a validation set with every class: real accuracies
    _, val_loader = make_eval_loaders(cfg["data"], batch_size=BATCH)
    full = [(x, y) for x, y in val_loader]
    xs, ys = torch.cat([x for x, _ in full]), torch.cat([y for _, y in full])
    if len(ys.unique()) < NUM_CLASSES:  # top up with one sample of each missing class from train
        _, train_eval = make_eval_loaders(small_config("simclr", "data.val_subset=null")["data"], batch_size=256)
        vx, vy = next(iter(train_eval))
        keep = torch.stack([(vy == c).nonzero()[0, 0] for c in range(NUM_CLASSES)])
        xs, ys = torch.cat([xs, vx[keep]]), torch.cat([ys, vy[keep]])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=BATCH)
    trainer = make_trainer(max_epochs=1, limit_train_batches=2)
    trainer.fit(model, pretrain_loader(cfg), loader)
    for key in ("val_knn_acc1", "val_knn_acc5"):
        assert 0 <= trainer.callback_metrics[key].item() <= 100, key


# --------------------------------------------------------------------------------------------
# Fix 5: DINO's clip_gradients and Lightning's gradient clipping together
# --------------------------------------------------------------------------------------------
def test_dino_trains_with_its_clip_grad_and_trainer_gradient_clipping():
    cfg = small_config("dino", "method_kwargs.clip_grad=3.0")
    model = build_method(cfg, NUM_CLASSES)
    dino_calls, lightning_norms = [], []
    dino_clip, clip = model.dino_clip_gradients, model.clip_gradients

    def spy_dino(clip):
        dino_calls.append(clip)
        dino_clip(clip)
        norms = [p.grad.norm() for p in model.encoder.parameters() if p.grad is not None]
        assert max(norms) <= clip + 1e-4

    def spy_clip(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if isinstance(optimizer, (int, float)):  # DINO's own call from on_after_backward
            return clip(optimizer)
        clip(optimizer, gradient_clip_val, gradient_clip_algorithm)  # Lightning's, from the Trainer
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        lightning_norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    model.dino_clip_gradients = spy_dino
    model.clip_gradients = spy_clip
    before = float_state(model.encoder)
    trainer = make_trainer(max_steps=2, gradient_clip_val=1.0)
    trainer.fit(model, pretrain_loader(cfg))
    assert trainer.global_step == 2
    assert dino_calls == [3.0, 3.0]
    assert len(lightning_norms) == 2 and max(lightning_norms) <= 1.0 + 1e-4
    assert_changed(before, model.encoder)
    assert torch.isfinite(trainer.callback_metrics["dino_loss"])


# --------------------------------------------------------------------------------------------
# Every method with the Q-Score regulariser on; SimCLR and MoCo V2+ with IFM
# --------------------------------------------------------------------------------------------
def _train_two_steps(cfg: dict):
    model = build_method(cfg, NUM_CLASSES)
    mask = some_mask(model.features_dim)
    model.qscore_discriminative.copy_(mask)
    before = float_state(find_backbone(model))
    trainer = make_trainer(max_steps=2)
    trainer.fit(model, pretrain_loader(cfg))
    assert trainer.global_step == 2
    assert_changed(before, find_backbone(model))
    assert torch.equal(model.qscore_discriminative, mask)
    # the hook saw every crop of the batch once: B = 2N rows of r features
    assert model.qscore_batch_features.shape == (2 * BATCH, model.features_dim)
    reg = trainer.callback_metrics["train_qscore_reg"]
    assert torch.isfinite(reg) and reg.item() > 0
    return model, trainer


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_with_qscore_regulariser(method):
    _train_two_steps(small_config(method, "qscore.enabled=true"))


@pytest.mark.parametrize("method", IFM_CASES)
def test_ifm_methods_train_with_ifm_and_qscore(method):
    cfg = small_config(method, "qscore.enabled=true", "ifm.enabled=true", "ifm.epsilon=0.1")
    _, trainer = _train_two_steps(cfg)
    contrastive = "train_nnclr_loss" if method == "nnclr" else "train_nce_loss"  # solo-learn's names
    assert torch.isfinite(trainer.callback_metrics[contrastive])


# --------------------------------------------------------------------------------------------
# IFM with epsilon = 0 is solo-learn's own loss
# --------------------------------------------------------------------------------------------
def _twin_modules(method: str, epsilon: float):
    cfg = small_config(method, "ifm.enabled=true", f"ifm.epsilon={epsilon}")
    ours = build_method(cfg, NUM_CLASSES)
    solo = method_classes()[method](**solo_kwargs(cfg, NUM_CLASSES))
    state = ours.state_dict()
    missing, unexpected = solo.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == ["qscore_discriminative"]
    for module in (ours, solo):
        module.train()
        module.log = module.log_dict = lambda *args, **kwargs: None
    return cfg, ours, solo


def _step(module, batch) -> torch.Tensor:
    torch.manual_seed(0)
    return module.training_step(batch, 0)


@pytest.mark.parametrize("method", IFM_CASES)
def test_ifm_epsilon_zero_equals_solo_training_step(method):
    cfg, ours, solo = _twin_modules(method, 0.0)
    batch = next(iter(pretrain_loader(cfg)))
    loss_ours, loss_solo = _step(ours, batch), _step(solo, batch)
    assert loss_ours.item() == pytest.approx(loss_solo.item(), abs=1e-6)
    loss_ours.backward()
    loss_solo.backward()
    # same gradients up to float32 rounding (IFM's loss uses logsumexp, solo's exp/log)
    torch.testing.assert_close(ours.encoder.conv1.weight.grad, solo.encoder.conv1.weight.grad, rtol=1e-4, atol=1e-5)
    queues = [name for name, _ in solo.named_buffers() if name.startswith("queue")]
    assert bool(queues) == (method != "simclr")
    for name in queues:  # both enqueued the same keys
        assert torch.equal(ours.get_buffer(name), solo.get_buffer(name)), name


@pytest.mark.parametrize("method", IFM_CASES)
def test_ifm_positive_epsilon_is_harder_than_solo_loss(method):
    cfg, ours, solo = _twin_modules(method, 0.1)
    batch = next(iter(pretrain_loader(cfg)))
    with torch.no_grad():
        assert _step(ours, batch).item() > _step(solo, batch).item()


def test_ifm_losses_equal_solo_loss_functions():
    from solo.losses.moco import moco_loss_func
    from solo.losses.simclr import simclr_loss_func

    torch.manual_seed(0)
    n, d, k, temperature = 12, 16, 40, 0.2
    z1, z2 = torch.randn(n, d), torch.randn(n, d)
    indexes = torch.arange(n).repeat(2)
    plain = simclr_loss_func(z1, z2, temperature=temperature)
    assert ifm_simclr_loss(torch.cat([z1, z2]), indexes, temperature, epsilon=0).item() == pytest.approx(
        plain.item(), abs=1e-6
    )
    assert ifm_simclr_loss(torch.cat([z1, z2]), indexes, temperature, epsilon=0.1).item() > plain.item()

    query, key = F.normalize(torch.randn(n, d), dim=1), F.normalize(torch.randn(n, d), dim=1)
    queue = F.normalize(torch.randn(d, k), dim=0)
    plain = moco_loss_func(query, key, queue, temperature)
    assert ifm_moco_loss(query, key, queue, temperature, epsilon=0).item() == pytest.approx(plain.item(), abs=1e-6)
    assert ifm_moco_loss(query, key, queue, temperature, epsilon=0.1).item() > plain.item()


# --------------------------------------------------------------------------------------------
# IFM on a non-InfoNCE method is a configuration error
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", NON_INFONCE)
def test_ifm_on_non_infonce_method_is_a_config_error(method):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / f"{method}.yaml", ["ifm.enabled=true"])
    message = str(err.value)
    assert "simclr" in message and "mocov2plus" in message and method in message


def test_ifm_on_byol_is_rejected_by_build_method_too():
    cfg = small_config("byol")
    cfg = copy.deepcopy(cfg)
    cfg["ifm"]["enabled"] = True  # bypass the config check
    with pytest.raises(ConfigError) as err:
        build_method(cfg, NUM_CLASSES)
    message = str(err.value)
    assert "simclr" in message and "mocov2plus" in message and "byol" in message


def test_config_and_adapter_agree_on_ifm_methods():
    for method in IFM_METHODS:  # every method the config accepts IFM for, the adapter builds
        build_method(small_config(method, "ifm.enabled=true"), NUM_CLASSES)


def test_misspelt_method_kwarg_is_a_config_error():
    cfg = small_config("simclr", "method_kwargs.temprature=0.5")
    with pytest.raises(ConfigError, match="temprature"):
        build_method(cfg, NUM_CLASSES)


# --------------------------------------------------------------------------------------------
# Checkpoints: load_method and resume, with the discriminative-set buffer
# --------------------------------------------------------------------------------------------
class _StartStep(Callback):
    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step
        self.start_mask = pl_module.qscore_discriminative.clone()


def test_checkpoint_load_method_and_resume(tmp_path):
    cfg = small_config("mocov2plus", "qscore.enabled=true")
    loader = pretrain_loader(cfg)
    model = build_method(cfg, NUM_CLASSES)
    mask = some_mask(model.features_dim)
    model.qscore_discriminative.copy_(mask)
    every2 = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=2, save_top_k=-1)
    trainer = make_trainer(max_steps=2, enable_checkpointing=True, callbacks=[every2])
    trainer.fit(model, loader)
    assert (tmp_path / "ckpt" / "step=2.ckpt").is_file()
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)

    loaded, loaded_cfg, checkpoint = load_method(str(path))
    assert loaded_cfg == cfg and checkpoint[CHECKPOINT_KEY]["solo_version"] == "1.0.2"
    assert checkpoint["global_step"] == 2
    assert torch.equal(loaded.qscore_discriminative, mask)
    assert_same_state(loaded.state_dict(), model.state_dict())  # weights, BN statistics, queue
    every2_model, _, _ = load_method(str(tmp_path / "ckpt" / "step=2.ckpt"))
    assert torch.equal(every2_model.qscore_discriminative, mask)

    resumed = build_method(cfg, NUM_CLASSES)  # empty mask until the checkpoint is restored
    start = _StartStep()
    trainer = make_trainer(max_steps=4, callbacks=[start])
    trainer.fit(resumed, loader, ckpt_path=str(path))
    assert start.start_step == 2 and torch.equal(start.start_mask, mask)
    assert trainer.global_step == 4
    assert torch.equal(resumed.qscore_discriminative, mask)


# --------------------------------------------------------------------------------------------
# Fix 6: SwAV's queue is part of the module from __init__
# --------------------------------------------------------------------------------------------
class _QueueAtFirstBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not hasattr(self, "queue"):
            self.queue = pl_module.queue.clone()


def test_swav_queue_checkpoint_loads_and_resumes(tmp_path):
    cfg = small_config("swav")
    loader = pretrain_loader(cfg)
    model = build_method(cfg, NUM_CLASSES)
    assert model.queue.shape == (2, 64, 32)  # before on_train_start
    trainer = make_trainer(max_steps=2)
    trainer.fit(model, loader)
    assert model.queue.abs().sum() > 0  # the last steps' projections
    path = tmp_path / "swav.ckpt"
    trainer.save_checkpoint(path)

    loaded, _, _ = load_method(str(path))  # solo-learn 1.0.2: unexpected key "queue"
    assert torch.equal(loaded.queue, model.queue)

    seen = _QueueAtFirstBatch()
    trainer = make_trainer(max_steps=3, callbacks=[seen])
    trainer.fit(build_method(cfg, NUM_CLASSES), loader, ckpt_path=str(path))
    assert trainer.global_step == 3
    assert torch.equal(seen.queue, model.queue)  # solo-learn 1.0.2 zeroed it in on_train_start

    # a checkpoint of a DDP run keeps queue_size // world_size rows: its shape wins
    state = loaded.state_dict()
    state["queue"] = torch.randn(2, 32, 32)
    fresh = build_method(cfg, NUM_CLASSES)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue, state["queue"])


# --------------------------------------------------------------------------------------------
# Fix 9: static_lr groups (SimSiam's predictor) keep the scheduler state plain, so runs resume
# --------------------------------------------------------------------------------------------
def test_simsiam_static_lr_scheduler_state_and_resume(tmp_path):
    cfg = small_config("simsiam", "trainer.max_epochs=6", "scheduler.warmup_epochs=2")
    base = cfg["optimizer"]["lr"] * BATCH / 256
    model = build_method(cfg, NUM_CLASSES)
    (optimizer,), (scheduler,) = model.configure_optimizers()
    assert "get_lr" not in scheduler.__dict__ and scheduler.static_lr_groups == {"indexes": [3], "lrs": [base]}
    torch.save(scheduler.state_dict(), tmp_path / "sched.pt")
    torch.load(tmp_path / "sched.pt", weights_only=True)  # plain data only

    loader = pretrain_loader(cfg)
    trainer = make_trainer(max_epochs=2, limit_train_batches=1)
    trainer.fit(model, loader)
    path = tmp_path / "simsiam.ckpt"
    trainer.save_checkpoint(path)

    trainer = make_trainer(max_epochs=4, limit_train_batches=1)
    trainer.fit(build_method(cfg, NUM_CLASSES), loader, ckpt_path=str(path))  # weights_only loading
    assert trainer.global_step == 4
    lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
    classifier = cfg["optimizer"]["classifier_lr"]
    assert lrs[0] == pytest.approx(pl_bolts_lr(4, base, 0.003, 0.0, 2, 6), rel=1e-12)  # encoder
    assert lrs[1] == pytest.approx(pl_bolts_lr(4, classifier, 0.003, 0.0, 2, 6), rel=1e-12)
    assert lrs[3] == pytest.approx(base, rel=1e-12)  # the predictor keeps its rate


def test_compat_patches_are_idempotent():
    from solo.methods import SwAV, base, dino

    before = (base.BaseMethod.configure_optimizers, SwAV.__init__, dino.DINO.clip_gradients,
              base.BaseMomentumMethod.on_train_batch_end)
    solo_v1_compat.static_lr_in_scheduler_class(base)
    solo_v1_compat.swav_queue_in_state_dict(SwAV)
    solo_v1_compat.rename_dino_clip_gradients(dino.DINO)
    solo_v1_compat.optional_dataloader_idx(base.BaseMomentumMethod)
    after = (base.BaseMethod.configure_optimizers, SwAV.__init__, dino.DINO.clip_gradients,
             base.BaseMomentumMethod.on_train_batch_end)
    assert before == after


# --------------------------------------------------------------------------------------------
# The lasso baseline (Q-Score paper Table 1)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_lasso_adds_the_penalty_on_the_captured_features(method):
    from solo_qscore import lasso_penalty

    cfg = small_config(method, "lasso.enabled=true", "lasso.weight=0.5")
    ours = build_method(cfg, NUM_CLASSES)
    solo = method_classes()[method](**solo_kwargs(cfg, NUM_CLASSES))
    solo.load_state_dict(ours.state_dict(), strict=False)
    logged = {}
    ours.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    ours.log_dict = solo.log = solo.log_dict = lambda *args, **kwargs: None
    ours.train(), solo.train()
    batch = next(iter(pretrain_loader(cfg)))
    with torch.no_grad():
        loss_ours, loss_solo = _step(ours, batch), _step(solo, batch)
    expected = lasso_penalty(ours.qscore_batch_features, weight=0.5)
    assert expected.item() > 0
    assert loss_ours.item() - loss_solo.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert logged["train_lasso"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_lasso_weight_must_be_non_negative():
    with pytest.raises(ConfigError, match="lasso.weight"):
        load_config(CONFIG_DIR / "simclr.yaml", ["lasso.weight=-1"])
