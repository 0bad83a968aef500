"""Both Lightning namespaces (solo_qscore.adapters.lightning): the callbacks in a ``lightning.pytorch`` and a
``pytorch_lightning`` Trainer."""

from __future__ import annotations

import pytest
import torch
from helpers.lightning_trainer import trainer


@pytest.fixture(autouse=True)
def seeded(one_torch_thread):
    torch.manual_seed(0)


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_callbacks_in_both_lightning_namespaces(namespace):
    """The same callback instances in a Trainer of either namespace (solo's module is lightning.pytorch,
    so under pytorch_lightning we drive a small module of that namespace)."""
    import importlib

    from solo_qscore.callbacks import ActivationStatisticsCallback

    pl = importlib.import_module(namespace)
    stats = ActivationStatisticsCallback(eps=1.0)
    assert isinstance(stats, pl.Callback)

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 32), torch.nn.ReLU())
            self.register_buffer("qscore_discriminative", torch.zeros(32, dtype=torch.bool))

        def training_step(self, batch, batch_idx):
            return self.backbone(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 12), torch.zeros(64)),
                                       batch_size=16)
    module = Tiny()
    trainer(namespace, max_epochs=1, max_steps=-1, callbacks=[stats]).fit(module, data)
    assert stats.frequencies is not None and module.qscore_discriminative.any()


def test_autocast_dtype_of_the_trainers_precision():
    from types import SimpleNamespace

    from solo_qscore.adapters.lightning import autocast_dtype

    cpu, cuda = torch.device("cpu"), SimpleNamespace(type="cuda")
    assert autocast_dtype(SimpleNamespace(precision="bf16-mixed"), cpu) is torch.bfloat16
    assert autocast_dtype(SimpleNamespace(precision="16-mixed"), cuda) is torch.float16
    assert autocast_dtype(SimpleNamespace(precision="16-mixed"), cpu) is None  # float16 on a CPU: float32
    assert autocast_dtype(SimpleNamespace(precision="32-true"), cuda) is None
    assert autocast_dtype(object(), cpu) is None
