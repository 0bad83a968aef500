"""Per-step training overhead of IFM, the Q-Score regulariser and the statistics callback (CPU).

    python benchmarks/bench_overhead.py [--steps 10] [--warmup 2] [--batch-size 64]
                                        [--methods simclr byol] [--quick]

Setup (issue "Overhead"): ResNet-18 with the CIFAR stem on 32x32 images, 2 crops, CPU, the
solo-learn main cifar configs (``method_configs/cifar``, float32). A fixed list of Fashion-MNIST batches (real images,
augmented by the SimCLR pipeline) is built first and kept in memory, so data loading is not timed;
every variant trains its own, identically initialised, model on the same batches in the same order.

A step is ``model.training_step(batch, i)`` + ``loss.backward()`` + ``optimizer.step()`` +
``optimizer.zero_grad()`` with the optimizer of ``model.configure_optimizers()`` (for momentum
methods also the EMA update that solo-learn does in ``on_train_batch_end``). ``model.log`` and
``model.log_dict`` are no-ops (no Trainer is attached). Variants:

* ``<method>``: plain (``qscore.enabled=false``, ``ifm.enabled=false``);
* ``<method>+ifm``: ``ifm.enabled=true`` (InfoNCE methods only, i.e. SimCLR here);
* ``<method>+qscore``: ``qscore.enabled=true`` with a non-empty ``qscore_discriminative`` buffer
  (the set the statistics of the initial encoder give, band 50-95), so the regulariser is computed;
* ``<method>+stats``: plain, plus ``ActivationStatisticsCallback.on_train_batch_end`` each step
  (its metric update + Q of the batch on the features the step captured), with a discriminative
  set present as after the first epoch.

Variants run round-robin (A, B, C, A, B, C, ...; the starting variant rotates every round) so
machine drift hits all alike; the first ``--warmup`` rounds are not timed. Reported: the median
step time per variant and its ratio to the median of its plain baseline, against the targets
IFM <= 1.02x, Q-Score <= 1.05x, statistics callback <= 1.02x.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks.activation_statistics import ActivationStatisticsCallback  # noqa: E402
from solo_qscore.adapters.solo_main import build_model, make_pretrain_loader, prepare_config  # noqa: E402
from solo_qscore.config import compose  # noqa: E402
from solo_qscore.core.discriminative import discriminative_mask  # noqa: E402
from solo_qscore.core.statistics import ActivationStatistics  # noqa: E402

TARGETS = {"ifm": 1.02, "qscore": 1.05, "stats": 1.02}
CONFIG_DIR = ROOT / "method_configs" / "cifar"  # solo-learn main's cifar configs (packaged copies)


def config(method: str, batch_size: int, extra: list[str] | None = None):
    """solo-learn main's config of ``method`` on CPU in float32 (so that ratios measure our code only)."""
    overrides = [
        f"optimizer.batch_size={batch_size}", "data.dataset=fashion_mnist", "data.num_workers=0",
        "wandb.enabled=false", "accelerator=cpu", "devices=1", "strategy=auto", "precision=32-true",
        "sync_batchnorm=false", "scheduler.name=none",  # no Trainer attached: no lr schedule
        "qscore.enabled=false", "ifm.enabled=false", *(extra or []),
    ]
    return prepare_config(compose(CONFIG_DIR, method, overrides))


def preload_batches(batch_size: int, num_batches: int, seed: int) -> list:
    cfg = config("simclr", batch_size, [f"data.train_subset={batch_size * num_batches}"])
    torch.manual_seed(seed)
    loader = make_pretrain_loader(cfg)
    batches = [b for _, b in zip(range(num_batches), loader)]
    if len(batches) < num_batches:
        raise RuntimeError(f"only {len(batches)} batches available, need {num_batches}")
    return batches


def _no_log(*args, **kwargs) -> None:
    return None


class Variant:
    """One model + optimizer (+ optional statistics callback) and its step times."""

    def __init__(self, name: str, method: str, kind: str, batch_size: int, seed: int,
                 discriminative: torch.Tensor) -> None:
        self.name, self.method, self.kind = name, method, kind
        extra = {"ifm": ["ifm.enabled=true"], "qscore": ["qscore.enabled=true"]}.get(kind, [])
        cfg = config(method, batch_size, extra)
        torch.manual_seed(seed)  # identical initial weights across the variants of a method
        self.model = build_model(cfg)
        self.model.train()
        self.model.log = _no_log
        self.model.log_dict = _no_log
        if kind == "qscore":
            self.model.qscore_discriminative.copy_(discriminative)
            assert bool(self.model.qscore_discriminative.any())
        self.callback = None
        if kind == "stats":
            self.callback = ActivationStatisticsCallback(eps=cfg.qscore.eps, band=tuple(cfg.qscore.band))
            self.callback.discriminative = discriminative.clone()  # as after the first epoch
        optim = self.model.configure_optimizers()
        if isinstance(optim, dict):
            optim = optim["optimizer"]
        if isinstance(optim, tuple):
            optim = optim[0]
        self.optimizer = optim[0] if isinstance(optim, (list, tuple)) else optim
        self.times: list[float] = []
        self.losses: list[float] = []

    def step(self, batch, i: int, record: bool) -> None:
        model = self.model
        t0 = time.perf_counter()
        loss = model.training_step(batch, i)
        if isinstance(loss, dict):
            loss = loss["loss"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(model, "momentum_pairs"):  # solo's on_train_batch_end EMA update (needs a Trainer)
            with torch.no_grad():
                for pair in model.momentum_pairs:
                    model.momentum_updater.update(*pair)
        if self.callback is not None:
            self.callback.on_train_batch_end(None, model, loss, batch, i)
        elapsed = time.perf_counter() - t0
        if record:
            self.times.append(elapsed)
            self.losses.append(float(loss.detach()))


@torch.no_grad()
def initial_discriminative_set(method: str, batch_size: int, seed: int, batches: list) -> torch.Tensor:
    """The discriminative set of the freshly initialised encoder on the benchmark batches."""
    torch.manual_seed(seed)
    model = build_model(config(method, batch_size))
    backbone = model.backbone
    backbone.eval()
    metric = None
    for batch in batches:
        for x in batch[1]:
            h = backbone(x)
            if metric is None:
                metric = ActivationStatistics(h.shape[1], 4.0)
            metric.update(h)
    mask = discriminative_mask(metric.compute(), 50.0, 95.0)
    if not bool(mask.any()):
        raise RuntimeError("empty discriminative set")
    return mask


def _time_op(fn, repeats: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def added_work_bounds(batch_size: int, baselines: dict) -> None:
    """Time only the work each option adds to a step (many repeats: precise where whole steps are noisy)."""
    from solo_qscore import ActivationStatistics, discriminative_mask, ifm_simclr_loss, qscore_regularizer_terms
    from solo_qscore.core.label_free import LabelFreeStatistics
    from solo_qscore.core.regularizer import regularizer_term_gradient_norms

    n = 2 * batch_size  # two crops
    torch.manual_seed(0)
    z = torch.randn(n, 256, requires_grad=True)
    idx = torch.arange(batch_size).repeat(2)
    h = torch.randn(n, 512).relu().requires_grad_(True)
    D = discriminative_mask(torch.rand(512))
    stats = ActivationStatistics(512)

    def ifm(eps):
        return lambda: ifm_simclr_loss(z, idx, 0.2, epsilon=eps).backward()

    t_ifm = _time_op(ifm(0.1)) - _time_op(ifm(0.0))
    t_q = _time_op(lambda: qscore_regularizer_terms(torch.cat([h[:batch_size], h[batch_size:]]), D,
                                                    validate=False).total.backward())
    t_stats = _time_op(lambda: stats.update_and_score(h.detach(), D))
    label_free = LabelFreeStatistics(512)
    t_label_free = _time_op(lambda: label_free.update(h.detach()))

    def term_norms():  # what a logging step adds: each term's gradient with respect to h
        terms = qscore_regularizer_terms(h, D, validate=False)
        regularizer_term_gradient_norms(h, terms)

    t_norms = _time_op(term_norms) - _time_op(lambda: qscore_regularizer_terms(h, D, validate=False))
    print("added work alone (median of 50 repeats) against the plain step's median:")
    for name, added, base in [("ifm (L_eps term, fwd+bwd)", t_ifm, "simclr"),
                              ("qscore regulariser (fwd+bwd)", t_q, "simclr"),
                              ("statistics update + Q", t_stats, "simclr"),
                              ("label-free update (float64 gram)", t_label_free, "simclr"),
                              ("R's term gradient norms (log steps)", t_norms, "simclr")]:
        step = baselines.get(base)
        bound = f"{1 + added / step:.4f}x" if step else "-"
        print(f"  {name:<32} {added * 1e3:8.3f} ms   -> step ratio bound {bound}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["simclr", "byol"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 16, 3 steps, 1 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.steps, args.warmup = 16, 3, 1
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")

    total = args.warmup + args.steps
    print(f"# python {platform.python_version()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(f"# batch {args.batch_size} x 2 crops, 32x32, resnet18 (cifar stem), "
          f"{args.warmup} warm-up + {args.steps} measured steps per variant, round-robin")
    t_start = time.perf_counter()
    batches = preload_batches(args.batch_size, total, args.seed)
    print(f"# preloaded {len(batches)} Fashion-MNIST batches: crops {tuple(batches[0][1][0].shape)}")

    variants: list[Variant] = []
    for method in args.methods:
        mask = initial_discriminative_set(method, args.batch_size, args.seed, batches[:2])
        print(f"# {method}: discriminative set of the initial encoder: {int(mask.sum())}/{mask.numel()} features")
        kinds = ["plain", "ifm", "qscore", "stats"] if method == "simclr" else ["plain", "qscore"]
        if method == "mocov2plus":
            kinds = ["plain", "ifm", "qscore"]
        for kind in kinds:
            name = method if kind == "plain" else f"{method}+{kind}"
            variants.append(Variant(name, method, kind, args.batch_size, args.seed, mask))

    for i in range(total):
        record = i >= args.warmup
        start = i % len(variants)
        for v in variants[start:] + variants[:start]:
            v.step(batches[i], i, record)
        print(f"# round {i + 1}/{total} done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    print()
    header = (f"{'variant':<16} {'median s/step':>13} {'min':>7} {'max':>7} {'ratio':>7} {'min-ratio':>9} "
              f"{'target':>7}  result")
    print(header)
    print("-" * len(header))
    plain = {v.method: statistics.median(v.times) for v in variants if v.kind == "plain"}
    plain_min = {v.method: min(v.times) for v in variants if v.kind == "plain"}
    all_pass = True
    for v in variants:
        med = statistics.median(v.times)
        line = f"{v.name:<16} {med:>13.3f} {min(v.times):>7.3f} {max(v.times):>7.3f}"
        if v.kind == "plain":
            line += f" {'1.000':>7} {'1.000':>9} {'-':>7}  baseline"
        else:
            ratio = med / plain[v.method]
            ok = ratio <= TARGETS[v.kind]
            all_pass &= ok
            min_ratio = min(v.times) / plain_min[v.method]
            line += f" {ratio:>7.3f} {min_ratio:>9.3f} {TARGETS[v.kind]:>6.2f}x  {'PASS' if ok else 'FAIL'}"
        print(line)
    print()
    added_work_bounds(args.batch_size, plain)
    finite = all(torch.isfinite(torch.tensor(v.losses)).all() for v in variants)
    print("ratio = median / median of the plain baseline (PASS/FAIL uses it); min-ratio = fastest / fastest, "
          "less sensitive to other load on the machine")
    print(f"losses finite: {finite}; overall: {'PASS' if all_pass else 'FAIL'}; "
          f"wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
