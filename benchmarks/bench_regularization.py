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

Two regimes (``--regime``), recorded in every arm's JSON with its steps and learning rate:

* ``short`` (the default): ``--steps`` steps at the pre-training learning rate with no warm-up. At lr 1e-5 a
  few dozen steps change nothing measurable, so this is the regime a CPU budget supports.
* ``paper``: the paper's further-training, ``--epochs`` epochs (50, the paper's) of ``solo-qscore finetune``'s
  schedule (its ``FINETUNE_OVERRIDES``: solo-learn's LARS, ``warmup_cosine`` with a warm-up from 1e-6, lr
  1e-5, which solo-learn scales by batch size / 256 as for pre-training). Every arm trains the same number of
  steps (the same data, epochs and batch); the script checks it. An arm stopped mid-way (a session that
  ended) resumes from its last epoch when the same command runs again.

Each arm also records the mean, over Lightning's logging steps, of the terms of R and of their gradient
norms as the training logs them (``train_qscore_q_term``, ``..._l1_term``, ``..._q_grad_norm``,
``..._l1_grad_norm``, ``..._grad_ratio``; lasso: ``train_lasso``), and the table prints the Q / L1 gradient
ratio: which term of R acts.

Differences from the paper, all for the CPU budget: the paper further-trains 1000-epoch encoders; here
2- or 45-epoch encoders, and eps = 2 instead of 4 (after 2 epochs Q = 0 for almost every sample at
eps = 4, so the Q term of R would be zero; see results_qscore_predicts.md).

    .venv/bin/python benchmarks/bench_regularization.py               # ~10 runs x 16 steps, ~45 min on 1 core
    .venv/bin/python benchmarks/bench_regularization.py --steps 46 --methods simclr
    .venv/bin/python benchmarks/bench_regularization.py --checkpoint-prefix runs/bench_qscore45_ \\
        --methods simclr --seeds 0 1 2 --steps 23 --lambdas 1e-4 1e-3 --threads 2   # a 45-epoch encoder
    .venv/bin/python benchmarks/bench_regularization.py --regime paper --epochs 50 \\
        --checkpoint-prefix runs/bench_qscore45_ --methods simclr --seeds 0 1 2 --lambdas 1e-4 --lasso 1e-4

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
    p.add_argument("--run-prefix", default=None,
                   help="the arms' folders: PREFIX<method>_<arm>[_seed<k>] (default runs/bench_reg_, and "
                        "runs/bench_reg_paper_ for --regime paper)")
    p.add_argument("--rerun", action="store_true", help="ignore finished arms")
    p.add_argument("--regime", choices=REGIMES, default="short",
                   help="short: --steps steps at the checkpoint's lr, no warm-up; paper: --epochs epochs of "
                        "solo-qscore finetune's schedule (LARS, lr 1e-5, warm-up then cosine)")
    p.add_argument("--epochs", type=int, default=None,
                   help="further-training epochs of --regime paper (default 50, the paper's)")
    p.add_argument("--smoke", action="store_true",
                   help="for the tests: log (and so sample the terms of R) every step, no end-of-training probe "
                        "(no accuracy); needs --checkpoint-prefix of a bench_qscore_predicts --smoke run")
    args = p.parse_args(argv)
    if args.regime == "short" and args.epochs is not None:
        p.error("--epochs is for --regime paper (--regime short trains --steps steps)")
    if args.regime == "paper":
        args.epochs = 50 if args.epochs is None else args.epochs
        if args.epochs < 1:
            p.error("--epochs must be >= 1")
    if args.smoke and args.checkpoint_prefix == "runs/bench_qscore_":
        p.error("--smoke needs --checkpoint-prefix of a finished bench_qscore_predicts --smoke run")
    if args.run_prefix is None:
        args.run_prefix = "runs/bench_reg_paper_" if args.regime == "paper" else "runs/bench_reg_"
    return args


#: ``--regime`` values (module docstring)
REGIMES = ("short", "paper")
#: the training logs of the regulariser's terms and of their gradient norms (adapters/solo_method.py) whose
#: means over the logging steps each arm records; ``train_lasso``: the lasso arms' penalty
TERM_KEYS = ("train_qscore_q_term", "train_qscore_l1_term", "train_qscore_q_grad_norm",
             "train_qscore_l1_grad_norm", "train_qscore_grad_ratio", "train_lasso")


def regime_overrides(args: argparse.Namespace) -> list[str]:
    """The schedule of ``args.regime``, in solo-learn's own optimizer / scheduler keys."""
    if args.regime == "paper":
        from solo_qscore.cli.app import FINETUNE_OVERRIDES

        # what `solo-qscore finetune` trains with, but for the number of epochs (the arm sets Q-Score itself)
        schedule = [o for o in FINETUNE_OVERRIDES if o.split("=")[0] not in ("qscore.enabled", "max_epochs")]
        return [*schedule, "optimizer.name=lars", f"max_epochs={args.epochs}", "max_steps=-1"]
    return [f"max_steps={arm_steps(args)}", "max_epochs=1000", "scheduler.warmup_epochs=0",
            "scheduler.name=warmup_cosine"]


def arm_steps(args: argparse.Namespace) -> int:
    """The steps of a ``short``-regime arm."""
    return max(1, int(round(args.steps * args.scale)))


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


def arm_settings(arm_overrides: list[str], args: argparse.Namespace, seed: int) -> dict:
    """What an arm's numbers depend on besides the checkpoint: an unfinished arm resumes only when they match."""
    return {"regime": args.regime, "steps": arm_steps(args) if args.regime == "short" else None,
            "epochs": args.epochs, "lr": args.lr, "eps": args.eps, "seed": seed, "overrides": arm_overrides,
            "smoke": args.smoke}


def arm_state(out_dir: Path, settings: dict, rerun: bool) -> str:
    """``done`` (its ``bench_arm.json`` exists: reused), ``resume`` (an unfinished arm of these settings: its
    last epoch's checkpoint is resumed, so a long arm stopped with its session loses at most an epoch) or
    ``fresh``."""
    if rerun:
        return "fresh"
    if (out_dir / "bench_arm.json").exists():
        return "done"
    progress = out_dir / "bench_arm_progress.json"
    if not ((out_dir / "checkpoints" / "last.ckpt").exists() and progress.exists()):
        return "fresh"
    record = json.loads(progress.read_text())
    if record["settings"] != settings:
        return "fresh"
    unfinished = (record["epochs"] < settings["epochs"] if settings["regime"] == "paper"
                  else record["steps"] < settings["steps"])
    return "resume" if unfinished else "fresh"  # a finished checkpoint without its record: train it again


def check_reused(row: dict, args: argparse.Namespace, path: Path) -> None:
    """A finished arm is reused only in its own regime (records from before ``--regime`` are ``short``)."""
    regime = row.get("regime", "short")
    if regime != args.regime or (regime == "paper" and row.get("epochs") != args.epochs):
        raise SystemExit(f"{path}: an arm of --regime {regime}" + (f" --epochs {row.get('epochs')}" if regime ==
                         "paper" else "") + f", not of this --regime {args.regime}" +
                         (f" --epochs {args.epochs}" if args.regime == "paper" else "") +
                         "; pass another --run-prefix (or --rerun to replace it)")


def term_recorder():
    """A callback that sums :data:`TERM_KEYS` as the training logged them on each of Lightning's logging
    steps (the gradient norms exist on those steps only; no extra forward or backward pass). Its sums are
    in the checkpoint, so a resumed arm's means cover the whole arm."""
    import lightning.pytorch as pl

    class TermMeans(pl.Callback):
        def __init__(self):
            self.sums: dict[str, float] = {}
            self.counts: dict[str, int] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            every = trainer.log_every_n_steps
            # the module's rule, (step + 1) % every == 0, where the optimiser step has advanced the counter
            if not every or trainer.global_step % every:
                return
            metrics = trainer.callback_metrics  # the values logged this step (keys logged on_step and on_epoch)
            for key in TERM_KEYS:
                value = metrics.get(f"{key}_step")
                if value is not None:
                    self.sums[key] = self.sums.get(key, 0.0) + float(value)
                    self.counts[key] = self.counts.get(key, 0) + 1

        def means(self) -> dict[str, float]:
            return {key: self.sums[key] / self.counts[key] for key in self.sums}

        def state_dict(self) -> dict:
            return {"sums": dict(self.sums), "counts": dict(self.counts)}

        def load_state_dict(self, state_dict: dict) -> None:
            self.sums, self.counts = dict(state_dict["sums"]), dict(state_dict["counts"])

    return TermMeans()


def arm_progress(out_dir: Path, settings: dict, already: float):
    """A callback that writes ``bench_arm_progress.json`` (the settings, epochs and steps done, training
    seconds of all sessions) after every epoch: what :func:`arm_state` reads."""
    import lightning.pytorch as pl

    start = time.time()

    class Progress(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            (out_dir / "bench_arm_progress.json").write_text(json.dumps(
                {"settings": settings, "epochs": trainer.current_epoch + 1, "steps": trainer.global_step,
                 "seconds": already + time.time() - start}))

    return Progress()


def run_arm(method: str, ckpt: Path, name: str, arm_overrides: list[str], args: argparse.Namespace,
            seed: int = 0) -> dict:
    from solo_qscore.adapters.solo_main import read_checkpoint, source_config
    from solo_qscore.config import apply_overrides, validate, with_plugin_defaults
    from solo_qscore.train import pretrain

    out_dir = f"{args.run_prefix}{method}_{name.replace(' ', '_')}" + (f"_seed{seed}" if seed else "")
    summary_path = ROOT / out_dir / "bench_arm.json"
    settings = arm_settings(arm_overrides, args, seed)
    state = arm_state(ROOT / out_dir, settings, args.rerun)
    if state == "done":
        row = json.loads(summary_path.read_text())
        check_reused(row, args, summary_path)
        print(f"[{method}] {name}: reusing {summary_path}", flush=True)
        return row
    overrides = [
        *regime_overrides(args), f"qscore.eps={args.eps}", "probe.every_n_epochs=0",
        "wandb.enabled=false", "enable_progress_bar=false", "enable_model_summary=false",
        "enable_checkpointing=true", f"data.num_workers={args.num_workers}",
        f"output_dir={out_dir}", f"name=bench-reg-{method}-{name.replace(' ', '-')}", f"++seed={seed}",
        *arm_overrides,
    ]
    if args.lr is not None:
        overrides.append(f"optimizer.lr={args.lr}")
    if args.smoke:
        overrides += ["++log_every_n_steps=1", "probe.enabled=false"]
    # the composed config the checkpoint's run started from (as ``solo-qscore finetune`` does)
    cfg = apply_overrides(source_config(read_checkpoint(ckpt), ckpt), overrides)
    validate(with_plugin_defaults(cfg))
    lr_config = float(cfg.optimizer.lr)  # before solo's parse_cfg scales it by batch_size / 256
    progress = ROOT / out_dir / "bench_arm_progress.json"
    already = json.loads(progress.read_text())["seconds"] if state == "resume" else 0.0
    recorder = term_recorder()
    callbacks = [recorder, arm_progress(ROOT / out_dir, settings, already)]
    t0 = time.time()
    cwd = os.getcwd()
    os.chdir(ROOT)
    summary_path.unlink(missing_ok=True)  # --overwrite replaces only the run's own files: the arm's record goes too
    try:
        if state == "resume":
            print(f"[{method}] {name} seed {seed}: resuming {out_dir}/checkpoints/last.ckpt", flush=True)
            summary = pretrain(cfg, resume=f"{out_dir}/checkpoints/last.ckpt", extra_callbacks=callbacks)
        else:  # an unfinished arm of other settings (or --rerun) restarts
            progress.unlink(missing_ok=True)
            summary = pretrain(cfg, init_from=str(ckpt), overwrite=True, extra_callbacks=callbacks)
    finally:
        os.chdir(cwd)
    report = {} if args.smoke else json.loads((ROOT / summary["probe_dir"] / "probe.json").read_text())
    # the lr the run trained with (solo's parse_cfg scales the config's by batch_size / 256)
    used = read_checkpoint(ROOT / summary["checkpoint"])["solo_qscore"]["config"]
    scheduler = {k: used["scheduler"].get(k) for k in ("name", "warmup_epochs", "warmup_start_lr", "min_lr",
                                                       "interval")}
    row = {"arm": name, "seed": seed, "regime": args.regime, "steps": summary["global_step"],
           "epochs": args.epochs, "accuracy": report.get("accuracy"),
           "mean_active": report.get("mean_active"), "auroc": report.get("auroc"), "auprc": report.get("auprc"),
           "num_discriminative": report.get("num_discriminative"), "seconds": already + time.time() - t0,
           "lr": float(used["optimizer"]["lr"]), "lr_config": lr_config, "optimizer": used["optimizer"]["name"],
           "scheduler": scheduler, "term_means": recorder.means(), "term_samples": dict(recorder.counts),
           "overrides": arm_overrides}
    summary_path.write_text(json.dumps(row, indent=1))
    ratio = row["term_means"].get("train_qscore_grad_ratio")
    acc, active = (("n/a" if v is None else f"{v:.{k}f}") for v, k in ((row["accuracy"], 4), (row["mean_active"], 3)))
    print(f"[{method}] {name} seed {seed}: acc {acc} mean|L_i| {active} "
          f"AUROC {row['auroc']}, {row['steps']} steps at lr {row['lr']:g}"
          + ("" if ratio is None else f", Q/L1 gradient ratio {ratio:.3g}") + f" ({row['seconds']:.0f}s)", flush=True)
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
             "| paper acc % | Q/L1 gradient ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method, rows in results.items():
        plain = {r.get("seed"): r["accuracy"] for r in rows if r["arm"] == "plain"}
        for arm in dict.fromkeys(r["arm"] for r in rows):
            group = [r for r in rows if r["arm"] == arm]
            deltas = [100 * (r["accuracy"] - plain[r["seed"]]) for r in group
                      if arm != "plain" and plain.get(r.get("seed")) is not None and r.get("accuracy") is not None]
            delta = "" if not deltas else f"{statistics.fmean(deltas):+.2f} (" + ", ".join(
                f"{d:+.2f}" for d in deltas) + ")"
            paper = PAPER.get(method, "—") if arm.startswith("before") else ""
            seeds = ",".join(str(r["seed"]) for r in group if "seed" in r) or "—"
            lines.append(f"| {method} | {arm} | {seeds} | {mean_sd([r.get('accuracy') for r in group])} | {delta} | "
                         f"{mean_sd([r.get('mean_active') for r in group], pct=False)} | "
                         f"{mean_sd([r.get('auroc') for r in group])} | {mean_sd([r.get('auprc') for r in group])} | "
                         f"{paper} | {grad_ratio(group)} |")
    return "\n".join(lines)


def grad_ratio(rows: list[dict]) -> str:
    """The mean over seeds of each arm's mean ‖∂(Q term)/∂h‖ / ‖∂(L1 term)/∂h‖ (empty: no Q-Score term)."""
    import statistics

    values = [r["term_means"]["train_qscore_grad_ratio"] for r in rows
              if "train_qscore_grad_ratio" in r.get("term_means", {})]
    return f"{statistics.fmean(values):.3g}" if values else ""


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
    steps = sorted({r["steps"] for rows in results.values() for r in rows if "steps" in r})
    lrs = sorted({r["lr"] for rows in results.values() for r in rows if "lr" in r})
    print(f"\nregime {args.regime}" + (f", {args.epochs} epochs" if args.regime == "paper" else "") +
          f", steps per arm {', '.join(map(str, steps))}, lr {', '.join(f'{lr:g}' for lr in lrs)}, eps {args.eps}, "
          f"total wall time {time.time() - t_start:.0f}s; command: {' '.join(sys.argv)}", flush=True)
    unequal = unequal_steps(results)
    if unequal:  # the comparison holds only at the same number of steps per arm
        print(f"error: the arms of one method trained different numbers of steps: {unequal}", file=sys.stderr)
        return 1
    return 0


def unequal_steps(results: dict[str, list[dict]]) -> dict[str, list[int]]:
    """The methods whose arms (all seeds) did not all train the same number of steps, with those numbers."""
    steps = {m: sorted({r["steps"] for r in rows if "steps" in r}) for m, rows in results.items()}
    return {m: s for m, s in steps.items() if len(s) > 1}


if __name__ == "__main__":
    sys.exit(main())
