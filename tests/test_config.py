"""The run config (solo_qscore.config): typed numbers, unknown keys, IFM and hard-negative rules."""

from __future__ import annotations

import pytest
from conftest import SOLO_CIFAR, tiny_config, tiny_model  # tests/ is on sys.path (setup.cfg: pythonpath = tests)
from helpers.cli import CFG, SMALL

from solo_qscore.cli import main
from solo_qscore.config import ConfigError, to_container

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unknown_keys_exit_2_naming_them(tmp_path, capsys):
    for bad, name in (("qscore.epss=1", "epss"), ("max_epoch=3", "max_epoch"), ("+max_epoch=3", "max_epoch"),
                      ("data.train_subsett=4", "train_subsett")):
        code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", *SMALL, bad, f"output_dir={tmp_path / 'x'}"])
        assert code == 2, bad
        err = capsys.readouterr().err
        assert name in err and "configuration error" in err, (bad, err)
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_numbers_are_typed(tmp_path):
    from solo_qscore.config import ConfigError, compose

    cfg = compose(SOLO_CIFAR, "simclr", ["optimizer.weight_decay=5e-4", "qscore.eps=4e0", "ifm.epsilon=2e-1"])
    assert cfg.optimizer.weight_decay == 5e-4 and isinstance(cfg.optimizer.weight_decay, float)
    assert cfg.qscore.eps == 4.0 and cfg.ifm.epsilon == 0.2
    assert isinstance(cfg.optimizer.lr, float)  # solo's YAML "1e-4"-style values are numbers too
    with pytest.raises(ConfigError, match="qscore.eps"):
        compose(SOLO_CIFAR, "simclr", ["qscore.eps=abc"])
    with pytest.raises(ConfigError, match="probe.max_iter"):
        compose(SOLO_CIFAR, "simclr", ["probe.max_iter=0"])


def test_ifm_on_byol_exits_2_naming_supported_methods(tmp_path, capsys):
    from solo_qscore.config import IFM_METHODS

    code = main(["pretrain", *CFG, "--config-name", "byol.yaml", "--ifm", f"output_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "byol" in err.lower()
    for method in IFM_METHODS:
        assert method in err, (method, err)


def simclr_cfg(*overrides: str):
    return tiny_config("simclr", *overrides)


def test_config_defaults():
    assert to_container(simclr_cfg().hard_negatives) == {"enabled": False, "beta": 1.0, "tau_plus": 0.1}
    cfg = simclr_cfg("hard_negatives.enabled=true", "hard_negatives.beta=0", "hard_negatives.tau_plus=0")
    assert to_container(cfg.hard_negatives) == {"enabled": True, "beta": 0, "tau_plus": 0}


@pytest.mark.parametrize(("overrides", "key"), [
    (["hard_negatives.beta=-1"], "hard_negatives.beta"),
    (["hard_negatives.beta=abc"], "hard_negatives.beta"),
    (["hard_negatives.tau_plus=1.0"], "hard_negatives.tau_plus"),
    (["hard_negatives.tau_plus=-0.1"], "hard_negatives.tau_plus"),
    (["hard_negatives.enabled=yes please"], "hard_negatives.enabled"),
    (["hard_negatives.enabled=true", "ifm.enabled=true"], "ifm.enabled"),
    # supervised SimCLR is solo-learn main's SupCon method
    (["hard_negatives.enabled=true", "method=supcon"], "hard_negatives.enabled"),
    (["hard_negatives.gamma=1"], "hard_negatives.gamma"),
])
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        simclr_cfg(*overrides)


@pytest.mark.parametrize("method", ["byol", "mocov2plus", "nnclr"])
def test_hard_negatives_is_simclr_only(method):
    from solo_qscore.adapters.solo_main import build_model

    with pytest.raises(ConfigError) as err:
        tiny_config(method, "hard_negatives.enabled=true")
    assert "hard_negatives.enabled" in str(err.value) and method in str(err.value)
    _, cfg = tiny_model(method)
    cfg.hard_negatives.enabled = True  # bypass the config check: the adapter refuses too
    with pytest.raises(ConfigError, match="SimCLR"):
        build_model(cfg)


def test_disabled_hard_negatives_section_is_ignored_elsewhere():
    # beta/tau_plus are validated but a disabled section never blocks other methods or IFM
    cfg = tiny_config("byol", "hard_negatives.beta=3")
    assert cfg.hard_negatives.enabled is False
    assert simclr_cfg("ifm.enabled=true").ifm.enabled is True


# -- issue 22: keys Hydra adds with "+" are checked as plain keys are; every temperature > 0 -------------
ADDED_KEYS = [("+optimizer.lrr=0.1", "optimizer.lrr", "optimizer.lr"),
              ("+scheduler.warmup_epoch=3", "scheduler.warmup_epoch", "scheduler.warmup_epochs"),
              ("+backbone.nam=x", "backbone.nam", "backbone.name"),
              ("+wandb.projet=x", "wandb.projet", "wandb.project"),
              ("++momentum.base_tauu=0.9", "momentum.base_tauu", "momentum.base_tau")]


@pytest.mark.parametrize(("override", "key", "closest"), ADDED_KEYS, ids=[a for a, _, _ in ADDED_KEYS])
def test_added_keys_solo_learn_does_not_read_are_refused(tmp_path, capsys, override, key, closest):
    code = main(["pretrain", *CFG, "--config-name", "simclr.yaml", *SMALL, override, f"output_dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "configuration error" in err, err
    assert f"unknown config key '{key}' (did you mean '{closest}'?)" in err, err
    assert not (tmp_path / "x").exists()


def test_open_sections_and_the_keys_solo_learn_reads_stay_accepted():
    """``method_kwargs``, ``backbone.kwargs`` and ``optimizer.kwargs`` are passed on unchecked; every key of
    every solo-learn pretrain config file, and every key solo-learn fills in itself, is known."""
    import yaml

    from solo_qscore.config import SOLO_SECTION_KEYS, check_section_keys

    cfg = simclr_cfg("+method_kwargs.anything=1", "+backbone.kwargs.zero_init_residual=true",
                     "+optimizer.kwargs.nesterov=true", "+knn_eval.enabled=false", "+checkpoint.keep_prev=true")
    assert cfg.method_kwargs.anything == 1
    for path in sorted(SOLO_CIFAR.parents[0].rglob("*.yaml")):  # scripts/pretrain/*/*.yaml
        content = yaml.safe_load(path.read_text())
        for section, node in (content.items() if isinstance(content, dict) else ()):  # augmentations/: lists
            if section in SOLO_SECTION_KEYS and isinstance(node, dict):
                assert set(node) <= SOLO_SECTION_KEYS[section], (path, section, set(node))
    _, parsed = tiny_model("byol")  # parse_cfg and BaseMomentumMethod's defaults filled in
    check_section_keys(parsed)


#: every temperature a solo-learn method reads from method_kwargs (see the test below)
TEMPERATURES = [("simclr", "temperature"), ("mocov2plus", "temperature"), ("nnclr", "temperature"),
                ("mocov3", "temperature"), ("supcon", "temperature"), ("swav", "temperature"),
                ("all4one", "temperature"), ("deepclusterv2", "temperature"), ("dino", "student_temperature"),
                ("dino", "teacher_temperature"), ("dino", "warmup_teacher_temperature"),
                ("ressl", "temperature_q"), ("ressl", "temperature_k")]


@pytest.mark.parametrize(("method", "key"), TEMPERATURES, ids=[f"{m}-{k}" for m, k in TEMPERATURES])
def test_every_temperature_must_be_positive(method, key):
    from solo_qscore.config import compose

    for value in (0, -1):
        with pytest.raises(ConfigError, match=rf"'method_kwargs\.{key}' must be a number > 0, got {value}"):
            compose(SOLO_CIFAR, method, [f"++method_kwargs.{key}={value}"])
    assert compose(SOLO_CIFAR, method, [f"++method_kwargs.{key}=0.2"]).method_kwargs[key] == 0.2


def test_the_temperature_list_covers_every_solo_learn_method():
    import inspect
    import re

    from solo.methods import METHODS

    read = {(name, key) for name, cls in METHODS.items()
            for key in re.findall(r"method_kwargs\.(\w*temperature\w*)", inspect.getsource(cls))
            if not key.endswith("_epochs")}
    assert read == set(TEMPERATURES)
