"""Benchmark: does Q-Score regularisation improve the probe? (Q-Score paper Table 1 / A.1)

Further-trains the checkpoints of ``bench_qscore_predicts.py`` (SimCLR and BYOL, ResNet-18, Fashion-MNIST
at 32x32 RGB) for the same number of steps, from the same weights, with the same data order, several ways:

* ``plain``: the method's own loss only,
* ``qscore``: plus the Q-Score regulariser R (Q-Score paper eq. 3) with lambda1 = lambda2 = 1e-4 (the paper's), and a
  small sweep of larger lambdas,
* ``lasso``: plus the lasso baseline ``weight * mean_i ||h_i/||h_i|| ||_1`` (the paper's Table 1 baseline),

through the real training path (``solo_qscore.train.pretrain(cfg, init_from=CKPT)``, the same code as
``solo-qscore finetune``: D is seeded from an exact pass over the train set before the first step). After
each run the final probe of ``QScoreProbeCallback`` gives linear-probe accuracy, mean |L_i| and the
AUROC/AUPRC of Q against probe correctness; the table also shows the checkpoint before further-training.

Differences from the paper, all for the CPU budget: the paper further-trains 1000-epoch encoders for
50 epochs at lr 1e-5 with LARS; here 2-epoch encoders for ``--steps`` steps at the pre-training learning
rate (at lr 1e-5 a few dozen steps change nothing measurable), and eps = 2 instead of 4 (after 2 epochs
Q = 0 for almost every sample at eps = 4, so the Q term of R would be zero; see results_qscore_predicts.md).

    .venv/bin/python benchmarks/bench_regularization.py               # ~10 runs x 16 steps, ~45 min on 1 core
    .venv/bin/python benchmarks/bench_regularization.py --steps 46 --methods simclr
    .venv/bin/python benchmarks/bench_regularization.py --checkpoint-prefix runs/bench_qscore45_ \\
        --methods simclr --seeds 0 1 2 --steps 23 --lambdas 1e-4 1e-3 --threads 2   # a 45-epoch encoder

``--scale k`` scales the pre-training (via bench_qscore_predicts, trained first when its checkpoint is
missing) and the number of further-training steps. Results: ``benchmarks/results_regularization.md``
(written by hand from the printed table), raw JSON ``<run-prefix>summary_<methods>.json``.
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

# Q-Score paper Table A.1 (CIFAR-10, ResNet-18, linear probe accuracy %): before -> after regularisation
PAPER = {"simclr": "90.83 -> 92.31", "byol": "92.59 -> 92.82", "mocov2plus": "92.95 -> 94.77",
         "barlow_twins": "93.46 -> 93.87"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="pre-training scale (bench_qscore_predicts) and steps")
    p.add_argument("--steps", type=int, default=16, help="further-training steps per arm at scale 1")
    p.add_argument("--methods", nargs="+", default=["simclr", "byol"])
    p.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2],
                   help="lambda1 = lambda2 values of the Q-Score arms (the first is the paper's)")
    p.add_argument("--lasso", type=float, nargs="+", default=[1e-4], help="lasso weights")
    p.add_argument("--eps", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=None, help="further-training lr (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="further-training seeds (data order, augmentations); each arm runs once per seed")
    p.add_argument("--checkpoint-prefix", default="runs/bench_qscore_",
                   help="the pre-trained runs: PREFIX<method>/checkpoints/last.ckpt of bench_qscore_predicts "
                        "(a prefix other than the default must hold a finished run)")
    p.add_argument("--run-prefix", default="runs/bench_reg_")
    p.add_argument("--rerun", action="store_true", help="ignore finished arms")
    return p.parse_args(argv)


def arms(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = [("plain", ["qscore.enabled=false", "lasso.enabled=false"])]
    for lam in args.lambdas:
        out.append((f"qscore {lam:g}", ["qscore.enabled=true", f"qscore.lambda1={lam}", f"qscore.lambda2={lam}",
                                        "lasso.enabled=false"]))
    for w in args.lasso:
        out.append((f"lasso {w:g}", ["qscore.enabled=false", "lasso.enabled=true", f"lasso.weight={w}"]))
    return out


def ensure_checkpoint(method: str, args: argparse.Namespace) -> Path:
    import bench_qscore_predicts as pred

    ckpt = ROOT / f"{args.checkpoint_prefix}{method}/checkpoints/last.ckpt"
    stamp = ckpt.parent.parent / "bench_scale.json"
    if args.checkpoint_prefix != "runs/bench_qscore_":
        if not (ckpt.exists() and stamp.exists()):
            raise SystemExit(f"{ckpt}: no finished bench_qscore_predicts run there (run it first)")
        return ckpt
    if not (ckpt.exists() and stamp.exists() and json.loads(stamp.read_text()) == pred.sizes_for(args.scale)):
        print(f"[{method}] no checkpoint at scale {args.scale}: running bench_qscore_predicts first", flush=True)
        pred.main(["--scale", str(args.scale), "--threads", str(args.threads), "--methods", method])
    return ckpt


def before_row(method: str, ckpt: Path, eps: float) -> dict:
    """The checkpoint's own numbers at ``eps`` (from bench_qscore_predicts' JSON)."""
    res = json.loads((ckpt.parent.parent / "bench_qscore_predicts.json").read_text())
    row = next((r for r in res["per_eps"] if r["eps"] == eps), None)
    if row is None:
        return {"arm": "before", "note": f"bench_qscore_predicts has no eps={eps} entry"}
    return {"arm": "before (checkpoint)", "accuracy": row["accuracy"], "mean_active": row["mean_active_train"],
            "auroc": row["auroc_Q_report"], "auprc": row["auprc_Q_report"],
            "num_discriminative": row["num_discriminative"]}


def run_arm(method: str, ckpt: Path, name: str, arm_overrides: list[str], args: argparse.Namespace,
            seed: int = 0) -> dict:
    from solo_qscore.adapters.solo_main import read_checkpoint, source_config
    from solo_qscore.config import apply_overrides, validate, with_plugin_defaults
    from solo_qscore.train import pretrain

    out_dir = f"{args.run_prefix}{method}_{name.replace(' ', '_')}" + (f"_seed{seed}" if seed else "")
    summary_path = ROOT / out_dir / "bench_arm.json"
    if summary_path.exists() and not args.rerun:
        print(f"[{method}] {name}: reusing {summary_path}", flush=True)
        return json.loads(summary_path.read_text())
    steps = max(1, int(round(args.steps * args.scale)))
    overrides = [
        f"max_steps={steps}", "max_epochs=1000", "scheduler.warmup_epochs=0",
        "scheduler.name=warmup_cosine", f"qscore.eps={args.eps}", "probe.every_n_epochs=0",
        "wandb.enabled=false", "enable_progress_bar=false", "enable_model_summary=false",
        "enable_checkpointing=true", f"data.num_workers={args.num_workers}",
        f"output_dir={out_dir}", f"name=bench-reg-{method}-{name.replace(' ', '-')}", f"++seed={seed}",
        *arm_overrides,
    ]
    if args.lr is not None:
        overrides.append(f"optimizer.lr={args.lr}")
    # the composed config the checkpoint's run started from (as ``solo-qscore finetune`` does)
    cfg = apply_overrides(source_config(read_checkpoint(ckpt), ckpt), overrides)
    validate(with_plugin_defaults(cfg))
    t0 = time.time()
    cwd = os.getcwd()
    os.chdir(ROOT)
    summary_path.unlink(missing_ok=True)  # --overwrite replaces only the run's own files: the arm's record goes too
    try:
        summary = pretrain(cfg, init_from=str(ckpt), overwrite=True)  # an unfinished arm (or --rerun) restarts
    finally:
        os.chdir(cwd)
    report = json.loads((ROOT / summary["probe_dir"] / "probe.json").read_text())
    # the lr the run trained with (solo's parse_cfg scales the config's by batch_size / 256)
    used = read_checkpoint(ROOT / summary["checkpoint"])["solo_qscore"]["config"]
    row = {"arm": name, "seed": seed, "steps": summary["global_step"], "accuracy": report["accuracy"],
           "mean_active": report.get("mean_active"), "auroc": report.get("auroc"), "auprc": report.get("auprc"),
           "num_discriminative": report.get("num_discriminative"), "seconds": time.time() - t0,
           "lr": float(used["optimizer"]["lr"]), "overrides": arm_overrides}
    summary_path.write_text(json.dumps(row, indent=1))
    print(f"[{method}] {name} seed {seed}: acc {row['accuracy']:.4f} mean|L_i| {row['mean_active']:.3f} "
          f"AUROC {row['auroc']} ({row['seconds']:.0f}s)", flush=True)
    return row


def table(results: dict[str, list[dict]]) -> str:
    """One line per arm: the mean over seeds (± the standard deviation when there are several) and the
    accuracy difference to the plain arm of the same seed (same data order), its mean and per-seed values."""
    import statistics

    def mean_sd(values: list, pct: bool = True) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        k = 100 if pct else 1
        text = f"{k * statistics.fmean(values):.2f}"
        return text + (f" ± {k * statistics.stdev(values):.2f}" if len(values) > 1 else "")

    lines = ["| method | arm | seeds | probe acc % | Δ vs plain (per seed) | mean \\|L_i\\| | AUROC(Q) % | AUPRC(Q) % "
             "| paper acc % |", "|---|---|---|---|---|---|---|---|---|"]
    for method, rows in results.items():
        plain = {r.get("seed"): r["accuracy"] for r in rows if r["arm"] == "plain"}
        for arm in dict.fromkeys(r["arm"] for r in rows):
            group = [r for r in rows if r["arm"] == arm]
            deltas = [100 * (r["accuracy"] - plain[r["seed"]]) for r in group
                      if arm != "plain" and r.get("seed") in plain and r.get("accuracy") is not None]
            delta = "" if not deltas else f"{statistics.fmean(deltas):+.2f} (" + ", ".join(
                f"{d:+.2f}" for d in deltas) + ")"
            paper = PAPER.get(method, "—") if arm.startswith("before") else ""
            seeds = ",".join(str(r["seed"]) for r in group if "seed" in r) or "—"
            lines.append(f"| {method} | {arm} | {seeds} | {mean_sd([r.get('accuracy') for r in group])} | {delta} | "
                         f"{mean_sd([r.get('mean_active') for r in group], pct=False)} | "
                         f"{mean_sd([r.get('auroc') for r in group])} | {mean_sd([r.get('auprc') for r in group])} | "
                         f"{paper} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.time()
    results: dict[str, list[dict]] = {}
    for method in args.methods:
        ckpt = ensure_checkpoint(method, args)
        rows = [before_row(method, ckpt, args.eps)]
        for seed in args.seeds:
            for name, overrides in arms(args):
                rows.append(run_arm(method, ckpt, name, overrides, args, seed=seed))
        results[method] = rows
        (ROOT / f"{args.run_prefix}summary_{'_'.join(args.methods)}.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    print(f"\nsteps per arm {max(1, int(round(args.steps * args.scale)))}, eps {args.eps}, "
          f"total wall time {time.time() - t_start:.0f}s; command: {' '.join(sys.argv)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
