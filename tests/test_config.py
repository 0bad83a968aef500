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
