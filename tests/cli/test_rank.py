"""``solo-qscore rank`` (solo_qscore/cli/rank.py) on three real checkpoints: two tiny SimCLR runs and a BYOL run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numba
import pytest
import torch
from conftest import tiny_pretrain

from solo_qscore import ActivationStatistics, discriminative_mask, q_score
from solo_qscore.cli import main
from solo_qscore.cli.rank import METRICS, encoder_scores, qscore_scores, summary_text

torch.set_num_threads(1)
numba.set_num_threads(1)  # the activation kernel's idle workers spin against torch's on a busy 2-core machine

#: scored on more images than the runs trained on; LiDAR on 8 images x 3 views
RANK = ["--samples", "96", "--lidar-images", "8", "--lidar-views", "3", "data.val_subset=48", "probe.max_iter=30"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("rank")
    paths = []
    for name, method, steps in (("a", "simclr", 1), ("b", "simclr", 3), ("c", "byol", 2)):
        summary = tiny_pretrain(root / name, method, f"+max_steps={steps}", "probe.enabled=false")
        paths.append(Path(summary["checkpoint"]))
    return paths


def test_rank_three_checkpoints_from_another_folder(checkpoints, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a user's own folder: the default output is ./rank
    assert main(["rank", *map(str, checkpoints), *RANK]) == 0
    out = elsewhere / "rank"
    printed = capsys.readouterr().out
    assert "Kendall tau" in printed and "ranking:" in printed and "simclr" in printed

    with (out / "ranking.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["checkpoint"] for r in rows] == [str(p) for p in checkpoints]
    assert [r["method"] for r in rows] == ["simclr", "simclr", "byol"]
    for row in rows:
        for key in (*METRICS, "accuracy"):
            assert math.isfinite(float(row[key])), (key, row)
        assert 1.0 <= float(row["rankme"]) <= 512 and 0.0 <= float(row["accuracy"]) <= 1.0
    result = json.loads((out / "ranking.json").read_text())
    assert result["settings"]["samples"] == 96 and result["settings"]["lidar_views"] == 3
    groups = {(c["metric"], c["group"]) for c in result["correlations"]}
    assert {(m, "all") for m in METRICS} <= groups and ("rankme", "simclr") in groups
    assert (out / "ranking.png").stat().st_size > 10_000


def test_the_scores_are_the_core_functions_of_the_features(checkpoints):
    """The row of a checkpoint equals the core API on its features, recomputed here."""
    from solo_qscore.cli.open_run import load_checkpoint, with_overrides
    from solo_qscore.cli.rank import rank_checkpoints
    from solo_qscore.core.label_free import alpha_req, normalized_embedding_std, rankme
    from solo_qscore.data.loaders import make_eval_loader
    from solo_qscore.probe.backbone import find_backbone
    from solo_qscore.probe.features import extract_features

    result = rank_checkpoints([str(p) for p in checkpoints[:2]], samples=64, lidar_images=4, lidar_views=2,
                              probe=False, resamples=0)
    assert result["correlations"] == [] and all(row["accuracy"] is None for row in result["rows"])
    model, view, _ = load_checkpoint(str(checkpoints[1]))
    loader = make_eval_loader(with_overrides(view, ["data.train_subset=64"])["data"], train=True)
    h, _ = extract_features(find_backbone(model), loader, torch.device("cpu"))
    row = result["rows"][1]
    assert row["rankme"] == pytest.approx(rankme(h), rel=1e-5)
    assert row["alpha_req"] == pytest.approx(alpha_req(h), rel=1e-5)
    assert row["embedding_std"] == pytest.approx(normalized_embedding_std(h), rel=1e-5)
    stats = ActivationStatistics(h.shape[1], eps=4.0, sync_on_compute=False)
    stats.update(h)
    D = discriminative_mask(stats.compute(), 50.0, 95.0)
    assert row["num_discriminative"] == int(D.sum())
    assert row["q_mean"] == pytest.approx(float(q_score(h, D, 4.0).double().mean()), rel=1e-6, abs=1e-9)


def test_qscore_scores_on_planted_features():
    """A planted block of features that fire together on half the samples: the fraction with L_i ∩ D is known."""
    g = torch.Generator().manual_seed(0)
    h = torch.rand(200, 64, generator=g) * 0.1
    h[:100, 10] += 50.0  # one strong feature on half of the samples
    scores = qscore_scores(h, eps=4.0, band=(0.0, 100.0))  # D = every feature
    assert scores["num_discriminative"] == 64
    assert scores["nonempty_fraction"] == pytest.approx(0.5)
    assert scores["q_mean"] > 0


def test_encoder_scores_without_views_leave_lidar_undefined():
    h = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)).relu()
    scores = encoder_scores(h, None)
    assert list(scores) == list(METRICS) and math.isnan(scores["lidar"])
    assert math.isfinite(scores["rankme"]) and math.isfinite(scores["alpha_req"])


def test_a_collapsed_encoder_is_scored_not_refused():
    """Every sample the same vector (a collapsed encoder): rank one, no spread, alpha-ReQ undefined (NaN)."""
    h = torch.rand(1, 32, generator=torch.Generator().manual_seed(2)).repeat(64, 1)
    views = h[:8].reshape(4, 2, 32)
    scores = encoder_scores(h, views)
    assert scores["rankme"] == pytest.approx(1.0, abs=1e-3) and scores["embedding_std"] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(scores["alpha_req"])


def test_summary_marks_each_metrics_choice_and_the_labelled_best():
    rows = [{"label": f"run/epoch{i}", "method": "simclr", "accuracy": acc, **{m: float(i) for m in METRICS}}
            for i, acc in enumerate((0.5, 0.7, 0.6))]
    rows[1]["alpha_req"] = 1.0  # closest to 1: alpha-ReQ's choice
    text = summary_text({"rows": rows, "correlations": [], "note": None})
    lines = text.splitlines()
    assert lines[3].count("*") == 6  # the highest value of the six higher-is-better metrics (epoch2)...
    assert lines[2].count("*") == 2  # ...alpha-ReQ's choice and the labelled best (epoch1)
    assert lines[1].count("*") == 0


def test_rank_refuses_a_bad_checkpoint_among_good_ones_before_any_work(checkpoints, tmp_path, capsys):
    bad = tmp_path / "noise.ckpt"
    bad.write_bytes(bytes(range(256)) * 4)
    code = main(["rank", str(checkpoints[0]), str(bad), "--out", str(tmp_path / "out"), *RANK])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "noise.ckpt" in err, err
    assert not (tmp_path / "out" / "ranking.csv").exists()


@pytest.mark.parametrize("argv, named", [
    (["--samples", "1"], "--samples"), (["--lidar-views", "1"], "--lidar-views"), ([], "two or more"),
])
def test_rank_refuses_bad_counts_in_one_line(checkpoints, tmp_path, capsys, argv, named):
    paths = [str(checkpoints[0])] if not argv else [str(checkpoints[0]), str(checkpoints[1])]
    code = main(["rank", *paths, "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and named in err, err


def test_rank_default_folder_is_checked_before_any_checkpoint_is_read(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rank").mkdir()
    (tmp_path / "rank" / "ranking.csv").write_text("old")
    code = main(["rank", str(checkpoints[0]), str(tmp_path / "missing.ckpt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--overwrite" in err and "missing.ckpt" not in err, err
    assert (tmp_path / "rank" / "ranking.csv").read_text() == "old"


def test_rank_on_an_unlabelled_image_folder_ranks_without_the_probe(checkpoints, tmp_path, capsys):
    """A user's own folder of images without class sub-folders (solo-learn's ``data.dataset=custom``): every
    label-free metric, no accuracy, one note saying why."""
    from helpers.image_folders import flat_folder

    folder = flat_folder(tmp_path / "photos", n=24)
    out = tmp_path / "out"
    assert main(["rank", *map(str, checkpoints[:2]), "--out", str(out), "--lidar-images", "6", "--lidar-views", "2",
                 "data.dataset=custom", f"data.root={folder}"]) == 0
    printed = capsys.readouterr().out
    assert "no probe accuracy" in printed and "no class sub-folders" in printed and "Kendall" not in printed
    result = json.loads((out / "ranking.json").read_text())
    assert result["settings"]["samples"] == 24 and result["correlations"] == []
    assert all(row["accuracy"] is None and row["rankme"] >= 1.0 for row in result["rows"])
    assert (out / "ranking.png").is_file()
