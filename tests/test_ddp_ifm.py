"""IFM SimCLR under DDP: 2 gloo processes see the global batch's negatives, as solo-learn's SimCLR does.

Each process holds half of the views; the adapter gathers the projections (with gradients, solo's
``GatherLayer``) and the loss takes its anchors from the local rows and its candidates from all rows.
The mean of the two processes' losses must equal one process's loss over the whole batch, at ε = 0 it
must equal solo's own ``simclr_loss_func`` on each process, and the gradient each process receives must be
the single-process gradient of the summed loss.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent('''
    import sys, warnings
    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp


    def worker(rank, world, init, out, z, idx, eps):
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        from solo.losses.simclr import simclr_loss_func
        from solo_qscore.adapters.solo_ifm import _global_batch
        from solo_qscore.losses.ifm import ifm_simclr_loss

        n = z.shape[0] // world
        local = z[rank * n:(rank + 1) * n].clone().requires_grad_(True)
        local_idx = idx[rank * n:(rank + 1) * n]
        extra = _global_batch(local, local_idx)
        loss = ifm_simclr_loss(local, local_idx, 0.2, epsilon=eps, **extra)
        loss.backward()
        plain = ifm_simclr_loss(local.detach(), local_idx, 0.2, epsilon=0.0, **_global_batch(local.detach(), local_idx))
        solo = simclr_loss_func(local.detach(), local_idx, temperature=0.2)
        torch.save({"loss": loss.detach(), "grad": local.grad, "plain": plain, "solo": solo,
                    "offset": extra.get("offset"), "world": dist.get_world_size()}, f"{out}.rank{rank}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        init, out, eps = sys.argv[1], sys.argv[2], float(sys.argv[3])
        g = torch.Generator().manual_seed(0)
        z = torch.randn(16, 8, generator=g, dtype=torch.float64)
        idx = torch.arange(8).repeat(2)[torch.randperm(16, generator=g)]  # views of one sample on both ranks
        torch.save({"z": z, "idx": idx}, f"{out}.inputs.pt")
        mp.spawn(worker, args=(2, init, out, z, idx, eps), nprocs=2, join=True)
''')


def _run(tmp_path, eps: float):
    script = tmp_path / "ddp_ifm.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"eps{eps:g}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), f"file://{tmp_path / f'init{eps:g}'}", str(out), str(eps)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)  # a hang: pytest-timeout
    assert proc.returncode == 0, proc.stderr[-4000:]
    inputs = torch.load(f"{out}.inputs.pt", weights_only=True)
    ranks = [torch.load(f"{out}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    return inputs["z"], inputs["idx"], ranks


def test_ifm_simclr_uses_the_global_batch_under_ddp(tmp_path):
    from solo_qscore.losses.ifm import ifm_simclr_loss

    z, idx, ranks = _run(tmp_path, eps=0.3)
    assert [r["world"] for r in ranks] == [2, 2] and [r["offset"] for r in ranks] == [0, 8]
    # mean of the processes' losses = one process's loss over the whole batch
    full = z.clone().requires_grad_(True)
    single = ifm_simclr_loss(full, idx, 0.2, epsilon=0.3)
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single.detach(), rtol=1e-10, atol=1e-12)
    # each process's gradient (gathered rows all-reduced back) = d(loss_0 + loss_1)/dz = 2 dL/dz
    single.backward()
    grads = torch.cat([r["grad"] for r in ranks])
    assert torch.allclose(grads, 2 * full.grad, rtol=1e-8, atol=1e-12)
    # at eps = 0 each process's loss is solo-learn's own SimCLR loss over the global batch
    for r in ranks:
        assert torch.allclose(r["plain"], r["solo"], rtol=1e-10, atol=1e-12)
    # and not the per-process loss (which sees half of the negatives)
    local = ifm_simclr_loss(z[:8], idx[:8], 0.2, epsilon=0.0)
    assert not torch.allclose(local, ranks[0]["plain"])


def test_candidates_must_hold_the_anchors():
    import pytest

    from solo_qscore.losses.ifm import ifm_simclr_loss

    z, idx = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="offset"):
        ifm_simclr_loss(z, idx, 0.2, candidates=torch.randn(6, 3), candidate_indexes=torch.arange(6), offset=4)
    with pytest.raises(ValueError, match="candidates must be"):
        ifm_simclr_loss(z, idx, 0.2, candidates=torch.randn(6, 5), candidate_indexes=torch.arange(6))
    # candidates = z itself is the plain call
    assert torch.allclose(ifm_simclr_loss(z, idx, 0.2, epsilon=0.1, candidates=z, candidate_indexes=idx),
                          ifm_simclr_loss(z, idx, 0.2, epsilon=0.1))
