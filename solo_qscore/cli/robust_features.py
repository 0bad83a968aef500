r"""``solo-qscore robust-features CKPT``: robust vs non-robust features of an encoder (IFM paper §4.3, Fig. 8).

Fits a linear probe :math:`h` on the frozen clean train features, moves every train image towards a
random target label :math:`t` by repeated targeted FGSM steps of size ε until :math:`h \circ f`
predicts :math:`t`, and re-fits the probe on :math:`\mathcal{D}_R = (f(x_\text{adv}), y)` and on
:math:`\mathcal{D}_{NR} = (f(x_\text{adv}), t)`; all three probes (clean :math:`\mathcal{D}` too) are scored on
the clean test set. See :mod:`solo_qscore.analysis.robust_features`. Writes ``robust_features.json`` and
``robust_features.png`` (:func:`solo_qscore.plotting.robust_features.robust_features_figure`) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

from solo_qscore.cli.open_run import add_safety_arguments, check_output_folder, load_checkpoint_with_overrides

__all__ = ["parse_eps", "register", "robust_features", "run"]

PAPER_STEP = 0.01  # the paper's FGSM step ("usually no more than a few FGSM steps with eps = 0.01")


def parse_eps(text: str) -> float:
    """``"0.01"`` or a fraction such as ``"8/255"`` -> float (``argparse`` type; must be > 0)."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--eps {text!r} is not a number or a fraction like 8/255") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--eps must be > 0, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "robust-features",
        help="IFM paper §4.3: linear probes re-fitted on FGSM-built robust (D_R) and non-robust (D_NR) features")
    p.add_argument("checkpoint", help="a checkpoint written by solo-qscore pretrain/main")
    p.add_argument("--eps", type=parse_eps, nargs="+", default=[PAPER_STEP],
                   help="FGSM step size(s) in [0,1] pixel units, e.g. 0.01 8/255 (default: the paper's 0.01)")
    p.add_argument("--max-steps", type=int, default=20, help="give up on an image after this many steps (20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the target labels")
    p.add_argument("--exclude-true-class", action="store_true",
                   help="draw the target t from the classes other than y (the paper draws it from all classes)")
    p.add_argument("--out", help="output folder (default OUTPUT_DIR/robust_features)")
    add_safety_arguments(p)
    p.set_defaults(func=run)


def robust_features(
    model, cfg: dict, eps=(PAPER_STEP,), max_steps: int = 20, seed: int = 0, exclude_true: bool = False,
    batch_size: int = 128,
) -> dict:
    """Run the §4.3 protocol for every step size in ``eps``; returns the JSON-able result dict."""
    import torch

    from solo_qscore.analysis.robust_features import (
        PixelSpaceClassifier,
        attack_loader,
        robust_feature_accuracies,
        sample_targets,
    )
    from solo_qscore.config import ConfigError
    from solo_qscore.data import dataset_stats, make_eval_loaders
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features
    from solo_qscore.probe.linear import fit_linear_probe

    if int(max_steps) < 1:
        raise ConfigError(f"--max-steps must be a positive integer, got {max_steps}")
    if not eps or any(not e > 0 for e in eps):
        raise ConfigError(f"--eps needs one or more step sizes > 0, got {eps}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = find_backbone(model).to(device).eval()
    for p in backbone.parameters():  # only input gradients are needed
        p.requires_grad_(False)
    train_loader, val_loader = make_eval_loaders(cfg["data"], batch_size=batch_size)
    name = train_loader.dataset.name
    mean, std = dataset_stats(name)
    train_h, train_y = extract_features(backbone, train_loader, device)
    val_h, val_y = extract_features(backbone, val_loader, device)
    num_classes = int(max(int(train_y.max()), int(val_y.max())) + 1)
    probe_kwargs = {"max_iter": int(cfg["probe"]["max_iter"]), "weight_decay": float(cfg["probe"]["weight_decay"])}
    probe = fit_linear_probe(train_h, train_y, num_classes=num_classes, **probe_kwargs)
    clean_train_acc = float((probe.predict(train_h) == train_y).double().mean())
    clean_test_acc = float((probe.predict(val_h) == val_y).double().mean())
    classifier = PixelSpaceClassifier(backbone, probe, mean, std).to(device).eval()
    targets = sample_targets(train_y.cpu(), num_classes, torch.Generator().manual_seed(int(seed)),
                             exclude_true=exclude_true)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)

    def pixel_batches():  # the eval loader's normalised tensors back to [0, 1] pixels
        for x, y in train_loader:
            yield (x * s + m).clamp(0, 1), y

    runs = []
    for step in eps:
        print(f"robust-features: FGSM step {step:g} on {len(targets)} train images (at most {max_steps} steps each)",
              file=sys.stderr, flush=True)
        adv = attack_loader(classifier, pixel_batches(), targets, step=float(step), max_steps=int(max_steps),
                            device=device)
        acc = robust_feature_accuracies(adv["features"], adv["labels"], adv["targets"], adv["success"],
                                        val_h.cpu(), val_y.cpu(), num_classes, probe_kwargs=probe_kwargs)
        ok = adv["success"]
        runs.append({
            "eps": float(step),
            "accuracy_D_R": acc["D_R"], "accuracy_D_NR": acc["D_NR"],
            "attack_success_rate": float(ok.double().mean()),
            "num_in_sets": int(ok.sum()),
            "mean_steps_successful": float(adv["steps"][ok].double().mean()) if ok.any() else float("nan"),
            "targets_equal_to_label": float((adv["targets"] == adv["labels"]).double().mean()),
        })
    return {
        "dataset": name, "num_train": int(train_h.shape[0]), "num_test": int(val_h.shape[0]),
        "num_classes": num_classes, "num_features": int(train_h.shape[1]), "chance": 1.0 / num_classes,
        "accuracy_D": clean_test_acc, "probe_train_accuracy": clean_train_acc, "max_steps": int(max_steps),
        "seed": int(seed), "exclude_true_class": bool(exclude_true), "attack_space": "pixels in [0, 1]",
        "runs": runs,
    }


def run(args: argparse.Namespace) -> int:
    from solo_qscore._files import atomic_file
    from solo_qscore.plotting import save_figure_atomic
    from solo_qscore.plotting.robust_features import DPI, robust_features_figure

    model, cfg = load_checkpoint_with_overrides(args.checkpoint, getattr(args, "overrides", []),
                                                trusted=args.trust_checkpoint)
    out = check_output_folder(args.out or Path(cfg["output_dir"]) / "robust_features", args.overwrite,
                              "robust_features.json")
    result = robust_features(model, cfg, eps=args.eps, max_steps=args.max_steps, seed=args.seed,
                             exclude_true=args.exclude_true_class)
    result["checkpoint"] = str(args.checkpoint)
    figure = robust_features_figure(result["accuracy_D"], result["runs"], result["chance"], result["dataset"],
                                    result["num_train"], result["num_test"])
    save_figure_atomic(figure, out / "robust_features.png", dpi=DPI)
    with atomic_file(out / "robust_features.json", binary=False) as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    print(f"figure: {out / 'robust_features.png'}")
    return 0
