"""solo-learn main SimCLR with Q-Score under DDP: 2 gloo processes on CPU give the statistics of 1 process.

Both runs see the same 8 images in one global step (1 x 8 or 2 ranks x 4), with deterministic crops,
the backbone's batch norm in eval mode (so a sample's features do not depend on who shares its batch)
and lr 0 (so the probe after training sees the same weights). The activation statistics are then
counts summed across the processes: A, D, the logged counts and the probe must equal one process's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent('''
    import sys, warnings
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl
    import torch
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config
    from solo_qscore.train import pretrain

    class FreezeBatchNorm(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            for m in module.backbone.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    class Record(pl.Callback):
        def __init__(self, out):
            self.out, self.feats = out, []

        def on_train_batch_end(self, trainer, module, *args):
            self.feats.append(module.qscore_batch_features.clone())

        def on_train_end(self, trainer, module):
            stats = next(c for c in trainer.callbacks if type(c).__name__ == "ActivationStatisticsCallback")
            probe = next(c for c in trainer.callbacks if type(c).__name__ == "QScoreProbeCallback")
            torch.save({{"rank": trainer.global_rank, "world": trainer.world_size, "feats": torch.cat(self.feats),
                        "frequencies": stats.frequencies, "buffer": module.qscore_discriminative.clone(),
                        "auroc": None if probe.last_report is None else probe.last_report["auroc"],
                        "accuracy": None if probe.last_report is None else probe.last_report["accuracy"]}},
                       f"{{self.out}}.rank{{trainer.global_rank}}.pt")

    devices, out = int(sys.argv[1]), sys.argv[2]
    deterministic = ["augmentations.0.rrc.crop_min_scale=1.0", "augmentations.0.color_jitter.prob=0.0",
                     "augmentations.0.grayscale.prob=0.0", "augmentations.0.gaussian_blur.prob=0.0",
                     "augmentations.0.horizontal_flip.prob=0.0", "augmentations.0.crop_size=16"]
    cfg = tiny_config("simclr", "qscore.enabled=true", "qscore.eps=1.0", f"output_dir={{out}}",
                      "data.train_subset=8", "data.val_subset=16", f"optimizer.batch_size={{8 // devices}}",
                      f"devices={{devices}}", "strategy=ddp" if devices > 1 else "strategy=auto",
                      "probe.max_iter=20", *deterministic)
    cfg.optimizer.lr = 0.0  # the same weights after the step, whatever the process layout
    pretrain(cfg, extra_callbacks=[FreezeBatchNorm(), Record(out)])
''')


def test_two_gloo_processes_equal_one(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("MASTER_PORT", None)
    for devices in (1, 2):
        proc = subprocess.run([sys.executable, str(script), str(devices), str(tmp_path / f"run{devices}")],
                              cwd=tmp_path, env=env, capture_output=True, text=True)  # a hang: pytest-timeout
        assert proc.returncode == 0, proc.stderr[-4000:]
    single = torch.load(tmp_path / "run1.rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"run2.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert single["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    assert [r["feats"].shape[0] for r in ranks] == [8, 8] and single["feats"].shape[0] == 16  # 2 crops each

    # the union of the ranks' features is the single process's (as a set of rows)
    union = torch.cat([r["feats"] for r in ranks])
    key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    assert torch.allclose(key(union), key(single["feats"]), atol=1e-5)
    # A summed across the processes = A of one process; the same D everywhere
    for r in ranks:
        assert torch.allclose(r["frequencies"], single["frequencies"], atol=1e-5)
        assert torch.equal(r["buffer"], single["buffer"])
    assert single["buffer"].any()
    # the probe runs on rank 0 only, over the full eval loaders, and agrees with one process
    assert ranks[1]["auroc"] is None and ranks[0]["accuracy"] is not None
    assert ranks[0]["accuracy"] == pytest.approx(single["accuracy"], abs=1e-6)
    assert (ranks[0]["auroc"] is None and single["auroc"] is None) or \
        ranks[0]["auroc"] == pytest.approx(single["auroc"], abs=1e-6)
