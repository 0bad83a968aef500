"""``benchmarks/bench_regularization.py``: the table over seeds pairs each arm with the plain arm of the
same seed (same data order)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_regularization.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_regularization", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
