"""FiniteLossCallback (callbacks/finite_loss.py) in real trainers: the run stops at its first NaN loss, with
where and why, and no checkpoint of diverged weights is ever written (issue 22, item 4).

A tiny linear module on random 8-d inputs (a step is a few microseconds), made to go NaN at a chosen
step; the solo-learn run that diverges through the command line is in tests/test_reliability.py.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from solo_qscore.callbacks import FiniteLossCallback, NonFiniteLossError
from solo_qscore.config import ConfigError

BATCHES = 4  # per epoch


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


class Diverging(pl.LightningModule):
    """A linear classifier whose loss is multiplied by ``factor`` from global step ``at`` on (NaN: diverged)."""

    def __init__(self, at: int | None = None, factor: float = float("nan"), weights_only: bool = False) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.at, self.factor, self.weights_only = at, factor, weights_only

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.head(x), y)
        if self.at is not None and self.global_step >= self.at:
            if self.weights_only:  # the loss stays finite; the weights do not
                with torch.no_grad():
                    self.head.weight[0, 0] = float("nan")
            else:
                loss = loss * self.factor
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, module, finite: FiniteLossCallback, max_epochs: int = 3, **checkpoint):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8 * BATCHES, 8, generator=g), torch.randint(0, 3, (8 * BATCHES,), generator=g))
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"), save_last=True, **checkpoint)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[finite, saver], max_epochs=max_epochs,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, DataLoader(data, batch_size=8))
    return trainer


def _finite_weights(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def test_a_nan_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    """Before: Lightning trained on at a NaN loss and ModelCheckpoint wrote the NaN weights over last.ckpt."""
    with pytest.raises(NonFiniteLossError) as info:
        _fit(tmp_path, Diverging(at=BATCHES + 2), FiniteLossCallback())  # epoch 1, batch 2
    message = str(info.value)
    assert "\n" not in message
    for text in ("training loss became NaN at epoch 1, batch 2 (global step 7)", "optimizer.lr",
                 "method_kwargs.temperature", "precision", "last.ckpt", "is kept"):
        assert text in message, (text, message)
    assert isinstance(info.value, ConfigError)  # the command line answers with one line and exit code 2
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert _finite_weights(last)
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == BATCHES  # epoch 0's
    assert all(_finite_weights(p) for p in (tmp_path / "checkpoints").glob("*.ckpt"))


def test_inf_is_named_too(tmp_path):
    with pytest.raises(NonFiniteLossError, match="became Inf at epoch 0, batch 1"):
        _fit(tmp_path, Diverging(at=1, factor=math.inf), FiniteLossCallback())


class CountingReads(FiniteLossCallback):
    """Counts the scheduled reads of the flag (not those of a checkpoint save, which copies the weights anyway)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0

    def check(self, trainer, sync: bool = True) -> None:
        self.reads += sync
        super().check(trainer, sync)


def test_deferred_reads_still_name_the_first_bad_step(tmp_path):
    """On an accelerator the flag is read every ``log_every_n_steps`` batches (no sync per step); the message
    still names the first NaN, not the batch at which it was read."""
    finite = CountingReads(check_every_n_steps=3)
    with pytest.raises(NonFiniteLossError, match="became NaN at epoch 1, batch 1 "):
        _fit(tmp_path, Diverging(at=BATCHES + 1), finite)
    assert finite.reads == 3  # epoch 0: after batch 2 and at its end; epoch 1: after batch 2
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == BATCHES
    assert _finite_weights(last)


def test_a_save_between_reads_is_refused(tmp_path):
    """ModelCheckpoint saving every step between two reads: the save after the NaN is refused, not written."""
    with pytest.raises(NonFiniteLossError, match="became NaN at epoch 1, batch 1 "):
        _fit(tmp_path, Diverging(at=BATCHES + 1), FiniteLossCallback(check_every_n_steps=50), every_n_train_steps=1)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == BATCHES + 1
    assert all(_finite_weights(p) for p in (tmp_path / "checkpoints").glob("*.ckpt"))


def test_reads_are_periodic_without_a_nan(tmp_path):
    finite = CountingReads(check_every_n_steps=3)
    _fit(tmp_path, Diverging(), finite, max_epochs=2)  # 8 batches: reads at 3 and 6, plus epoch ends, train end
    assert finite.reads == 2 + 2 + 1


def test_non_finite_weights_are_never_saved_even_with_a_finite_loss(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"weights are no longer finite \(1 NaN/Inf values\)"):
        _fit(tmp_path, Diverging(at=BATCHES + 1, weights_only=True), FiniteLossCallback(), every_n_train_steps=1)
    assert _finite_weights(tmp_path / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_check_interval_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="check_every_n_steps"):
        FiniteLossCallback(check_every_n_steps=bad)
