"""``solo-qscore loss-readout`` (solo_qscore/cli/loss_readout.py, IFM paper Fig. 2) on three tiny Trifeature
checkpoints in ``pretrain``'s format.

The checkpoints (solo-learn's SimCLR ResNet-18 at tau 0.1 and 0.5, and with hard negatives; 16x16
Trifeature, 128 training images, one epoch of batch 64 = two steps) are barely trained: the tests check that
the command computes exactly what it claims (the held-out InfoNCE against an independent evaluation
with ``ifm_simclr_loss``, the readout error against an independent probe, the correlations against
``np.corrcoef``), not what the correlations are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from solo_qscore import ifm_simclr_loss
from solo_qscore.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = ROOT / "datasets"  # the Trifeature cache the pretrain command uses by default
TRAIN_SUBSET, VAL_SUBSET, BATCH = 128, 64, 32
SIZE = 16  # crops (and the probe's images): a quarter of 32 px's compute, for the same checks
TINY = [
    "data.dataset=trifeature", f"data.train_path={DATA_ROOT}", f"data.train_subset={TRAIN_SUBSET}",
    f"data.val_subset={VAL_SUBSET}", "optimizer.batch_size=64", f"augmentations.0.crop_size={SIZE}",
    "probe.max_iter=100", "+enable_progress_bar=false", "+enable_model_summary=false",
    # no end-of-training Q-Score probe report, which would take most of this file's time
    "probe.enabled=false",
]
ARMS = {
    "tau01": ["method_kwargs.temperature=0.1"],
    "tau05": ["method_kwargs.temperature=0.5"],
    "hard": ["hard_negatives.enabled=true", "hard_negatives.beta=1.0"],
}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_checkpoint(output_dir: Path, name: str, *overrides: str) -> str:
    """A ``solo-qscore pretrain`` run (module, loader and checkpoint with the run config inside)."""
    from conftest import tiny_pretrain

    summary = tiny_pretrain(output_dir, "simclr", *TINY, *overrides, f"name={name}")
    assert summary["global_step"] == TRAIN_SUBSET // 64
    return summary["checkpoint"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, one_torch_thread) -> list[str]:
    base = tmp_path_factory.mktemp("loss_readout_ckpts")
    return [tiny_checkpoint(base / name, name, *extra) for name, extra in ARMS.items()]


@pytest.fixture(scope="module")
def command_result(checkpoints, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("loss_readout_out")
    assert main(["loss-readout", *checkpoints, "--batch-size", str(BATCH), "--out", str(out)]) == 0
    return json.loads((out / "loss_readout.json").read_text()), out


def test_attribute_labels_trifeature_dict_and_class():
    from solo_qscore.cli.loss_readout import attribute_labels
    from solo_qscore.data import ArrayImageDataset, TrifeatureDataset

    tri = TrifeatureDataset(DATA_ROOT, train=False, image_size=32)
    labels = attribute_labels(tri)
    assert list(labels) == ["color", "shape", "texture"]
    assert torch.equal(labels["shape"], torch.as_tensor(tri.targets))  # the default target is shape
    plain = ArrayImageDataset(np.zeros((3, 4, 4, 3), np.uint8), np.array([2, 0, 1]), "toy", 3, 4)
    assert list(attribute_labels(plain)) == ["class"] and attribute_labels(plain)["class"].tolist() == [2, 0, 1]


def test_command_errors_for_fewer_than_three_checkpoints(checkpoints, capsys):
    assert main(["loss-readout", *checkpoints[:2]]) == 2
    assert "at least 3 checkpoints" in capsys.readouterr().err


def test_command_errors_for_checkpoints_of_different_datasets(checkpoints, tmp_path, capsys):
    other = torch.load(checkpoints[2], map_location="cpu", weights_only=False)
    other["solo_qscore"]["config"]["data"]["dataset"] = "fashion_mnist"
    path = tmp_path / "fmnist.ckpt"
    torch.save(other, path)
    assert main(["loss-readout", checkpoints[0], checkpoints[1], str(path)]) == 2
    err = capsys.readouterr().err
    assert "different data" in err and "fashion_mnist" in err and "trifeature" in err and "data.dataset" in err


def test_command_end_to_end_correlations_equal_numpy(command_result, checkpoints):
    result, out = command_result
    assert result["attributes"] == ["color", "shape", "texture"]
    assert result["dataset"] == "trifeature" and result["temperature"] == 0.5
    assert (result["num_train"], result["num_val"], result["num_views_batches"]) == (TRAIN_SUBSET, VAL_SUBSET, 2)
    rows = result["checkpoints"]
    assert [r["checkpoint"] for r in rows] == checkpoints and [r["name"] for r in rows] == list(ARMS)
    assert rows[2]["hard_negatives"] == {"enabled": True, "beta": 1.0, "tau_plus": 0.1}
    assert [r["train_temperature"] for r in rows] == [0.1, 0.5, 0.2]
    table = np.array([[r["infonce"], *(r["error"][a] for a in result["attributes"])] for r in rows])
    np.testing.assert_allclose(np.array(result["correlation"], dtype=float), np.corrcoef(table.T), atol=1e-9)
    for k, a in enumerate(result["attributes"]):
        assert result["loss_error_correlation"][a] == pytest.approx(np.corrcoef(table[:, 0], table[:, 1 + k])[0, 1])
        for r in rows:  # an error rate on 64 images is a multiple of 100/64 %
            assert 0 <= r["error"][a] <= 100 and (r["error"][a] * VAL_SUBSET / 100) == pytest.approx(
                round(r["error"][a] * VAL_SUBSET / 100), abs=1e-9)
    # 2 batches of 32 -> 62 negatives per view: a loss near log(63) for barely trained encoders
    assert all(abs(r["infonce"] - np.log(2 * BATCH - 1)) < 1.0 for r in rows)
    png = out / "loss_readout.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_command_values_equal_an_independent_evaluation(command_result, checkpoints):
    from solo_qscore.cli.open_run import load_checkpoint
    from solo_qscore.data import TrifeatureDataset, build_crop_pipelines, dataset_stats, eval_transform, subset_indices
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.linear import fit_linear_probe

    result, _ = command_result
    model, cfg, _ = load_checkpoint(checkpoints[1])
    backbone, projector = find_backbone(model).eval(), model.projector.eval()
    mean, std = dataset_stats("trifeature")
    val = TrifeatureDataset(DATA_ROOT, train=False, image_size=SIZE)
    train = TrifeatureDataset(DATA_ROOT, train=True, image_size=SIZE)
    val_idx, train_idx = subset_indices(len(val), VAL_SUBSET), subset_indices(len(train), TRAIN_SUBSET)
    first, second = build_crop_pipelines(cfg["augmentations"], mean, std)[:2]
    torch.manual_seed(0)  # --seed 0: the same crops, drawn image by image, view 1 then view 2
    views = [(first(img), second(img)) for img in (val[int(i)][0] for i in val_idx)]
    with torch.no_grad():
        z1 = projector(backbone(torch.stack([v[0] for v in views])))
        z2 = projector(backbone(torch.stack([v[1] for v in views])))
        losses = [ifm_simclr_loss(torch.cat([z1[k:k + BATCH], z2[k:k + BATCH]]), torch.arange(BATCH).repeat(2),
                                  0.5, epsilon=0) for k in range(0, VAL_SUBSET, BATCH)]
        plain = eval_transform(SIZE, mean, std)
        train_h = backbone(torch.stack([plain(train[int(i)][0]) for i in train_idx]))
        val_h = backbone(torch.stack([plain(val[int(i)][0]) for i in val_idx]))
    row = result["checkpoints"][1]
    assert row["infonce"] == pytest.approx(torch.stack(losses).mean().item(), abs=1e-4)
    for k, a in enumerate(("color", "shape", "texture")):
        probe = fit_linear_probe(train_h, train.attributes[train_idx, k], max_iter=100, weight_decay=1e-4)
        error = 100 * float((probe.predict(val_h) != val.attributes[val_idx, k]).double().mean())
        assert row["error"][a] == pytest.approx(error, abs=100 / VAL_SUBSET + 1e-9)  # batch-size rounding: <= 1 image
