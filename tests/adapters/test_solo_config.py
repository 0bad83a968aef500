"""A solo-learn run config made ready to run (solo_qscore.adapters.solo_config): on a machine without a GPU,
through solo-learn's ``parse_cfg``."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from solo_qscore.adapters.solo_config import adapt_to_machine, prepare_config
from solo_qscore.config import ConfigError


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU here: the config is kept as it is")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_config_runs_on_the_cpu(accelerator):
    """solo-learn's GPU settings become CPU ones (so no later "GPU asked for but none" check is needed: the
    run's Trainer never sees a GPU accelerator on a machine without one)."""
    cfg = tiny_config("simclr", f"accelerator={accelerator}", "devices=[0]", "strategy=ddp", "precision=16-mixed")
    changes = adapt_to_machine(cfg)
    assert (cfg.accelerator, cfg.devices, cfg.strategy) == ("cpu", 1, "auto")
    assert cfg.precision in ("bf16-mixed", "32-true")
    assert changes[:3] == [f"accelerator {accelerator} -> cpu (no GPU here)", "devices [0] -> 1",
                           "strategy ddp -> auto (one process)"]


def test_an_unknown_dataset_is_one_config_error():
    with pytest.raises(ConfigError, match="config key 'data.dataset': unknown dataset 'svhn'"):
        prepare_config(tiny_config("simclr", "data.dataset=svhn"))
