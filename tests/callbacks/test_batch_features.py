"""``TrainingStepFeatures`` (callbacks/batch_features.py): the step's backbone features without an extra pass."""

from __future__ import annotations

import torch

from solo_qscore.callbacks.batch_features import TrainingStepFeatures


class Plain(torch.nn.Module):
    """A module without the solo-qscore mixin: only a ``backbone``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Linear(4, 3)


def test_a_plain_module_is_hooked_and_each_step_taken_once():
    module, features = Plain(), TrainingStepFeatures()
    features.attach(module)
    assert features.hooked
    x1, x2 = torch.randn(2, 4), torch.randn(5, 4)
    module.backbone(x1), module.backbone(x2)  # two crops of one step
    module.eval()
    module.backbone(torch.randn(7, 4))  # an evaluation pass is not a training step's
    torch.testing.assert_close(features.take(module), module.backbone(torch.cat([x1, x2])))
    assert features.take(module) is None  # taken: the next step starts empty
    features.detach()
    module.train()
    module.backbone(x1)
    assert not features.hooked and features.take(module) is None


def test_the_mixins_capture_is_read_and_no_hook_added():
    module, features = Plain(), TrainingStepFeatures()
    module.qscore_batch_features = torch.ones(3, 3)
    features.attach(module)
    assert not features.hooked and not module.backbone._forward_hooks
    assert torch.equal(features.take(module), torch.ones(3, 3))
