"""Fixtures shared by several test modules."""

from __future__ import annotations

import socket

import pytest

from solo_qscore.data import datasets as ds_mod


@pytest.fixture
def offline_sockets(monkeypatch):
    """Make any download attempt (STL-10, CIFAR-10) fail fast, even if the network hangs instead of refusing."""
    monkeypatch.setattr(ds_mod, "DOWNLOAD_TIMEOUT", 2.0)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2.0)
    yield
    socket.setdefaulttimeout(previous)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the whole module (small problems; a busy CI machine), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- solo-learn main runs, shrunk to seconds ---------------------------------------------------
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PACKAGED_CIFAR = REPO / "method_configs" / "cifar"
# solo-learn main's own config files, unchanged (../shared/solo-learn-main, beside the checkout)
SOLO_CIFAR = REPO.parent / "shared" / "solo-learn-main" / "scripts" / "pretrain" / "cifar"

#: config file of each method in solo-learn's scripts/pretrain/cifar
CONFIG_FILES = {"simclr": "simclr", "mocov2plus": "mocov2plus", "byol": "byol", "dino": "dino",
                "simsiam": "simsiam", "vicreg": "vicreg", "barlow_twins": "barlow", "swav": "swav",
                "nnclr": "nnclr", "mocov3": "mocov3"}
_PROJ = ["method_kwargs.proj_hidden_dim=64", "method_kwargs.proj_output_dim=32"]
#: width overrides per method (projector, prototypes, queues), so that a step takes well under a second
SHRINK = {
    "simclr": _PROJ,
    "mocov2plus": [*_PROJ, "method_kwargs.queue_size=64"],
    "byol": [*_PROJ, "method_kwargs.pred_hidden_dim=64"],
    "dino": [*_PROJ, "method_kwargs.num_prototypes=64"],
    "simsiam": [*_PROJ, "method_kwargs.pred_hidden_dim=64"],
    "vicreg": _PROJ,
    "barlow_twins": _PROJ,
    "swav": [*_PROJ, "method_kwargs.num_prototypes=16", "method_kwargs.queue_size=64"],
    "nnclr": [*_PROJ, "method_kwargs.pred_hidden_dim=64", "method_kwargs.queue_size=64"],
    "mocov3": [*_PROJ, "method_kwargs.pred_hidden_dim=64"],
}
#: real Fashion-MNIST, 16 px, batch 8, on the CPU in float32, no wandb; the end-of-training report without
#: its compression study (~90 probe fits, a few seconds a run: tests/report/ and the main job's test cover it)
TINY = [
    "data.dataset=fashion_mnist", "data.train_subset=64", "data.val_subset=16", "data.num_workers=0",
    "optimizer.batch_size=8", "wandb.enabled=false", "accelerator=cpu", "devices=1", "strategy=auto",
    "precision=32-true", "sync_batchnorm=false", "max_epochs=1",
    "++scheduler.warmup_epochs=0", "probe.compression=false",
]


def tiny_config(method: str = "simclr", *overrides: str, config_dir: Path | None = None):
    """A composed run config of ``method`` from solo-learn's own cifar file (or ``config_dir``), shrunk."""
    from solo_qscore.config import compose

    folder = config_dir or (SOLO_CIFAR if SOLO_CIFAR.is_dir() else PACKAGED_CIFAR)
    cfg = compose(folder, CONFIG_FILES[method], [*SHRINK[method], *TINY, *overrides])
    if not any(o.startswith("augmentations.") for o in overrides):
        for aug in cfg.augmentations:  # 16 px crops (every pipeline: asymmetric configs have two)
            aug.crop_size = 16
    return cfg


def tiny_model(method: str = "simclr", *overrides: str, config_dir: Path | None = None):
    """``(model, cfg)``: the wrapped solo-learn module of a tiny config (parse_cfg applied)."""
    from solo_qscore.adapters.solo_main import build_model, prepare_config

    cfg = prepare_config(tiny_config(method, *overrides, config_dir=config_dir))
    return build_model(cfg), cfg


def tiny_pretrain(output_dir: Path, method: str = "simclr", *overrides: str, **kwargs) -> dict:
    """A real ``solo-qscore pretrain`` run of a tiny config into ``output_dir``; returns its summary."""
    from solo_qscore.train import pretrain

    cfg = tiny_config(method, f"output_dir={output_dir}", "probe.max_iter=20", *overrides)
    return pretrain(cfg, **kwargs)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """``solo_qscore.train.pretrain``: SimCLR ResNet-18, one step on 32 Fashion-MNIST images at 16 px, with an
    extra callback (``helpers.runs._StepCounter``) that counts the steps it sees."""
    from helpers.runs import _StepCounter

    out = tmp_path_factory.mktemp("rf_run")
    summary = tiny_pretrain(out, "simclr", "data.fallback=null", "optimizer.batch_size=16", "data.train_subset=32",
                            "data.val_subset=24", "+max_steps=1", "probe.max_iter=20",
                            "method_kwargs.proj_hidden_dim=32", "method_kwargs.proj_output_dim=16",
                            extra_callbacks=[_StepCounter()])
    return Path(summary["checkpoint"])
