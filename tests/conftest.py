"""Fixtures shared by several test modules."""

from __future__ import annotations

import socket

import pytest

from solo_qscore.data import datasets as ds_mod


@pytest.fixture
def offline_sockets(monkeypatch):
    """Make any download attempt (STL-10, CIFAR-10) fail fast, even if the network hangs instead of refusing."""
    monkeypatch.setattr(ds_mod, "DOWNLOAD_TIMEOUT", 2.0)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2.0)
    yield
    socket.setdefaulttimeout(previous)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the whole module (small problems; a busy CI machine), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
