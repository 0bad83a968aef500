r"""``solo-qscore compare CKPT_BEFORE CKPT_AFTER``: representations before vs after Q-Score regularisation.

The paper's Fig. A.10 shows that further-training with the Q-Score regulariser raises the mean
number of highly activating features and the mean confidence of the linear probe. For each of the
two checkpoints this command extracts backbone features of the *same* train and validation sets
(the data config of CKPT_BEFORE, plus any ``key=value`` overrides), runs the probe report
(:func:`~solo_qscore.report.build.qscore_report`: :math:`A` and :math:`D` from the train set, a linear probe
fitted on the train set marks each validation sample correct or misclassified), and measures per
validation sample

.. math::

    |L_i| = \#\{ j : \hat h_{ij} > \mu_i + \epsilon \sigma_i \}
    \quad\text{(all } r \text{ features: the paper's "number of highly activating features")},

    |L_i \cap D| \quad\text{(those in the model's own discriminative set)},\qquad
    \mathrm{conf}_i = \max_c \operatorname{softmax}(W h_i + b)_c ,

then their means over all, correctly classified and misclassified samples (``compare.json``), their
distributions (``compare.png``) and the per-class heat maps of the paper's Fig. 3 for both models
(``discriminative_heatmap_before.png`` / ``_after.png``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from solo_qscore.cli.open_run import add_safety_arguments, check_output_folder
from solo_qscore.report.config import ReportConfig

LABELS = ("before", "after")


def register(subparsers) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare",
        help="|L_i| and probe confidence before vs after Q-Score regularisation (paper Fig. A.10)",
    )
    p.add_argument("before", metavar="CKPT_BEFORE", help="checkpoint of `solo-qscore pretrain` (the baseline)")
    p.add_argument("after", metavar="CKPT_AFTER", help="checkpoint further-trained with the regulariser")
    p.add_argument("--out", help="output folder (default: <CKPT_AFTER's output_dir>/compare)")
    add_safety_arguments(p)
    p.set_defaults(func=cmd_compare)


# ------------------------------------------------------------------------------------- pure part
def group_means(values, correct) -> dict[str, float | None]:
    """Means of ``values`` over all, correct and misclassified samples (``None`` for an empty group)."""
    import torch

    values = torch.as_tensor(values).double()
    correct = torch.as_tensor(correct, dtype=torch.bool)
    if values.shape != correct.shape:
        raise ValueError(f"values {tuple(values.shape)} and correct {tuple(correct.shape)} differ in shape")

    def mean(mask) -> float | None:
        return float(values[mask].mean()) if bool(mask.any()) else None

    return {"mean": mean(torch.ones_like(correct)), "mean_correct": mean(correct), "mean_misclassified": mean(~correct)}


def compare_representations(
    before: Sequence,
    after: Sequence,
    config: ReportConfig | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    r"""Compare two models' representations of the same samples (see the module docstring).

    Args:
        before, after: ``(train_h, train_y, val_h, val_y)`` of each model; the labels must agree.
        config: the reports' settings (``eps``, ``band``, the probe; their compression study is skipped).
        class_names: class names for the heat maps.

    Returns:
        ``{"before": {...}, "after": {...}, "change": {...}, ...}`` of JSON-ready values, plus
        ``reports`` (the two probe reports) and ``arrays`` (per-sample ``num_active``,
        ``num_active_discriminative``, ``confidence``, ``correct`` of each model, numpy).
    """
    import torch

    from solo_qscore.core.activations import highly_activating
    from solo_qscore.report.build import qscore_report

    config = (config or ReportConfig()).replace(compression=None)
    eps, band = config.eps, config.band
    if len(before) != 4 or len(after) != 4:
        raise ValueError("before and after must be (train_h, train_y, val_h, val_y) tuples")
    for k, name in ((1, "train_y"), (3, "val_y")):
        if not torch.equal(torch.as_tensor(before[k]).cpu(), torch.as_tensor(after[k]).cpu()):
            raise ValueError(f"the two models were evaluated on different samples ({name} differ)")
    out: dict[str, Any] = {"eps": float(eps), "band": [float(band[0]), float(band[1])],
                           "num_train": int(before[0].shape[0]), "num_val": int(before[2].shape[0])}
    reports, arrays = {}, {}
    for label, (train_h, train_y, val_h, val_y) in zip(LABELS, (before, after)):
        report = qscore_report(train_h, train_y, val_h, val_y, config, class_names=class_names)
        active = highly_activating(val_h, eps).cpu()
        discriminative = torch.as_tensor(report.arrays.discriminative)
        per_sample = {
            "num_active": active.sum(1),
            "num_active_discriminative": (active & discriminative).sum(1),
            "confidence": torch.as_tensor(report.arrays.confidence),
            "q": torch.as_tensor(report.arrays.q),
        }
        correct = torch.as_tensor(report.arrays.correct)
        out[label] = {
            "num_features": report.num_features,
            "num_discriminative": report.num_discriminative,
            "accuracy": report.accuracy,
            "auroc": report.auroc,
            "auprc": report.auprc,
            "num_correct": report.num_correct,
            "num_misclassified": report.num_misclassified,
            "mean_active_train": report.mean_active,
            **{key: group_means(values, correct) for key, values in per_sample.items()},
            "note": report.note,
        }
        reports[label] = report
        arrays[label] = {**{k: v.numpy() for k, v in per_sample.items()}, "correct": correct.numpy()}

    def delta(key: str) -> float | None:
        b, a = out["before"][key]["mean"], out["after"][key]["mean"]
        return None if a is None or b is None else a - b

    out["change"] = {
        "num_active": delta("num_active"),
        "num_active_discriminative": delta("num_active_discriminative"),
        "confidence": delta("confidence"),
        "q": delta("q"),
        "accuracy": out["after"]["accuracy"] - out["before"]["accuracy"],
    }
    out["reports"] = reports
    out["arrays"] = arrays
    return out


# -------------------------------------------------------------------------------------- command
def cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from solo_qscore._files import write_json_atomic
    from solo_qscore.analysis.associations import dataset_class_names
    from solo_qscore.cli.open_run import load_checkpoint
    from solo_qscore.cli.open_run import with_overrides as load_config
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.plotting import regularization_comparison_figure, save_figure_atomic
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features
    from solo_qscore.report.figures import heatmap_figure
    from solo_qscore.report.result import to_jsonable

    model_before, saved_before, ckpt_before = load_checkpoint(args.before, trusted=args.trust_checkpoint)
    model_after, saved_after, ckpt_after = load_checkpoint(args.after, trusted=args.trust_checkpoint)
    out = check_output_folder(args.out or Path(saved_after["output_dir"]) / "compare", args.overwrite, "compare.json")
    cfg = load_config(saved_before, list(getattr(args, "overrides", []) or []))
    notes = []
    for key in ("dataset", "image_size"):
        if saved_after["data"].get(key) != saved_before["data"].get(key):
            notes.append(f"the checkpoints were trained with different data.{key} "
                         f"({saved_before['data'].get(key)!r} vs {saved_after['data'].get(key)!r}); both are "
                         f"evaluated on CKPT_BEFORE's ({cfg['data'].get(key)!r})")
    train_loader, val_loader = make_eval_loaders(cfg["data"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    features = []
    for model in (model_before, model_after):
        backbone = find_backbone(model).to(device)
        train_h, train_y = extract_features(backbone, train_loader, device)
        val_h, val_y = extract_features(backbone, val_loader, device)
        features.append((train_h, train_y, val_h, val_y))
        backbone.cpu()
    config = ReportConfig.from_run(cfg)
    result = compare_representations(features[0], features[1], config,
                                     class_names=dataset_class_names(train_loader.dataset))
    for label, path, saved, ckpt in zip(LABELS, (args.before, args.after), (saved_before, saved_after),
                                        (ckpt_before, ckpt_after)):
        result[label] = {"checkpoint": str(path), "method": saved["method"], "global_step": ckpt.get("global_step"),
                         "regularised": bool(saved["qscore"]["enabled"]), **result[label]}
    result["data"] = {k: cfg["data"].get(k) for k in ("dataset", "image_size", "train_subset", "val_subset")}
    result["data"]["loaded"] = getattr(train_loader.dataset, "name", None)
    result["note"] = "; ".join(notes) if notes else None

    out.mkdir(parents=True, exist_ok=True)
    payload = to_jsonable({k: v for k, v in result.items() if k not in ("reports", "arrays")})
    path = write_json_atomic(payload, out / "compare.json")
    title = (f"before: {saved_before['name']} (step {ckpt_before.get('global_step')}) vs after: "
             f"{saved_after['name']} (step {ckpt_after.get('global_step')}); {result['num_val']} validation samples")
    save_figure_atomic(regularization_comparison_figure(result["arrays"]["before"], result["arrays"]["after"],
                                                        LABELS, eps=config.eps, title=title), out / "compare.png")
    for label in LABELS:
        fig = heatmap_figure(result["reports"][label], title_prefix=f"{label}: ")
        save_figure_atomic(fig, out / f"discriminative_heatmap_{label}.png")
    summary = {label: {k: payload[label][k] for k in ("accuracy", "num_active", "confidence")} for label in LABELS}
    summary["change"] = payload["change"]
    print(json.dumps(summary, indent=2))
    print(f"comparison: {path} (+ compare.png, discriminative_heatmap_before.png, discriminative_heatmap_after.png)")
    return 0
