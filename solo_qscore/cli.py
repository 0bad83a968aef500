"""Command line: ``solo-qscore pretrain | probe | main`` (also ``python -m solo_qscore``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from solo_qscore.config import ConfigError, load_config

MAIN_CONFIG = "method_configs/cifar10/simclr.yaml"
# The main job: a short SimCLR run with Q-Score and IFM on the offline default data, then the probe.
# eps = 2, not the paper's 4: after 3 CPU epochs the features are still dense (at eps = 4 the mean
# |L_i| is 0.04, so Q = 0 for almost every sample); the paper's encoders trained for 1000 epochs.
MAIN_OVERRIDES = [
    "qscore.eps=2.0",
    "data.train_subset=4096", "data.val_subset=2000", "data.batch_size=128", "data.num_workers=2",
    "trainer.max_epochs=3", "scheduler.warmup_epochs=0", "probe.every_n_epochs=1",
    "output_dir=runs/main", "name=main-simclr-qscore-ifm",
]


# Further-training with the regulariser, as the paper does (Q-Score paper §5: lr 1e-5, LARS,
# warm-up then cosine annealing, 50 epochs); the rest of the config comes from the checkpoint.
FINETUNE_OVERRIDES = ["qscore.enabled=true", "optimizer.lr=1.0e-5", "trainer.max_epochs=50",
                      "scheduler.name=warmup_cosine", "scheduler.warmup_epochs=5",
                      "scheduler.warmup_start_lr=1.0e-6"]  # warm up to 1e-5, not down from pre-training's start


def _config_path(path: str) -> str:
    """Resolve a config path given relative to the repo (works from any directory in a checkout)."""
    if Path(path).exists():
        return path
    candidate = Path(__file__).resolve().parent.parent / path
    return str(candidate) if candidate.exists() else path


def cmd_pretrain(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.qscore:
        overrides.insert(0, "qscore.enabled=true")
    if args.ifm:
        overrides.insert(0, "ifm.enabled=true")
    if args.lasso:
        overrides.insert(0, "lasso.enabled=true")
    if args.hard_negatives:
        overrides.insert(0, "hard_negatives.enabled=true")
    cfg = load_config(_config_path(args.config), overrides)
    from solo_qscore.train import check_loss_decreases, pretrain

    summary = pretrain(cfg, init_from=args.init_from, resume=args.resume, record_loss=args.assert_loss_decreases)
    if args.assert_loss_decreases:
        print(check_loss_decreases(summary["losses"]))
        summary.pop("losses")
    print(json.dumps(summary, indent=2))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import torch

    from solo_qscore.adapters.solo_v1 import CHECKPOINT_KEY
    from solo_qscore.train import pretrain

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    saved = checkpoint.get(CHECKPOINT_KEY, {}).get("config") if isinstance(checkpoint, dict) else None
    if not saved:
        raise ConfigError(f"{args.checkpoint} was not written by solo-qscore pretrain (no run config inside)")
    defaults = [*FINETUNE_OVERRIDES, f"output_dir={saved['output_dir']}-finetune", f"name={saved['name']}-finetune"]
    cfg = load_config(saved, [*defaults, *args.overrides])
    summary = pretrain(cfg, init_from=args.checkpoint)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import torch

    from solo_qscore.associations import dataset_class_names
    from solo_qscore.callbacks import extract_features, find_backbone
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.report import qscore_report, write_report

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if isinstance(checkpoint, dict) and "solo_qscore" in checkpoint:
        from solo_qscore.adapters.solo_v1 import load_method

        model, saved_cfg, _ = load_method(args.checkpoint)
        cfg = load_config(saved_cfg, list(args.overrides))
        backbone = find_backbone(model)
    else:  # a plain torchvision ResNet state dict
        cfg = load_config(_config_path(args.config) if args.config else None, list(args.overrides))
        backbone = _torchvision_backbone(checkpoint, cfg)
    train_loader, val_loader = make_eval_loaders(cfg["data"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.to(device)
    train_h, train_y = extract_features(backbone, train_loader, device)
    val_h, val_y = extract_features(backbone, val_loader, device)
    q = cfg["qscore"]
    report = qscore_report(train_h, train_y, val_h, val_y, eps=q["eps"], band=tuple(q["band"]),
                           class_names=dataset_class_names(train_loader.dataset),
                           probe_kwargs={"max_iter": cfg["probe"]["max_iter"],
                                         "weight_decay": cfg["probe"]["weight_decay"]})
    out = Path(args.out or Path(cfg["output_dir"]) / "probe")
    path = write_report(report, out)
    print(json.dumps({k: report.get(k) for k in ("auroc", "auprc", "accuracy", "num_features",
                                                  "num_discriminative", "note")}, indent=2))
    print(f"report: {path}")
    return 0


def _torchvision_backbone(state_dict, cfg: dict):
    import torch
    import torchvision

    state = state_dict.get("state_dict", state_dict)
    net = getattr(torchvision.models, cfg["backbone"]["name"])()
    if cfg["backbone"]["cifar"]:
        net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    state = {k.removeprefix("encoder.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        missing, unexpected = [str(err).splitlines()[1].strip()], []
    if missing or unexpected:
        raise ConfigError(
            f"the state dict does not fit a torchvision {cfg['backbone']['name']} (backbone.cifar="
            f"{cfg['backbone']['cifar']}): missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    return net


def cmd_main(args: argparse.Namespace) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    cfg = load_config(_config_path(MAIN_CONFIG), ["qscore.enabled=true", "ifm.enabled=true", *MAIN_OVERRIDES,
                                                  *args.overrides])
    from solo_qscore.train import pretrain

    summary = pretrain(cfg)
    print(json.dumps(summary, indent=2))
    print(f"\nprobe report: {summary['probe_dir']}/probe.json (+ PNG figures)")
    if "wandb_dir" in summary:
        run_dir = Path(summary["wandb_dir"]).parent
        print(f"wandb run (offline): {run_dir}  ->  upload later with `wandb sync {run_dir}`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solo-qscore", description="Q-Score and IFM for solo-learn runs.",
        epilog="Any number of config overrides key.sub=value may follow a command (e.g. ifm.epsilon=0.2).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pre-train a solo-learn method from a config")
    p.add_argument("config", help="YAML config, e.g. method_configs/cifar10/simclr.yaml")
    p.add_argument("--qscore", action="store_true", help="turn on Q-Score regularisation (qscore.enabled=true)")
    p.add_argument("--ifm", action="store_true", help="turn on IFM (ifm.enabled=true; InfoNCE methods only)")
    p.add_argument("--lasso", action="store_true", help="add the lasso baseline penalty (lasso.enabled=true)")
    p.add_argument("--hard-negatives", action="store_true",
                   help="hard negative sampling loss, SimCLR only (hard_negatives.enabled=true)")
    p.add_argument("--from", dest="init_from", help="further-train the weights of this checkpoint")
    p.add_argument("--resume", help="resume this checkpoint exactly")
    p.add_argument("--assert-loss-decreases", action="store_true", help="smoke check: finite, decreasing loss")
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("finetune", help="further-train a pretrain checkpoint with the Q-Score regulariser "
                       "(paper: lr 1e-5, 50 epochs; D seeded from the train set before the first step)")
    p.add_argument("checkpoint")
    p.set_defaults(func=cmd_finetune)
    p = sub.add_parser("probe", help="Q-Score probe report of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--out", help="report folder (default OUTPUT_DIR/probe)")
    p.add_argument("--config", help="config for a plain torchvision state dict (data, backbone)")
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("main", help="the main job: short SimCLR + Q-Score + IFM run, then the probe report")
    p.set_defaults(func=cmd_main)
    _register_analysis_commands(sub)
    return parser


def _register_analysis_commands(sub) -> None:
    """Add the subcommands of ``solo_qscore.analysis`` modules (each one defines ``register(sub)``)."""
    import importlib
    import pkgutil

    import solo_qscore.analysis as analysis

    for info in sorted(pkgutil.iter_modules(analysis.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"solo_qscore.analysis.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like key.sub=value)")
    args.overrides = rest
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"solo-qscore: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
