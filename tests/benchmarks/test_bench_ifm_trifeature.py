"""``benchmarks/bench_ifm_trifeature.py --resume``: the runs already in its JSON are reused (a session that
ended mid-benchmark continues), and only when the JSON was written with the same settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_ifm_trifeature.py"
TINY = ["--train-samples", "64", "--test-samples", "32", "--epochs", "1", "--batch-size", "32",
        "--taus", "0.5", "--widths", "4", "8", "8", "8", "--threads", "1"]


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *TINY, "--json", str(tmp_path / "runs.json"),
                           "--png", str(tmp_path / "ifm.png"), *extra],
                          cwd=REPO, capture_output=True, text=True)  # no timeout: a busy machine is slow


def test_resume_reuses_finished_runs_and_runs_the_rest(tmp_path):
    first = _run(tmp_path, "--seeds", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads((tmp_path / "runs.json").read_text())
    assert [(r["seed"], r["epsilon"]) for r in saved["runs"]] == [(0, 0.0), (0, 0.1)]

    # what a session that stopped after the first run leaves: the JSON with one run
    saved["runs"] = saved["runs"][:1]
    (tmp_path / "runs.json").write_text(json.dumps(saved))
    second = _run(tmp_path, "--seeds", "0", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 runs and 1 random-init readouts reused" in second.stdout
    resumed = json.loads((tmp_path / "runs.json").read_text())
    assert resumed["runs"][0] == saved["runs"][0]  # reused as it was
    assert [(r["seed"], r["epsilon"]) for r in resumed["runs"]] == [(0, 0.0), (0, 0.1)]
    assert resumed["init"] == saved["init"]

    other = _run(tmp_path, "--seeds", "0", "1", "--resume")  # other settings: refused, nothing overwritten
    assert other.returncode != 0 and "other settings (seeds)" in other.stderr
    assert json.loads((tmp_path / "runs.json").read_text()) == resumed
