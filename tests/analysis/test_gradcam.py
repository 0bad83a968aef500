"""Grad-CAM heat maps (solo_qscore.analysis.gradcam) of a net with known heat maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solo_qscore.analysis.gradcam import discriminative_targets, grad_cam

torch.set_num_threads(1)


class Gate(nn.Module):
    """Multiplies channel 0 by a fixed mask of the left half: that channel only sees the left half."""

    def __init__(self, size: int) -> None:
        super().__init__()
        gate = torch.ones(1, 2, size, size)
        gate[:, 0, :, size // 2:] = 0
        self.register_buffer("gate", gate)

    def forward(self, x):
        return x * self.gate


class GatedNet(nn.Module):
    """A = [relu(red) on the left half, relu(red)]; h = [mean A_0, mean A_1, -mean A_1] (ResNet-like pooling)."""

    def __init__(self, size: int = 8, pool: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, 0] = 1.0  # both channels read the red channel
        self.features = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(pool), Gate(size // pool))

    def forward(self, x):
        a = self.features(x).mean(dim=(2, 3))
        return torch.cat([a, -a[:, 1:]], dim=1)


def _red_images(n: int = 3, size: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) + 0.1  # strictly positive red everywhere


def test_gradcam_of_a_left_half_feature_is_zero_on_the_right_half():
    net, x = GatedNet(), _red_images()
    red = x[:, 0]
    left = red.clone()
    left[..., 4:] = 0
    heat = grad_cam(net, x, "features", torch.zeros(3, dtype=torch.long))
    # w_0 = 1/HW > 0, w_1 = 0, so the map is A_0 / max A_0: the red channel on the left half, 0 on the right
    torch.testing.assert_close(heat, left / left.amax(dim=(1, 2), keepdim=True))
    assert torch.all(heat[..., 4:] == 0) and torch.all(heat[..., :4] > 0)
    whole = grad_cam(net, x, net.features, torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(whole, red / red.amax(dim=(1, 2), keepdim=True))
    # a feature that decreases with the activations: the ReLU leaves nothing, and the map stays all zero
    negative = grad_cam(net, x, "features", torch.full((3,), 2, dtype=torch.long))
    assert torch.equal(negative, torch.zeros_like(negative))
    # weights [B, r]: t = h_0 + h_1, map (A_0 + A_1) / max; mixed per sample in one batch
    summed = grad_cam(net, x, "features", torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    both = left[0] + red[0]
    torch.testing.assert_close(summed[0], both / both.max())
    torch.testing.assert_close(summed[1], heat[1])
    torch.testing.assert_close(summed[2], whole[2])
    raw = grad_cam(net, x, "features", torch.zeros(3, dtype=torch.long), normalize=False)
    torch.testing.assert_close(raw, left / 64)  # w_0 A_0 with w_0 = 1/(8*8)


def test_gradcam_upsamples_a_coarse_map_to_the_image():
    net, x = GatedNet(size=8, pool=2), _red_images()
    heat = grad_cam(net, x, "features", torch.zeros(3, dtype=torch.long))
    assert heat.shape == (3, 8, 8)
    assert float(heat.amax()) == pytest.approx(1.0)
    # the 4x4 map is zero on its right two columns; bilinear upsampling bleeds one pixel past the middle
    assert torch.all(heat[..., 5:] == 0) and torch.all(heat[..., :4] > 0)


def test_gradcam_is_batched_and_leaves_the_model_alone():
    import torchvision

    torch.manual_seed(1)
    net = torchvision.models.resnet18(num_classes=10)
    net.fc = nn.Identity()
    net.train()
    x = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([3, 100, 7, 511])
    heat = grad_cam(net, x, "layer4", targets)
    single = torch.cat([grad_cam(net, x[i:i + 1], "layer4", targets[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(heat, single, atol=1e-5, rtol=1e-4)  # samples do not interact (eval mode)
    assert heat.shape == (4, 32, 32) and float(heat.min()) >= 0 and float(heat.max()) <= 1
    assert net.training  # mode restored
    assert all(p.grad is None for p in net.parameters())  # no parameter gradient accumulated
    assert not net.layer4._forward_hooks  # hook removed


def test_gradcam_bad_input():
    net, x = GatedNet(), _red_images()
    with pytest.raises(ValueError, match="no layer 'layer9'"):
        grad_cam(net, x, "layer9", torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"feature indices must lie in \[0, 3\)"):
        grad_cam(net, x, "features", torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="2 feature indices for a batch of 3"):
        grad_cam(net, x, "features", torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"weights \[B, r\]"):
        grad_cam(net, x, "features", torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        grad_cam(net, x[0], "features", torch.zeros(1, dtype=torch.long))


def test_discriminative_targets_are_L_intersect_D():
    h = torch.zeros(2, 20)
    h[0, [1, 2]] = 10.0  # L_0 = {1, 2} at eps = 2
    h[1, 5] = 10.0  # L_1 = {5}
    D = torch.zeros(20, dtype=torch.bool)
    D[[2, 5, 9]] = True
    W = discriminative_targets(h, D, eps=2.0)
    expected = torch.zeros(2, 20)
    expected[0, 2] = expected[1, 5] = 1.0
    assert torch.equal(W, expected)
    with pytest.raises(ValueError, match="discriminative"):
        discriminative_targets(h, D[:10], eps=2.0)
