"""solo-learn main (1.0.6) through the adapter (solo_qscore.adapters.solo_main): ``with_qscore``, IFM, hard
negatives, checkpoints.

Real solo-learn classes built from solo-learn's own config files
(``../shared/solo-learn-main/scripts/pretrain/cifar/*.yaml``, unchanged), a real Lightning
``Trainer`` on CPU and real Fashion-MNIST images (16 px, batch 8, two crops), shrunk only in width
(projector, prototypes, queues) so that a run takes a few optimiser steps in seconds.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from conftest import CONFIG_FILES, SOLO_CIFAR, tiny_config, tiny_model
from helpers.lightning_trainer import trainer
from omegaconf import OmegaConf

from solo_qscore.adapters.solo_main import (
    CHECKPOINT_KEY,
    QScoreMixin,
    load_run,
    make_pretrain_loader,
    qscore_callbacks,
    with_qscore,
)
from solo_qscore.config import ConfigError, to_container
from solo_qscore.losses.hard_negatives import hard_negative_simclr_loss

PAPER_METHODS = ("simclr", "swav", "mocov2plus", "byol", "dino", "simsiam", "vicreg", "barlow_twins")
INFONCE = ("simclr", "mocov2plus", "nnclr", "mocov3")
BATCH = 8  # optimizer.batch_size of the tiny configs


@pytest.fixture(autouse=True)
def seeded(one_torch_thread):
    torch.manual_seed(0)


def float_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}


def changed(before: dict, module: torch.nn.Module, prefix: str = "backbone.") -> bool:
    after = float_state(module)
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def some_mask(features_dim: int) -> torch.Tensor:
    mask = torch.zeros(features_dim, dtype=torch.bool)
    mask[::3] = True
    return mask


def test_configs_are_solo_learns_own_files():
    assert SOLO_CIFAR.is_dir(), "../shared/solo-learn-main/scripts/pretrain/cifar is needed for these tests"
    for name in CONFIG_FILES.values():
        assert (SOLO_CIFAR / f"{name}.yaml").is_file()


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
    assert [type(c).__name__ for c in callbacks][:3] == ["FiniteLossCallback", "ActivationStatisticsCallback",
                                                         "QScoreProbeCallback"]
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

    from solo_qscore.adapters.solo_main import make_pretrain_loader
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
    from solo_qscore.adapters.solo_main import make_pretrain_loader

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


# -- solo-learn's own image folders (data.dataset=custom) ------------------------------------------------------
def _custom(folder, *overrides: str):
    return tiny_config("simclr", "data.dataset=custom", f"data.train_path={folder}", "data.val_path=null",
                       *overrides)


def _types(callbacks) -> list[str]:
    return [type(c).__name__ for c in callbacks]


def test_qscore_callbacks_on_image_folders(tmp_path):
    """Issue 22 (3): ``qscore_callbacks`` raised "unknown dataset 'custom'" for solo-learn's documented
    custom-data keys. The probe runs on labelled folders (a held-out part of the training folder when there is
    no ``val_path``) and is skipped, with one warning, where there are no labels; the statistics always run."""
    from helpers.image_folders import flat_folder, labelled_folder

    from solo_qscore.callbacks import QScoreProbeCallback

    labelled = labelled_folder(tmp_path / "labelled", classes=("ant", "bee"), per_class=5)
    callbacks = qscore_callbacks(_custom(labelled))
    assert _types(callbacks) == ["FiniteLossCallback", "ActivationStatisticsCallback", "QScoreProbeCallback",
                                 "BadImagesCallback"]
    probe = next(c for c in callbacks if isinstance(c, QScoreProbeCallback))
    assert (len(probe.train_loader.dataset), len(probe.val_loader.dataset)) == (8, 2)

    single = labelled_folder(tmp_path / "single", classes=("ant",), per_class=3)
    cases = [(_custom(flat_folder(tmp_path / "flat", n=4)), "no class sub-folders"),
             (_custom(single), "a single class sub-folder (ant)"),
             (_custom(labelled, "+data.no_labels=true"), "data.no_labels=true")]
    for cfg, reason in cases:
        with pytest.warns(UserWarning, match=f"solo-qscore: the probe is skipped: .*{re.escape(reason)}") as caught:
            callbacks = qscore_callbacks(cfg)
        assert sum("probe is skipped" in str(w.message) for w in caught) == 1
        assert _types(callbacks) == ["FiniteLossCallback", "ActivationStatisticsCallback", "BadImagesCallback"]
    with pytest.warns(UserWarning, match="probe is skipped"):  # the exact statistics pass reads unlabelled images
        stats = qscore_callbacks(_custom(single, "qscore.statistics=dataloader"))[1]
    assert len(stats.dataloader.dataset) == 3

    with pytest.raises(ConfigError, match="config key 'data.format': h5 files"):
        qscore_callbacks(_custom(labelled, "data.format=h5"))
    cfg = _custom(labelled)
    cfg.data.bad_images = "ignore"  # solo's own script: no compose-time check
    with pytest.raises(ConfigError, match="config key 'data.bad_images' must be one of error, skip"):
        qscore_callbacks(cfg)


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


def _solo_main_pretrain(tmp_path, folder, *overrides: str):
    """solo-learn's OWN ``main_pretrain.py`` (copied, with the README's two lines patched in, and a print of
    what the callbacks found) on ``folder`` with solo-learn's documented custom-data keys, in a subprocess."""
    import os
    import subprocess
    import sys

    solo_main = SOLO_CIFAR.parents[2] / "main_pretrain.py"
    text = solo_main.read_text()
    for old, new in [
        ("from solo.methods import METHODS\n",
         "from solo.methods import METHODS\n"
         "from solo_qscore.adapters.solo_main import qscore_callbacks, with_qscore\n"),
        ("    model = METHODS[cfg.method](cfg)\n", "    model = with_qscore(METHODS[cfg.method])(cfg)\n"),
        ("    trainer_kwargs = OmegaConf.to_container(cfg)\n",
         "    callbacks += qscore_callbacks(cfg)\n    trainer_kwargs = OmegaConf.to_container(cfg)\n"),
        ("        trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)\n",
         "        trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)\n"
         "        stats = next(c for c in callbacks if hasattr(c, 'frequencies'))\n"
         "        probe = next((c for c in callbacks if hasattr(c, 'last_report')), None)\n"
         "        print('QSCORE', stats.frequencies is not None, int(model.qscore_discriminative.sum()),\n"
         "              None if probe is None else probe.last_report.accuracy, flush=True)\n"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "main_pretrain.py").write_text(text)
    args = ["--config-path", str(SOLO_CIFAR), "--config-name", "simclr.yaml", "data.dataset=custom",
            "data.format=image_folder", f"data.train_path={folder}", "data.val_path=null",
            # tiny and on the CPU, through Hydra overrides only ('"1"': a length for solo's lr scaling, an int
            # for Lightning's CPU accelerator)
            "data.num_workers=0", "optimizer.batch_size=4", "method_kwargs.proj_hidden_dim=64",
            "method_kwargs.proj_output_dim=32", "augmentations.0.crop_size=16", "accelerator=cpu", 'devices="1"',
            "strategy=auto", "precision=32-true", "sync_batchnorm=false", "max_epochs=1",
            "++scheduler.warmup_epochs=0", "wandb.enabled=false", "checkpoint.enabled=false",
            "auto_resume.enabled=false", "+probe.max_iter=20", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "main_pretrain.py", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = next(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("QSCORE "))
    return result, done.stderr


def test_solo_learns_own_main_pretrain_on_a_labelled_image_folder(tmp_path):
    """Issue 22 (3), end to end: solo-learn's own script with the README's two lines crashed in
    ``qscore_callbacks`` (ValueError: unknown dataset 'custom'). Now D is computed, the probe runs on a held-out
    part of the class folders, and a truncated image is skipped and named (``+data.bad_images=skip``)."""
    from helpers.image_folders import labelled_folder, truncate

    folder = labelled_folder(tmp_path / "images", classes=("ant", "bee", "cat"), per_class=4)
    truncate(folder / "bee" / "01.png")
    (stats_ran, num_discriminative, accuracy), err = _solo_main_pretrain(tmp_path, folder, "+data.bad_images=skip")
    assert stats_ran == "True" and int(num_discriminative) > 0
    assert 0.0 <= float(accuracy) <= 1.0  # the probe's report on the 3 held-out images
    assert f"solo-qscore: skipped 1 unreadable image (data.bad_images=skip): {folder}/bee/01.png" in err


def test_solo_learns_own_main_pretrain_on_unlabelled_images(tmp_path):
    """solo-learn's documented unlabelled form (a flat folder, ``data.no_labels=true``): D is computed, the probe
    is skipped with one line, and the run is not stopped by solo's online classifier (NaN without labels)."""
    from helpers.image_folders import flat_folder

    folder = flat_folder(tmp_path / "images", n=12)
    (stats_ran, num_discriminative, accuracy), err = _solo_main_pretrain(tmp_path, folder, "+data.no_labels=true")
    assert stats_ran == "True" and int(num_discriminative) > 0 and accuracy == "None"
    assert err.count("solo-qscore: the probe is skipped") == 1, err[-3000:]


def test_the_probe_gets_the_runs_report_settings_built_once():
    """Issue 23: the probe's report settings are the run's (``ReportConfig.from_run``), not assembled by hand."""
    from solo_qscore.callbacks import QScoreProbeCallback
    from solo_qscore.report.config import ReportConfig

    cfg = tiny_config("simclr", "qscore.eps=2.5", "qscore.band=[40,90]", "probe.max_iter=7",
                      "probe.weight_decay=0.001")
    probe = next(c for c in qscore_callbacks(cfg) if isinstance(c, QScoreProbeCallback))
    assert probe.config == ReportConfig.from_run(cfg)
    assert (probe.config.eps, probe.config.band, probe.config.probe) == (
        2.5, (40.0, 90.0), {"max_iter": 7, "weight_decay": 0.001})
    assert probe.class_names[:2] == ["T-shirt/top", "Trouser"]
