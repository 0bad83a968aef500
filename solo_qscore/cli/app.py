"""The ``solo-qscore`` program: pretrain, finetune, probe, main, and the analysis subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from solo_qscore.config import ConfigError

# The main job: a short SimCLR run with Q-Score and IFM on the offline default data, then the probe.
# eps = 2, not the paper's 4: after a few CPU epochs the features are still dense (at eps = 4 the mean
# |L_i| is 0.04, so Q = 0 for almost every sample); the paper's encoders trained for 1000 epochs.
# Sized to finish within 5 minutes on any 2-core CPU: training gets a wall-clock budget (at most 4 epochs of
# 8 steps of 128 images; a float32-only CPU stops at the budget, about 14 steps, a bf16 one may finish them),
# then one probe report on 1,024 + 1,000 images (45 s on a 2-core float32 CPU; solo's own validation on 2
# batches): 3 min 05 s there in all. Longer: `solo-qscore main max_time=null max_epochs=10
# data.train_subset=10000 probe.every_n_epochs=1`.
MAIN_CONFIG = ("cifar", "simclr.yaml")
MAIN_TRAIN_BUDGET = "00:00:02:00"  # Lightning's max_time (DD:HH:MM:SS): 2 minutes of training
MAIN_OVERRIDES = [
    "qscore.enabled=true", "ifm.enabled=true", "qscore.eps=2.0",
    "data.train_subset=1024", "data.val_subset=1000", "optimizer.batch_size=128", "data.num_workers=2",
    "max_epochs=4", f"++max_time={MAIN_TRAIN_BUDGET}", "++limit_val_batches=2", "++enable_model_summary=false",
    "++log_every_n_steps=4", "++scheduler.warmup_epochs=0", "probe.every_n_epochs=0",
    "output_dir=runs/main", "name=main-simclr-qscore-ifm",
]

# Further-training with the regulariser, as the paper does (Q-Score paper §5: lr 1e-5, LARS,
# warm-up then cosine annealing, 50 epochs); the rest of the config comes from the checkpoint.
FINETUNE_OVERRIDES = ["qscore.enabled=true", "optimizer.lr=1.0e-5", "max_epochs=50",
                      "scheduler.name=warmup_cosine", "scheduler.warmup_epochs=5",
                      "scheduler.warmup_start_lr=1.0e-6"]  # warm up to 1e-5, not down from pre-training's start


def packaged_configs() -> Path:
    """The folder of the configs that ship with solo-qscore (``solo_qscore.method_configs``)."""
    import importlib.resources

    return Path(str(importlib.resources.files("solo_qscore.method_configs")))


def _flags_to_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    for flag, key in (("qscore", "qscore"), ("ifm", "ifm"), ("lasso", "lasso"), ("hard_negatives", "hard_negatives")):
        if getattr(args, flag, False):
            overrides.insert(0, f"{key}.enabled=true")
    return overrides


def cmd_pretrain(args: argparse.Namespace) -> int:
    from solo_qscore.config import compose

    config_path = Path(args.config_path) if args.config_path else packaged_configs() / "cifar"
    overrides = _flags_to_overrides(args)
    cfg = compose(config_path, args.config_name, overrides)
    if args.resume:  # a foreign or other-method checkpoint: one line now, not a traceback inside Lightning
        from solo_qscore.adapters.solo_checkpoint import check_resume_checkpoint

        check_resume_checkpoint(args.resume, cfg, trusted=args.trust_checkpoint)
    if args.resume and not any(o.lstrip("+").startswith("output_dir=") for o in overrides):
        from solo_qscore.output_folder import run_folder_of

        home = run_folder_of(args.resume)
        if home is not None:  # continue in the checkpoint's own run folder, not in runs/<name>
            cfg.output_dir = str(home)
    from solo_qscore.train import check_loss_decreases, pretrain

    summary = pretrain(cfg, init_from=args.init_from, resume=args.resume, record_loss=args.assert_loss_decreases,
                       overwrite=args.overwrite, trust_checkpoint=args.trust_checkpoint)
    if args.assert_loss_decreases:
        print(check_loss_decreases(summary["losses"]))
        summary.pop("losses")
    print(json.dumps(summary, indent=2))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from solo_qscore.adapters.solo_checkpoint import read_checkpoint, source_config
    from solo_qscore.config import apply_overrides, validate, with_plugin_defaults
    from solo_qscore.train import pretrain

    cfg = source_config(read_checkpoint(args.checkpoint, trusted=args.trust_checkpoint), args.checkpoint)
    apply_overrides(cfg, [*FINETUNE_OVERRIDES, f"output_dir={cfg.output_dir}-finetune", f"name={cfg.name}-finetune",
                          *args.overrides])
    validate(with_plugin_defaults(cfg))
    summary = pretrain(cfg, init_from=args.checkpoint, overwrite=args.overwrite,
                       trust_checkpoint=args.trust_checkpoint)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import torch

    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.output_folder import folder_lock
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features
    from solo_qscore.report.build import qscore_report
    from solo_qscore.report.config import ReportConfig
    from solo_qscore.report.writer import write_report

    if args.config:  # a plain torchvision state dict
        from solo_qscore.adapters.solo_checkpoint import read_checkpoint
        from solo_qscore.adapters.solo_config import run_view
        from solo_qscore.config import compose

        cfg = with_overrides(run_view(compose(Path(args.config).parent, Path(args.config).name)), args.overrides)
        state = read_checkpoint(args.checkpoint, trusted=args.trust_checkpoint, lightning=False)
        backbone = _torchvision_backbone(state, cfg)
    else:
        model, saved, _ = load_checkpoint(args.checkpoint, trusted=args.trust_checkpoint)
        cfg = with_overrides(saved, args.overrides)
        backbone = find_backbone(model)
    out = Path(args.out or Path(cfg["output_dir"]) / "probe")
    _check_writable(out, args.overwrite)
    with folder_lock(out, "--out"):  # a second probe into this folder meanwhile is refused, not overwritten
        _check_writable(out, args.overwrite)  # again, under the lock: a report finished meanwhile is seen
        train_loader, val_loader = make_eval_loaders(cfg["data"])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        backbone.to(device)
        train_h, train_y = extract_features(backbone, train_loader, device)
        val_h, val_y = extract_features(backbone, val_loader, device)
        config = ReportConfig.from_run(cfg)
        report = qscore_report(train_h, train_y, val_h, val_y, config,
                               class_names=dataset_class_names(train_loader.dataset))
        split_kwargs = {}
        if getattr(args, "split", "val") == "train":
            from solo_qscore.report.samples import sample_table

            split_kwargs["samples"] = sample_table(report, train_h, train_y, eps=config.eps, split="train")
        images = train_loader.dataset if getattr(args, "split", "val") == "train" else val_loader.dataset
        path = write_report(report, out, images=images, **split_kwargs)
        print(json.dumps(report.summary(), indent=2))
        print(f"report: {path}")
    return 0


def _check_writable(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing report unless asked, and fail now (not after the computation)
    on a folder that cannot be written (:func:`solo_qscore.cli.open_run.check_output_folder`)."""
    from solo_qscore.cli.open_run import check_output_folder

    check_output_folder(out, overwrite, "probe.json")


def _torchvision_backbone(state_dict, cfg: dict):
    import torch
    import torchvision

    from solo_qscore.adapters.solo_backbone import apply_cifar_stem
    from solo_qscore.adapters.solo_checkpoint import CheckpointError

    state = state_dict.get("state_dict", state_dict)
    net = getattr(torchvision.models, cfg["backbone"]["name"])()
    if cfg["backbone"].get("cifar"):  # the run view's uses_cifar_stem
        apply_cifar_stem(net)
    net.fc = torch.nn.Identity()
    state = {k.removeprefix("encoder.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        missing, unexpected = [str(err).splitlines()[1].strip()], []
    if missing or unexpected:
        raise CheckpointError(
            f"the state dict does not fit a torchvision {cfg['backbone']['name']} (CIFAR stem: "
            f"{cfg['backbone'].get('cifar')}): missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    return net


def cmd_main(args: argparse.Namespace) -> int:
    from solo_qscore.cli.console import main_summary, process_age
    from solo_qscore.config import compose

    start = time.monotonic() - (process_age() or 0.0)  # the job's time includes Python's start and imports
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")  # the closing summary says where the run is
    folder, name = MAIN_CONFIG
    cfg = compose(packaged_configs() / folder, name, [*MAIN_OVERRIDES, *args.overrides])
    from solo_qscore.train import pretrain

    summary = pretrain(cfg, overwrite=args.overwrite)
    what = " + ".join([str(cfg.method), *(label for key, label in (("qscore", "Q-Score"), ("ifm", "IFM"))
                                          if cfg.get(key) is not None and cfg[key].get("enabled", False))])
    max_time = cfg.get("max_time")
    print(main_summary(summary, time.monotonic() - start, what, None if max_time is None else str(max_time)))
    return 0


def _common(p: argparse.ArgumentParser, checkpoint_input: bool = True, writes: bool = True) -> None:
    if checkpoint_input:
        p.add_argument("--trust-checkpoint", action="store_true",
                       help="load checkpoints with weights_only=False (only for files you trust: it can run code)")
    if writes:
        p.add_argument("--overwrite", action="store_true", help="replace an existing run/report in the output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solo-qscore", description="Q-Score and IFM for solo-learn runs.",
        epilog="Config overrides key.sub=value may follow a command (Hydra's grammar for solo-learn's keys, "
               "e.g. max_epochs=3 optimizer.batch_size=64; typed for ours, e.g. ifm.epsilon=0.2).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pre-train a solo-learn method from one of solo-learn's config files")
    p.add_argument("--config-path", help="folder of solo-learn configs (default: the packaged cifar configs), "
                   "e.g. solo-learn's scripts/pretrain/cifar")
    p.add_argument("--config-name", required=True, help="config file in that folder, e.g. simclr.yaml")
    p.add_argument("--qscore", action="store_true", help="turn on Q-Score regularisation (qscore.enabled=true)")
    p.add_argument("--ifm", action="store_true", help="turn on IFM (ifm.enabled=true; InfoNCE methods only)")
    p.add_argument("--lasso", action="store_true", help="add the lasso baseline penalty (lasso.enabled=true)")
    p.add_argument("--hard-negatives", action="store_true",
                   help="hard negative sampling loss, SimCLR only (hard_negatives.enabled=true)")
    p.add_argument("--from", dest="init_from", help="further-train the weights of this checkpoint")
    p.add_argument("--resume", help="resume this checkpoint exactly, in its own run folder (the one holding its "
                   "checkpoints/) unless output_dir=... is given, and the same wandb run")
    p.add_argument("--assert-loss-decreases", action="store_true", help="smoke check: finite, decreasing loss")
    _common(p)
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("finetune", help="further-train a pretrain checkpoint with the Q-Score regulariser "
                       "(paper: lr 1e-5, 50 epochs; D seeded from the train set before the first step)")
    p.add_argument("checkpoint")
    _common(p)
    p.set_defaults(func=cmd_finetune)
    p = sub.add_parser("probe", help="Q-Score probe report of a checkpoint (probe.json, samples.csv, figures)")
    p.add_argument("checkpoint")
    p.add_argument("--out", help="report folder (default OUTPUT_DIR/probe)")
    p.add_argument("--split", choices=("val", "train"), default="val",
                   help="samples.csv for the validation (default) or the training set")
    p.add_argument("--config", help="solo-learn config file, for a plain torchvision state dict (data, backbone)")
    _common(p)
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("main", help="the main job: short SimCLR + Q-Score + IFM run, then the probe report")
    _common(p, checkpoint_input=False)
    p.set_defaults(func=cmd_main)
    _register_analysis_commands(sub)
    return parser


#: the analysis subcommands, one module each in solo_qscore/cli/ (each defines ``register(subparsers)``)
ANALYSIS_COMMANDS = ("compare", "explain", "ifm_neighbours", "loss_readout", "miou", "rank", "robust_features")


def _register_analysis_commands(sub) -> None:
    """Add the analysis subcommands; heavy imports stay inside their functions (``--help`` stays fast)."""
    import importlib

    for name in ANALYSIS_COMMANDS:
        importlib.import_module(f"solo_qscore.cli.{name}").register(sub)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can fix (bad config, checkpoint, data, folder): one line and exit code 2."""
    from solo_qscore.adapters.solo_checkpoint import CheckpointError
    from solo_qscore.data import DatasetUnavailableError

    return (ConfigError, CheckpointError, DatasetUnavailableError, FileNotFoundError, PermissionError,
            IsADirectoryError, NotADirectoryError)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like key.sub=value)")
    args.overrides = rest
    if args.debug:  # everything, other packages' warnings included
        return args.func(args)
    from solo_qscore.cli.console import quiet_console

    try:
        with quiet_console():
            return args.func(args)
    except expected_errors() as err:
        kind = "configuration error" if isinstance(err, ConfigError) else "error"
        print(f"solo-qscore: {kind}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("solo-qscore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
