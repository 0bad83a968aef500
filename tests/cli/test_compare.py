"""``solo-qscore compare`` (solo_qscore/cli/compare.py, paper Fig. A.10) on two real checkpoints: a tiny SimCLR
run and a copy further-trained one step with the regulariser."""

from __future__ import annotations

import json
from pathlib import Path

import numba
import pytest
import torch
from helpers.real_features import EVAL, TINY, _features

from solo_qscore import ActivationStatistics, discriminative_mask, highly_activating
from solo_qscore.cli import main
from solo_qscore.cli.compare import compare_representations, group_means

torch.set_num_threads(1)

# one thread for the numba kernel of the activation statistics too: its idle workers otherwise spin
# against torch's on a busy 2-core machine (a 1-epoch tiny run took 6x the CPU time)
numba.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A 1-epoch SimCLR run on 32 Fashion-MNIST images, and a copy further-trained 1 step with the regulariser."""
    from conftest import tiny_pretrain

    root = tmp_path_factory.mktemp("compare")
    before = Path(tiny_pretrain(root / "before", "simclr", *TINY)["checkpoint"])
    assert main(["finetune", str(before), "+max_steps=1", "qscore.eps=2.0",
                 f"output_dir={root / 'after'}"]) == 0
    return before, root / "after" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def features(checkpoints):
    return _features(checkpoints[0]), _features(checkpoints[1])


def test_compare_end_to_end(checkpoints, features, tmp_path, capsys):
    from solo_qscore.probe.linear import fit_linear_probe

    before, after = checkpoints
    out = tmp_path / "cmp"
    assert main(["compare", str(before), str(after), "--out", str(out), *EVAL]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert "comparison:" in capsys.readouterr().out
    assert result["num_train"] == 120 and result["num_val"] == 60 and result["eps"] == 2.0
    assert result["before"]["regularised"] is False and result["after"]["regularised"] is True
    assert not torch.equal(features[0][2], features[1][2])  # the further-training changed the encoder

    for label, (train_h, train_y, val_h, val_y) in zip(("before", "after"), features):
        # recomputed from the features with the core API: L_i, D, the probe
        active = highly_activating(val_h, 2.0)
        stats = ActivationStatistics(512, eps=2.0, sync_on_compute=False)
        stats.update(train_h)
        D = discriminative_mask(stats.compute(), 50.0, 95.0)
        probe = fit_linear_probe(train_h, train_y, num_classes=10, max_iter=50, weight_decay=1e-4)
        logits = probe(val_h)
        correct = logits.argmax(1) == val_y
        confidence = logits.softmax(1).max(1).values.double()
        got = result[label]
        assert got["accuracy"] == pytest.approx(float(correct.double().mean()))
        assert got["num_discriminative"] == int(D.sum())
        for key, values in (("num_active", active.sum(1).double()),
                            ("num_active_discriminative", (active & D).sum(1).double()),
                            ("confidence", confidence)):
            assert got[key]["mean"] == pytest.approx(float(values.mean()), rel=1e-6)
            assert got[key]["mean_correct"] == pytest.approx(float(values[correct].mean()), rel=1e-6)
            assert got[key]["mean_misclassified"] == pytest.approx(float(values[~correct].mean()), rel=1e-6)
        assert got["mean_active_train"] == pytest.approx(float(highly_activating(train_h, 2.0).sum(1).double().mean()))
    for key in ("num_active", "confidence"):
        assert result["change"][key] == pytest.approx(result["after"][key]["mean"] - result["before"][key]["mean"])
    for name in ("compare.png", "discriminative_heatmap_before.png", "discriminative_heatmap_after.png"):
        assert (out / name).stat().st_size > 20_000


def test_compare_rejects_bad_input(checkpoints, tmp_path, capsys):
    before, _ = checkpoints
    assert main(["compare", str(before), str(tmp_path / "missing.ckpt"), "--out", str(tmp_path)]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    assert main(["compare", str(before), str(tmp_path / "plain.ckpt"), "--out", str(tmp_path)]) == 2
    assert "not of a solo-qscore run" in capsys.readouterr().err
    h = torch.rand(20, 8)
    y = torch.arange(20) % 2
    with pytest.raises(ValueError, match="val_y differ"):
        compare_representations((h, y, h, y), (h, y, h, 1 - y))
    with pytest.raises(ValueError, match="differ in shape"):
        group_means(torch.ones(3), torch.ones(4, dtype=torch.bool))
    means = group_means(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([True, True, False]))
    assert means == {"mean": pytest.approx(7 / 3), "mean_correct": 1.5, "mean_misclassified": 4.0}
    assert group_means(torch.tensor([1.0]), torch.tensor([True]))["mean_misclassified"] is None
