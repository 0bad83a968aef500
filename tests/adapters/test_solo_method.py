"""The method wrapper (solo_qscore.adapters.solo_method): ``with_qscore`` on solo-learn main's methods, the
Q-Score regulariser, lasso, hard negatives, the discriminative buffer in checkpoints, solo's online classifier.

Real solo-learn classes built from solo-learn's own config files, a real Lightning ``Trainer`` on CPU and
real Fashion-MNIST images (16 px, batch 8, two crops), shrunk only in width (projector, prototypes, queues)
so that a run takes a few optimiser steps in seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_config, tiny_model
from helpers.lightning_trainer import trainer
from helpers.module_state import changed, float_state
from omegaconf import OmegaConf

from solo_qscore.adapters.solo_callbacks import qscore_callbacks
from solo_qscore.adapters.solo_checkpoint import load_run
from solo_qscore.adapters.solo_data import make_pretrain_loader
from solo_qscore.adapters.solo_method import CHECKPOINT_KEY, QScoreMixin, with_qscore
from solo_qscore.config import to_container
from solo_qscore.losses.hard_negatives import hard_negative_simclr_loss

PAPER_METHODS = ("simclr", "swav", "mocov2plus", "byol", "dino", "simsiam", "vicreg", "barlow_twins")
BATCH = 8  # optimizer.batch_size of the tiny configs


@pytest.fixture(autouse=True)
def seeded(one_torch_thread):
    torch.manual_seed(0)


def some_mask(features_dim: int) -> torch.Tensor:
    mask = torch.zeros(features_dim, dtype=torch.bool)
    mask[::3] = True
    return mask


@pytest.mark.parametrize("method", [*PAPER_METHODS, "nnclr", "mocov3"])
def test_every_method_takes_steps_with_qscore(method):
    model, cfg = tiny_model(method, "qscore.enabled=true", "qscore.eps=1.0")
    assert isinstance(model, QScoreMixin) and type(model).__mro__[2].__module__.startswith("solo.methods")
    model.qscore_discriminative.copy_(some_mask(model.features_dim))  # regulariser on from the first step
    logged = {}
    original = model.log_dict

    def spy(metrics, *args, **kwargs):
        logged.update({k: float(v) for k, v in metrics.items() if k.startswith("train_qscore")})
        return original(metrics, *args, **kwargs)

    model.log_dict = spy
    before = float_state(model)
    trainer().fit(model, make_pretrain_loader(cfg))
    assert changed(before, model), f"{method}: backbone weights did not change"
    assert "train_qscore_reg" in logged and torch.isfinite(torch.tensor(logged["train_qscore_reg"]))
    assert model.qscore_batch_features.shape == (2 * 8, model.features_dim)  # every crop, no second pass


def test_with_qscore_on_a_plain_solo_config():
    """The two-line integration: a config straight from solo's parse_cfg, without our sections."""
    from solo.args.pretrain import parse_cfg
    from solo.methods import METHODS

    from solo_qscore.config import PLUGIN_SECTIONS

    cfg = tiny_config("simclr")
    for key in PLUGIN_SECTIONS:
        cfg.pop(key)
    cfg.data.dataset = "cifar10"  # solo's own dataset name: its parse_cfg checks it
    cfg.devices = [0]  # solo's configs list devices
    cfg = parse_cfg(cfg)
    model = with_qscore(METHODS[cfg.method])(cfg)
    assert model.cfg.qscore.enabled is False and model.cfg.qscore.eps == 4.0  # typed defaults filled in
    callbacks = qscore_callbacks(OmegaConf.merge(cfg, {"data": {"dataset": "fashion_mnist"}}))
    # the NaN-loss stop first (before the statistics' epoch end), so solo's main_pretrain.py gets it too
    assert [type(c).__name__ for c in callbacks][:4] == ["FiniteLossCallback", "ActivationStatisticsCallback",
                                                         "LabelFreeMetricsCallback", "QScoreProbeCallback"]
    assert with_qscore(METHODS["simclr"]) is type(model)  # one class per method


def test_hard_negatives_and_lasso_take_steps():
    for extra in (["hard_negatives.enabled=true"], ["lasso.enabled=true", "lasso.weight=0.1"]):
        model, cfg = tiny_model("simclr", *extra)
        before = float_state(model)
        trainer().fit(model, make_pretrain_loader(cfg))
        assert changed(before, model), extra


def test_discriminative_buffer_survives_checkpoint_and_resume(tmp_path):
    import lightning.pytorch as pl

    model, cfg = tiny_model("byol", "qscore.enabled=true")
    mask = some_mask(model.features_dim)
    model.qscore_discriminative.copy_(mask)
    ckpt = tmp_path / "ckpt"
    tr = trainer(max_steps=2, enable_checkpointing=True,
                 callbacks=[pl.callbacks.ModelCheckpoint(dirpath=str(ckpt), save_last=True)])
    tr.fit(model, make_pretrain_loader(cfg))
    checkpoint = torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=True)  # our checkpoints are safe
    assert checkpoint[CHECKPOINT_KEY]["config"]["method"] == "byol"
    loaded, loaded_cfg, _ = load_run(ckpt / "last.ckpt")
    assert torch.equal(loaded.qscore_discriminative, mask)
    assert loaded_cfg.qscore.enabled is True
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    fresh, _ = tiny_model("byol", "qscore.enabled=true")
    assert not fresh.qscore_discriminative.any()
    tr2 = trainer(max_steps=4, enable_checkpointing=False)
    tr2.fit(fresh, make_pretrain_loader(cfg), ckpt_path=str(ckpt / "last.ckpt"))  # Lightning's own resume
    assert tr2.global_step == 4
    assert torch.equal(fresh.qscore_discriminative, mask)


def _train_two_steps(model, cfg):
    """Two optimiser steps of ``model`` in a Lightning Trainer on solo-learn's pre-training loader, with a
    fixed discriminative set so that the Q-Score regulariser is on."""
    import lightning.pytorch as pl

    from solo_qscore.probe.backbone import find_backbone

    mask = torch.zeros(model.features_dim, dtype=torch.bool)
    mask[::3] = True
    model.qscore_discriminative.copy_(mask)
    before = {k: v.detach().clone() for k, v in find_backbone(model).state_dict().items()
              if v.dtype.is_floating_point}
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, make_pretrain_loader(cfg))
    assert trainer.global_step == 2
    after = find_backbone(model).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight changed"
    assert torch.equal(model.qscore_discriminative, mask)
    # the hook saw every crop of the batch once: B = 2N rows of r features
    assert model.qscore_batch_features.shape == (2 * BATCH, model.features_dim)
    reg = trainer.callback_metrics["train_qscore_reg"]
    assert torch.isfinite(reg) and reg.item() > 0
    return model, trainer


def test_simclr_with_hard_negatives_takes_real_optimiser_steps():
    torch.manual_seed(0)
    model, cfg = tiny_model("simclr", "qscore.enabled=true", "hard_negatives.enabled=true", "hard_negatives.beta=1.0")
    model, trainer = _train_two_steps(model, cfg)
    assert to_container(model.cfg.hard_negatives) == {"enabled": True, "beta": 1.0, "tau_plus": 0.1}
    assert torch.isfinite(trainer.callback_metrics["train_nce_loss"])


def _twins(*overrides: str):
    """Our wrapped SimCLR with hard negatives and solo-learn's own SimCLR, with the same weights."""
    from solo.methods import METHODS

    torch.manual_seed(0)
    ours, cfg = tiny_model("simclr", "hard_negatives.enabled=true", *overrides)
    # solo's own CIFAR stem (3x3 conv, no max-pool) is what the wrapper gives the 16 px offline data
    solo_cfg = copy.deepcopy(cfg)
    solo_cfg.data.dataset = "cifar10"
    solo = METHODS["simclr"](solo_cfg)
    missing, unexpected = solo.load_state_dict(ours.state_dict(), strict=False)
    assert missing == [] and unexpected == ["qscore_discriminative"]
    for module in (ours, solo):
        module.train()
        module.log = module.log_dict = lambda *args, **kwargs: None
    return cfg, ours, solo


def pretrain_loader(cfg):
    return make_pretrain_loader(cfg)


def test_training_step_beta_zero_equals_solo_simclr_step():
    cfg, ours, solo = _twins("hard_negatives.beta=0", "hard_negatives.tau_plus=0")
    batch = next(iter(pretrain_loader(cfg)))
    loss_ours, loss_solo = ours.training_step(batch, 0), solo.training_step(batch, 0)
    assert loss_ours.item() == pytest.approx(loss_solo.item(), abs=1e-5)
    loss_ours.backward()
    loss_solo.backward()
    torch.testing.assert_close(ours.backbone.conv1.weight.grad, solo.backbone.conv1.weight.grad, rtol=1e-4, atol=1e-5)


def test_training_step_uses_the_hard_negative_loss():
    from solo.methods.base import BaseMethod

    cfg, ours, solo = _twins("hard_negatives.beta=2.0", "hard_negatives.tau_plus=0.1")
    batch = next(iter(pretrain_loader(cfg)))
    captured = []
    ours.projector.register_forward_hook(lambda module, inputs, output: captured.append(output))
    with torch.no_grad():
        loss_ours = ours.training_step(batch, 0)
        loss_solo = solo.training_step(batch, 0)
        out = BaseMethod.training_step(solo, batch, 0)  # the online classifier's loss
        expected = hard_negative_simclr_loss(torch.cat(captured), batch[0].repeat(2), ours.temperature, 2.0, 0.1)
    assert loss_ours.item() == pytest.approx(expected.item() + out["loss"].item(), abs=1e-5)
    assert abs(loss_ours.item() - loss_solo.item()) > 1e-3


def test_solos_online_classifier_loss_is_finite_on_unlabelled_images():
    """solo-learn's online classifier takes the mean cross-entropy over labelled samples: NaN on a batch of
    unlabelled images (targets -1), which the run's non-finite-loss stop would end the run on. Ours is 0 then
    (no gradient), and solo's value when there are labels."""
    model, _ = tiny_model("simclr")
    x = torch.randn(4, 3, 16, 16)
    unlabelled = model._base_shared_step(x, torch.full((4,), -1))
    assert unlabelled["loss"].item() == 0.0
    unlabelled["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.classifier.parameters() if p.grad is not None)
    targets = torch.tensor([0, 1, -1, 2])
    out = model._base_shared_step(x, targets)
    expected = torch.nn.functional.cross_entropy(out["logits"], targets, ignore_index=-1)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)




GRAD_KEYS = ("train_qscore_q_grad_norm", "train_qscore_l1_grad_norm", "train_qscore_grad_ratio")


def _logging_spy(model, seen: list) -> None:
    """Records the ``train_qscore*`` metrics of each ``log_dict`` call, with the step it was made at."""
    original = model.log_dict

    def spy(metrics, *args, **kwargs):
        trainer = model._trainer
        seen.append((trainer.global_step if trainer is not None else None,
                     {k: v.detach().clone() for k, v in metrics.items() if k.startswith("train_qscore")}))
        if trainer is not None and trainer.state.fn is not None:  # inside fit: Lightning's own log
            return original(metrics, *args, **kwargs)
        return None

    model.log_dict = spy


def test_regulariser_gradient_norms_logged_on_the_steps_lightning_writes():
    """log_every_n_steps=2: Lightning writes the metrics of step 1 (its rule: (step + 1) % n == 0), so the two
    extra backward passes run there only, and the norms of that step are what it writes."""
    model, cfg = tiny_model("simclr", "qscore.enabled=true", "qscore.eps=1.0")
    model.qscore_discriminative.copy_(some_mask(model.features_dim))
    seen: list = []
    _logging_spy(model, seen)
    tr = trainer(max_steps=2, log_every_n_steps=2)
    tr.fit(model, make_pretrain_loader(cfg))
    with_norms = [(step, m) for step, m in seen if GRAD_KEYS[0] in m]
    assert [step for step, _ in with_norms] == [1], [(step, sorted(m)) for step, m in seen]
    norms = with_norms[0][1]
    assert norms["train_qscore_q_grad_norm"] > 0 and norms["train_qscore_l1_grad_norm"] > 0
    torch.testing.assert_close(norms["train_qscore_grad_ratio"],
                               norms["train_qscore_q_grad_norm"] / norms["train_qscore_l1_grad_norm"])
    for key in GRAD_KEYS:
        torch.testing.assert_close(tr.callback_metrics[f"{key}_step"], norms[key])


def test_regulariser_gradient_norms_leave_the_training_gradients_unchanged():
    """The same model and batch, a training step with and without the gradient-norm logging: every
    parameter's gradient is bit-identical (the extra autograd.grad writes no .grad and frees nothing)."""
    import lightning.pytorch as pl

    model, cfg = tiny_model("simclr", "qscore.enabled=true", "qscore.eps=1.0")
    model.qscore_discriminative.copy_(some_mask(model.features_dim))
    model.train()
    batch = next(iter(make_pretrain_loader(cfg)))
    grads, logged = [], []
    for every in (2, 1):  # step 0: not a logging step with n=2, one with n=1
        twin = copy.deepcopy(model)
        seen: list = []
        _logging_spy(twin, seen)
        twin.log = lambda *args, **kwargs: None  # solo's own metrics: no fit loop to take them
        twin.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, log_every_n_steps=every,
                                  enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        twin.training_step(batch, 0).backward()
        grads.append({n: p.grad.clone() for n, p in twin.named_parameters() if p.grad is not None})
        logged.append({k for _, m in seen for k in m})
    assert not logged[0] & set(GRAD_KEYS) and set(GRAD_KEYS) <= logged[1], logged
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("backbone.") for k in grads[0])
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name
