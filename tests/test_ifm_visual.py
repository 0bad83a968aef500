"""IFM visualisation (IFM paper §3.1, Fig. 4): latent perturbation, cosine 1-NN retrieval, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from solo_qscore.analysis.ifm_visual import cosine_nearest_neighbours, ifm_perturb

torch.set_num_threads(1)


def _unit(*shape, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------- perturbation

def test_perturbation_is_the_logit_shift():
    v, vp, vn = _unit(5, 16, seed=1), _unit(5, 16, seed=2), _unit(5, 16, seed=3)
    eps = [0.0, 0.1, 0.2, 1.0]
    pos, neg = ifm_perturb(v, vp, vn, eps)
    assert pos.shape == neg.shape == (4, 5, 16)
    for j, e in enumerate(eps):
        # v·(v+ − εv) = v·v+ − ε and v·(v− + εv) = v·v− + ε for a unit anchor (the IFM logits, eq. 2)
        torch.testing.assert_close((v * pos[j]).sum(-1), (v * vp).sum(-1) - e)
        torch.testing.assert_close((v * neg[j]).sum(-1), (v * vn).sum(-1) + e)
        torch.testing.assert_close(pos[j], vp - e * v)
        torch.testing.assert_close(neg[j], vn + e * v)
    # eps = 0 leaves the vectors as they are
    torch.testing.assert_close(pos[0], vp)
    torch.testing.assert_close(neg[0], vn)


def test_inputs_are_normalised_like_the_loss_and_renormalise_option():
    v, vp, vn = _unit(3, 8, seed=4), _unit(3, 8, seed=5), _unit(3, 8, seed=6)
    pos, neg = ifm_perturb(3.0 * v, 0.5 * vp, 7.0 * vn, 0.2)  # scalar eps -> E = 1
    assert pos.shape == (1, 3, 8)
    torch.testing.assert_close(pos[0], vp - 0.2 * v)
    torch.testing.assert_close(neg[0], vn + 0.2 * v)
    pos_n, neg_n = ifm_perturb(v, vp, vn, [0.1, 1.0], renormalize=True)
    torch.testing.assert_close(pos_n.norm(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(pos_n[1], F.normalize(vp - v, dim=-1))
    # without normalize_inputs the raw vectors are shifted
    raw, _ = ifm_perturb(2 * v, vp, vn, 0.5, normalize_inputs=False)
    torch.testing.assert_close(raw[0], vp - v)


def test_large_eps_moves_negatives_onto_the_anchor_and_positives_away():
    bank = _unit(40, 12, seed=7)
    v, vp, vn = bank[[3, 8]], bank[[4, 9]], bank[[20, 30]]
    pos, neg = ifm_perturb(v, vp, vn, [0.0, 1000.0])
    idx_neg, sim_neg = cosine_nearest_neighbours(neg[1], bank)
    assert idx_neg.tolist() == [3, 8]  # sim(v, v− + εv) -> 1: the anchor itself
    assert (sim_neg > 0.999).all()
    idx_pos, _ = cosine_nearest_neighbours(pos[1], bank)
    # sim(v, v+ − εv) -> −1: the bank row most opposite to the anchor
    assert idx_pos.tolist() == (bank @ v.T).argmin(0).tolist()


# ----------------------------------------------------------------------------- nearest neighbours

def test_eps_zero_retrieves_the_positive_and_negative_themselves():
    bank = torch.randn(200, 32, generator=torch.Generator().manual_seed(8))
    anchor = torch.randn(6, 32, generator=torch.Generator().manual_seed(9))
    pos_idx, neg_idx = torch.tensor([5, 17, 60, 99, 150, 199]), torch.tensor([0, 1, 2, 120, 121, 198])
    pos, neg = ifm_perturb(anchor, bank[pos_idx], bank[neg_idx], [0.0, 0.1])
    idx, sim = cosine_nearest_neighbours(pos[0], bank, chunk_size=64)
    assert idx.tolist() == pos_idx.tolist()
    torch.testing.assert_close(sim, torch.ones(6))
    idx, _ = cosine_nearest_neighbours(neg[0], bank, chunk_size=64)
    assert idx.tolist() == neg_idx.tolist()


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 8192])
def test_nearest_neighbour_equals_brute_force(chunk_size):
    gen = torch.Generator().manual_seed(10)
    bank, queries = torch.randn(50, 9, generator=gen) * 3, torch.randn(23, 9, generator=gen)
    sims = F.normalize(queries, dim=-1) @ F.normalize(bank, dim=-1).T
    idx, sim = cosine_nearest_neighbours(queries, bank, chunk_size=chunk_size)
    assert idx.dtype == torch.long and idx.tolist() == sims.argmax(1).tolist()
    torch.testing.assert_close(sim, sims.max(1).values)
    # cosine ignores the length of the bank rows and of the queries
    idx2, _ = cosine_nearest_neighbours(5 * queries, bank * torch.rand(50, 1, generator=gen).add(0.1),
                                        chunk_size=chunk_size)
    assert idx2.tolist() == idx.tolist()


def test_ties_go_to_the_lowest_index_across_chunks():
    bank = _unit(12, 4, seed=11)
    bank[10] = bank[3]  # duplicate in a later chunk
    bank[4] = bank[3]  # and in the same chunk
    for chunk in (1, 3, 5, 12):
        idx, _ = cosine_nearest_neighbours(bank[3:4] * 2, bank, chunk_size=chunk)
        assert idx.tolist() == [3], chunk


def test_zero_query_gets_index_zero():
    bank = _unit(5, 3, seed=12)
    v = bank[:1]
    pos, _ = ifm_perturb(v, v, bank[1:2], 1.0)  # v+ = v, eps = 1: the zero vector
    idx, sim = cosine_nearest_neighbours(pos[0], bank)
    assert idx.tolist() == [0] and sim.tolist() == [0.0]


def test_bad_inputs_raise_clear_errors():
    a = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        ifm_perturb(a, a, torch.randn(2, 4), 0.1)
    with pytest.raises(ValueError, match="eps"):
        ifm_perturb(a, a, a, -0.1)
    with pytest.raises(ValueError, match="eps"):
        ifm_perturb(a, a, a, [])
    with pytest.raises(ValueError, match="anchor"):
        ifm_perturb(torch.randn(4), a, a, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        ifm_perturb(a, a, torch.full((3, 4), float("nan")), 0.1)
    with pytest.raises(ValueError, match="empty"):
        cosine_nearest_neighbours(a, torch.randn(0, 4))
    with pytest.raises(ValueError, match="dimensions"):
        cosine_nearest_neighbours(a, torch.randn(5, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        cosine_nearest_neighbours(a, a, chunk_size=0)
    with pytest.raises(ValueError, match="float"):
        cosine_nearest_neighbours(torch.ones(2, 4, dtype=torch.long), a)


# ----------------------------------------------------------------------------- the command

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
