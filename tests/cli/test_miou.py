"""``solo-qscore miou`` (solo_qscore/cli/miou.py) on a tiny real checkpoint (tests/cli/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from solo_qscore.cli import main

torch.set_num_threads(1)
DATA = ["data.num_workers=0"]


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
