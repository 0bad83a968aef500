"""Benchmark: Q-Score on a *supervised* encoder (Q-Score paper Fig. A.9), compression on it (Fig. 2),
and transfer of D to an unseen dataset (the protocol of Table A.2 / Fig. A.3).

The self-supervised encoders of ``bench_qscore_predicts.py`` are short CPU runs (2-45 epochs on 3,000
images, probe accuracy 78-83 %). A supervised ResNet-18 trained with cross-entropy reaches about 90 % on
Fashion-MNIST in a few epochs, so it is the cheapest *well-trained* ResNet-18 we can have. This script

1. trains solo-learn's ``resnet18`` backbone with its CIFAR stem (3x3 conv1, stride 1, no max-pool;
   ``fc = Identity``, r = 512: exactly the backbone the SSL benchmark runs use) plus a linear head, with
   cross-entropy, on Fashion-MNIST 32x32 RGB (the SSL runs' eval preprocessing: bicubic resize, the
   dataset's normalisation; training adds random crop with 2-pixel padding and horizontal flip, done in
   batches on tensors), 3 epochs on 10,000 images, batch 32, SGD + Nesterov with a one-cycle schedule
   (peak lr 0.05), ``torch.autocast("cpu", bfloat16)`` (``--no-bf16`` and ``--smoke``: float32) and channels_last;
2. extracts the frozen backbone features (``solo_qscore.probe.features.extract_features``, bf16 autocast)
   and runs ``solo_qscore.report.build.qscore_report`` at eps = 4 (paper), 2 and 3: AUROC / AUPRC of Q
   against the linear probe's correctness (bootstrap 95 % intervals), beside the label-free
   alternatives (``||h||``, top-feature z-score) and the probe's max-softmax (supervised reference);
   also with D and the probe fitted on the SSL runs' own 3,000 training images (like for like);
3. the compression study (band vs random subsets vs lower / upper tails of A vs PCA) at the chosen eps;
4. transfer (paper Table A.2 / Fig. A.3): D from the Fashion-MNIST train features, the same frozen
   encoder on MNIST (unseen; normalised with the encoder's Fashion-MNIST statistics), a linear probe
   trained on MNIST train features (the paper trains its transfer classifiers on each transfer dataset),
   Q on MNIST test images scored against that probe's correctness; next to D found on MNIST itself.

    nohup nice -n 5 .venv/bin/python benchmarks/bench_supervised.py --threads 1 > logs/bench_supervised.txt 2>&1 &
    .venv/bin/python benchmarks/bench_supervised.py --smoke --out-dir /tmp/sup   # tiny, well under a minute

Outputs: ``<out-dir>/tables.md`` (the tables), ``<out-dir>/bench_supervised.json`` (all metrics),
``<out-dir>/encoder.pt`` (reused by a later run with the same settings unless ``--retrain``), and the
plots ``<png-prefix>_roc.png`` and ``<png-prefix>_compression_eps<e>.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("WANDB_MODE", "disabled")

from bench_qscore_predicts import fmt, label_free, mean_active, metrics_of, with_ci  # noqa: E402

PROBE_KWARGS = {"max_iter": 100, "weight_decay": 1e-4}  # the SSL runs' probe (solo_qscore.config defaults)
SSL_TRAIN_SUBSET = 3000  # bench_qscore_predicts --scale 1: D and the probe come from these images
SCAN_EPS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
ALTERNATIVES = ("max-softmax", "||h||", "top z-score")
COLORS = {"Q": "C0", "Q, D from Fashion-MNIST": "C0", "Q, D from MNIST": "C4", "max-softmax": "C3", "||h||": "C2",
          "top z-score": "C1"}
DISPLAY = {"||h||": "‖h‖", "max-softmax": "max-softmax (supervised ref.)"}  # "|" would split a Markdown cell
SMOKE = {"train_size": 64, "val_size": 64, "epochs": 1, "batch_size": 32, "mnist_train": 64, "mnist_val": 64,
         "bootstrap": 20, "random_seeds": 2, "fractions": [1.0], "like_for_like": 32, "eps": [4.0, 2.0],
         "bf16": False}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-size", type=int, default=10000, help="Fashion-MNIST training images (seeded subset)")
    p.add_argument("--val-size", type=int, default=2000, help="Fashion-MNIST test images (the SSL runs' 2,000)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule (SGD)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--crop-pad", type=int, default=2, help="random-crop padding in pixels (0: flip only)")
    p.add_argument("--mnist-train", type=int, default=5000, help="MNIST train images for the transfer probe")
    p.add_argument("--mnist-val", type=int, default=2000, help="MNIST test images scored in the transfer study")
    p.add_argument("--eps", type=float, nargs="+", default=[4.0, 2.0, 3.0])
    p.add_argument("--compression-eps", type=float, default=None,
                   help="eps of the compression study (default: the first of --eps where Q is defined for most "
                        "samples, else the eps the scan supports)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--random-seeds", type=int, default=4, help="random subsets per size (>= 4)")
    p.add_argument("--like-for-like", type=int, default=SSL_TRAIN_SUBSET,
                   help="also fit D and the probe on this many train images (the SSL runs' subset); 0 = skip")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="ignore an existing encoder.pt")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the test (well under a minute), float32")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="float32 throughout instead of bf16 autocast (a CPU without AVX512-BF16/AMX emulates bf16, "
                        "many times slower)")
    p.add_argument("--out-dir", default=None, help="default runs/bench_supervised (runs/bench_supervised_smoke)")
    p.add_argument("--png-prefix", default=None,
                   help="default benchmarks/supervised (<out-dir>/supervised with --smoke)")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.out_dir = Path(args.out_dir or ROOT / ("runs/bench_supervised" + ("_smoke" if args.smoke else "")))
    args.png_prefix = args.png_prefix or str(
        args.out_dir / "supervised" if args.smoke else ROOT / "benchmarks" / "supervised")
    return args


# ------------------------------------------------------------------------------------------ data
def fashion_mnist_tensors(args) -> tuple:
    """Train / val tensors of Fashion-MNIST through the SSL runs' eval loaders (same subsets, same transform)."""
    from solo_qscore.data import make_eval_loaders

    data_cfg = {"dataset": "fashion_mnist", "image_size": 32, "train_subset": args.train_size,
                "val_subset": args.val_size, "num_workers": 0}
    return tuple(t for loader in make_eval_loaders(data_cfg, batch_size=512) for t in _stack(loader))


def mnist_tensors(args) -> tuple:
    """MNIST train / test tensors (seeded subsets), normalised with the *encoder's* Fashion-MNIST statistics."""
    from torch.utils.data import DataLoader

    from solo_qscore.data import (
        LabelledSubset,
        TransformDataset,
        dataset_stats,
        eval_transform,
        load_dataset,
        subset_indices,
    )

    transform = eval_transform(32, *dataset_stats("fashion_mnist"))
    out = []
    for train, k in ((True, args.mnist_train), (False, args.mnist_val)):
        ds = load_dataset("mnist", train=train, image_size=32)
        idx = subset_indices(len(ds), k)
        ds = ds if idx is None else LabelledSubset(ds, idx)
        out += _stack(DataLoader(TransformDataset(ds, transform), batch_size=512, shuffle=False))
    return tuple(out)


def _stack(loader) -> list:
    import torch

    xs, ys = zip(*loader)
    return [torch.cat(xs), torch.cat(ys)]


def like_for_like_rows(args):
    """Rows of the train tensor that form the SSL runs' train subset (a prefix of the same seeded permutation)."""
    import torch

    from solo_qscore.data import subset_indices

    n = 60000  # Fashion-MNIST train split
    full = subset_indices(n, args.train_size)
    small = subset_indices(n, args.like_for_like)
    full = torch.arange(n) if full is None else full
    rows = torch.isin(full, small).nonzero().flatten()
    if rows.numel() != small.numel():
        raise RuntimeError("the like-for-like subset is not inside the training subset")
    return rows


# ---------------------------------------------------------------------------------------- encoder
def build_encoder():
    """solo-learn's ``resnet18`` with the CIFAR stem, as ``BaseMethod.__init__`` builds it (r = 512)."""
    import torch
    from torch import nn

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from solo.backbones import resnet18  # solo-learn main: resnet18(method, **kw) = torchvision's resnet18
        backbone = resnet18("supervised")
    except ImportError:  # solo-learn missing: the same torchvision network
        from torchvision.models import resnet18

        backbone = resnet18()
    backbone.fc = nn.Identity()
    backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    backbone.maxpool = nn.Identity()
    head = nn.Linear(512, 10)
    return nn.Sequential(backbone, head).to(memory_format=torch.channels_last)


def augment(x, black, generator, pad: int = 4):
    """Random crop (``pad`` pixels of black padding) and horizontal flip of a batch ``[B, C, H, W]`` (no loop)."""
    import torch
    from torch.nn import functional as F

    b, _, h, w = x.shape
    padded = F.pad(x - black, (pad, pad, pad, pad)) + black  # pads with the normalised value of black
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]
    crops = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # [B,H,W,C] -> [B,C,H,W]
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def train_encoder(model, x, y, args) -> dict:
    """Cross-entropy training: SGD + Nesterov, one-cycle lr per step, bf16 autocast, channels_last."""
    import torch
    from torch.nn import functional as F

    from solo_qscore.data import dataset_stats

    mean, std = dataset_stats("fashion_mnist")
    black = (-torch.tensor(mean) / torch.tensor(std))[:, None, None]
    gen = torch.Generator().manual_seed(args.seed)
    steps = max(1, x.shape[0] // args.batch_size)  # full batches only
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps * args.epochs,
                                                pct_start=0.25)
    log, t0, total = [], time.time(), 0
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        loss_sum = correct = seen = 0
        for s in range(steps):
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            xb = augment(x[idx], black, gen, args.crop_pad).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(1) == y[idx]).sum())
            seen += idx.numel()
            total += idx.numel()
            if (s + 1) % 20 == 0 or s + 1 == steps:
                print(f"  epoch {epoch + 1} step {s + 1}/{steps}: loss {loss_sum / seen:.4f}, train acc "
                      f"{100 * correct / seen:.2f}%, {total / (time.time() - t0):.0f} img/s", flush=True)
        log.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                    "seconds": time.time() - t0})
    return {"epochs": log, "seconds": time.time() - t0, "steps": steps * args.epochs}


def encoder(args, x, y) -> tuple:
    """The trained model (trained now, or loaded from ``encoder.pt`` when its settings match)."""
    import torch

    model = build_encoder()
    stamp = {k: getattr(args, k) for k in ("train_size", "epochs", "batch_size", "lr", "weight_decay", "crop_pad",
                                           "seed")}
    path = args.out_dir / "encoder.pt"
    if path.exists() and not args.retrain:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("stamp") == stamp:
            model.load_state_dict(saved["state_dict"])
            print(f"reusing {path} (trained in {saved['train']['seconds']:.0f}s)", flush=True)
            return model, saved["train"]
    train = train_encoder(model, x, y, args)
    torch.save({"stamp": stamp, "train": train, "state_dict": model.state_dict()}, path)
    return model, train


def features(backbone, x, y, bf16: bool = True):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from solo_qscore.probe.features import extract_features

    loader = DataLoader(TensorDataset(x, y), batch_size=256, shuffle=False)
    return extract_features(backbone, loader, torch.device("cpu"), autocast_dtype=torch.bfloat16 if bf16 else None)


# --------------------------------------------------------------------------------------- analysis
def eps_scan(train_h, val_h) -> list[dict]:
    """mean |L_i| (train) and the fraction of validation samples with Q = 0, over a grid of eps (library D and Q)."""
    from solo_qscore.core.discriminative import discriminative_mask
    from solo_qscore.core.qscore import q_score
    from solo_qscore.core.statistics import ActivationStatistics

    rows = []
    for eps in SCAN_EPS:
        stats = ActivationStatistics(train_h.shape[1], eps=eps, sync_on_compute=False)
        for start in range(0, train_h.shape[0], 4096):
            stats.update(train_h[start:start + 4096])
        D = discriminative_mask(stats.compute())
        q = q_score(val_h, D, eps=eps)
        rows.append({"eps": eps, "mean_active_train": float(stats.mean_active),
                     "q_zero_fraction": float((q == 0).double().mean())})
    return rows


def choose_eps(args, scan: list[dict]) -> tuple[list[float], float, str]:
    """The eps list to report and the eps of the compression study, with the reason.

    Q is *usable* at eps when it is non-zero for at least half of the validation samples and the highly
    activating sets stay sparse (mean |L_i| <= r / 4). If neither of ``--eps`` is usable, the largest
    usable eps of the scan is added (the most selective threshold the data supports).
    """
    zero = {row["eps"]: row for row in scan}

    def usable(eps):
        row = zero.get(eps)
        return row is not None and row["q_zero_fraction"] <= 0.5 and row["mean_active_train"] <= 128

    eps_list = list(args.eps)
    if args.compression_eps is not None:
        if args.compression_eps not in eps_list:
            eps_list.append(args.compression_eps)
        return eps_list, args.compression_eps, "given (--compression-eps)"
    for eps in eps_list:
        if usable(eps):
            return eps_list, eps, f"the first of {eps_list} where Q is non-zero for most samples and L_i sparse"
    supported = [row["eps"] for row in scan if usable(row["eps"])]
    if not supported:
        return eps_list, eps_list[0], "no eps of the scan gives a usable Q; compression at the first eps"
    eps_list.append(max(supported))
    return eps_list, max(supported), "neither eps is usable; the largest eps of the scan where Q is"


def fashion_entry(rep, val_h, alternatives: dict, bootstrap: int) -> tuple[dict, dict]:
    from solo_qscore.report.result import to_jsonable

    scores = {"Q": rep["arrays"]["q"], "max-softmax": rep["arrays"]["confidence"], **alternatives}
    metrics, roc = metrics_of(scores, rep["arrays"]["correct"], bootstrap)
    entry = {"eps": rep["eps"], "mean_active_train": rep["mean_active"],
             "mean_active_val": mean_active(val_h, rep["eps"]),
             "num_discriminative": rep["num_discriminative"], "q_zero_fraction": rep["q_zero_fraction"],
             "accuracy": rep["accuracy"], "num_train": rep["num_train"], "num_val": rep["num_val"],
             "note": rep["note"], "metrics": metrics,
             "compression": to_jsonable(rep["compression"])}  # the typed entry as the dict of probe.json
    return entry, roc


def analyse_fashion(args, f, eps_list, compression_eps) -> tuple[list, list, list, dict]:
    """Per eps: the report on the full training subset (compression at ``compression_eps``), like for like."""
    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import CompressionSettings, ReportConfig

    train_h, train_y, val_h, val_y = f
    alternatives = label_free(val_h)
    entries, rocs, small, discriminative = [], [], [], {}
    rows = like_for_like_rows(args) if args.like_for_like else None
    for eps in eps_list:
        t = time.time()
        config = ReportConfig(eps=eps, probe=PROBE_KWARGS, compression=CompressionSettings(
            tuple(args.fractions), args.random_seeds) if eps == compression_eps else None)
        rep = qscore_report(train_h, train_y, val_h, val_y, config)
        discriminative[eps] = rep["arrays"]["discriminative"]
        entry, roc = fashion_entry(rep, val_h, alternatives, args.bootstrap)
        entry["seconds"] = time.time() - t
        entries.append(entry)
        rocs.append(roc)
        print(f"[fashion_mnist] eps={eps:g}: mean|L_i| {entry['mean_active_train']:.2f}, Q=0 for "
              f"{entry['q_zero_fraction']:.3f}, probe acc {entry['accuracy']:.4f}, AUROC(Q) "
              f"{fmt(entry['metrics'].get('Q', {}).get('auroc'))} ({entry['seconds']:.0f}s)", flush=True)
        if rows is not None:
            rep = qscore_report(train_h[rows], train_y[rows], val_h, val_y, config.replace(compression=None))
            small.append(fashion_entry(rep, val_h, alternatives, args.bootstrap)[0])
    return entries, rocs, small, discriminative


def analyse_transfer(args, m, discriminative: dict) -> tuple[list, list]:
    """MNIST: probe trained on MNIST train features; Q with D from Fashion-MNIST (transfer) and from MNIST."""
    import torch

    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import ReportConfig
    from solo_qscore.report.samples import sample_table

    train_h, train_y, val_h, val_y = m
    alternatives = label_free(val_h)
    entries, rocs = [], []
    for eps, d_source in discriminative.items():
        rep = qscore_report(train_h, train_y, val_h, val_y, ReportConfig(eps=eps, probe=PROBE_KWARGS, compression=None))
        d_source = torch.as_tensor(d_source, dtype=torch.bool)
        table = sample_table(rep, val_h, val_y, discriminative=d_source, eps=eps, split="mnist_test")
        correct = rep["arrays"]["correct"]
        assert (table["correct"].astype(bool) == correct).all()
        scores = {"Q, D from Fashion-MNIST": table["q"], "Q, D from MNIST": rep["arrays"]["q"],
                  "max-softmax": rep["arrays"]["confidence"], **alternatives}
        metrics, roc = metrics_of(scores, correct, args.bootstrap)
        d_target = torch.as_tensor(rep["arrays"]["discriminative"], dtype=torch.bool)
        entries.append({
            "eps": eps, "accuracy": rep["accuracy"], "num_train": rep["num_train"], "num_val": rep["num_val"],
            "mean_active_train": rep["mean_active"], "mean_active_val": mean_active(val_h, eps),
            "q_zero_fraction_transfer": float((table["q"] == 0).mean()),
            "q_zero_fraction_target": rep["q_zero_fraction"],
            "num_discriminative": int(d_source.sum()), "d_overlap": int((d_source & d_target).sum()),
            "metrics": metrics})
        rocs.append(roc)
        print(f"[mnist transfer] eps={eps:g}: probe acc {rep['accuracy']:.4f}, AUROC(Q, D from F-MNIST) "
              f"{fmt(metrics.get('Q, D from Fashion-MNIST', {}).get('auroc'))}, AUROC(Q, D from MNIST) "
              f"{fmt(metrics.get('Q, D from MNIST', {}).get('auroc'))}", flush=True)
    return entries, rocs


# ------------------------------------------------------------------------------------------ output
def _pair(m: dict, name: str) -> str:
    return f"{with_ci(m[name], 'auroc')} / {with_ci(m[name], 'auprc')}" if name in m else "n/a"


def fashion_table(entries: list, small: list, num_train: int) -> str:
    head = ("| D and probe from | ε | mean\\|L_i\\| (train / val) | #D | Q≡0 frac | probe acc = base rate | "
            "AUROC / AUPRC of Q | max-softmax (supervised ref.) | ‖h‖ | top-feature z-score |\n"
            + "|---" * 10 + "|\n")
    lines = []
    for label, group in ((f"{num_train:,} train images", entries), (f"{small[0]['num_train']:,} (SSL runs' subset)"
                                                                     if small else "", small)):
        for e in group:
            m = e["metrics"]
            lines.append(f"| {label} | {e['eps']:g} | {e['mean_active_train']:.3f} / {e['mean_active_val']:.3f} | "
                         f"{e['num_discriminative']} | {e['q_zero_fraction']:.3f} | {fmt(e['accuracy'])} | "
                         f"{_pair(m, 'Q')} | " + " | ".join(_pair(m, n) for n in ALTERNATIVES) + " |")
    return head + "\n".join(lines) + "\n"


def compression_table(entries: list) -> str:
    text = ""
    for e in entries:
        c = e["compression"]
        if not c:
            continue
        text += (f"Compression, ε = {e['eps']:g} (r = {c['num_features']}, |D| = {c['num_discriminative']}, full "
                 f"accuracy {fmt(c['full_accuracy'])}%, {c['num_random_seeds']} random seeds); accuracy %:\n\n"
                 "| k | band | random mean ± std | band − random | lower tail | upper tail | PCA |\n"
                 "|---|---|---|---|---|---|---|\n")
        for i, k in enumerate(c["sizes"]):
            rm, rs = c["random_mean"][i], c["random_std"][i]
            text += (f"| {k} | {fmt(c['band'][i])} | {fmt(rm)} ± {fmt(rs)} | {100 * (c['band'][i] - rm):+.2f} | "
                     f"{fmt(c['lower_tail'][i])} | {fmt(c['upper_tail'][i])} | {fmt(c['pca'][i])} |\n")
    return text


def transfer_table(entries: list) -> str:
    names = ("Q, D from Fashion-MNIST", "Q, D from MNIST", *ALTERNATIVES)
    text = ("| ε | MNIST probe acc = base rate | mean\\|L_i\\| (MNIST train / test) | Q≡0 frac (D_F / D_M) | "
            "\\|D_F ∩ D_M\\| / \\|D\\| | " + " | ".join(f"{DISPLAY.get(n, n)} AUROC / AUPRC" for n in names)
            + " |\n"
            + "|---" * (5 + len(names)) + "|\n")
    for e in entries:
        m = e["metrics"]
        text += (f"| {e['eps']:g} | {fmt(e['accuracy'])} | {e['mean_active_train']:.3f} / {e['mean_active_val']:.3f} | "
                 f"{e['q_zero_fraction_transfer']:.3f} / {e['q_zero_fraction_target']:.3f} | "
                 f"{e['d_overlap']} / {e['num_discriminative']} | " + " | ".join(_pair(m, n) for n in names) + " |\n")
    return text


def scan_table(scan: list) -> str:
    return ("| ε | mean\\|L_i\\| (train) | Q≡0 frac (val) |\n|---|---|---|\n"
            + "".join(f"| {r['eps']:g} | {r['mean_active_train']:.3f} | {r['q_zero_fraction']:.3f} |\n" for r in scan))


def save_plots(res: dict, rocs: dict, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from solo_qscore.plotting import compression_figure, save_figure_atomic

    fashion, transfer = res["fashion_mnist"], res["transfer"]
    n = len(fashion)
    fig, axes = plt.subplots(2, n, figsize=(5.2 * n, 9.2), squeeze=False)
    panels = [(axes[0][i], e, rocs["fashion"][i], f"Fashion-MNIST, ε = {e['eps']:g}, probe acc "
               f"{100 * e['accuracy']:.1f}%") for i, e in enumerate(fashion)]
    panels += [(axes[1][i], e, rocs["transfer"][i], f"MNIST (transfer), ε = {e['eps']:g}, probe acc "
                f"{100 * e['accuracy']:.1f}%") for i, e in enumerate(transfer)]
    for ax, e, roc, title in panels:
        for name, curve in roc.items():
            ax.plot(curve["fpr"], curve["tpr"], color=COLORS[name], lw=2 if name.startswith("Q") else 1.2,
                    label=f"{name} (AUROC {100 * e['metrics'][name]['auroc']:.1f})")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("FPR (misclassified scored as correct)")
        ax.set_ylabel("TPR (correct)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle("Supervised ResNet-18 (Fashion-MNIST): Q-Score against linear-probe correctness", fontsize=10)
    fig.tight_layout()
    paths = [str(save_figure_atomic(fig, f"{prefix}_roc.png"))]
    plt.close(fig)
    for e in fashion:
        if e["compression"]:
            fig = compression_figure(e["compression"], title=(
                f"Supervised ResNet-18 on Fashion-MNIST: probe accuracy on feature subsets (ε = {e['eps']:g})"))
            paths.append(str(save_figure_atomic(fig, f"{prefix}_compression_eps{e['eps']:g}.png")))
            plt.close(fig)
    return paths


def _jsonable(o):
    return o.tolist() if hasattr(o, "tolist") else str(o)


def machine() -> str:
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
        found = [flag for flag in ("amx_bf16", "avx512_bf16") if f" {flag}" in info]
        flags = f" ({', '.join(found)})" if found else ""
    except OSError:
        model = platform.processor() or "?"
    return f"{os.cpu_count()} CPU cores, {model}{flags}, no GPU used"


def write_tables(res: dict, path: Path) -> None:
    sz = res["sizes"]
    text = (f"# Supervised ResNet-18 on Fashion-MNIST: Q-Score (generated by bench_supervised.py)\n\n"
            f"- date: {res['date']}; machine: {res['machine']}; torch {res['torch']}, {res['threads']} thread(s)\n"
            f"- command: `{res['command']}`\n- sizes: {json.dumps(sz)}\n"
            f"- training: {res['train']['seconds']:.0f} s ({res['train']['steps']} steps); supervised head accuracy "
            f"on the {sz['val_size']:,} val images: {fmt(res['head_accuracy'])}%; "
            f"wall time {res['wall_seconds']:.0f} s\n"
            f"- eps scan ({res['eps_reason']}); compression at ε = {res['compression_eps']:g}:\n\n"
            + scan_table(res["eps_scan"]) + "\n## Fashion-MNIST (AUROC / AUPRC in %, positive = correct)\n\n"
            + fashion_table(res["fashion_mnist"], res["like_for_like"], sz["train_size"]) + "\n"
            + compression_table(res["fashion_mnist"]) + "\n## Transfer to MNIST (probe trained on MNIST train "
            "features; D_F from Fashion-MNIST train, D_M from MNIST train)\n\n" + transfer_table(res["transfer"]))
    path.write_text(text)
    print(text, flush=True)


# long: one linear pipeline, step by step
def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {k: getattr(args, k) for k in ("train_size", "val_size", "epochs", "batch_size", "lr", "weight_decay",
                                           "crop_pad", "mnist_train", "mnist_val", "random_seeds", "bootstrap",
                                           "like_for_like", "seed")}
    print(f"sizes {sizes}, threads {args.threads}", flush=True)
    f_x = fashion_mnist_tensors(args)
    m_x = mnist_tensors(args)
    print(f"data: Fashion-MNIST {tuple(f_x[0].shape)} / {tuple(f_x[2].shape)}, MNIST {tuple(m_x[0].shape)} / "
          f"{tuple(m_x[2].shape)} ({time.time() - t_start:.0f}s)", flush=True)
    model, train = encoder(args, f_x[0], f_x[1])
    backbone, head = model[0], model[1]
    t = time.time()
    f = (*features(backbone, f_x[0], f_x[1], args.bf16), *features(backbone, f_x[2], f_x[3], args.bf16))
    m = (*features(backbone, m_x[0], m_x[1], args.bf16), *features(backbone, m_x[2], m_x[3], args.bf16))
    extract_seconds = time.time() - t
    with torch.no_grad():
        head_accuracy = float((head(f[2]).argmax(1) == f[3]).double().mean())
    print(f"features extracted in {extract_seconds:.0f}s; supervised head accuracy {100 * head_accuracy:.2f}%",
          flush=True)
    scan = eps_scan(f[0], f[2])
    eps_list, compression_eps, reason = choose_eps(args, scan)
    fashion, f_rocs, small, discriminative = analyse_fashion(args, f, eps_list, compression_eps)
    transfer, t_rocs = analyse_transfer(args, m, discriminative)
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "torch": torch.__version__, "threads": args.threads,
           "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"main({argv})",
           "sizes": sizes, "train": train, "head_accuracy": head_accuracy, "extract_seconds": extract_seconds,
           "eps_scan": scan, "eps_list": eps_list, "compression_eps": compression_eps, "eps_reason": reason,
           "fashion_mnist": fashion, "like_for_like": small, "transfer": transfer}
    res["plots"] = save_plots(res, {"fashion": f_rocs, "transfer": t_rocs}, args.png_prefix)
    res["wall_seconds"] = time.time() - t_start
    (args.out_dir / "bench_supervised.json").write_text(json.dumps(res, indent=1, default=_jsonable))
    write_tables(res, args.out_dir / "tables.md")
    print(f"saved {', '.join(res['plots'])}; total wall time {res['wall_seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
