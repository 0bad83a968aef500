"""``solo-qscore robust-features`` (solo_qscore/cli/robust_features.py, IFM paper §4.3) on a tiny run
(``tiny_run``, tests/conftest.py)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from solo_qscore.probe.linear import fit_linear_probe

torch.set_num_threads(1)


def test_command_end_to_end(tiny_run, tmp_path, capsys):
    from PIL import Image

    from solo_qscore.callbacks import extract_features
    from solo_qscore.cli import main
    from solo_qscore.cli.open_run import load_checkpoint
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.probe.backbone import find_backbone

    out = tmp_path / "rf"
    code = main(["robust-features", str(tiny_run), "--eps", "0.01", "8/255", "--max-steps", "4", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "robust_features.json").read_text())
    assert (result["num_train"], result["num_test"], result["num_classes"]) == (32, 24, 10)
    assert [r["eps"] for r in result["runs"]] == [0.01, pytest.approx(8 / 255)]
    for r in result["runs"]:
        assert 0.0 <= r["attack_success_rate"] <= 1.0
        assert r["num_in_sets"] == round(32 * r["attack_success_rate"])
        for key in ("accuracy_D_R", "accuracy_D_NR"):
            # a real accuracy on 24 clean test images (NaN only if no attack succeeded)
            if r["num_in_sets"]:
                assert 0.0 <= r[key] <= 1.0 and r[key] * 24 == pytest.approx(round(r[key] * 24))
        if r["num_in_sets"]:
            assert 0.0 <= r["mean_steps_successful"] <= 4
    # accuracy_D is the clean probe, recomputed here independently
    model, cfg, _ = load_checkpoint(str(tiny_run))
    train_loader, val_loader = make_eval_loaders(cfg["data"])
    backbone = find_backbone(model)
    train_h, train_y = extract_features(backbone, train_loader, torch.device("cpu"))
    val_h, val_y = extract_features(backbone, val_loader, torch.device("cpu"))
    probe = fit_linear_probe(train_h, train_y, num_classes=10, max_iter=20, weight_decay=cfg["probe"]["weight_decay"])
    assert result["accuracy_D"] == pytest.approx(float((probe.predict(val_h) == val_y).double().mean()))
    img = Image.open(out / "robust_features.png")
    assert img.format == "PNG" and img.size[0] > 300
    assert "figure:" in capsys.readouterr().out


def test_eps_parsing_and_command_errors(tiny_run, tmp_path, capsys):
    from solo_qscore.cli import main
    from solo_qscore.cli.robust_features import parse_eps

    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps("0.01") == 0.01
    for bad in ("abc", "0", "-1", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_eps(bad)
    with pytest.raises(SystemExit):
        main(["robust-features", str(tiny_run), "--eps", "zero"])
    assert main(["robust-features", str(tmp_path / "none.ckpt")]) == 2
    assert main(["robust-features", str(tiny_run), "--max-steps", "0", "--out", str(tmp_path)]) == 2
    assert "--max-steps" in capsys.readouterr().err
