"""Heat-map mIoU (solo_qscore.analysis.miou): worked cases, Trifeature shape masks, mask files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from solo_qscore.analysis.miou import heatmap_iou, load_masks, match_masks, mean_iou

torch.set_num_threads(1)


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
