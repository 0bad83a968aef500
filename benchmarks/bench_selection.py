"""Benchmark: which checkpoint is better, without labels? (issue 25)

Pre-trains SimCLR, BYOL and Barlow Twins with solo-learn main (its cifar configs, ``method_configs/cifar``) at
two learning rates each (the config's and a tenth of it), keeping a checkpoint after each of 4 epochs:
3 methods x 2 learning rates x 4 checkpoints = 24 encoders (a run that diverges keeps the
checkpoints of its finite epochs) on the offline default data (``cifar10`` falls
back to Fashion-MNIST at 32x32 RGB). Then ``solo_qscore.cli.rank.rank_checkpoints`` (the function
behind ``solo-qscore rank``) scores every checkpoint on the same training images without labels
(mean Q, the fraction of samples with a non-empty L_i ∩ D, |D|, RankMe, LiDAR, α-ReQ, the std of
L2-normalised embeddings) and measures each checkpoint's linear-probe accuracy. For every metric:
Kendall τ and Spearman ρ against the probe accuracy, within each method and across all 24, with
bootstrap 95 % intervals (checkpoints resampled), and the accuracy lost by picking the metric's best
checkpoint instead of the labelled best (regret).

    nohup .venv/bin/python benchmarks/bench_selection.py > logs/selection.log 2>&1 &

Runs go to ``runs/bench_selection/<method>_lr<k>/`` (a finished run is reused, an unfinished one resumed
from its last epoch by running the same command again); the table to ``benchmarks/results_selection.md``
and the figure to ``benchmarks/selection.png``.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("WANDB_MODE", "disabled")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["simclr", "byol", "barlow"],
                   help="solo-learn cifar configs (VICReg at its config lr diverged here: Inf loss at step 10)")
    p.add_argument("--lr-factors", type=float, nargs="+", default=[1.0, 0.1],
                   help="learning rates as multiples of the config's optimizer.lr")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--every", type=int, default=1, help="a checkpoint every K epochs")
    p.add_argument("--train-subset", type=int, default=1024)
    p.add_argument("--val-subset", type=int, default=1000)
    p.add_argument("--crop-size", type=int, default=16,
                   help="pre-training crops and evaluation images in pixels (16: a quarter of 32 px's compute)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--samples", type=int, default=4096, help="training images scored per checkpoint")
    p.add_argument("--lidar-images", type=int, default=256, help="LiDAR's surrogate classes (paper: 1,000)")
    p.add_argument("--lidar-views", type=int, default=8, help="augmented views per LiDAR image (paper: 50)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--train-only", action="store_true", help="train the checkpoints, do not rank them")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the markdown from the last ranking (RUN_PREFIX/ranking/ranking.json)")
    p.add_argument("--run-prefix", default="runs/bench_selection/")
    p.add_argument("--md", default="benchmarks/results_selection.md")
    p.add_argument("--png", default="benchmarks/selection.png")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, for the tests: 64 images at 16 px, 2 epochs, a narrow projector")
    return p.parse_args(argv)


def sizes_for(args: argparse.Namespace) -> dict:
    sz = {"train_subset": args.train_subset, "val_subset": args.val_subset, "epochs": args.epochs,
          "trend_every": args.every, "seed": args.seed, "crop_size": args.crop_size}
    if args.smoke:  # recorded in the stamps: a smoke run is never reused as a real one
        sz.update(train_subset=64, val_subset=48, epochs=2, trend_every=1, smoke=True)
    return sz


def run_name(method: str, lr_factor: float) -> str:
    return f"{method}_lr{lr_factor:g}"


def overrides_for(method: str, lr_factor: float, base_lr: float, args: argparse.Namespace, sz: dict) -> list[str]:
    """Overrides of solo-learn main's cifar config of ``method``: one warm-up epoch (solo's 10 would be the whole
    run), the learning rate scaled, precision as the machine allows (bf16 with AVX512-BF16/AMX, else float32)."""
    from bench_qscore_predicts import SMOKE_OVERRIDES

    run = f"{args.run_prefix}{run_name(method, lr_factor)}"
    return [f"++seed={sz['seed']}", f"optimizer.lr={base_lr * lr_factor:g}",
            f"data.train_subset={sz['train_subset']}", f"data.val_subset={sz['val_subset']}",
            "optimizer.batch_size=128", f"data.num_workers={args.num_workers}", f"max_epochs={sz['epochs']}",
            "accelerator=cpu", "devices=1", "strategy=auto", "sync_batchnorm=false",
            "+enable_progress_bar=false", "+enable_model_summary=false", "++scheduler.warmup_epochs=1",
            "wandb.enabled=false", "qscore.enabled=false", "probe.enabled=false", f"output_dir={run}",
            f"name=bench-selection-{run_name(method, lr_factor)}",
            *([o for o in SMOKE_OVERRIDES if not o.startswith("augmentations.0.crop_size")]
              + (["method_kwargs.pred_hidden_dim=64"] if method == "byol" else [])
              if sz.get("smoke") else [])]


def train_all(args: argparse.Namespace, sz: dict) -> list[dict]:
    """Train (or reuse, or resume) every run; returns one row per checkpoint: method, lr, epoch, path."""
    from bench_qscore_predicts import run_state, train
    from omegaconf import OmegaConf

    from solo_qscore.callbacks import NonFiniteLossError
    from solo_qscore.config import compose

    rows = []
    for method in args.methods:
        base_lr = float(OmegaConf.load(ROOT / "method_configs" / "cifar" / f"{method}.yaml").optimizer.lr)
        for factor in args.lr_factors:
            cfg = compose(ROOT / "method_configs" / "cifar", method, overrides_for(method, factor, base_lr, args, sz))
            for entry in cfg.augmentations:  # every view at the same size (BYOL's and Barlow's two entries too)
                entry.crop_size = sz["crop_size"]
            out_dir = ROOT / cfg.output_dir
            state = run_state(out_dir, sz, retrain=False)
            diverged = out_dir / "bench_diverged.txt"
            if state == "done" or diverged.exists():
                print(f"[{run_name(method, factor)}] reusing {out_dir}", flush=True)
            else:
                try:
                    train(run_name(method, factor), cfg, out_dir, sz,
                          argparse.Namespace(trend_every=sz["trend_every"]), resume=state == "resume")
                except NonFiniteLossError as err:  # a diverged run keeps the checkpoints of its finite epochs
                    diverged.write_text(str(err))
                    print(f"[{run_name(method, factor)}] diverged: {err}", flush=True)
            for ckpt in sorted((out_dir / "checkpoints" / "trend").glob("epoch*.ckpt"),
                               key=lambda p: int(p.stem[len("epoch"):])):
                rows.append({"method": method, "lr": base_lr * factor, "lr_factor": factor,
                             "epoch": int(ckpt.stem[len("epoch"):]) + 1, "checkpoint": str(ckpt)})
    return rows


#: the Q-Score variants, at the paper's eps 4 and at eps 2 (--extra-eps: short CPU runs rarely reach 4 sigma)
QSCORE_METRICS = ("q_mean", "nonempty_fraction", "num_discriminative", "q_mean@eps2", "nonempty_fraction@eps2")


def verdicts(correlations: list[dict]) -> list[str]:
    """Per group, mean Q (the paper's ε = 4, and ε = 2) against RankMe, said plainly from the numbers. The two
    variants are fixed in advance: picking the best of several Q variants after the fact would flatter Q."""
    by = {(c["metric"], c["group"]): c for c in correlations}

    def tau(metric: str, group: str) -> str:
        c = by[(metric, group)]
        if c["kendall_tau"] != c["kendall_tau"]:
            return "undefined (constant)"
        return f"{c['kendall_tau']:+.2f} [{c['kendall_ci'][0]:+.2f}, {c['kendall_ci'][1]:+.2f}]"

    def compare(metric: str, group: str) -> str:
        q, r = by[(metric, group)]["kendall_tau"], by[("rankme", group)]["kendall_tau"]
        if q != q:
            return "BELOW (undefined)" if r == r else "undefined"
        return "at least" if q >= r else "BELOW"

    lines = []
    for group in dict.fromkeys(c["group"] for c in correlations):
        lines.append(f"- {group}: RankMe tau {tau('rankme', group)}; mean Q at ε = 4 {tau('q_mean', group)} "
                     f"({compare('q_mean', group)} RankMe's); mean Q at ε = 2 {tau('q_mean@eps2', group)} "
                     f"({compare('q_mean@eps2', group)} RankMe's)")
    return lines


def markdown(result: dict, args: argparse.Namespace, sz: dict, seconds: float) -> str:
    lines = [f"# Which checkpoint is better, without labels ({len(result['rows'])} checkpoints)", "",
             f"Command: `python benchmarks/bench_selection.py` ({seconds / 60:.0f} min in all on a 2-core AMD EPYC "
             "without AVX512, float32, other jobs sharing the cores; "
             f"sizes {json.dumps(sz)}; scored on {result['settings']['samples']} training images, LiDAR "
             f"{result['settings']['lidar_images']} images x {result['settings']['lidar_views']} views, probe accuracy "
             f"on {result['settings']['validation_samples']} validation images).", "",
             "Kendall tau / Spearman rho of each metric against linear-probe accuracy (oriented: positive = the metric "
             "orders checkpoints as accuracy does; alpha-ReQ scored as -|alpha - 1|), bootstrap 95 % intervals "
             f"({args.bootstrap} resamples of the checkpoints), and the regret: accuracy points lost by keeping the "
             "metric's best checkpoint instead of the labelled best.", "",
             "| metric | group | n | Kendall tau | Spearman rho | regret (points) |", "|---|---|---|---|---|---|"]
    for c in result["correlations"]:
        tau = "-" if c["kendall_tau"] != c["kendall_tau"] else \
            f"{c['kendall_tau']:+.2f} [{c['kendall_ci'][0]:+.2f}, {c['kendall_ci'][1]:+.2f}]"
        rho = "-" if c["spearman_rho"] != c["spearman_rho"] else \
            f"{c['spearman_rho']:+.2f} [{c['spearman_ci'][0]:+.2f}, {c['spearman_ci'][1]:+.2f}]"
        lines.append(f"| {c['metric']} | {c['group']} | {c['n']} | {tau} | {rho} | {100 * c['regret']:.2f} |")
    lines += ["", "Q-Score against RankMe (the issue's goal: Q-Score's tau at least RankMe's within each method):", "",
              *verdicts(result["correlations"]), "", "Checkpoints:", "",
              "| checkpoint | lr | epoch | accuracy | " + " | ".join(result["metrics"]) + " |",
              "|---|---|---|---|" + "---|" * len(result["metrics"])]
    for row in result["rows"]:
        lr = "-" if row["lr"] is None else f"{row['lr']:g}"
        lines.append(f"| {row['label']} | {lr} | {row['epoch'] + 1} | {100 * row['accuracy']:.2f} | "
                     + " | ".join(f"{row[m]:.4g}" for m in result["metrics"]) + " |")
    if result.get("note"):
        lines += ["", f"Note: {result['note']}"]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict, args: argparse.Namespace, sz: dict) -> int:
    """The markdown table of a ranking (``result`` as ``rank_checkpoints`` returns it or ranking.json holds it:
    there an undefined value is ``null``, read back as NaN)."""
    nan = float("nan")
    for c in result["correlations"]:
        for key in ("kendall_tau", "spearman_rho", "regret"):
            c[key] = nan if c[key] is None else c[key]
        for key in ("kendall_ci", "spearman_ci"):
            c[key] = [nan if v is None else v for v in c[key]]
    trained = {Path(r["checkpoint"]).parents[2] / "bench_train_seconds.json" for r in result["rows"]}
    seconds = result["settings"].get("ranking_seconds", 0.0) + sum(json.loads(p.read_text()) for p in trained
                                                                    if p.exists())
    (ROOT / args.md).write_text(markdown(result, args, sz, seconds))
    return 0


def rank_and_report(rows: list[dict], args: argparse.Namespace, sz: dict) -> int:
    """Score every checkpoint (``rank_checkpoints``), write the ranking folder, the markdown table and the figure."""
    import shutil

    from solo_qscore.cli.rank import rank_checkpoints, summary_text, write_ranking

    t0 = time.time()
    result = rank_checkpoints([r["checkpoint"] for r in rows], [f"data.val_subset={sz['val_subset']}"],
                              samples=64 if sz.get("smoke") else args.samples,
                              lidar_images=8 if sz.get("smoke") else args.lidar_images,
                              lidar_views=2 if sz.get("smoke") else args.lidar_views,
                              resamples=args.bootstrap, extra_eps=(2.0,))
    result["settings"]["ranking_seconds"] = time.time() - t0
    out = ROOT / args.run_prefix / "ranking"
    paths = write_ranking(result, out)
    print(summary_text(result), flush=True)
    write_markdown(result, args, sz)
    shutil.copyfile(paths[-1], ROOT / args.png)
    print(f"wrote {args.md} and {args.png} (ranking in {time.time() - t0:.0f}s)", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sz = sizes_for(args)
    if args.report_only:
        return write_markdown(json.loads((ROOT / args.run_prefix / "ranking" / "ranking.json").read_text()), args, sz)
    t0 = time.time()
    rows = train_all(args, sz)
    print(f"{len(rows)} checkpoints after {time.time() - t0:.0f}s", flush=True)
    (ROOT / args.run_prefix).mkdir(parents=True, exist_ok=True)
    (ROOT / args.run_prefix / "checkpoints.json").write_text(json.dumps(rows, indent=1))
    if args.train_only:
        return 0
    return rank_and_report(rows, args, sz)


if __name__ == "__main__":
    sys.exit(main())
