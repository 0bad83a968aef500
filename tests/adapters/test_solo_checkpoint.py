"""Checkpoints of solo-qscore runs (solo_qscore.adapters.solo_checkpoint): weights that do not fit the model
they are loaded into are a ``CheckpointError``, as every other bad checkpoint is."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from solo_qscore.adapters.solo_checkpoint import CheckpointError, load_weights_into, read_checkpoint
from solo_qscore.config import ConfigError


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def test_weights_of_another_model_are_a_checkpoint_error(tmp_path):
    """Issue 23: ``load_weights_into`` raised ``ConfigError`` where every other checkpoint mismatch is a
    ``CheckpointError``; the message still names the file and what does not fit."""
    model, _ = tiny_model("simclr")
    state = model.state_dict()
    state.pop("backbone.conv1.weight")
    state["backbone.extra"] = torch.zeros(1)
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": state}, ckpt)
    named = (r"--from .*other.ckpt: checkpoint does not match the config's method/backbone \(mismatched \[\], "
             r"missing \['backbone.conv1.weight'\], unexpected \['backbone.extra'\]\)")
    with pytest.raises(CheckpointError, match=named) as caught:
        load_weights_into(model, ckpt)
    assert not isinstance(caught.value, ConfigError)


def test_the_weights_of_the_same_model_load(tmp_path):
    model, _ = tiny_model("simclr")
    ckpt = tmp_path / "same.ckpt"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["qscore_discriminative"][::2] = True
    torch.save({"state_dict": state}, ckpt)
    load_weights_into(model, ckpt, checkpoint=read_checkpoint(ckpt))
    assert torch.equal(model.qscore_discriminative, state["qscore_discriminative"])
