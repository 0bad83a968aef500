"""``benchmarks/bench_ifm_trifeature.py --resume``: the runs already in its JSON are reused (a session that
ended mid-benchmark continues), and only when the JSON was written with the same settings. The paper's
readout (``--readout-aug``: features of seeded augmented views) and backbone (``--net resnet18``) run."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ifm_trifeature", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sane(runs: list[dict]) -> None:
    for r in runs:
        assert set(r["acc"]) == {"color", "shape", "texture"}
        assert all(math.isfinite(a) and 0.0 <= a <= 100.0 for a in r["acc"].values()), r["acc"]
        assert all(math.isfinite(x) for x in r["loss"])


@pytest.mark.usefixtures("one_torch_thread")
def test_readout_aug_views_are_seeded_augmented_and_leave_the_rng_alone(tmp_path):
    bench = _bench()
    args = argparse.Namespace(root=str(tmp_path), train_samples=6, test_samples=4, data_seed=0,
                              paper_aug=True, readout_aug=True)
    train, test = bench.load_data(args)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    xtr, xte = bench.readout_images(train, test, args)
    assert torch.equal(torch.get_rng_state(), state)  # the runs' own seeding is untouched
    again = bench.readout_images(train, test, args)  # what the next arm / seed / method reads out
    assert torch.equal(xtr, again[0]) and torch.equal(xte, again[1])
    assert xtr.shape == (6, 3, 32, 32) and xte.shape == (4, 3, 32, 32)
    mean, std = bench.dataset_stats("trifeature")
    clean = torch.stack([bench.eval_transform(32, mean, std)(train[i][0]) for i in range(len(train))])
    assert not torch.allclose(xtr, clean)  # augmented views, not the clean images
    assert bench.readout_images(train, test, argparse.Namespace(**{**vars(args), "readout_aug": False})) is None


def test_readout_aug_smoke_run_records_it(tmp_path):
    done = _run(tmp_path, "--seeds", "0", "--readout-aug", "--paper-aug")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "readout_aug=True" in done.stdout
    saved = json.loads((tmp_path / "runs.json").read_text())
    assert saved["args"]["readout_aug"] is True and saved["args"]["net"] == "small"
    assert saved["args"]["batch_size"] == 32
    assert [(r["seed"], r["epsilon"]) for r in saved["runs"]] == [(0, 0.0), (0, 0.1)]
    _sane(saved["runs"] + [{**r, "loss": []} for r in saved["init"]])


@pytest.mark.usefixtures("one_torch_thread")
def test_resnet18_has_the_cifar_stem():
    net = _bench().resnet18_cifar()
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity) and net.features_dim == 512
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 512)


def test_resnet18_smoke_run_records_net_and_batch(tmp_path):
    done = _run(tmp_path, "--seeds", "0", "--no-init", "--net", "resnet18", "--train-samples", "32",
                "--batch-size", "16")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backbone resnet18 11.17M params, r=512" in done.stdout
    saved = json.loads((tmp_path / "runs.json").read_text())
    assert saved["args"]["net"] == "resnet18" and saved["args"]["batch_size"] == 16
    assert saved["args"]["readout_aug"] is False
    assert len(saved["runs"]) == 2 and all(len(r["loss"]) == 1 for r in saved["runs"])
    _sane(saved["runs"])


def test_resume_accepts_runs_saved_before_net_and_readout_aug_existed(tmp_path):
    bench = _bench()
    path = tmp_path / "old.json"
    args = argparse.Namespace(json=str(path), resume=True, taus=[0.5], seeds=[0], net="small", readout_aug=False)
    run = {"tau": 0.5, "epsilon": 0.0, "seed": 0, "acc": {}}
    path.write_text(json.dumps({"args": {"json": "x", "taus": [0.5], "seeds": [0]}, "init": [], "runs": [run]}))
    assert bench.finished_runs(args) == ([], [run])  # the defaults are what those runs had
    with pytest.raises(SystemExit, match="other settings \\(readout_aug\\)"):
        bench.finished_runs(argparse.Namespace(**{**vars(args), "readout_aug": True}))
