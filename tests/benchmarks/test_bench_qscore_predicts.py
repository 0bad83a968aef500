"""``benchmarks/bench_qscore_predicts.py``: a finished run is reused, an unfinished one (its session ended
mid-run) is resumed from its last checkpoint rather than trained again from scratch; the trend plot's legends
sit outside its panels."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

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


def _run(tmp_path: Path, epochs: int) -> str:
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--epochs", str(epochs), "--methods", "simclr",
           "--threads", "1", "--num-workers", "0", "--eps", "2", "--bootstrap", "0", "--fractions", "1.0",
           "--run-prefix", str(tmp_path / "r_"), "--png-prefix", str(tmp_path / "p")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,  # no timeout: a busy machine is slow
                          env={**os.environ, "WANDB_MODE": "disabled", "CI": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


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
