"""Training step and feature extraction: float32 vs bf16 autocast (± channels_last), in one run.

    python benchmarks/bench_precision.py [--steps 8] [--batch-size 64] [--threads N] [--loss-steps 200]

solo-learn main's SimCLR (ResNet-18, CIFAR stem, projector 2048) from ``method_configs/cifar/simclr.yaml``
on 32 px Fashion-MNIST crops, on the CPU. Variants run round-robin on the same preloaded batches:

* ``fp32``: float32, contiguous; ``fp32+cl``: float32, channels_last;
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)``, contiguous; ``bf16+cl``: bf16 and channels_last
  (what ``solo-qscore pretrain`` uses on a CPU with AMX/AVX512-BF16: ``precision: bf16-mixed`` and
  solo-learn's channels_last).

Printed: median step time (training_step + backward + optimizer step) and feature-extraction
throughput (``extract_features``, eval mode, inference_mode) per variant, and each one's ratio to
``fp32`` (targets: ``bf16+cl`` >= 2x for both). With ``--loss-steps N`` it also trains the same
initial model N steps in fp32 and in bf16+cl on the same batches and prints the loss curves' summary
and the linear-probe accuracy of both encoders, to show nothing is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks.activation_statistics import extract_features  # noqa: E402
from solo_qscore.adapters.solo_main import build_model, eval_data_config, make_pretrain_loader, prepare_config  # noqa: E402
from solo_qscore.config import compose  # noqa: E402

VARIANTS = {"fp32": (None, False), "fp32+cl": (None, True), "bf16": (torch.bfloat16, False),
            "bf16+cl": (torch.bfloat16, True)}


def config(batch_size: int, train_subset: int):
    return prepare_config(compose(ROOT / "method_configs" / "cifar", "simclr", [
        f"optimizer.batch_size={batch_size}", "data.dataset=fashion_mnist", "data.num_workers=0",
        f"data.train_subset={train_subset}", "data.val_subset=1000", "wandb.enabled=false", "accelerator=cpu",
        "devices=1", "strategy=auto", "precision=32-true", "sync_batchnorm=false", "scheduler.name=none"]))


def make_model(cfg, seed: int, channels_last: bool):
    torch.manual_seed(seed)
    model = build_model(cfg)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model.no_channel_last = not channels_last  # solo converts the inputs in forward unless disabled
    model.log = model.log_dict = lambda *a, **k: None
    optimizer = model.configure_optimizers()  # solo returns the optimizer alone when there is no scheduler
    if isinstance(optimizer, (list, tuple)):
        optimizer = optimizer[0][0] if isinstance(optimizer[0], (list, tuple)) else optimizer[0]
    return model, optimizer


def train_step(model, optimizer, batch, dtype) -> float:
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        loss = model.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--loss-steps", type=int, default=0, help="also compare N training steps' losses + probe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curves", default=None, help="with --loss-steps: save both loss curves as this PNG")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config(args.batch_size, args.batch_size * max(args.steps + args.warmup, args.loss_steps or 1))
    torch.manual_seed(args.seed)
    batches = [b for _, b in zip(range(args.steps + args.warmup), make_pretrain_loader(cfg))]
    models = {name: make_model(cfg, args.seed, cl) for name, (_, cl) in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for i, batch in enumerate(batches):
        order = list(VARIANTS)[i % 4:] + list(VARIANTS)[:i % 4]  # rotate: machine drift hits all alike
        for name in order:
            model, optimizer = models[name]
            t0 = time.perf_counter()
            train_step(model, optimizer, batch, VARIANTS[name][0])
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    from solo_qscore.data import make_eval_loaders

    _, val_loader = make_eval_loaders(eval_data_config(cfg, batch_size=256))
    throughput = {}
    for name, (dtype, _) in VARIANTS.items():
        backbone = models[name][0].backbone
        extract_features(backbone, [next(iter(val_loader))], torch.device("cpu"), autocast_dtype=dtype)  # warm-up
        t0 = time.perf_counter()
        feats, _ = extract_features(backbone, val_loader, torch.device("cpu"), autocast_dtype=dtype)
        throughput[name] = feats.shape[0] / (time.perf_counter() - t0)
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size} x 2 crops, {args.steps} timed steps")
    print(f"{'variant':10s} {'step s':>8s} {'ratio':>7s} {'extract img/s':>14s} {'ratio':>7s}")
    base_t, base_x = statistics.median(times["fp32"]), throughput["fp32"]
    for name in VARIANTS:
        t = statistics.median(times[name])
        print(f"{name:10s} {t:8.3f} {base_t / t:6.2f}x {throughput[name]:14.1f} {throughput[name] / base_x:6.2f}x")
    print("targets: bf16+cl >= 2x for the step and for extraction")
    if args.loss_steps:
        compare_training(cfg, args)


def compare_training(cfg, args) -> None:
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import ReportConfig

    torch.manual_seed(args.seed)
    batches = [b for _, b in zip(range(args.loss_steps), make_pretrain_loader(cfg))]
    train_loader, val_loader = make_eval_loaders(eval_data_config(cfg, batch_size=256))
    curves = {}
    for name in ("fp32", "bf16+cl"):
        dtype, cl = VARIANTS[name]
        model, optimizer = make_model(cfg, args.seed, cl)
        losses = [train_step(model, optimizer, b, dtype) for b in batches]
        curves[name] = losses
        k = max(1, len(losses) // 10)
        th, ty = extract_features(model.backbone, train_loader, torch.device("cpu"), autocast_dtype=dtype)
        vh, vy = extract_features(model.backbone, val_loader, torch.device("cpu"), autocast_dtype=dtype)
        report = qscore_report(th, ty, vh, vy, ReportConfig(eps=2.0, compression=None))
        first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
        print(f"{name:8s} loss first {k}: {first:.4f}  last {k}: {last:.4f}"
              f"  probe accuracy {report['accuracy']:.4f}  AUROC(Q) {report['auroc']}", flush=True)
    gap = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16+cl"])]
    print(f"|loss fp32 - loss bf16+cl| per step: median {statistics.median(gap):.4f}, max {max(gap):.4f}")
    if args.curves:
        plot_curves(curves, args.curves)


def plot_curves(curves: dict, path: str) -> None:
    """The loss of each step in both precisions, same initial model and batches (one figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, lw=1.2, label=name)
    ax.set_xlabel("training step (batch 64 x 2 crops)")
    ax.set_ylabel("SimCLR loss")
    ax.set_title("Same model and batches: float32 vs bf16 autocast + channels_last", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("saved", path)


if __name__ == "__main__":
    main()
