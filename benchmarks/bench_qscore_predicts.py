"""Benchmark: does Q-Score predict misclassification? (Q-Score paper Fig. 4) + compression (Fig. 2).

Pre-trains SimCLR (contrastive) and BYOL (non-contrastive) with solo-learn main (its cifar configs,
``method_configs/cifar``, on the CPU in float32) through ``solo_qscore.train.pretrain`` on the offline
default data (``cifar10`` falls back to Fashion-MNIST at 32x32 RGB: real CIFAR-10 is not available
offline), extracts frozen backbone features, and runs
``solo_qscore.report.build.qscore_report`` at eps = 4 (paper) and eps = 2. For each eps it reports the
AUROC / AUPRC of Q against the linear probe's correctness, with the base rate, next to label-free
alternatives scored on the same samples and the same correct flags:

* max-softmax confidence of the probe (supervised: it *is* the probe, an upper reference),
* the norm ``||h_i||`` of the raw representation,
* the z-score of the top feature, ``max_j (hhat_ij - mu_i) / sigma_i`` (docs/CONVENTIONS.md §1 notation),

and the compression study (probe accuracy vs number of kept features: discriminative band, random
subsets, lower/upper tail of A, PCA).

Paper setting: ResNet-18/50 pre-trained 1000 epochs (CIFAR-10) or 400+ epochs (ImageNet-100/1K) on
GPUs. Here ``--scale 1`` = 2 epochs on 3,000 training images (val 2,000), ~7 min per method on one
CPU core; ``--scale k`` multiplies the number of samples and epochs.

    .venv/bin/python benchmarks/bench_qscore_predicts.py --scale 1 --threads 1

"Misclassified" is the library's probe's (standardised frozen features, full-batch L-BFGS). The paper's is
solo-learn's linear evaluation (``main_linear.py``: SGD, 100 epochs); ``--solo-linear-epochs N`` also trains
solo's own ``LinearModel`` for N epochs on the final checkpoint (``solo_qscore.adapters.solo_linear``) and
reports Q (and the label-free scores) against its correctness too, with the agreement of the two references
(``solo_linear`` keys of the JSON). ``--reuse-only`` analyses finished runs and never trains.

Checkpoints and per-method JSON go to ``runs/bench_qscore_<method>/``; an existing checkpoint of the
same sizes is reused (``--retrain`` to force), and an unfinished run of the same sizes (a session that
ended mid-run) is resumed from its last epoch by running the same command again.
Plots: ``benchmarks/qscore_predicts_*.png``.

Pre-training runs without solo-learn's warm-up (``scheduler.warmup_epochs=0``; its cifar configs warm up for
10 epochs), as the earlier tables did. ``--solo-schedule`` keeps solo-learn's scheduler settings instead
(warm-up and lr as its config and ``parse_cfg`` give them); its runs go to ``runs/bench_qscore_solo_<method>``
by default and their size stamp says ``"schedule": "solo"``, so they are never reused as the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

PAPER = {
    "auprc_max": "91.45 (ImageNet-100, BYOL); 78.78 (ImageNet-1K)",
    "auroc_max": "73.26 (ImageNet-100, SimCLR); 65.44 (ImageNet-1K)",
    "compression": ("discriminative features keep linear accuracy with up to 40% fewer dimensions, "
                    "beating random subsets"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies samples and epochs (1 = 3000 train, 2 epochs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPU)")
    p.add_argument("--num-workers", type=int, default=1, help="data.num_workers")
    p.add_argument("--methods", nargs="+", default=["simclr", "byol"])
    p.add_argument("--eps", type=float, nargs="+", default=[4.0, 2.0])
    p.add_argument("--random-seeds", type=int, default=4, help="random subsets per size (>= 4)")
    p.add_argument("--compression-eps", type=float, nargs="+", default=[2.0],
                   help="eps values at which to run the compression study (it depends on eps through A)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0],
                   help="compression sizes k = round(f r); |D| is always added")
    p.add_argument("--epochs", type=int, default=None,
                   help="pre-training epochs (default: 2 x scale); samples still follow --scale")
    p.add_argument("--trend-every", type=int, default=0,
                   help="also keep a checkpoint every K epochs and report Q against training length "
                        "(table, trend plot); 0 = final checkpoint only")
    p.add_argument("--precision", default="bf16-mixed",
                   help="Lightning precision of pre-training (bf16-mixed: AMX-BF16 CPUs; 32-true as before)")
    p.add_argument("--seed", type=int, default=0, help="pre-training seed (runs of seed > 0 get their own folder)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--retrain", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--solo-linear-epochs", type=int, default=0,
                   help="also label errors with solo-learn's own linear evaluation (its LinearModel, SGD, its "
                        "lr and step schedule) trained N epochs on the final checkpoint (paper: 100); 0 = off")
    p.add_argument("--reuse-only", action="store_true",
                   help="analyse finished runs of these sizes only: a run that would train is an error (exit 2)")
    p.add_argument("--run-prefix", default=None,
                   help="runs go to PREFIX<method>[_seed<k>] (default runs/bench_qscore_; runs/bench_qscore_solo_ "
                        "with --solo-schedule)")
    p.add_argument("--png-prefix", default=None,
                   help="plots (default benchmarks/qscore_predicts; ..._solo with --solo-schedule)")
    p.add_argument("--solo-schedule", action="store_true",
                   help="keep solo-learn's own scheduler settings (its warm-up: 10 epochs from 3e-5 for the cifar "
                        "configs; its lr, scaled by batch size / 256) instead of no warm-up; recorded in the "
                        "run's size stamp, so such a run is never reused as one without it")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, for the tests: 64 train / 48 val images at 16 px, batch 32, a narrow projector, "
                        "float32 (seconds on any CPU; --scale then only sets the epochs)")
    args = p.parse_args(argv)
    if args.run_prefix is None:
        args.run_prefix = "runs/bench_qscore_solo_" if args.solo_schedule else "runs/bench_qscore_"
    if args.png_prefix is None:
        args.png_prefix = "benchmarks/qscore_predicts" + ("_solo" if args.solo_schedule else "")
    if args.smoke:  # emulated bf16 (a CPU without AVX512-BF16/AMX) is many times slower than float32
        args.precision = "32-true"
    return args


def sizes_for(scale: float, epochs: int | None = None, trend_every: int = 0, smoke: bool = False,
              solo_schedule: bool = False) -> dict:
    sz = {
        "train_subset": max(256, int(round(3000 * scale))),
        "val_subset": max(200, int(round(2000 * scale))),
        "epochs": epochs if epochs is not None else max(1, int(round(2 * scale))),
    }
    if smoke:  # recorded in the stamps: a smoke run is never reused as a real one
        sz.update(train_subset=64, val_subset=48, smoke=True)
    if trend_every:
        sz["trend_every"] = trend_every
    if solo_schedule:  # only then: the stamps of the runs without it stay as they were
        sz["schedule"] = "solo"
    return sz


def overrides_for(method: str, args: argparse.Namespace, sz: dict) -> list[str]:
    """Overrides (Hydra syntax) of solo-learn main's cifar config of ``method``: CPU, ``args.precision``."""
    run = f"{args.run_prefix}{method}" + (f"_seed{args.seed}" if args.seed else "")
    return [f"++seed={args.seed}", f"precision={args.precision}",
        f"data.train_subset={sz['train_subset']}", f"data.val_subset={sz['val_subset']}",
        "optimizer.batch_size=128", f"data.num_workers={args.num_workers}",
        f"max_epochs={sz['epochs']}", "accelerator=cpu", "devices=1", "strategy=auto",
        "sync_batchnorm=false", "+enable_progress_bar=false", "+enable_model_summary=false",
        *([] if sz.get("schedule") == "solo" else ["++scheduler.warmup_epochs=0"]),
        "wandb.enabled=false", "qscore.enabled=false",
        "probe.every_n_epochs=0", f"output_dir={run}", f"name=bench-qscore-{method}",
        *(SMOKE_OVERRIDES + (["method_kwargs.pred_hidden_dim=64"] if method == "byol" else [])
          if sz.get("smoke") else []),
    ]


#: ``--smoke``: 2 steps of 32 images at 16 px per epoch, a narrow projector (a step takes well under a second);
#: no end-of-training probe report (this script makes its own from the checkpoint)
SMOKE_OVERRIDES = ["optimizer.batch_size=32", "augmentations.0.crop_size=16", "method_kwargs.proj_hidden_dim=64",
                   "method_kwargs.proj_output_dim=32", "probe.max_iter=20", "probe.enabled=false"]


def binary_scores(score, correct, bootstrap: int = 0, seed: int = 0) -> dict:
    """AUROC/AUPRC of ``score`` against ``correct``, with percentile-bootstrap 95 % intervals.

    The intervals resample the validation samples (``bootstrap`` times, with replacement) for a fixed
    encoder and probe: they say how far the figure could move on another draw of test images, not
    across pre-training seeds (the seed runs say that).
    """
    import torch
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_roc

    from solo_qscore.report.separation import unit_ranks

    # ranks, not raw scores: torchmetrics applies a sigmoid to scores outside [0, 1] (||h|| ~ 40 all tie at 1.0)
    s = unit_ranks(torch.as_tensor(score, dtype=torch.float64))
    c = torch.as_tensor(correct).long()
    fpr, tpr, _ = binary_roc(s, c)
    out = {
        "auroc": float(binary_auroc(s, c)),
        "auprc": float(binary_average_precision(s, c)),
        "fpr": fpr.numpy(), "tpr": tpr.numpy(),
    }
    if bootstrap:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, s.numel(), (bootstrap, s.numel()), generator=g)
        draws = [(float(binary_auroc(s[i], c[i])), float(binary_average_precision(s[i], c[i])))
                 for i in idx if 0 < int(c[i].sum()) < i.numel()]  # one resample per item, not per sample
        d = torch.tensor(draws, dtype=torch.float64)
        lo, hi = torch.quantile(d, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
        out["auroc_ci"], out["auprc_ci"] = [float(lo[0]), float(hi[0])], [float(lo[1]), float(hi[1])]
    return out


def label_free(h) -> dict:
    """The label-free alternatives to Q: ``||h_i||`` and the top-feature z-score
    ``max_j (hhat_ij - mu_i) / sigma_i``, as NumPy arrays (float64)."""
    hd = h.double()
    hhat = hd / hd.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mu = hhat.mean(dim=1, keepdim=True)
    sigma = hhat.std(dim=1, unbiased=False, keepdim=True)
    zmax = ((hhat - mu) / sigma.clamp_min(1e-12)).max(dim=1).values
    return {"||h||": hd.norm(dim=1).numpy(), "top z-score": zmax.numpy()}


def mean_active(h, eps: float) -> float:
    """Mean |L_i| over the rows of ``h`` (the library's highly-activating sets)."""
    from solo_qscore.core.activations import highly_activating

    return float(highly_activating(h, eps).sum(dim=1).double().mean())


def metrics_of(scores: dict, correct, bootstrap: int) -> tuple[dict, dict]:
    """AUROC / AUPRC (+ bootstrap intervals) of each score, and the ROC points for the plots;
    empty when ``correct`` holds one class only."""
    import torch

    c = torch.as_tensor(correct).bool()
    if not 0 < int(c.sum()) < c.numel():
        return {}, {}
    out = {name: binary_scores(s, c, bootstrap=bootstrap) for name, s in scores.items()}
    metrics = {k: {m: v[m] for m in ("auroc", "auprc", "auroc_ci", "auprc_ci") if m in v} for k, v in out.items()}
    return metrics, {k: {"fpr": v["fpr"].tolist(), "tpr": v["tpr"].tolist()} for k, v in out.items()}


def run_solo_linear(method: str, backbone, cfg: dict, val_y, args: argparse.Namespace):
    """solo-learn's own linear evaluation of ``backbone`` (``args.solo_linear_epochs`` epochs, its batch 256,
    lr and schedule): its result and the JSON record of it."""
    import torch

    from solo_qscore.adapters.solo_linear import solo_linear_eval

    t0 = time.time()
    solo = solo_linear_eval(backbone, cfg["data"], method=method, epochs=args.solo_linear_epochs,
                            batch_size=32 if args.smoke else 256,  # --smoke: 64 training images
                            backbone_name=cfg["backbone"]["name"], seed=args.seed, num_workers=args.num_workers)
    if not torch.equal(solo.targets, val_y):  # Q of sample i must meet solo's flag of sample i
        raise RuntimeError("solo-learn's linear evaluation saw the validation samples in another order")
    images = solo.steps * int(solo.config["optimizer"]["batch_size"])
    record = {"epochs": solo.epochs, "accuracy": solo.accuracy, "solo_val_acc1": solo.solo_val_acc1,
              "steps": solo.steps, "num_train": solo.num_train, "train_seconds": solo.train_seconds,
              # the fit's wall time (its one validation pass included) per 1,000 training images of one epoch
              "seconds_per_1000_images_per_epoch": 1000 * solo.train_seconds / max(images, 1),
              "optimizer": solo.config["optimizer"], "scheduler": solo.config["scheduler"],
              "seconds": time.time() - t0}
    print(f"[{method}] solo-learn linear eval: {solo.epochs} epochs, acc {solo.accuracy:.4f} "
          f"({solo.train_seconds:.0f}s)", flush=True)
    return solo, record


def solo_linear_entry(scores: dict, lbfgs_correct, solo_correct, bootstrap: int) -> dict:
    """Scores against solo's linear evaluation's correctness, and how often the two references agree."""
    import torch

    a, b = torch.as_tensor(lbfgs_correct).bool(), torch.as_tensor(solo_correct).bool()
    metrics, _ = metrics_of(scores, b, bootstrap)
    return {"accuracy": float(b.float().mean()), "base_rate": float(b.float().mean()),
            "agreement": float((a == b).float().mean()),
            "both_correct": float((a & b).float().mean()), "both_wrong": float((~a & ~b).float().mean()),
            "only_lbfgs_correct": float((a & ~b).float().mean()), "only_solo_correct": float((~a & b).float().mean()),
            "metrics": metrics}


def analyse(method: str, ckpt: str, args: argparse.Namespace, compression: bool = True,
            solo_linear: bool = True) -> dict:
    import torch

    from solo_qscore.cli.open_run import load_checkpoint
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features
    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import CompressionSettings, ReportConfig
    from solo_qscore.report.result import to_jsonable

    t0 = time.time()
    model, cfg, _ = load_checkpoint(ckpt)  # cfg: the run view (plain dicts: data, probe, qscore, ...)
    backbone = find_backbone(model)
    device = torch.device("cpu")
    train_loader, val_loader = make_eval_loaders(cfg["data"], batch_size=256)
    train_h, train_y = extract_features(backbone, train_loader, device)
    val_h, val_y = extract_features(backbone, val_loader, device)
    dataset = getattr(train_loader.dataset, "name", None) or getattr(
        getattr(train_loader.dataset, "dataset", None), "name", cfg["data"]["dataset"])
    t_extract = time.time() - t0

    alternatives = label_free(val_h)  # independent of eps

    out = {"method": method, "dataset": str(dataset), "checkpoint": ckpt, "num_train": int(train_h.shape[0]),
           "num_val": int(val_h.shape[0]), "r": int(train_h.shape[1]), "extract_seconds": t_extract,
           "per_eps": []}
    solo = None
    if solo_linear and args.solo_linear_epochs:
        solo, out["solo_linear"] = run_solo_linear(method, backbone, cfg, val_y, args)
    for eps in args.eps:
        t1 = time.time()
        study = (CompressionSettings(tuple(args.fractions), args.random_seeds)
                 if compression and eps in args.compression_eps else None)
        rep = qscore_report(train_h, train_y, val_h, val_y,
                            ReportConfig.from_run(cfg, eps=eps, band=(50.0, 95.0), compression=study))
        arr = rep["arrays"]
        correct = torch.as_tensor(arr["correct"]).bool()
        # mean |L_i| on the validation set too (report's mean_active is over the train set)
        val_mean_active = mean_active(val_h, eps)
        metrics, roc = metrics_of({"Q": arr["q"], "max-softmax": arr["confidence"], **alternatives},
                                  correct, args.bootstrap)
        out["per_eps"].append({
            "eps": eps,
            "mean_active_train": rep["mean_active"],
            "mean_active_val": val_mean_active,
            "accuracy": rep["accuracy"],
            "num_discriminative": rep["num_discriminative"],
            "q_zero_fraction": rep["q_zero_fraction"],
            "auroc_Q_report": rep["auroc"], "auprc_Q_report": rep["auprc"],
            "note": rep["note"],
            "metrics": metrics,
            "roc": roc,
            "compression": to_jsonable(rep["compression"]),  # the typed entry as the dict of probe.json
            "seconds": time.time() - t1,
        })
        if solo is not None:
            out["per_eps"][-1]["solo_linear"] = solo_linear_entry(
                {"Q": arr["q"], **alternatives}, correct, solo.correct, args.bootstrap)
        print(f"[{method}] eps={eps:g}: mean|L_i| train {rep['mean_active']:.3f} val {val_mean_active:.3f}, "
              f"acc {rep['accuracy']:.4f}, AUROC(Q) {rep['auroc']}, AUPRC(Q) {rep['auprc']} "
              f"({time.time() - t1:.0f}s)", flush=True)
    return out


def trend_checkpointing(out_dir: Path, every: int) -> list:
    """A callback that saves ``checkpoints/trend/epoch{index}.ckpt`` every ``every`` epochs (none when 0).

    (A second ``ModelCheckpoint`` would clash with the run's own one: Lightning requires unique state keys.)
    """
    if not every:
        return []
    import lightning.pytorch as pl

    class EveryKEpochs(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if (trainer.current_epoch + 1) % every == 0:
                trainer.save_checkpoint(str(out_dir / "checkpoints" / "trend" / f"epoch{trainer.current_epoch}.ckpt"))

    return [EveryKEpochs()]


def run_state(out_dir: Path, sz: dict, retrain: bool) -> str:
    """``done`` (a finished run of these sizes: reused), ``resume`` (an unfinished one: its last
    checkpoint is resumed, so a long run stopped with its session loses at most one epoch) or ``fresh``."""
    if retrain:
        return "fresh"
    ckpt = out_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        return "fresh"
    done, progress = out_dir / "bench_scale.json", out_dir / "bench_progress.json"
    if done.exists() and json.loads(done.read_text()) == sz:
        return "done"
    if progress.exists() and json.loads(progress.read_text())["sizes"] == sz:
        return "resume"
    return "fresh"


def progress_record(out_dir: Path, sz: dict, already: float) -> list:
    """A callback that writes ``bench_progress.json`` (the sizes, the epochs done, the training seconds
    so far: ``already`` from earlier sessions plus this one's) after every epoch."""
    import lightning.pytorch as pl

    start = time.time()

    class Progress(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            (out_dir / "bench_progress.json").write_text(json.dumps(
                {"sizes": sz, "epochs": trainer.current_epoch + 1, "seconds": already + time.time() - start}))

    return [Progress()]


def train(method: str, cfg, out_dir: Path, sz: dict, args: argparse.Namespace, resume: bool) -> float:
    """Pre-train ``method`` (or resume its unfinished run); returns the training seconds of all sessions."""
    from solo_qscore.train import pretrain

    ckpt = out_dir / "checkpoints" / "last.ckpt"
    already = json.loads((out_dir / "bench_progress.json").read_text())["seconds"] if resume else 0.0
    if resume:
        print(f"[{method}] resuming {ckpt} ({already:.0f}s of training before)", flush=True)
    callbacks = trend_checkpointing(out_dir, args.trend_every) + progress_record(out_dir, sz, already)
    t0 = time.time()
    cwd = os.getcwd()
    os.chdir(ROOT)
    if not resume:  # --overwrite replaces only the run's own files: this benchmark's records go too
        for name in ("bench_scale.json", "bench_progress.json", "bench_train_seconds.json"):
            (out_dir / name).unlink(missing_ok=True)
    try:
        # a fresh run replaces the run in out_dir (a checkpoint of other sizes, or --retrain); a resumed one keeps it
        summary = pretrain(cfg, extra_callbacks=callbacks, overwrite=not resume,
                           resume=str(ckpt) if resume else None)
    finally:
        os.chdir(cwd)
    train_seconds = already + time.time() - t0
    (out_dir / "bench_scale.json").write_text(json.dumps(sz))
    (out_dir / "bench_train_seconds.json").write_text(json.dumps(train_seconds))
    print(f"[{method}] pre-trained in {train_seconds:.0f}s: {summary.get('dataset')}", flush=True)
    return train_seconds


def trend_row(epochs: int, res: dict) -> dict:
    row = {"epochs": epochs}
    for e in res["per_eps"]:
        row[f"eps{e['eps']:g}"] = {"accuracy": e["accuracy"], "mean_active_val": e["mean_active_val"],
                                   "q_zero_fraction": e["q_zero_fraction"], "metrics": e["metrics"]}
    return row


def analyse_trend(method: str, out_dir: Path, final: dict, final_epochs: int, args) -> list[dict]:
    """Q against training length: the report on every kept epoch checkpoint (no compression study)."""
    rows = []
    for path in sorted((out_dir / "checkpoints" / "trend").glob("epoch*.ckpt"),
                       key=lambda q: int(q.stem.removeprefix("epoch"))):
        epochs = int(path.stem.removeprefix("epoch")) + 1  # Lightning's epoch index is 0-based
        if epochs == final_epochs:
            continue
        print(f"[{method}] trend: checkpoint after {epochs} epochs", flush=True)
        # solo's linear evaluation only on the final checkpoint (100 epochs of it cost hours per checkpoint)
        rows.append(trend_row(epochs, analyse(method, str(path), args, compression=False, solo_linear=False)))
    rows.append(trend_row(final_epochs, final))
    return rows


def print_trend(results: list[dict]) -> str:
    text = ""
    for res in results:
        rows = res.get("trend") or []
        if not rows:
            continue
        eps_keys = [k for k in rows[-1] if k.startswith("eps")]
        head = "| epochs | probe acc % | " + " | ".join(
            f"{k.replace('eps', 'ε = ')}: mean\\|L_i\\| (val), AUROC / AUPRC of Q" for k in eps_keys)
        head += " | top z-score AUROC | ‖h‖ AUROC | max-softmax AUROC (supervised) |"
        text += f"\nQ against training length, {res['method']}:\n\n{head}\n|" + "---|" * (len(eps_keys) + 5) + "\n"
        for row in rows:
            first = row[eps_keys[0]]
            cells = []
            for k in eps_keys:
                m = row[k]["metrics"].get("Q")
                pair = f"{fmt(m['auroc'])} / {fmt(m['auprc'])}" if m else "n/a"
                cells.append(f"{row[k]['mean_active_val']:.2f}, {pair}")
            alt = [fmt(first["metrics"][n]["auroc"]) if n in first["metrics"] else "n/a"
                   for n in ("top z-score", "||h||", "max-softmax")]
            text += f"| {row['epochs']} | {fmt(first['accuracy'])} | " + " | ".join(cells + alt) + " |\n"
    print(text, flush=True)
    return text


def fmt(v, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.3f}"


def with_ci(m: dict, key: str) -> str:
    """``62.65 [60.1, 65.2]``: the figure and its bootstrap 95 % interval, when there is one."""
    ci = m.get(f"{key}_ci")
    return fmt(m[key]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def print_tables(results: list[dict]) -> str:
    lines = ["| method | ε | mean\\|L_i\\| (train / val) | #D | Q≡0 frac | accuracy = base rate | AUROC / AUPRC of Q | "
             "max-softmax (supervised ref.) | ‖h‖ | top-feature z-score |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for e in res["per_eps"]:
            m = e["metrics"]

            def pair(name, m=m):
                return f"{with_ci(m[name], 'auroc')} / {with_ci(m[name], 'auprc')}" if name in m else "n/a"
            lines.append(
                f"| {res['method']} | {e['eps']:g} | {e['mean_active_train']:.3f} / {e['mean_active_val']:.3f} | "
                f"{e['num_discriminative']} | {e['q_zero_fraction']:.3f} | {fmt(e['accuracy'])} | {pair('Q')} | "
                f"{pair('max-softmax')} | {pair('||h||')} | {pair('top z-score')} |")
    text = "\n".join(lines) + "\n"
    for res in results:
        for e in res["per_eps"]:
            c = e["compression"]
            if not c:
                continue
            text += (f"\nCompression, {res['method']}, ε = {e['eps']:g} (r = {c['num_features']}, |D| = "
                     f"{c['num_discriminative']}, full accuracy {fmt(c['full_accuracy'])}%, "
                     f"{c['num_random_seeds']} random seeds); accuracy %:\n\n")
            text += "| k | band | random mean ± std | lower tail | upper tail | PCA |\n|---|---|---|---|---|---|\n"
            for i, k in enumerate(c["sizes"]):
                rm, rs = c["random_mean"][i], c["random_std"][i]
                text += (f"| {k} | {fmt(c['band'][i])} | {fmt(rm)} ± {fmt(rs)} | {fmt(c['lower_tail'][i])} | "
                         f"{fmt(c['upper_tail'][i])} | {fmt(c['pca'][i])} |\n")
    print(text, flush=True)
    return text


def print_solo_linear(results: list[dict]) -> str:
    """Q against both references of "misclassified": the L-BFGS probe and solo-learn's linear evaluation."""
    lines = ["| method | ε | L-BFGS probe acc = base rate | solo linear acc = base rate (epochs) | agreement | "
             "AUROC / AUPRC of Q vs L-BFGS | vs solo linear | top z-score vs solo linear |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for e in res["per_eps"]:
            s = e.get("solo_linear")
            if s is None:
                continue

            def pair(m, name):
                return f"{with_ci(m[name], 'auroc')} / {with_ci(m[name], 'auprc')}" if name in m else "n/a"
            lines.append(f"| {res['method']} | {e['eps']:g} | {fmt(e['accuracy'])} | {fmt(s['accuracy'])} "
                         f"({res['solo_linear']['epochs']}) | {fmt(s['agreement'])} | {pair(e['metrics'], 'Q')} | "
                         f"{pair(s['metrics'], 'Q')} | {pair(s['metrics'], 'top z-score')} |")
    text = "\nQ against solo-learn's linear evaluation (SGD) beside the L-BFGS probe:\n\n" + "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def save_plots(results: list[dict], prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from solo_qscore.plotting import compression_figure, save_figure_atomic

    paths = []
    colors = {"Q": "C0", "max-softmax": "C3", "||h||": "C2", "top z-score": "C1"}
    for res in results:
        n = len(res["per_eps"])
        fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.8), squeeze=False)
        for ax, e in zip(axes[0], res["per_eps"]):
            for name, roc in e["roc"].items():
                ax.plot(roc["fpr"], roc["tpr"], color=colors[name],
                        label=f"{name} (AUROC {100 * e['metrics'][name]['auroc']:.1f})")
            ax.plot([0, 1], [0, 1], "k:", lw=1)
            ax.set_title(f"{res['method']}, ε = {e['eps']:g}, acc {100 * e['accuracy']:.1f}%, "
                         f"mean|L_i| {e['mean_active_train']:.2f}", fontsize=9)
            ax.set_xlabel("FPR (misclassified scored as correct)")
            ax.set_ylabel("TPR (correct)")
            ax.legend(fontsize=8, loc="lower right")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = f"{prefix}_roc_{res['method']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
        if len(res.get("trend") or []) > 1:
            paths.append(save_trend_plot(res, prefix))
        for e in res["per_eps"]:
            if e["compression"]:
                fig = compression_figure(e["compression"], title=(
                    f"{res['method']} on {res['dataset']}: probe accuracy on feature subsets (ε = {e['eps']:g})"))
                path = f"{prefix}_compression_{res['method']}_eps{e['eps']:g}.png"
                save_figure_atomic(fig, path)
                paths.append(path)
    return paths


def trend_figure(res: dict):
    """Q's AUROC (left) and the set sizes and probe accuracy (right) against pre-training epochs."""
    import matplotlib.pyplot as plt

    rows = res["trend"]
    x = [r["epochs"] for r in rows]
    eps_keys = [k for k in rows[-1] if k.startswith("eps")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, k in enumerate(eps_keys):
        auroc = [100 * r[k]["metrics"]["Q"]["auroc"] if "Q" in r[k]["metrics"] else float("nan") for r in rows]
        ax1.plot(x, auroc, "o-", color=f"C{i}", label=f"Q, {k.replace('eps', 'ε = ')}")
        ax2.plot(x, [r[k]["mean_active_val"] for r in rows], "o-", color=f"C{i}",
                 label=f"mean |L_i|, {k.replace('eps', 'ε = ')}")
    first = eps_keys[0]
    for name, color in (("top z-score", "C2"), ("||h||", "C4"), ("max-softmax", "C3")):
        ax1.plot(x, [100 * r[first]["metrics"][name]["auroc"] if name in r[first]["metrics"] else float("nan")
                     for r in rows], "s--", color=color, alpha=0.7, label=name)
    ax1.axhline(50, color="k", ls=":", lw=1)
    ax1.set_xlabel("pre-training epochs")
    ax1.set_ylabel("AUROC against probe correctness (%)")
    # legends under the panels, so they cover none of the curves
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
    ax1.legend(**below)
    ax1.grid(alpha=0.3)
    ax2b = ax2.twinx()
    ax2b.plot(x, [100 * r[first]["accuracy"] for r in rows], "k^-", label="probe accuracy")
    ax2b.set_ylabel("probe accuracy (%)")
    ax2.set_xlabel("pre-training epochs")
    ax2.set_ylabel("mean |L_i| on validation")
    handles = ax2.get_legend_handles_labels()[0] + ax2b.get_legend_handles_labels()[0]  # both y axes
    ax2.legend(handles, [h.get_label() for h in handles], **below)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"{res['method']} on {res['dataset']}: Q-Score against training length", fontsize=10)
    fig.tight_layout()
    return fig


def save_trend_plot(res: dict, prefix: str) -> str:
    import matplotlib.pyplot as plt

    fig = trend_figure(res)
    path = f"{prefix}_trend_{res['method']}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from solo_qscore.config import compose

    sz = {**sizes_for(args.scale, args.epochs, args.trend_every, args.smoke, args.solo_schedule),
          "precision": args.precision,
          "seed": args.seed}
    print(f"scale {args.scale}: {sz}, threads {args.threads}, methods {args.methods}, eps {args.eps}", flush=True)
    t_start = time.time()
    results = []
    for method in args.methods:
        cfg = compose(ROOT / "method_configs" / "cifar", method, overrides_for(method, args, sz))
        out_dir = ROOT / cfg.output_dir
        ckpt = out_dir / "checkpoints" / "last.ckpt"
        state = run_state(out_dir, sz, args.retrain)
        if args.reuse_only and state != "done":
            print(f"error: --reuse-only: {out_dir} holds no finished run of these sizes ({state}); "
                  "nothing trained", file=sys.stderr)
            return 2
        t0 = time.time()
        if state == "done":
            print(f"[{method}] reusing {ckpt}", flush=True)
            train_seconds = json.loads((out_dir / "bench_train_seconds.json").read_text())
        else:
            train_seconds = train(method, cfg, out_dir, sz, args, resume=state == "resume")
        res = analyse(method, str(ckpt), args)
        res["train_seconds"] = train_seconds
        res["sizes"] = sz
        if args.trend_every:
            res["trend"] = analyse_trend(method, out_dir, res, sz["epochs"], args)
        (out_dir / "bench_qscore_predicts.json").write_text(json.dumps(res, indent=1))
        results.append(res)
        print(f"[{method}] done, {time.time() - t0:.0f}s (extract {res['extract_seconds']:.0f}s)", flush=True)

    print_tables(results)
    if args.trend_every:
        print_trend(results)
    if args.solo_linear_epochs:
        print_solo_linear(results)
    for path in save_plots(results, str(ROOT / args.png_prefix)):
        print("saved", path)
    print(f"paper: AUPRC up to {PAPER['auprc_max']}; AUROC up to {PAPER['auroc_max']}; {PAPER['compression']}")
    print(f"total wall time {time.time() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
