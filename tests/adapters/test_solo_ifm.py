"""IFM on solo-learn main's InfoNCE methods (solo_qscore.adapters.solo_ifm): every method takes steps, eps = 0
is solo-learn's own loss and gradients, the dispatch table covers exactly ``IFM_METHODS``.

Real solo-learn classes from solo-learn's own config files and real Fashion-MNIST images (16 px, batch 8).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_config, tiny_model
from helpers.lightning_trainer import trainer
from helpers.module_state import changed, float_state

from solo_qscore.adapters.solo_data import make_pretrain_loader
from solo_qscore.adapters.solo_ifm import IFM_STEPS, ifm_training_step
from solo_qscore.adapters.solo_method import with_qscore
from solo_qscore.config import IFM_METHODS, ConfigError

INFONCE = ("simclr", "mocov2plus", "nnclr", "mocov3")


@pytest.fixture(autouse=True)
def seeded(one_torch_thread):
    torch.manual_seed(0)


# every InfoNCE method with IFM; the +norm / +pre-norm variants on SimCLR (the methods share the loss code)
@pytest.mark.parametrize(("method", "variant"), [*((m, "default") for m in INFONCE),
                                                 ("simclr", "norm"), ("simclr", "pre_norm")])
def test_infonce_methods_take_steps_with_ifm(method, variant):
    model, cfg = tiny_model(method, "ifm.enabled=true", "ifm.epsilon=0.2", f"ifm.variant={variant}")
    before = float_state(model)
    trainer().fit(model, make_pretrain_loader(cfg))
    assert changed(before, model)


def _silence_logging(model) -> None:
    model.log = lambda *a, **k: None
    model.log_dict = lambda *a, **k: None


@pytest.mark.parametrize("method", INFONCE)
def test_ifm_epsilon_zero_equals_solos_own_loss_and_gradients(method):
    """The same weights, batch and crops: solo's own training_step vs ours with IFM at eps = 0."""
    plain, cfg = tiny_model(method)
    ours = copy.deepcopy(plain)
    ours.cfg.ifm.enabled, ours.cfg.ifm.epsilon = True, 0.0
    for m in (plain, ours):
        _silence_logging(m)
        m.train()
    batch = next(iter(make_pretrain_loader(cfg)))
    solo_cls = type(plain).__mro__[2]
    assert solo_cls.__module__.startswith("solo.methods")
    torch.manual_seed(1)
    loss_solo = solo_cls.training_step(plain, batch, 0)  # solo-learn's own step and loss
    torch.manual_seed(1)
    loss_ifm = ours.training_step(batch, 0)
    loss_solo.backward()
    loss_ifm.backward()
    assert torch.allclose(loss_ifm, loss_solo, atol=1e-6, rtol=1e-6), (float(loss_ifm), float(loss_solo))
    for (name, p), (_, q) in zip(plain.named_parameters(), ours.named_parameters()):
        if p.grad is not None or q.grad is not None:
            rel = float((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12))
            assert rel < 1e-4, (name, rel)  # float32 reduction order


def test_ifm_positive_epsilon_changes_the_loss():
    plain, cfg = tiny_model("simclr")
    ours = copy.deepcopy(plain)
    ours.cfg.ifm.enabled, ours.cfg.ifm.epsilon = True, 0.5
    for m in (plain, ours):
        _silence_logging(m)
    batch = next(iter(make_pretrain_loader(cfg)))
    assert float(ours.training_step(batch, 0)) > float(type(plain).__mro__[2].training_step(plain, batch, 0))


@pytest.mark.parametrize("method", ["byol", "swav", "dino", "simsiam", "vicreg", "barlow_twins"])
def test_ifm_on_a_non_infonce_method_is_a_clear_error(method):
    with pytest.raises(ConfigError, match="IFM applies to InfoNCE methods only .*simclr, mocov2plus, nnclr, mocov3"):
        tiny_config(method, "ifm.enabled=true")


def test_ifm_error_also_when_wrapping_directly():
    """A user's own main_pretrain.py: with_qscore(METHODS[...])(cfg) with a cfg asking for IFM on BYOL."""
    from solo.methods import METHODS

    cfg = tiny_config("byol")
    cfg.ifm.enabled = True
    with pytest.raises(ConfigError, match="byol"):
        with_qscore(METHODS["byol"])(cfg)



def test_the_dispatch_table_is_keyed_like_ifm_methods():
    """Issue 23: one step per IFM method, found by name; before, an if-chain sent any other name to MoCo V3's."""
    assert tuple(IFM_STEPS) == IFM_METHODS == INFONCE


def test_an_unknown_method_is_a_clear_error_not_another_methods_step():
    """A module whose method has no IFM step (the wrapper's own checks bypassed) is refused by name, before
    any forward pass: before, it ran MoCo V3's step on a BYOL module."""
    model, cfg = tiny_model("byol")
    model.cfg.ifm.enabled = True
    batch = next(iter(make_pretrain_loader(cfg)))
    with pytest.raises(ConfigError, match=r"IFM applies to InfoNCE methods only \(simclr, mocov2plus, nnclr, "
                                          r"mocov3\); method 'byol' is not one of them"):
        model.training_step(batch, 0)
    with pytest.raises(ConfigError, match="method 'swav'"):
        ifm_training_step(model, "swav", batch, 0)
