"""Fixtures of the report tests: planted features and their report, computed once per session."""

from __future__ import annotations

import numba
import pytest
import torch
from helpers.planted import planted_features

from solo_qscore.report.build import qscore_report
from solo_qscore.report.config import CompressionSettings, ReportConfig

torch.set_num_threads(1)
# one thread for the numba kernel of the activation statistics too: its idle workers otherwise spin
# against torch's on a busy 2-core machine (a 1-epoch tiny run took 6x the CPU time)
numba.set_num_threads(1)

#: the planted report's settings: a small compression study (3 sizes, 3 seeds)
PLANTED = ReportConfig(compression=CompressionSettings((0.25, 0.5, 1.0), num_random_seeds=3), batch_size=500)


@pytest.fixture(scope="session")
def data():
    """Planted features (tests/helpers/planted.py): 1200 train and 600 validation samples, r = 128, 8 classes."""
    train_h, train_y = planted_features(1200, seed=0)
    val_h, val_y = planted_features(600, seed=1)
    return train_h, train_y, val_h, val_y


@pytest.fixture(scope="session")
def report(data):
    """The report of the planted features, with a small compression study (:data:`PLANTED`)."""
    return qscore_report(*data, PLANTED)
