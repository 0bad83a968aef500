"""``solo-qscore explain`` (solo_qscore/cli/explain.py) on a tiny real checkpoint (tests/cli/conftest.py), and
Grad-CAM on that checkpoint's backbone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from solo_qscore.analysis.gradcam import grad_cam
from solo_qscore.cli import main

torch.set_num_threads(1)
DATA = ["data.num_workers=0"]


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
