"""wandb, as its users expect: what a real offline run writes into its record file.

A tiny ``solo-qscore pretrain`` (SimCLR + Q-Score, wandb offline, no account) and a tiny
``pytorch_lightning`` fit with the callbacks; then the offline run's ``run-<id>.wandb`` is read back
(wandb ``Record`` protobufs in LevelDB-log framing) and checked: the resolved config, solo's
validation metrics, our ``qscore/*`` and ``probe/*`` keys, media, the native PR/ROC panels, the
report artifact, each scalar once per step, and ``--resume`` continuing the same run id.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

wandb = pytest.importorskip("wandb")

# ------------------------------------------------------------------------------- record file reader
HEADER = 7  # b":W&B", magic 0xBEE1 (little endian), version
BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
BOOKKEEPING = {"_step", "_runtime", "_timestamp", "trainer/global_step"}


def read_records(path: Path) -> list[Any]:
    """The ``wandb_internal_pb2.Record`` messages of an offline run's ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb record file"
    payloads, pending, pos = [], b"", HEADER
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # block trailer: zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 or pos + CHUNK_HEADER + length > len(data):  # end of what was written (so far)
            break
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"bad chunk crc at {pos}"
        pos += CHUNK_HEADER + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
            pending = b""
        else:
            raise AssertionError(f"unknown chunk type {kind} at {pos}")
    records = []
    for raw in payloads:
        record = pb.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


class RunRecord:
    """What the tests look at in a record file: run id, config, history rows, chart panels, artifacts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records = read_records(self.path)
        kinds = [r.WhichOneof("record_type") for r in self.records]
        self.run_id = next((r.run.run_id for r, k in zip(self.records, kinds) if k == "run"), None)
        self.config: dict[str, Any] = {}
        self.panels: dict[str, dict] = {}
        self.rows: list[dict[str, Any]] = []  # flat keys -> value; media keys -> {field: value}
        self.artifacts = [r.artifact for r, k in zip(self.records, kinds) if k == "artifact"]
        for record, kind in zip(self.records, kinds):
            if kind == "config":
                for item in record.config.update:
                    if item.key:
                        self.config[item.key] = json.loads(item.value_json)
                    elif list(item.nested_key[:2]) == ["_wandb", "visualize"]:
                        self.panels[item.nested_key[2]] = json.loads(item.value_json)
            elif kind == "history":
                row: dict[str, Any] = {}
                for item in record.history.item:
                    keys = list(item.nested_key) or [item.key]
                    value = json.loads(item.value_json)
                    if len(keys) == 1:
                        row[keys[0]] = value
                    else:
                        row.setdefault(keys[0], {})["/".join(keys[1:])] = value
                self.rows.append(row)
        self.exited = "exit" in kinds

    def keys(self) -> set[str]:
        return {k for row in self.rows for k in row}

    def scalar_keys(self, row: dict[str, Any]) -> list[str]:
        return [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def record_files(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def finished_record(path: Path, timeout: float = 600.0) -> RunRecord:
    """The record of a finished run: ``run.finish()`` returns once the run has exited, but wandb's
    service may write the last records (the exit record among them) a moment later (returns as soon as
    they are there: the long deadline only matters on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        run = RunRecord(path)
        if run.exited or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


# ----------------------------------------------------------------------------------- the real runs
@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """Offline, silent, and no account: no API key, empty wandb config/cache folders, no netrc."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        mp.setenv("NETRC", str(home / "netrc"))  # does not exist
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield home
        torch.set_num_threads(threads)


#: validation every 3 training batches (an epoch has 8): solo's val_acc1/val_loss at step 3, where
#: max_steps=3 stops the first run; last.ckpt (written at that validation) resumes mid-epoch
RUN = ("qscore.enabled=true", "wandb.enabled=true", "+val_check_interval=3")


@pytest.fixture(scope="module")
def first_run(wandb_env, tmp_path_factory):
    from conftest import tiny_pretrain

    out = tmp_path_factory.mktemp("runs") / "simclr"
    # the training metrics of step 3 written (Lightning writes them every log_every_n_steps steps)
    summary = tiny_pretrain(out, "simclr", *RUN, "++wandb.offline=true", "+max_steps=3", "++log_every_n_steps=3")
    files = record_files(out)
    assert len(files) == 1, files
    return out, summary, finished_record(files[0])


def test_config_metrics_media_and_report_artifact(first_run):
    out, summary, run = first_run
    assert summary["global_step"] == 3
    assert run.exited, "the run was not finished when pretrain returned"
    assert run.path.name == f"run-{run.run_id}.wandb"

    # 1. the resolved config: solo's sections and ours
    for section in ("method", "backbone", "optimizer", "qscore", "ifm", "lasso", "probe"):
        assert section in run.config, (section, sorted(run.config))
    assert run.config["method"] == "simclr" and run.config["backbone"]["name"] == "resnet18"
    assert run.config["optimizer"]["batch_size"] == 8 and run.config["qscore"]["enabled"] is True
    assert run.config["probe"]["max_iter"] == 20

    # 2. solo's validation metrics, our statistics and probe scalars
    keys = run.keys()
    assert {"val_acc1", "val_loss"} <= keys, sorted(keys)
    assert {"qscore/num_discriminative", "qscore/mean_active"} <= keys, sorted(keys)
    # the regulariser's two terms (eq. 3): their values and how hard each pushes on h (issue 24)
    terms = {f"train_qscore_{part}_step" for part in ("q_term", "l1_term", "q_grad_norm", "l1_grad_norm", "grad_ratio")}
    assert terms <= keys, sorted(keys)
    assert {"probe/auroc", "probe/auprc", "probe/accuracy", "probe/rankme"} <= keys, sorted(keys)

    # media of the statistics callback and of the probe report
    images = {k for row in run.rows for k, v in row.items() if isinstance(v, dict) and v.get("_type") == "image-file"}
    assert {"qscore/activation_frequency", "probe/pr_curve", "probe/roc_curve"} <= images, sorted(images)

    # 5. PR and ROC as wandb's native curve panels (the preset of wandb.plot.pr_curve / roc_curve)
    for key, (x, y) in (("probe/pr_curve_chart", ("recall", "precision")), ("probe/roc_curve_chart", ("fpr", "tpr"))):
        panel = run.panels[key]["panel_config"]
        assert panel["panelDefId"] == "wandb/area-under-curve/v0"
        assert panel["fieldSettings"] == {"x": x, "y": y, "class": "class"}
        assert any(isinstance(row.get(f"{key}_table"), dict) for row in run.rows), key

    # 4. the report folder as an artifact, after write_report
    reports = [a for a in run.artifacts if a.type == "qscore-report"]
    assert len(reports) == 1, [(a.name, a.type) for a in run.artifacts]
    assert reports[0].name == f"qscore-report-{run.run_id}"
    files = {entry.path for entry in reports[0].manifest.contents}
    written = {p.name for p in (out / "probe").iterdir()}
    assert {"probe.json", "samples.csv", "pr_curve.png", "roc_curve.png"} <= files == written, (files, written)


def test_each_scalar_once_per_step(first_run):
    _, _, run = first_run
    seen: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for row in run.rows:
        step = row["trainer/global_step"]
        for key in run.scalar_keys(row):
            if key not in BOOKKEEPING:
                seen[step, key].append(row[key])
    repeated = {k: v for k, v in seen.items() if len(v) > 1}
    # Lightning adds "epoch" to every log_metrics call (train and val epoch ends share a step): same value
    assert all(key == "epoch" and len(set(values)) == 1 for (_, key), values in repeated.items()), repeated
    probe_steps = {step for (step, key) in seen if key == "probe/auroc"}
    assert probe_steps == {3}, probe_steps


def test_resume_continues_the_same_wandb_run(first_run, wandb_env):
    from conftest import tiny_config

    from solo_qscore.train import _wandb_id, pretrain

    out, _, first = first_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    assert _wandb_id(str(checkpoint)) == first.run_id
    # offline is the default: no wandb.offline override this time
    cfg = tiny_config("simclr", f"output_dir={out}", "probe.max_iter=20", *RUN, "+max_steps=6")
    summary = pretrain(cfg, resume=str(checkpoint))
    assert summary["global_step"] == 6
    new = [p for p in record_files(out) if p != first.path]
    assert len(new) == 1, record_files(out)
    second = finished_record(new[0])
    assert second.run_id == first.run_id and new[0].name == first.path.name
    assert second.exited
    steps = [row["trainer/global_step"] for row in second.rows]
    assert min(steps) >= 3 and max(steps) == 6, steps
    assert {"val_acc1", "probe/auroc"} <= second.keys()
    assert [a.name for a in second.artifacts if a.type == "qscore-report"] == [f"qscore-report-{first.run_id}"]
    assert _wandb_id(str(checkpoint)) == first.run_id  # the resumed run's checkpoint names it too


# --------------------------------------------------------------------- the other Lightning namespace
def test_callback_media_under_pytorch_lightning(wandb_env, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import WandbLogger
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from solo_qscore.adapters.lightning import wandb_loggers
    from solo_qscore.callbacks import ActivationStatisticsCallback, QScoreProbeCallback
    from solo_qscore.data import make_eval_loaders
    from solo_qscore.report.config import ReportConfig

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(64, 10)
            self.register_buffer("qscore_discriminative", torch.zeros(64, dtype=torch.bool))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.head(self.backbone(x)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    train, val = make_eval_loaders({"dataset": "fashion_mnist", "root": "datasets", "fallback": None,
                                    "image_size": 32, "train_subset": 128, "val_subset": 64,
                                    "batch_size": 128, "num_workers": 0})
    (tx, ty), (vx, vy) = next(iter(train)), next(iter(val))
    pl.seed_everything(0)
    logger = WandbLogger(project="solo-qscore-test", save_dir=str(tmp_path), offline=True)
    probe = QScoreProbeCallback(DataLoader(TensorDataset(tx, ty), batch_size=128),
                                DataLoader(TensorDataset(vx, vy), batch_size=64),
                                config=ReportConfig(eps=2.0, compression=None), out_dir=str(tmp_path / "probe"))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=logger,
                         callbacks=[ActivationStatisticsCallback(eps=2.0), probe], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    assert wandb_loggers(trainer) == [logger]
    try:
        trainer.fit(Tiny(), DataLoader(TensorDataset(tx, ty), batch_size=32))
        run_id = logger.experiment.id
    finally:
        logger.experiment.finish()
    files = record_files(tmp_path)
    assert len(files) == 1, files
    run = finished_record(files[0])
    assert run.run_id == run_id
    images = {k for row in run.rows for k, v in row.items() if isinstance(v, dict) and v.get("_type") == "image-file"}
    assert {"qscore/activation_frequency", "probe/pr_curve", "probe/q_histogram"} <= images, sorted(images)
    assert "probe/roc_curve_chart" in run.panels and "qscore/num_discriminative" in run.keys()
    assert [a.type for a in run.artifacts if a.name == f"qscore-report-{run_id}"] == ["qscore-report"]
