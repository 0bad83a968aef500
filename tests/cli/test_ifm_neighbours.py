"""``solo-qscore ifm-neighbours`` (solo_qscore/cli/ifm_neighbours.py, IFM paper Fig. 4) on a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real (untrained) SimCLR ResNet-18 saved in the solo-qscore checkpoint format, 16 px Fashion-MNIST."""
    from conftest import tiny_model

    out = tmp_path_factory.mktemp("ifm_ckpt")
    torch.manual_seed(0)
    model, _ = tiny_model("simclr", "data.fallback=null", "data.train_subset=48", "data.val_subset=8",
                          "method_kwargs.proj_hidden_dim=32", "method_kwargs.proj_output_dim=16",
                          f"output_dir={out}")
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)  # the run config, as a Lightning checkpoint of `pretrain` holds it
    path = out / "tiny.ckpt"
    torch.save(checkpoint, path)
    return path


def test_command_end_to_end(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    from solo_qscore.cli import main

    out = tmp_path / "nn"
    code = main(["ifm-neighbours", str(tiny_checkpoint), "--out", str(out), "--anchors", "3",
                 "--eps", "0", "0.1", "10000"])
    assert code == 0
    result = json.loads((out / "ifm_neighbours.json").read_text())
    assert result["eps"] == [0.0, 0.1, 10000.0] and result["space"] == "projection"
    assert result["bank_size"] == 48 and result["embedding_dim"] == 16 and len(result["rows"]) == 3
    anchors = {row["anchor_index"] for row in result["rows"]}
    negatives = {row["negative_index"] for row in result["rows"]}
    assert len(anchors) == 3 and not anchors & negatives
    for row in result["rows"]:
        # the clean negative is a bank member: at eps = 0 it retrieves itself ...
        assert row["negative_retrieved"][0] == row["negative_index"]
        # ... and at a huge eps v− + εv points at the anchor, which retrieves the anchor image
        assert row["negative_retrieved"][2] == row["anchor_index"]
        assert row["negative_retrieved_cos_to_anchor"][2] == pytest.approx(1.0, abs=1e-5)
        # moving the positive away from the anchor lowers its similarity to the anchor
        cos = row["positive_retrieved_cos_to_anchor"]
        assert cos[2] <= cos[0] + 2e-4  # NN(v+ − εv) maximises b·v+ − ε b·v, so b·v <= b0·v + 2/ε
    summary = result["summary"]
    assert summary["10000"]["negative_mean_cos_to_anchor"] == pytest.approx(1.0, abs=1e-5)
    img = Image.open(out / "ifm_neighbours.png")
    assert img.format == "PNG" and img.size[0] > img.size[1] > 100
    assert "figure:" in capsys.readouterr().out


def test_command_errors_exit_2(tiny_checkpoint, tmp_path, capsys):
    from solo_qscore.cli import main

    assert main(["ifm-neighbours", str(tmp_path / "missing.ckpt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    assert main(["ifm-neighbours", str(tiny_checkpoint), "--anchors", "30", "--out", str(tmp_path)]) == 2
    assert "fewer than 2 x --anchors" in capsys.readouterr().err
    not_ours = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, not_ours)
    assert main(["ifm-neighbours", str(not_ours)]) == 2
    assert "not of a solo-qscore run" in capsys.readouterr().err


@pytest.mark.parametrize("eps", ["nan", "inf", "-1", "abc"])
def test_a_budget_that_is_not_a_finite_number_above_zero_is_an_argument_error(tmp_path, capsys, eps):
    from solo_qscore.cli import main

    with pytest.raises(SystemExit) as stop:  # argparse: its usage line, the error, exit code 2
        main(["ifm-neighbours", str(tmp_path / "any.ckpt"), "--eps", "0.1", eps])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --eps: a perturbation budget must be a finite number >= 0, got '{eps}'" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -0.5])
def test_the_library_refuses_the_same_budgets(eps):
    from solo_qscore.cli.ifm_neighbours import ifm_neighbours
    from solo_qscore.config import ConfigError

    with pytest.raises(ConfigError, match="--eps needs one or more finite budgets >= 0"):
        ifm_neighbours(torch.nn.Identity(), {}, eps=[0.1, eps])  # refused before the model or data are used
