"""Grad-CAM heat maps (solo_qscore.analysis.gradcam), heat-map mIoU (solo_qscore.analysis.miou) and the
``solo-qscore explain`` / ``solo-qscore miou`` commands on a tiny real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo_qscore.analysis.gradcam import discriminative_targets, grad_cam
from solo_qscore.analysis.miou import heatmap_iou, load_masks, match_masks, mean_iou
from solo_qscore.cli import main

torch.set_num_threads(1)

DATA = ["data.num_workers=0"]


# ----------------------------------------------------------------------------- a net with known heat maps

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


# ----------------------------------------------------------------------------- mIoU

def test_iou_full_disjoint_and_worked_cases():
    mask = torch.tensor([[1, 1, 0, 0]] * 4, dtype=torch.bool)[None]
    assert heatmap_iou(mask.float(), mask).tolist() == [1.0]
    assert heatmap_iou((~mask).float(), mask).tolist() == [0.0]
    # H = [[1, .5], [.25, 0]], M = left column. tau = 0: Ar = {H > 0}: s(Ar ∩ M) = 1 + .25,
    # s(Ar ∪ M) = 1 + .5 + .25 -> 5/7. tau = 0.3: Ar = {1, .5}: s(Ar ∩ M) = 1, s(Ar ∪ M) = 1 + .5 + .25 -> 4/7.
    H = torch.tensor([[[1.0, 0.5], [0.25, 0.0]]])
    M = torch.tensor([[[1, 0], [1, 0]]])
    assert heatmap_iou(H, M).item() == pytest.approx(5 / 7)
    assert heatmap_iou(H, M, threshold=0.3).item() == pytest.approx(4 / 7)
    # heat all inside the mask scores 1 even when it covers only part of it (the paper's s(.) weighting)
    assert heatmap_iou(torch.tensor([[[0.2, 0.0], [0.0, 0.0]]]), M).item() == 1.0
    # no heat: undefined
    assert torch.isnan(heatmap_iou(torch.zeros(1, 2, 2), M)).all()


def test_mean_iou_splits_correct_and_misclassified():
    M = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool).expand(4, 2, 2)
    H = torch.stack([
        M[0].float(),                               # IoU 1
        (~M[0]).float(),                            # IoU 0
        torch.tensor([[1.0, 0.5], [0.25, 0.0]]),    # IoU 5/7
        torch.zeros(2, 2),                          # undefined
    ])
    out = mean_iou(H, M, correct=torch.tensor([True, False, True, False]))
    assert out["miou"] == pytest.approx((1 + 0 + 5 / 7) / 3)
    assert (out["num_images"], out["num_scored"], out["num_undefined"]) == (4, 3, 1)
    assert out["correct"]["miou"] == pytest.approx((1 + 5 / 7) / 2)
    assert out["correct"]["num_scored"] == 2
    assert out["misclassified"] == {"miou": 0.0, "num_images": 2, "num_scored": 1, "num_undefined": 1}
    assert mean_iou(H, M, correct=torch.tensor([1, 0, 1, 0]))["correct"] == out["correct"]
    assert mean_iou(torch.zeros(2, 2, 2), M[:2])["miou"] is None
    assert "correct" not in mean_iou(H, M)


def test_miou_bad_input():
    H, M = torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"masks have shape \(2, 4, 5\) but the heat maps have \(2, 4, 4\)"):
        heatmap_iou(H, torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        heatmap_iou(H * 3, M)
    with pytest.raises(ValueError, match="NaN"):
        heatmap_iou(torch.full((2, 4, 4), float("nan")), M)
    with pytest.raises(ValueError, match="threshold"):
        heatmap_iou(H, M, threshold=1.0)
    with pytest.raises(ValueError, match=r"a flag per image \[2\]"):
        mean_iou(H, M, correct=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="0/1"):
        mean_iou(H, M, correct=torch.tensor([0, 2]))


def test_trifeature_shape_masks_as_heat_maps_score_one(tmp_path):
    from solo_qscore.data import trifeature_masks

    masks = torch.from_numpy(trifeature_masks(root=tmp_path, train=False, num_samples=16, image_size=32))
    assert masks.shape == (16, 32, 32) and bool(masks.any(dim=(1, 2)).all())
    assert heatmap_iou(masks.float(), masks).tolist() == [1.0] * 16
    assert heatmap_iou((~masks).float(), masks).tolist() == [0.0] * 16
    # a heat map that spills uniformly over the background: IoU = |M| / (H*W)
    expected = masks.float().mean(dim=(1, 2))
    torch.testing.assert_close(heatmap_iou(torch.ones(16, 32, 32), masks), expected)
    assert mean_iou(masks.float(), masks)["miou"] == 1.0


def test_load_and_match_masks(tmp_path):
    from PIL import Image

    folder = tmp_path / "masks"
    folder.mkdir()
    a = np.zeros((4, 4), dtype=np.uint8)
    a[0, :2] = 255
    b = np.zeros((4, 4), dtype=np.uint8)
    b[3, 3] = 1
    Image.fromarray(a).save(folder / "7.png")
    Image.fromarray(b).save(folder / "0002.png")
    masks, idx = load_masks(folder)
    assert idx.tolist() == [2, 7] and masks.dtype == torch.bool
    assert masks[0].nonzero().tolist() == [[3, 3]] and masks[1].nonzero().tolist() == [[0, 0], [0, 1]]
    selected, found = match_masks(masks, idx, torch.tensor([7, 3, 2]))
    assert found.tolist() == [True, False, True]
    assert torch.equal(selected, masks[[1, 0]])

    array = np.zeros((3, 4, 4), dtype=np.float32)
    array[1, 2, 2] = 0.5
    np.save(tmp_path / "m.npy", array)
    torch.save(torch.from_numpy(array), tmp_path / "m.pt")
    for name in ("m.npy", "m.pt"):
        masks, idx = load_masks(tmp_path / name)
        assert idx.tolist() == [0, 1, 2] and masks.nonzero().tolist() == [[1, 2, 2]]

    Image.fromarray(a).save(folder / "cat.png")
    with pytest.raises(ValueError, match="named by dataset index"):
        load_masks(folder)
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        load_masks(tmp_path / "flat.npy")
    with pytest.raises(ValueError, match="does not exist"):
        load_masks(tmp_path / "missing.npy")
    (tmp_path / "m.txt").write_text("1")
    with pytest.raises(ValueError, match="unknown mask format"):
        load_masks(tmp_path / "m.txt")


# ----------------------------------------------------------------------------- the commands, end to end

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from conftest import tiny_pretrain

    out = tmp_path_factory.mktemp("explain_run")
    # one SimCLR step on 32 Fashion-MNIST images at 32 px (a real, barely trained ResNet-18); a short probe
    # keeps the run's final probe report cheap
    summary = tiny_pretrain(out, "simclr", "data.train_subset=32", "data.val_subset=64", "optimizer.batch_size=32",
                            "augmentations.0.crop_size=32", "qscore.eps=2.0", "probe.max_iter=10")
    assert summary["global_step"] == 1
    return Path(summary["checkpoint"])


@pytest.fixture(scope="module")
def features(checkpoint):
    """Validation and train representations of the checkpoint, computed here independently of the commands."""
    from solo_qscore.callbacks import extract_features
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.core.discriminative import discriminative_mask
    from solo_qscore.core.statistics import ActivationStatistics
    from solo_qscore.data import make_eval_loaders

    model, saved, _ = load_checkpoint(str(checkpoint))
    cfg = with_overrides(saved, DATA)
    _, val_loader = make_eval_loaders(cfg["data"])
    h, y = extract_features(model.backbone, val_loader, torch.device("cpu"))
    stats = ActivationStatistics(h.shape[1], eps=2.0)
    stats.update(h)
    A = stats.compute()
    return {"h": h, "y": y, "A": A, "D": discriminative_mask(A, 50, 95), "indices": val_loader.dataset.dataset.indices}


def test_explain_command_picks_top_discriminative_features_and_samples(checkpoint, features, tmp_path, capsys):
    out = tmp_path / "explain"
    assert main(["explain", str(checkpoint), "--out", str(out), "--top-features", "3", "--samples", "4", *DATA]) == 0
    report = json.loads((out / "explain.json").read_text())
    h, A, D = features["h"], features["A"], features["D"]
    assert report["num_discriminative"] == int(D.sum()) == 230 and report["num_samples"] == 64
    chosen = [f["feature"] for f in report["features"]]
    # the three features of D with the highest A_j (ties by index)
    in_d = sorted(D.nonzero().flatten().tolist(), key=lambda j: (-float(A[j]), j))
    assert chosen == in_d[:3]
    z = (h - h.mean(dim=1, keepdim=True)) / h.std(dim=1, correction=0, keepdim=True)
    for entry in report["features"]:
        j = entry["feature"]
        assert D[j] and entry["A"] == pytest.approx(float(A[j]))
        positions = [s["position"] for s in entry["samples"]]
        top = sorted(range(64), key=lambda i: (-float(z[i, j]), i))[:4]
        assert positions == top
        for s in entry["samples"]:
            assert s["index"] == int(features["indices"][s["position"]])
            assert s["label"] == int(features["y"][s["position"]])
            assert s["h"] == pytest.approx(float(h[s["position"], j]), rel=1e-4, abs=1e-5)
            assert s["in_L"] == (s["z"] > 2.0)
            assert 0.0 <= s["heat_mean"] <= 1.0
    from PIL import Image

    with Image.open(out / "explain.png") as img:
        width, height = img.size
    assert width > height > 300  # 3 rows x 4 columns of images
    assert "explain.json" in capsys.readouterr().out


def test_explain_with_an_empty_discriminative_set_is_a_clear_error(checkpoint, tmp_path, capsys):
    # band [50, 50.05) of 512 features holds ranks round(256) .. round(256.3) - 1: none
    code = main(["explain", str(checkpoint), "--out", str(tmp_path), "qscore.band=[50,50.05]", *DATA])
    assert code == 2
    assert "discriminative set D is empty" in capsys.readouterr().err
    assert not (tmp_path / "explain.json").exists()


def test_miou_command_with_known_answers_and_probe_split(checkpoint, features, tmp_path, capsys):
    from solo_qscore.core.activations import highly_activating

    n_val = 10_000  # Fashion-MNIST test split, indexed by dataset index
    torch.save(torch.ones(n_val, 32, 32, dtype=torch.bool), tmp_path / "ones.pt")
    out = tmp_path / "ones"
    assert main(["miou", str(checkpoint), "--masks", str(tmp_path / "ones.pt"), "--out", str(out), *DATA]) == 0
    report = json.loads((out / "miou.json").read_text())
    # masks covering the whole image contain all the heat: IoU 1 wherever the heat map is defined;
    # a map is all zero (undefined) at least where the sample has no highly activating
    # discriminative feature (L_i ∩ D empty), and the ReLU may zero a few more
    has_target = (highly_activating(features["h"], 2.0) & features["D"]).any(dim=1)
    defined = torch.tensor([v is not None for v in report["per_image"]["iou"]])
    assert report["num_images"] == 64 and report["num_scored"] == int(defined.sum()) > 0
    assert not bool((defined & ~has_target).any())
    assert all(v == pytest.approx(1.0) for v in report["per_image"]["iou"] if v is not None)
    assert report["miou"] == pytest.approx(1.0)
    assert report["uniform_baseline"]["miou"] == pytest.approx(1.0)
    assert report["per_image"]["index"] == features["indices"].tolist()
    # the probe split partitions the images; its counts agree with the probe accuracy
    correct = report["per_image"]["correct"]
    assert sum(correct) == round(report["probe_accuracy"] * 64)
    assert report["correct"]["num_images"] + report["misclassified"]["num_images"] == 64
    assert (out / "miou.png").is_file()

    # real object masks (Fashion-MNIST silhouettes) for the subset only, as a folder of PNGs
    from PIL import Image

    from solo_qscore.data import load_dataset

    test_set = load_dataset("fashion_mnist", train=False, image_size=32)
    folder = tmp_path / "silhouettes"
    folder.mkdir()
    for i in features["indices"].tolist():
        img, _ = test_set[i]
        Image.fromarray(((np.asarray(img.convert("L")) > 0) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "silhouettes_out"
    assert main(["miou", str(checkpoint), "--masks", str(folder), "--out", str(out), "--target", "discriminative",
                 "--threshold", "0.2", *DATA]) == 0
    report = json.loads((out / "miou.json").read_text())
    ious = [v for v in report["per_image"]["iou"]]
    assert report["num_scored"] == 64 and all(0.0 <= v <= 1.0 for v in ious)  # all of D: every map defined
    assert report["miou"] == pytest.approx(float(np.mean(ious)))
    by_group = {True: [], False: []}
    for v, c in zip(ious, report["per_image"]["correct"]):
        by_group[c].append(v)
    if by_group[True]:
        assert report["correct"]["miou"] == pytest.approx(float(np.mean(by_group[True])))
    printed = capsys.readouterr().out
    assert '"miou"' in printed


def test_miou_command_on_trifeature_shape_masks(checkpoint, tmp_path):
    from solo_qscore.data import subset_indices

    out = tmp_path / "tri"
    args = ["miou", str(checkpoint), "--masks", "trifeature", "--no-probe", "--target", "discriminative",
            "--out", str(out), "--examples", "3", "data.dataset=trifeature", f"data.root={tmp_path}",
            "data.image_size=16", "data.val_subset=24", *DATA]  # 16 px: cheap to generate, still real shapes
    assert main(args) == 0
    report = json.loads((out / "miou.json").read_text())
    assert report["dataset"] == "trifeature" and report["num_images"] == 24 == report["num_scored"]
    assert report["per_image"]["index"] == subset_indices(2000, 24).tolist()
    assert 0.0 < report["miou"] < 1.0 and report["probe_accuracy"] is None and "correct" not in report
    # the reference of a uniform heat map is the shapes' mean share of the image
    from solo_qscore.data import trifeature_masks

    masks = trifeature_masks(root=tmp_path, train=False, image_size=16)[subset_indices(2000, 24).numpy()]
    assert report["uniform_baseline"]["miou"] == pytest.approx(float(masks.mean()), rel=1e-5)
    assert (out / "miou.png").is_file()


def test_miou_command_bad_masks(checkpoint, tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.ones((10_000, 16, 16), dtype=bool))
    code = main(["miou", str(checkpoint), "--masks", str(tmp_path / "small.npy"), "--no-probe", *DATA,
                 f"output_dir={tmp_path}"])
    assert code == 2
    assert "masks are (16, 16) pixels but the images are (32, 32)" in capsys.readouterr().err
    code = main(["miou", str(checkpoint), "--masks", "trifeature", "--no-probe", *DATA, f"output_dir={tmp_path}"])
    assert code == 2
    assert "needs a Trifeature run" in capsys.readouterr().err
    assert not list(tmp_path.rglob("miou.json"))


def test_heat_maps_of_the_checkpoint_follow_the_known_sum_rule(checkpoint, features):
    """Grad-CAM of h_a + h_b equals ReLU of the sum of the two pre-ReLU maps: check on the real backbone."""
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.data import make_eval_loaders

    model, saved, _ = load_checkpoint(str(checkpoint))
    _, val_loader = make_eval_loaders(with_overrides(saved, DATA)["data"], batch_size=4)
    x, _ = next(iter(val_loader))
    a, b = features["D"].nonzero().flatten()[:2].tolist()
    W = torch.zeros(4, 512)
    W[:, a] = W[:, b] = 1.0
    raw_sum = grad_cam(model.backbone, x, "layer4", W, normalize=False)
    # the same from the activations and analytic gradients of global average pooling: w = 1/(u v) per channel
    captured = []
    handle = model.backbone.layer4.register_forward_hook(lambda m, i, o: captured.append(o))
    model.backbone.eval()
    with torch.no_grad():
        model.backbone(x)
    handle.remove()
    acts = captured[0]
    cam = F.relu((acts[:, a] + acts[:, b]) / (acts.shape[2] * acts.shape[3]))[:, None]
    expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(raw_sum, expected, atol=1e-6, rtol=1e-4)
