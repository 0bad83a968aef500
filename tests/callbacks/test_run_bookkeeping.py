"""The bookkeeping callbacks of a pretrain run (callbacks/run_bookkeeping.py) in a real Trainer of either
Lightning namespace: every step's loss, the training time and a ``max_time`` stop, the (absent) wandb id in
checkpoints, the run-folder commit after the first step."""

from __future__ import annotations

import pytest
import torch
from helpers.lightning_trainer import trainer

from solo_qscore.adapters.lightning import available_namespaces
from solo_qscore.callbacks.run_bookkeeping import CommitRunFolder, LossHistory, RunRecord, TrainClock


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _module(namespace: str):
    import importlib

    pl = importlib.import_module(namespace)

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


class _Folder:
    commits = 0

    def commit(self) -> None:
        self.commits += 1


@pytest.mark.parametrize("namespace", available_namespaces())
def test_the_books_of_a_three_step_run(namespace, tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 2)), batch_size=4)
    history, clock, record, folder = LossHistory(), TrainClock(), RunRecord(logger=None), _Folder()
    tr = trainer(namespace, max_steps=3, callbacks=[history, clock, record, CommitRunFolder(folder)])
    tr.fit(_module(namespace), data)
    assert len(history.losses) == 3 and all(isinstance(x, float) for x in history.losses)
    assert clock.seconds is not None and clock.seconds >= 0 and clock.stopped_by_time is False
    assert folder.commits == 3
    checkpoint: dict = {}
    record.on_save_checkpoint(tr, None, checkpoint)
    assert checkpoint == {"solo_qscore_run": {"wandb_id": None}}  # no wandb logger: no run to continue
