"""IFM against feature suppression on Trifeature (IFM paper, Robinson et al. 2021, Fig. 3 / Fig. 6).

SimCLR on a narrow 4-stage ResNet, temperatures tau in {0.05, 0.2, 0.5}, each with and without IFM
(epsilon = 0.1, alpha = 1), linear readout of colour, shape and texture from frozen backbone features,
mean +- std over seeds. Everything that matters comes from the library:

- loss: ``solo_qscore.ifm_simclr_loss(z, indexes, temperature, epsilon)`` (epsilon = 0 is plain SimCLR),
- data: ``solo_qscore.data.TrifeatureDataset``, ``build_crop_pipelines`` (solo-learn's SimCLR CIFAR
  pipeline), ``NCropAugmentation``, ``PretrainDataset``, ``eval_transform``,
- readout: ``solo_qscore.probe.linear.fit_linear_probe`` / ``LinearProbe.predict``.

Claim tested (paper Sec. 4, Fig. 6): "IFM improves the linear readout accuracy across *all* three
features for all temperature settings", whereas changing tau alone only trades one feature for another
(Fig. 3).

Scale. The paper: Trifeature at 128 px, 100 images for each of the 1000 (colour, shape, texture)
combinations (100k, 90/10 split), ResNet-18, batch 512, Adam lr 1e-3 wd 1e-6, 200 epochs, GPU, and
*no* colour jitter / grayscale on Trifeature (App. C.2). Here, by default (``--scale 1``): 32 px,
4,000 train / 2,000 test images, a ~0.35M-parameter ResNet, batch 128, a few epochs, one CPU thread,
solo-learn's CIFAR SimCLR augmentations *with* colour jitter and grayscale (``--paper-aug`` drops them
as the paper did). ``--scale k`` multiplies the number of train images and epochs by k.

Readout. By default the readout features come from the clean images. The paper extracts them *with* the
pre-training augmentations: ``--readout-aug`` reads out (train and test) from one augmented view of each image
through the same pipeline as pre-training (``--paper-aug`` included), drawn once from fixed seeds
(``READOUT_AUG_SEEDS``), so every arm, method and seed reads out the very same views. ``--net resnet18`` is
the paper's backbone (torchvision's ResNet-18, 11.2M parameters, with solo-learn's CIFAR stem for 32 px via
``solo_qscore.adapters.solo_backbone.apply_cifar_stem``; ``--widths`` is then unused), ``--batch-size 512``
the paper's batch; the projector stays features -> 256 -> 64 for either net.

``--hard-negatives BETA [BETA ...]`` adds, for every tau and seed, SimCLR arms with hard negative sampling
(``solo_qscore.losses.hard_negatives.hard_negative_simclr_loss``, Robinson et al. ICLR 2021,
class prior ``--tau-plus``),
the paper's second difficulty knob (Fig. 3), so IFM can be compared against both tau and beta. Without it the
runs, table and figure are exactly as before.

Usage::

    .venv/bin/python benchmarks/bench_ifm_trifeature.py               # 18 runs, ~30-40 min on 1 core
    .venv/bin/python benchmarks/bench_ifm_trifeature.py --single      # time one run to size the budget
    .venv/bin/python benchmarks/bench_ifm_trifeature.py --hard-negatives 1.0 2.0   # + 12 hard-negative runs

With ``--resume`` the runs already in ``--json`` (written after each run) are reused when it holds the same
settings, so a long benchmark stopped with its session continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from solo_qscore import ifm_simclr_loss
from solo_qscore.data import (
    ATTRIBUTES,
    NCropAugmentation,
    PretrainDataset,
    TrifeatureDataset,
    build_crop_pipelines,
    dataset_stats,
    eval_transform,
)
from solo_qscore.losses.hard_negatives import hard_negative_simclr_loss
from solo_qscore.probe.linear import fit_linear_probe

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------- model
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.short(x))


class SmallResNet(nn.Module):
    """ResNet with one BasicBlock per stage, CIFAR stem (3x3 conv, no max-pool), global avg-pool."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.features_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


def resnet18_cifar() -> nn.Module:
    """torchvision's ResNet-18 (the paper's backbone) with solo-learn's CIFAR stem for 32 px images (3x3
    ``conv1`` stride 1, no max-pool; ``apply_cifar_stem``) and no classifier: 512-d pooled features."""
    from torchvision.models import resnet18

    from solo_qscore.adapters.solo_backbone import apply_cifar_stem

    net = resnet18(weights=None)
    apply_cifar_stem(net)
    net.fc = nn.Identity()
    net.features_dim = 512
    return net


def backbone_of(args: argparse.Namespace) -> nn.Module:
    """The backbone of ``--net``: the narrow ``SmallResNet`` of ``--widths`` (default) or ResNet-18."""
    return resnet18_cifar() if args.net == "resnet18" else SmallResNet(tuple(args.widths))


def projector(dim_in: int, hidden: int = 256, out: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


# ------------------------------------------------------------------------------------------------ data
def load_data(args: argparse.Namespace) -> tuple[TrifeatureDataset, TrifeatureDataset]:
    train = TrifeatureDataset(root=args.root, train=True, num_samples=args.train_samples,
                              image_size=32, seed=args.data_seed)
    test = TrifeatureDataset(root=args.root, train=False, num_samples=args.test_samples,
                             image_size=32, seed=args.data_seed)
    return train, test


def augmentation(args: argparse.Namespace) -> dict:
    """The pre-training ``augmentations:`` entry (two crops); ``--readout-aug`` reads out through one of them."""
    aug = {"num_crops": 2, "crop_size": 32, "min_scale": 0.08}
    if args.paper_aug:  # paper App. C.2: no colour jitter, no grayscale on Trifeature
        aug.update(color_jitter_prob=0.0, gray_scale_prob=0.0)
    return aug


def pretrain_loader(train: TrifeatureDataset, args: argparse.Namespace, seed: int) -> DataLoader:
    mean, std = dataset_stats("trifeature")
    pipelines = build_crop_pipelines([augmentation(args)], mean, std)
    ds = PretrainDataset(train, NCropAugmentation(pipelines))
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=g,
                      num_workers=args.workers, persistent_workers=args.workers > 0)


#: seeds of the augmented readout images (train, test): fixed, so every arm, method and seed reads out the same
READOUT_AUG_SEEDS = (1234, 5678)


def augmented_images(ds: TrifeatureDataset, args: argparse.Namespace, seed: int) -> torch.Tensor:
    """One augmented view of every image of ``ds`` through the pre-training pipeline (the IFM paper extracts
    readout features with the pre-training augmentations), drawn once from ``seed`` on a forked RNG."""
    mean, std = dataset_stats("trifeature")
    tf = build_crop_pipelines([{**augmentation(args), "num_crops": 1}], mean, std)[0]
    with torch.random.fork_rng(devices=[]):  # the transforms draw from torch's global RNG
        torch.manual_seed(seed)
        return torch.stack([tf(ds[i][0]) for i in range(len(ds))])


def readout_images(train: TrifeatureDataset, test: TrifeatureDataset,
                   args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The augmented (train, test) readout images of ``--readout-aug``; ``None``: clean images (default)."""
    if not args.readout_aug:
        return None
    return augmented_images(train, args, READOUT_AUG_SEEDS[0]), augmented_images(test, args, READOUT_AUG_SEEDS[1])


@torch.no_grad()
def extract(backbone: nn.Module, ds: TrifeatureDataset, batch: int = 500,
            images: torch.Tensor | None = None) -> torch.Tensor:
    """Frozen features of ``ds``: of its clean images, or of ``images`` (its augmented views) when given."""
    mean, std = dataset_stats("trifeature")
    tf = eval_transform(32, mean, std)
    backbone.eval()
    feats = []
    for start in range(0, len(ds), batch):
        stop = min(start + batch, len(ds))
        x = images[start:stop] if images is not None else torch.stack([tf(ds[i][0]) for i in range(start, stop)])
        feats.append(backbone(x))
    return torch.cat(feats)


def readout(backbone: nn.Module, train: TrifeatureDataset, test: TrifeatureDataset,
            images: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    xtr, xte = images if images is not None else (None, None)
    ftr, fte = extract(backbone, train, images=xtr), extract(backbone, test, images=xte)
    out = {}
    for k, name in enumerate(ATTRIBUTES):
        probe = fit_linear_probe(ftr, train.attributes[:, k], num_classes=10)
        pred = probe.predict(fte)
        out[name] = 100.0 * float((pred == test.attributes[:, k]).float().mean())
    return out


# ------------------------------------------------------------------------------------------------- run
def run_one(train: TrifeatureDataset, test: TrifeatureDataset, tau: float, epsilon: float, seed: int,
            args: argparse.Namespace, beta: float | None = None,
            images: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """One SimCLR run: IFM with ``epsilon`` (0 = plain), or, with ``beta`` set, hard negative sampling; read
    out from ``images`` (``readout_images``) when given, else from the clean images."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    backbone = backbone_of(args)
    proj = projector(backbone.features_dim, 256, 64)
    params = list(backbone.parameters()) + list(proj.parameters())
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    loader = pretrain_loader(train, args, seed)
    total = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    t0 = time.perf_counter()
    losses = []
    for _ in range(args.epochs):
        backbone.train()
        proj.train()
        ep_loss, nb = 0.0, 0
        for idx, crops, _ in loader:
            x = torch.cat(crops)
            z = proj(backbone(x))
            if beta is None:
                loss = ifm_simclr_loss(z, idx.repeat(len(crops)), temperature=tau, epsilon=epsilon, alpha=1.0)
            else:
                loss = hard_negative_simclr_loss(z, idx.repeat(len(crops)), temperature=tau, beta=beta,
                                                 tau_plus=args.tau_plus)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ep_loss += float(loss.detach())
            nb += 1
        losses.append(ep_loss / max(nb, 1))
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    acc = readout(backbone, train, test, images)
    t_read = time.perf_counter() - t1
    out = {"tau": tau, "epsilon": epsilon, "seed": seed, "acc": acc, "loss": losses,
           "t_train": t_train, "t_readout": t_read}
    if beta is not None:  # hard-negative arms only, so default runs keep their format
        out.update(beta=beta, tau_plus=args.tau_plus)
    return out


def random_init(train: TrifeatureDataset, test: TrifeatureDataset, seed: int, args: argparse.Namespace,
                images: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    torch.manual_seed(seed)
    backbone = backbone_of(args)
    return {"seed": seed, "acc": readout(backbone, train, test, images)}


# --------------------------------------------------------------------------------------------- report
def arms(args: argparse.Namespace) -> list[tuple[str, float, float | None, str]]:
    """(label, epsilon, beta, colour) of every arm: plain, IFM, then one per hard-negative beta."""
    out = [("SimCLR", 0.0, None, "tab:blue"), (f"SimCLR + IFM (ε={args.epsilon})", args.epsilon, None, "tab:orange")]
    hn_colors = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
    for i, beta in enumerate(args.hard_negatives or []):
        out.append((f"SimCLR + HN (β={beta}, τ+={args.tau_plus})", 0.0, beta, hn_colors[i % len(hn_colors)]))
    return out


def in_arm(r: dict, epsilon: float, beta: float | None) -> bool:
    return r["epsilon"] == epsilon and r.get("beta") == beta


#: Arguments that name outputs or the way to run, not what a run computes.
NOT_SETTINGS = ("json", "png", "resume", "single", "threads", "workers")
#: Settings added after runs were saved, at the value those runs had, so their JSON still resumes.
LATER_SETTINGS = {"net": "small", "readout_aug": False}


def finished_runs(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """The random-init and SimCLR runs already in ``args.json``, when it was written with these settings."""
    path = Path(args.json)
    if not (args.resume and path.exists()):
        return [], []
    saved = json.loads(path.read_text())
    ours = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    theirs = {k: v for k, v in {**LATER_SETTINGS, **saved["args"]}.items() if k not in NOT_SETTINGS}
    if json.loads(json.dumps(ours)) != theirs:  # through JSON: tuples become lists, as saved
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise SystemExit(f"--resume: {path} was written with other settings ({', '.join(changed)}); "
                         "use another --json or drop --resume")
    return saved["init"], saved["runs"]


def previous(runs: list[dict], tau: float, epsilon: float, seed: int, beta: float | None = None) -> dict | None:
    return next((r for r in runs if r["tau"] == tau and r["seed"] == seed and in_arm(r, epsilon, beta)), None)


def ms(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(runs: list[dict], init: list[dict], args: argparse.Namespace) -> str:
    lines = []
    taus = sorted({r["tau"] for r in runs})
    hdr = "| τ | method | " + " | ".join(ATTRIBUTES) + " | mean |"
    lines += [hdr, "|" + "---|" * (3 + len(ATTRIBUTES))]
    if init:
        cells = [ms([r["acc"][a] for r in init]) for a in ATTRIBUTES]
        avg = ms([np.mean([r["acc"][a] for a in ATTRIBUTES]) for r in init])
        lines.append("| – | random init | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in cells)
                     + f" | {avg[0]:.1f} ± {avg[1]:.1f} |")
    for tau in taus:
        for name, eps, beta, _ in arms(args):
            rs = [r for r in runs if r["tau"] == tau and in_arm(r, eps, beta)]
            cells = [ms([r["acc"][a] for r in rs]) for a in ATTRIBUTES]
            avg = ms([np.mean([r["acc"][a] for a in ATTRIBUTES]) for r in rs])
            lines.append(f"| {tau} | {name} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in cells)
                         + f" | {avg[0]:.1f} ± {avg[1]:.1f} |")
    lines += paired_table(runs, taus, "IFM", args.epsilon, None)
    for beta in args.hard_negatives or []:
        lines += paired_table(runs, taus, f"HN β={beta}", 0.0, beta)
    lines += ["", "Trade-off across τ (plain SimCLR): best τ per attribute: "
              + ", ".join(f"{a} → τ={max(taus, key=lambda t, a=a: np.mean([r['acc'][a] for r in runs if r['tau'] == t and in_arm(r, 0.0, None)]))}"  # noqa: E501
                          for a in ATTRIBUTES)]
    return "\n".join(lines)


def paired_table(runs: list[dict], taus: list[float], name: str, epsilon: float, beta: float | None) -> list[str]:
    """Markdown lines of the arm (epsilon, beta) minus plain SimCLR, paired by seed, per tau."""
    lines = ["", f"{name} − plain, paired by seed (mean ± std over seeds; n = number of seeds where {name} > plain):",
             "", "| τ | " + " | ".join(f"Δ {a}" for a in ATTRIBUTES) + " | claim (all three Δ > 0) |",
             "|" + "---|" * (2 + len(ATTRIBUTES))]
    for tau in taus:
        plain = {r["seed"]: r["acc"] for r in runs if r["tau"] == tau and in_arm(r, 0.0, None)}
        ifm = {r["seed"]: r["acc"] for r in runs if r["tau"] == tau and in_arm(r, epsilon, beta)}
        seeds = sorted(set(plain) & set(ifm))
        cells, verdict = [], []
        for a in ATTRIBUTES:
            d = [ifm[s][a] - plain[s][a] for s in seeds]
            m, s = ms(d)
            wins = sum(x > 0 for x in d)
            cells.append(f"{m:+.1f} ± {s:.1f} ({wins}/{len(d)})")
            se = s / math.sqrt(len(d)) if len(d) > 1 else float("inf")
            verdict.append("sig+" if m > 2 * se else ("sig−" if m < -2 * se else ("+" if m > 0 else "−")))
        holds_mean = all(v in ("+", "sig+") for v in verdict)
        holds_sig = all(v == "sig+" for v in verdict)
        txt = "yes (each Δ > 2 s.e.)" if holds_sig else ("means only, not significant" if holds_mean else "no")
        lines.append(f"| {tau} | " + " | ".join(cells) + f" | {txt} [{', '.join(verdict)}] |")
    return lines


def plot(runs: list[dict], init: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = sorted({r["tau"] for r in runs})
    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4.2 * len(ATTRIBUTES), 3.8), sharey=False)
    all_arms = arms(args)
    width = 0.38 if len(all_arms) == 2 else 0.8 / len(all_arms)
    for ax, a in zip(axes, ATTRIBUTES):
        for j, (label, eps, beta, color) in enumerate(all_arms):
            stats = [ms([r["acc"][a] for r in runs if r["tau"] == t and in_arm(r, eps, beta)]) for t in taus]
            xs = np.arange(len(taus)) + (j - (len(all_arms) - 1) / 2) * width
            ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=label, color=color)
        if init:
            m, _ = ms([r["acc"][a] for r in init])
            ax.axhline(m, ls="--", color="gray", lw=1, label="random init")
        ax.set_xticks(np.arange(len(taus)), [f"τ={t}" for t in taus])
        ax.set_title(a)
        ax.set_ylabel("linear readout accuracy (%)")
        lo = min(min(r["acc"][a] for r in runs), min((r["acc"][a] for r in init), default=100))
        ax.set_ylim(max(0.0, lo - 10), min(100.0, max(r["acc"][a] for r in runs) + 5))
    axes[0].legend(fontsize=8, loc="lower left")
    n_seeds = len({r["seed"] for r in runs})
    net = f", ResNet-18 batch {args.batch_size}" if args.net == "resnet18" else ""
    fig.suptitle(f"Trifeature 32px, {args.train_samples} train imgs, {args.epochs} ep, mean ± std over "
                 f"{n_seeds} seeds{' (paper aug)' if args.paper_aug else ''}"
                 f"{', readout on augmented views' if args.readout_aug else ''}{net}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=1, help="multiplies train samples and epochs")
    p.add_argument("--taus", type=float, nargs="+", default=[0.05, 0.2, 0.5])
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--hard-negatives", type=float, nargs="+", metavar="BETA", default=None,
                   help="add hard-negative SimCLR arms with these hardness values beta (Robinson et al. 2021)")
    p.add_argument("--tau-plus", type=float, default=0.1, help="class prior tau+ of the hard-negative arms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-samples", type=int, default=4000, help="at scale 1")
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=6, help="at scale 1")
    p.add_argument("--batch-size", type=int, default=128, help="the paper: 512")
    p.add_argument("--net", choices=("small", "resnet18"), default="small",
                   help="backbone: the narrow ResNet of --widths, or ResNet-18 with the CIFAR stem (the paper's)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 128])
    p.add_argument("--paper-aug", action="store_true", help="no colour jitter / grayscale (paper App. C.2)")
    p.add_argument("--readout-aug", action="store_true",
                   help="read out (train and test) from one seeded augmented view of each image, through the "
                        "pre-training augmentations, as the paper does; the same views for every arm and seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--root", default="datasets")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--single", action="store_true", help="time one run (first tau, IFM, first seed) and exit; "
                   "with --hard-negatives, the first beta instead of IFM")
    p.add_argument("--no-init", action="store_true", help="skip the random-init readout baseline")
    p.add_argument("--png", default=str(HERE / "ifm_trifeature.png"))
    p.add_argument("--json", default="/tmp/ifm_trifeature.json", help="raw per-run results (rewritten after each run)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs already in --json when its settings are these (a session that ended "
                        "mid-benchmark continues where it stopped)")
    args = p.parse_args(argv)
    args.train_samples *= args.scale
    args.epochs *= args.scale
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    train, test = load_data(args)
    images = readout_images(train, test, args)
    net = backbone_of(args)
    n_params = sum(q.numel() for q in net.parameters())
    print(f"python {platform.python_version()} torch {torch.__version__} threads {torch.get_num_threads()} | "
          f"train {len(train)} test {len(test)} | epochs {args.epochs} batch {args.batch_size} | "
          f"backbone {args.net} {n_params / 1e6:.2f}M params, r={net.features_dim} | "
          f"paper_aug={args.paper_aug} readout_aug={args.readout_aug} | data {time.perf_counter() - t_start:.1f}s",
          flush=True)

    if args.single:
        if args.hard_negatives:
            r = run_one(train, test, args.taus[0], 0.0, args.seeds[0], args, beta=args.hard_negatives[0],
                        images=images)
        else:
            r = run_one(train, test, args.taus[0], args.epsilon, args.seeds[0], args, images=images)
        print(json.dumps(r, indent=1), flush=True)
        return

    init_done, runs_done = finished_runs(args)
    if runs_done:
        print(f"--resume: {len(runs_done)} runs and {len(init_done)} random-init readouts reused from {args.json}",
              flush=True)
    init = [] if args.no_init else [next((r for r in init_done if r["seed"] == s), None)
                                    or random_init(train, test, s, args, images) for s in args.seeds]
    for r in init:
        print(f"random init seed {r['seed']}: " + " ".join(f"{a} {r['acc'][a]:.1f}" for a in ATTRIBUTES), flush=True)
    runs = []
    for seed in args.seeds:
        for tau in args.taus:
            for eps in (0.0, args.epsilon):
                r = previous(runs_done, tau, eps, seed) or run_one(train, test, tau, eps, seed, args, images=images)
                runs.append(r)
                print(f"seed {seed} tau {tau} eps {eps}: " + " ".join(f"{a} {r['acc'][a]:.1f}" for a in ATTRIBUTES)
                      + f" | loss {r['loss'][0]:.3f}->{r['loss'][-1]:.3f} | train {r['t_train']:.0f}s "
                      f"readout {r['t_readout']:.0f}s | elapsed {time.perf_counter() - t_start:.0f}s", flush=True)
                Path(args.json).write_text(json.dumps({"args": vars(args), "init": init, "runs": runs}))
            for beta in args.hard_negatives or []:
                r = (previous(runs_done, tau, 0.0, seed, beta)
                     or run_one(train, test, tau, 0.0, seed, args, beta=beta, images=images))
                runs.append(r)
                print(f"seed {seed} tau {tau} beta {beta} tau+ {args.tau_plus}: "
                      + " ".join(f"{a} {r['acc'][a]:.1f}" for a in ATTRIBUTES)
                      + f" | loss {r['loss'][0]:.3f}->{r['loss'][-1]:.3f} | train {r['t_train']:.0f}s "
                      f"readout {r['t_readout']:.0f}s | elapsed {time.perf_counter() - t_start:.0f}s", flush=True)
                Path(args.json).write_text(json.dumps({"args": vars(args), "init": init, "runs": runs}))
    wall = time.perf_counter() - t_start
    table = summarise(runs, init, args)
    print("\n" + table)
    png = Path(args.png)
    plot(runs, init, args, png)
    print(f"\nplot: {png}\nwall time: {wall:.0f}s ({wall / 60:.1f} min)  command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
