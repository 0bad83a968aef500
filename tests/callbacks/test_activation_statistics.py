"""ActivationStatisticsCallback (callbacks/activation_statistics.py) with real trainers: the hook path, exact
statistics, seeding, resume, NaN, and DDP (with the probe callback).

Tiny conv backbones (r = 64, tests/helpers/tiny_lightning.py) trained for a few steps on real Fashion-MNIST
32x32 subsets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.feature_recorder import FeatureRecorder
from helpers.tiny_lightning import BAND, BATCH, EPS, EXPECTED_SIZE, R, TinyModule, loader, trainer
from pytorch_lightning.loggers import CSVLogger

from solo_qscore.callbacks import ActivationStatisticsCallback, extract_features
from solo_qscore.core.discriminative import discriminative_mask
from solo_qscore.core.statistics import ActivationStatistics

ROOT = Path(__file__).resolve().parents[2]


def reference_counts(h: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Independent A_j counts: j in L_i iff h_ij > mean_i + eps * std_i (population std), float64."""
    h = h.double()
    var, mean = torch.var_mean(h, dim=1, correction=0)
    return (h > (mean + eps * var.sqrt())[:, None]).sum(0)


def test_hook_path_pushes_discriminative_set_and_logs(tmp_path, fmnist):
    pl.seed_everything(0)
    model = TinyModule()
    stats, rec = ActivationStatisticsCallback(eps=EPS, band=BAND), FeatureRecorder()
    tr = trainer(tmp_path, [stats, rec], logger=CSVLogger(str(tmp_path), name="logs"))
    tr.fit(model, loader(fmnist["train_x"], fmnist["train_y"]))

    last = torch.cat(rec.epochs[1])  # the statistics are reset each epoch: D comes from epoch 2
    assert last.shape == (256, R)
    counts = reference_counts(last)
    assert counts.sum() > 0, "eps too high for this test: all highly activating sets empty"
    A = counts.double().mul(100.0 / last.shape[0]).float()
    D = model.qscore_discriminative
    assert D.dtype == torch.bool and int(D.sum()) == EXPECTED_SIZE
    assert torch.equal(D.cpu(), discriminative_mask(A, *BAND))
    assert torch.allclose(stats.frequencies, A)
    assert torch.equal(stats.discriminative, D.cpu())
    assert not stats.features.hooked  # removed at fit end

    for metrics in (tr.logged_metrics, tr.callback_metrics):
        for key in ("qscore/num_discriminative", "qscore/mean_active", "qscore/q_mean", "qscore/num_samples"):
            assert key in metrics, (key, sorted(metrics))
        assert float(metrics["qscore/num_discriminative"]) == EXPECTED_SIZE
        assert 0.0 <= float(metrics["qscore/mean_active"]) <= R
        assert float(metrics["qscore/mean_active"]) == pytest.approx(float(counts.sum()) / 256, rel=1e-6)
        assert float(metrics["qscore/num_samples"]) == 256
        assert float(metrics["qscore/q_mean"]) >= 0.0
        # the quantiles of probe.json's q_quantiles, one definition (core.qscore.Q_QUANTILES)
        assert sorted(k for k in metrics if k.startswith("qscore/q_p")) == [
            "qscore/q_p05", "qscore/q_p25", "qscore/q_p50", "qscore/q_p75", "qscore/q_p95"]


def test_exact_statistics_from_dataloader(tmp_path, fmnist):
    pl.seed_everything(0)
    model = TinyModule()
    eval_loader = loader(fmnist["train_x"], fmnist["train_y"], batch_size=64)
    stats = ActivationStatisticsCallback(eps=EPS, band=BAND, dataloader=eval_loader, exact=True)
    tr = trainer(tmp_path, [stats], max_epochs=1)
    tr.fit(model, loader(fmnist["train_x"], fmnist["train_y"], shuffle=True))
    assert not stats.features.hooked  # exact mode does not hook the backbone

    feats, labels = extract_features(model.backbone, eval_loader, torch.device("cpu"))
    assert torch.equal(labels, fmnist["train_y"])
    metric = ActivationStatistics(R, EPS)
    metric.update(feats)
    A = metric.compute()
    assert torch.equal(stats.frequencies, A)
    assert torch.equal(model.qscore_discriminative, discriminative_mask(A, *BAND))
    assert torch.equal(metric.counts, reference_counts(feats))

    with pytest.raises(ValueError, match="exact=True needs a dataloader"):
        ActivationStatisticsCallback(exact=True)
    with pytest.raises(ValueError, match="invalid band"):
        ActivationStatisticsCallback(band=(95.0, 50.0))


def test_dataloader_seeds_the_set_at_train_start(tmp_path, fmnist):
    model = TinyModule()
    eval_loader = loader(fmnist["train_x"], fmnist["train_y"], batch_size=128)
    feats, _ = extract_features(model.backbone, eval_loader, torch.device("cpu"))
    expected = discriminative_mask(reference_counts(feats).double().mul(100 / 256).float(), *BAND)

    class Check(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 0:
                self.seeded = pl_module.qscore_discriminative.clone()

    check = Check()
    stats = ActivationStatisticsCallback(eps=EPS, band=BAND, dataloader=eval_loader)
    trainer(tmp_path, [stats, check], max_steps=1).fit(model, loader(fmnist["train_x"], fmnist["train_y"]))
    assert torch.equal(check.seeded, expected)


class Snapshots(pl.Callback):
    """State of the statistics callback after each training step (runs after it, before checkpoints)."""

    def __init__(self, stats: ActivationStatisticsCallback) -> None:
        self.stats, self.at = stats, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.at[trainer.global_step] = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                                        for k, v in self.stats.state_dict().items()}


def _fit_for_resume(tmp_path: Path, data, ckpt_dir=None, ckpt_path=None):
    pl.seed_everything(1)
    model = TinyModule()
    stats = ActivationStatisticsCallback(eps=EPS, band=BAND)
    snaps, rec = Snapshots(stats), FeatureRecorder()
    callbacks = [stats, snaps, rec]
    if ckpt_dir is not None:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=4,
                                                      save_top_k=-1, filename="{step}"))
    tr = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks, max_epochs=2,
                    enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=ckpt_dir is not None, default_root_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr.fit(model, loader(*data), ckpt_path=ckpt_path)
    return model, stats, snaps, rec, tr


def test_checkpoint_resume_mid_epoch(tmp_path, fmnist):
    data = (fmnist["train_x"], fmnist["train_y"])  # 8 steps per epoch, no shuffling
    model, stats, snaps, _, tr = _fit_for_resume(tmp_path / "a", data, ckpt_dir=tmp_path / "ckpt")
    assert tr.global_step == 16
    ckpt = tmp_path / "ckpt" / "step=12.ckpt"  # mid-way through epoch 2
    assert ckpt.exists(), sorted(os.listdir(tmp_path / "ckpt"))

    # the callback state in the checkpoint equals the state at save time (partial epoch-2 counts)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("ActivationStatisticsCallback")]
    at_save = snaps.at[12]
    assert int(state["num_samples"]) == 4 * BATCH
    for key in ("counts", "num_samples", "num_active", "num_nonfinite", "discriminative", "frequencies"):
        assert torch.equal(state[key], at_save[key]), key
    assert torch.equal(saved["state_dict"]["qscore_discriminative"], at_save["discriminative"])

    # resume to the end. Lightning 2.x restarts a plain (non-stateful) DataLoader at its first batch
    # on a mid-epoch resume (batch_idx continues at 4 but the data are batches 0-3 again), so the
    # resumed epoch is not the uninterrupted one; check instead that the final statistics are the
    # restored partial counts plus exactly the batches the resumed run trained on.
    model2, stats2, snaps2, rec2, tr2 = _fit_for_resume(tmp_path / "b", data, ckpt_path=str(ckpt))
    assert tr2.global_step == 16
    assert min(snaps2.at) == 13  # continued after the saved step
    assert int(snaps2.at[13]["num_samples"]) == 5 * BATCH  # restored partial counts + one batch
    resumed = torch.cat(rec2.epochs[1])
    assert resumed.shape[0] == 4 * BATCH
    expected = state["counts"] + reference_counts(resumed)
    assert torch.equal(snaps2.at[16]["counts"], expected)
    A = expected.double().mul(100.0 / (8 * BATCH)).float()
    assert torch.allclose(stats2.frequencies, A)
    assert torch.equal(stats2.discriminative, discriminative_mask(stats2.frequencies, *BAND))
    assert torch.equal(model2.qscore_discriminative, stats2.discriminative)
    assert int(model2.qscore_discriminative.sum()) == EXPECTED_SIZE
    # an end-of-epoch checkpoint resumes exactly: same final set as the uninterrupted run
    model3, stats3, _, _, tr3 = _fit_for_resume(tmp_path / "c", data, ckpt_path=str(tmp_path / "ckpt" / "step=8.ckpt"))
    assert tr3.global_step == 16
    assert torch.equal(stats3.frequencies, stats.frequencies)
    assert torch.equal(model3.qscore_discriminative, model.qscore_discriminative)


def test_resume_from_an_epoch_end_checkpoint_is_silent_and_exact(tmp_path, fmnist):
    """ModelCheckpoint's default saves after ``on_train_epoch_end`` (counts already reset, D updated):
    resuming must keep that D and not warn that the restored epoch was skipped, also from such a checkpoint
    written by an earlier version (which kept the epoch beside the zero counts)."""
    data = (fmnist["train_x"], fmnist["train_y"])
    model, stats, _, _, _ = _fit_for_resume(tmp_path / "a", data)

    def fit(max_epochs, ckpt_path=None):
        pl.seed_everything(1)
        m, cb = TinyModule(), ActivationStatisticsCallback(eps=EPS, band=BAND)
        tr = pl.Trainer(accelerator="cpu", devices=1, logger=False, max_epochs=max_epochs,
                        callbacks=[cb, pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"))],
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tr.fit(m, loader(*data), ckpt_path=ckpt_path)
        return m, cb, [str(w.message) for w in caught]

    fit(1)
    (ckpt,) = (tmp_path / "ckpt").glob("*.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("ActivationStatisticsCallback")]
    assert int(state["num_samples"]) == 0 and state["discriminative"] is not None  # reset, D kept
    # the same checkpoint as written before the callback forgot its epoch at the reset: still silent
    state["epoch"] = 0
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    for path in (ckpt, old):
        resumed, cb, messages = fit(2, ckpt_path=str(path))
        assert not [m for m in messages if "skipped" in m or "before the ``update``" in m], (path, messages)
        assert torch.equal(cb.frequencies, stats.frequencies)
        assert torch.equal(resumed.qscore_discriminative, model.qscore_discriminative)


def test_nan_representations_warn_and_keep_the_set(tmp_path, fmnist):
    model = TinyModule(nan=True)
    preset = torch.zeros(R, dtype=torch.bool)
    preset[:EXPECTED_SIZE] = True
    model.qscore_discriminative.copy_(preset)
    stats = ActivationStatisticsCallback(eps=EPS, band=BAND)
    with pytest.warns(UserWarning, match="discriminative set unchanged.*NaN or Inf"):
        trainer(tmp_path, [stats], max_epochs=1).fit(model, loader(fmnist["train_x"], fmnist["train_y"]))
    assert torch.equal(model.qscore_discriminative, preset)
    assert torch.equal(stats.discriminative, preset)
    assert stats.frequencies is None
    assert int(stats.metric.num_samples) == 0 and int(stats.metric.num_nonfinite) == 0  # reset after the skip


DDP_SCRIPT = textwrap.dedent('''
    import json, os, sys, warnings
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    sys.path.insert(0, os.path.dirname({tests!r}))  # tests/: the helpers package
    from helpers.tiny_lightning import BAND, EPS, TinyModule
    from solo_qscore.callbacks import ActivationStatisticsCallback, QScoreProbeCallback
    from solo_qscore.report.config import ReportConfig

    def main(devices, data_path, out):
        warnings.simplefilter("ignore")
        d = torch.load(data_path)
        pl.seed_everything(0)
        model = TinyModule(lr=0.0)  # identical weights whatever the per-process batch size
        stats = ActivationStatisticsCallback(eps=EPS, band=BAND)
        ev = lambda x, y: DataLoader(TensorDataset(x, y), batch_size=128)
        probe = QScoreProbeCallback(ev(d["train_x"], d["train_y"]), ev(d["val_x"], d["val_y"]),
                                    config=ReportConfig(eps=EPS, band=BAND, compression=None))
        batch = 32 // devices  # same global batch: 2 ranks x 16 or 1 x 32
        train = DataLoader(TensorDataset(d["train_x"], d["train_y"]), batch_size=batch, shuffle=False)
        tr = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        callbacks=[stats, probe],
                        enable_model_summary=False, use_distributed_sampler=True)
        tr.fit(model, train)
        result = {{"rank": tr.global_rank, "world": tr.world_size,
                   "frequencies": stats.frequencies.tolist(),
                   "buffer": model.qscore_discriminative.tolist(),
                   "logged": {{k: float(v) for k, v in tr.callback_metrics.items()}},
                   "auroc": None if probe.last_report is None else probe.last_report["auroc"],
                   "probe_ran": probe.last_report is not None}}
        with open(f"{{out}}.rank{{tr.global_rank}}.json", "w") as f:
            json.dump(result, f)

    if __name__ == "__main__":
        main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
''')


def test_ddp_counts_summed_and_probe_equal_single_process(tmp_path, fmnist):
    data_path = tmp_path / "data.pt"
    torch.save(fmnist, data_path)  # 256 = 2 ranks x 8 steps x 16 samples: the ranks cover the whole set
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).resolve().parent)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    for devices in (1, 2):
        proc = subprocess.run([sys.executable, str(script), str(devices), str(data_path),
                               str(tmp_path / f"out{devices}")], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # a hang: the suite's pytest-timeout
        assert proc.returncode == 0, proc.stderr[-4000:]
    single = json.loads((tmp_path / "out1.rank0.json").read_text())
    ranks = [json.loads((tmp_path / f"out2.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and single["world"] == 1

    # the model saw the same 256 images in both runs: counts summed across ranks = single-process counts
    for r in ranks:
        assert r["frequencies"] == pytest.approx(single["frequencies"], abs=1e-5)
        assert r["buffer"] == single["buffer"]
        assert sum(r["buffer"]) == EXPECTED_SIZE
    rank0 = ranks[0]["logged"]
    assert rank0["qscore/num_discriminative"] == EXPECTED_SIZE
    assert rank0["qscore/num_samples"] == single["logged"]["qscore/num_samples"] == 256
    assert rank0["qscore/mean_active"] == pytest.approx(single["logged"]["qscore/mean_active"], rel=1e-6)

    # the probe runs on rank 0 only, over the full eval loaders
    assert ranks[0]["probe_ran"] and not ranks[1]["probe_ran"] and single["probe_ran"]
    assert ranks[0]["auroc"] == pytest.approx(single["auroc"], abs=1e-6)
