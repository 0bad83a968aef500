"""IFM visualisation (solo_qscore.analysis.ifm_visual, IFM paper §3.1, Fig. 4): latent perturbation, cosine
1-NN retrieval."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from solo_qscore.analysis.ifm_visual import cosine_nearest_neighbours, ifm_perturb

torch.set_num_threads(1)


def _unit(*shape, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


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
