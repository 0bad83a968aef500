"""``benchmarks/bench_regularization.py``: the table over seeds pairs each arm with the plain arm of the
same seed (same data order); the two regimes (short, the paper's), the per-arm resume and the terms of R."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_regularization.py"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench():
    return _load(SCRIPT, "bench_regularization")


def _row(arm: str, seed: int, acc: float) -> dict:
    return {"arm": arm, "seed": seed, "accuracy": acc, "mean_active": 20.0 + seed, "auroc": 0.5, "auprc": 0.8}


def test_table_pairs_arms_by_seed():
    bench = _bench()
    rows = [{"arm": "before (checkpoint)", "accuracy": 0.85, "mean_active": 21.0, "auroc": 0.6, "auprc": 0.9},
            _row("plain", 0, 0.80), _row("qscore 0.0001", 0, 0.81),
            _row("plain", 1, 0.70), _row("qscore 0.0001", 1, 0.69)]
    lines = bench.table({"simclr": rows}).splitlines()
    assert len(lines) == 2 + 3  # header, rule, one line per arm
    before, plain, qscore = lines[2:]
    assert "| before (checkpoint) | — | 85.00 |" in before and "90.83 -> 92.31" in before
    assert "| plain | 0,1 | 75.00 ± 7.07 |  |" in plain
    # +1 point on seed 0, -1 point on seed 1: mean 0, not the +6 of comparing with the other seed's plain arm
    assert "| qscore 0.0001 | 0,1 | 75.00 ± 8.49 | +0.00 (+1.00, -1.00) | 20.50 ± 0.71 |" in qscore


def test_arm_and_seed_options():
    bench = _bench()
    args = bench.parse_args(["--lambdas", "1e-4", "--lasso", "1e-4", "--seeds", "0", "2"])
    assert [name for name, _ in bench.arms(args)] == ["plain", "qscore 0.0001", "lasso 0.0001"]
    assert args.seeds == [0, 2] and args.checkpoint_prefix == "runs/bench_qscore_"


def test_the_short_regime_trains_as_before_and_the_paper_regime_as_finetune():
    """Issue 24 item 2: ``--regime short`` (the default) keeps the earlier schedule and folders; ``--regime paper``
    is `solo-qscore finetune`'s schedule (solo-learn's LARS, warmup_cosine, lr 1e-5) for ``--epochs``."""
    from solo_qscore.cli.app import FINETUNE_OVERRIDES

    bench = _bench()
    short = bench.parse_args([])
    assert short.regime == "short" and short.epochs is None and short.run_prefix == "runs/bench_reg_"
    assert bench.regime_overrides(short) == ["max_steps=16", "max_epochs=1000", "scheduler.warmup_epochs=0",
                                             "scheduler.name=warmup_cosine"]
    paper = bench.parse_args(["--regime", "paper"])
    assert paper.epochs == 50 and paper.run_prefix == "runs/bench_reg_paper_"
    overrides = bench.regime_overrides(paper)
    assert "optimizer.lr=1.0e-5" in FINETUNE_OVERRIDES and "optimizer.lr=1.0e-5" in overrides
    assert {"optimizer.name=lars", "scheduler.name=warmup_cosine", "max_epochs=50", "max_steps=-1"} <= set(overrides)
    assert not any(o.startswith("qscore.enabled") for o in overrides)  # each arm sets it


def test_arm_state_resumes_only_an_unfinished_arm_of_the_same_settings(tmp_path):
    bench = _bench()
    args = bench.parse_args(["--regime", "paper", "--epochs", "3"])
    settings = bench.arm_settings(["qscore.enabled=false", "lasso.enabled=false"], args, seed=1)
    assert bench.arm_state(tmp_path, settings, rerun=False) == "fresh"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    progress = tmp_path / "bench_arm_progress.json"
    progress.write_text(json.dumps({"settings": settings, "epochs": 1, "steps": 23, "seconds": 5.0}))
    assert bench.arm_state(tmp_path, settings, rerun=False) == "resume"
    assert bench.arm_state(tmp_path, settings, rerun=True) == "fresh"
    assert bench.arm_state(tmp_path, {**settings, "epochs": 4}, rerun=False) == "fresh"  # other settings: restart
    progress.write_text(json.dumps({"settings": settings, "epochs": 3, "steps": 69, "seconds": 5.0}))
    assert bench.arm_state(tmp_path, settings, rerun=False) == "fresh"  # finished, but its record is missing
    (tmp_path / "bench_arm.json").write_text(json.dumps({"arm": "plain", "regime": "paper", "epochs": 3}))
    assert bench.arm_state(tmp_path, settings, rerun=False) == "done"
    # a finished arm of the other regime (or a record from before --regime: short) is never reused as this one
    with pytest.raises(SystemExit, match="--regime short"):
        bench.check_reused({"arm": "plain"}, args, tmp_path / "bench_arm.json")
    with pytest.raises(SystemExit, match="--epochs 50"):
        bench.check_reused({"arm": "plain", "regime": "paper", "epochs": 50}, args, tmp_path / "bench_arm.json")


def test_arms_of_unequal_steps_are_found():
    """The comparison holds at the same steps per arm: a method whose arms differ (an arm reused from another
    run, a stop by time) is named, and ``main`` then exits 1 after its table."""
    bench = _bench()
    before = {"arm": "before (checkpoint)", "accuracy": 0.8}
    same = [before, {"arm": "plain", "seed": 0, "steps": 23}, {"arm": "qscore 0.0001", "seed": 0, "steps": 23}]
    other = [before, {"arm": "plain", "seed": 0, "steps": 1150}, {"arm": "plain", "seed": 1, "steps": 23}]
    assert bench.unequal_steps({"simclr": same}) == {}
    assert bench.unequal_steps({"simclr": same, "byol": other}) == {"byol": [23, 1150]}


def test_paper_regime_smoke_every_arm_same_steps_and_the_terms_of_r(tmp_path, capsys, one_torch_thread):
    """Issue 24 item 2, run for real at ``--smoke`` sizes (64 images, batch 32: 2 steps an epoch): every arm
    records its regime, lr and steps, all arms train the same steps, and the Q-Score arm the means of the
    two terms of R and of their gradient norms (sampled on Lightning's logging steps, here every step)."""
    pred = _load(SCRIPT.parent / "bench_qscore_predicts.py", "bench_qscore_predicts")
    assert pred.main(["--smoke", "--epochs", "1", "--methods", "simclr", "--threads", "1", "--num-workers", "0",
                      "--eps", "2", "--compression-eps", "0", "--bootstrap", "0",
                      "--run-prefix", str(tmp_path / "pre_"), "--png-prefix", str(tmp_path / "p")]) == 0
    bench = _bench()
    assert bench.main(["--regime", "paper", "--epochs", "1", "--smoke", "--methods", "simclr", "--lambdas", "1e-4",
                       "--lasso", "1e-4", "--eps", "2", "--threads", "1", "--num-workers", "0",
                       "--checkpoint-prefix", str(tmp_path / "pre_"), "--run-prefix", str(tmp_path / "reg_")]) == 0
    rows = {r["arm"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("reg_simclr_*/bench_arm.json"))}
    assert sorted(rows) == ["lasso 0.0001", "plain", "qscore 0.0001"]
    for row in rows.values():
        assert row["regime"] == "paper" and row["epochs"] == 1 and row["steps"] == 2
        # finetune's lr 1e-5, scaled by solo-learn's batch_size / 256 (batch 32)
        assert row["lr_config"] == 1e-5 and row["lr"] == pytest.approx(1e-5 * 32 / 256)
        assert row["optimizer"] == "lars"
        assert row["scheduler"] == {"name": "warmup_cosine", "warmup_epochs": 5, "warmup_start_lr": 1e-6,
                                    "min_lr": 0.0, "interval": "step"}
    terms = rows["qscore 0.0001"]["term_means"]
    assert set(terms) == set(bench.TERM_KEYS) - {"train_lasso"}
    assert all(math.isfinite(v) for v in terms.values()) and terms["train_qscore_l1_term"] > 0
    assert terms["train_qscore_l1_grad_norm"] > 0 and terms["train_qscore_grad_ratio"] >= 0
    assert rows["qscore 0.0001"]["term_samples"] == {k: 2 for k in terms}  # both steps logged
    assert set(rows["lasso 0.0001"]["term_means"]) == {"train_lasso"} and rows["plain"]["term_means"] == {}
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("| simclr | qscore 0.0001 |"))
    assert line.endswith(f"| {terms['train_qscore_grad_ratio']:.3g} |")  # the Q/L1 gradient ratio column
    assert "regime paper, 1 epochs, steps per arm 2, lr 1.25e-06" in out
