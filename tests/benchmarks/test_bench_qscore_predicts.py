"""``benchmarks/bench_qscore_predicts.py``: a finished run is reused, an unfinished one (its session ended
mid-run) is resumed from its last checkpoint rather than trained again from scratch; the trend plot's legends
sit outside its panels; ``--solo-schedule`` runs keep solo-learn's warm-up and are stamped apart."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_qscore_predicts.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_qscore_predicts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_state_reads_the_stamps(tmp_path):
    bench = _bench()
    sz = bench.sizes_for(0.1, 3)
    assert bench.run_state(tmp_path, sz, retrain=False) == "fresh"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "bench_progress.json").write_text(json.dumps({"sizes": sz, "epochs": 1, "seconds": 5.0}))
    assert bench.run_state(tmp_path, sz, retrain=False) == "resume"
    assert bench.run_state(tmp_path, {**sz, "epochs": 4}, retrain=False) == "fresh"  # other sizes: retrain
    assert bench.run_state(tmp_path, sz, retrain=True) == "fresh"
    (tmp_path / "bench_scale.json").write_text(json.dumps(sz))
    assert bench.run_state(tmp_path, sz, retrain=False) == "done"
    (tmp_path / "bench_progress.json").unlink()
    assert bench.run_state(tmp_path, {**sz, "epochs": 4}, retrain=False) == "fresh"  # a finished run of other sizes


def _run(tmp_path: Path, epochs: int, *extra: str, code: int = 0) -> str:
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--epochs", str(epochs), "--methods", "simclr",
           "--threads", "1", "--num-workers", "0", "--eps", "2", "--bootstrap", "0", "--fractions", "1.0",
           "--run-prefix", str(tmp_path / "r_"), "--png-prefix", str(tmp_path / "p"), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,  # no timeout: a busy machine is slow
                          env={**os.environ, "WANDB_MODE": "disabled", "CI": "true"})
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr if code else proc.stdout


def test_an_unfinished_run_resumes_from_its_last_epoch(tmp_path):
    run = tmp_path / "r_simclr"
    _run(tmp_path, 1)
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["epoch"] == 0 and first["global_step"] == 2  # --smoke: 64 images / batch 32
    # what a session that ended after epoch 1 of 2 leaves: a checkpoint and the progress record, no stamp
    (run / "bench_scale.json").unlink()
    progress = json.loads((run / "bench_progress.json").read_text())
    assert progress["epochs"] == 1 and progress["seconds"] > 0
    progress["sizes"]["epochs"] = 2
    (run / "bench_progress.json").write_text(json.dumps(progress))

    out = _run(tmp_path, 2)
    assert "[simclr] resuming" in out
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 4  # one more epoch, not two
    assert json.loads((run / "bench_train_seconds.json").read_text()) > progress["seconds"]
    assert json.loads((run / "bench_scale.json").read_text())["epochs"] == 2  # finished: reused next time


def test_the_trend_plot_legends_cover_no_curves(tmp_path):
    import matplotlib
    import matplotlib.pyplot

    matplotlib.use("Agg")
    bench = _bench()
    metrics = {name: {"auroc": a} for name, a in (("Q", 0.65), ("top z-score", 0.6), ("||h||", 0.42),
                                                    ("max-softmax", 0.88))}
    per_eps = [{"eps": eps, "accuracy": 0.856, "mean_active_val": size, "q_zero_fraction": 0.0, "metrics": metrics}
               for eps, size in ((4.0, 0.7), (2.0, 22.4))]
    res = {"method": "simclr", "dataset": "fashion_mnist",
           "trend": [bench.trend_row(epochs, {"per_eps": per_eps}) for epochs in (15, 30, 45)]}
    fig = bench.trend_figure(res)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 2  # one per panel; the right panel's twin axis shares its panel's legend
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    matplotlib.pyplot.close(fig)
    path = bench.save_trend_plot(res, str(tmp_path / "p"))
    assert Path(path).stat().st_size > 10_000


def test_binary_scores_equal_scikit_learns_whatever_the_scores_range():
    """Issue 24 item 1: raw scores above ~37 went through torchmetrics' sigmoid, rounded to 1.0 and tied
    (scores [40, 41, 42, 43] for labels [0, 0, 1, 1] gave AUROC 0.5; scikit-learn: 1.0)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    bench = _bench()
    assert bench.binary_scores([40.0, 41.0, 42.0, 43.0], [0, 0, 1, 1])["auroc"] == 1.0
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (300,), generator=g)
    for scores in (40.0 + 3.0 * torch.randn(300, generator=g) + labels,      # ||h||-like, all far above 1
                   1e6 * torch.randn(300, generator=g) - 5e5 * labels,      # both signs, huge
                   torch.randint(0, 4, (300,), generator=g).double()):     # many ties
        got = bench.binary_scores(scores, labels)
        # torchmetrics returns float32: equal to scikit-learn's float64 up to float32 rounding
        assert abs(got["auroc"] - roc_auc_score(labels.numpy(), scores.numpy())) < 1e-6
        assert abs(got["auprc"] - average_precision_score(labels.numpy(), scores.numpy())) < 1e-6


def test_solo_linear_evaluation_is_a_second_reference_beside_the_probe(tmp_path):
    """Issue 24 item 4: ``--solo-linear-epochs 1`` trains solo-learn's LinearModel on the final checkpoint and
    reports Q against its correctness beside the L-BFGS probe's, with the two references' agreement; a
    ``--reuse-only`` run of a folder without a finished run trains nothing."""
    out = _run(tmp_path, 1, "--reuse-only", code=2)
    assert "--reuse-only" in out and "nothing trained" in out and not (tmp_path / "r_simclr").exists()
    out = _run(tmp_path, 1, "--solo-linear-epochs", "1", "--bootstrap", "20")
    assert "Q against solo-learn's linear evaluation" in out
    res = json.loads((tmp_path / "r_simclr" / "bench_qscore_predicts.json").read_text())
    solo = res["solo_linear"]
    assert solo["epochs"] == 1 and solo["steps"] == 2 and solo["num_train"] == 64  # 2 batches of 32
    assert solo["optimizer"]["name"] == "sgd" and 0.0 <= solo["accuracy"] <= 1.0
    assert solo["accuracy"] == pytest.approx(solo["solo_val_acc1"], abs=1e-6)
    (e,) = res["per_eps"]
    assert {"metrics", "accuracy", "roc"} <= set(e)  # the L-BFGS probe's entries are still there
    s = e["solo_linear"]
    assert s["base_rate"] == solo["accuracy"] and 0.0 <= s["agreement"] <= 1.0
    assert s["both_correct"] + s["both_wrong"] == pytest.approx(s["agreement"])
    assert s["agreement"] + s["only_lbfgs_correct"] + s["only_solo_correct"] == pytest.approx(1.0)
    if 0.0 < s["base_rate"] < 1.0:  # one class only: no AUROC (as for the probe)
        q = s["metrics"]["Q"]
        assert 0.0 <= q["auroc"] <= 1.0 and 0.0 <= q["auprc"] <= 1.0 and len(q["auroc_ci"]) == 2


def test_solo_schedule_is_stamped_and_never_mixed_with_the_runs_without_it(tmp_path):
    """Issue 24 item 3: the earlier runs set ``++scheduler.warmup_epochs=0`` (solo-learn's cifar default is 10);
    ``--solo-schedule`` keeps solo-learn's settings, in its own folders and size stamp."""
    bench = _bench()
    old, solo = bench.parse_args([]), bench.parse_args(["--solo-schedule"])
    assert (old.run_prefix, old.png_prefix) == ("runs/bench_qscore_", "benchmarks/qscore_predicts")
    assert (solo.run_prefix, solo.png_prefix) == ("runs/bench_qscore_solo_", "benchmarks/qscore_predicts_solo")
    sz_old, sz_solo = bench.sizes_for(1.0, 45), bench.sizes_for(1.0, 45, solo_schedule=True)
    assert "schedule" not in sz_old and sz_solo == {**sz_old, "schedule": "solo"}  # old stamps still match
    assert "++scheduler.warmup_epochs=0" in bench.overrides_for("byol", old, sz_old)
    assert not any("scheduler" in o or "optimizer.lr" in o for o in bench.overrides_for("byol", solo, sz_solo))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "bench_scale.json").write_text(json.dumps(sz_old))
    assert bench.run_state(tmp_path, sz_solo, retrain=False) == "fresh"  # an old run is not reused as a solo one


def test_solo_schedule_smoke_trains_with_solo_learns_warm_up_and_lr(tmp_path, one_torch_thread):
    """Issue 24 item 3, run for real at ``--smoke`` sizes (BYOL, 1 epoch = 2 steps of 32 images)."""
    bench = _bench()
    assert bench.main(["--smoke", "--solo-schedule", "--epochs", "1", "--methods", "byol", "--threads", "1",
                       "--num-workers", "0", "--eps", "2", "--compression-eps", "0", "--bootstrap", "0",
                       "--run-prefix", str(tmp_path / "r_"), "--png-prefix", str(tmp_path / "p")]) == 0
    run = tmp_path / "r_byol"
    assert json.loads((run / "bench_scale.json").read_text())["schedule"] == "solo"
    assert json.loads((run / "bench_qscore_predicts.json").read_text())["sizes"]["schedule"] == "solo"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    used = ckpt["solo_qscore"]["config"]
    assert used["scheduler"]["warmup_epochs"] == 10 and used["scheduler"]["warmup_start_lr"] == 3e-5  # solo's
    assert used["optimizer"]["name"] == "lars" and used["optimizer"]["lr"] == pytest.approx(1.0 * 32 / 256)
    scheduler = ckpt["lr_schedulers"][0]
    assert scheduler["warmup_epochs"] == 20  # 10 epochs of 2 steps: solo counts its warm-up in steps
    assert ckpt["global_step"] == 2
    # after 2 of the 20 warm-up steps the backbone's lr is still a tenth of the base lr
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] < 0.2 * used["optimizer"]["lr"]
