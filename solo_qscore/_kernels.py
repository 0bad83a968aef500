"""One-pass activation summary: per-feature counts of L_i, |L_i| and Q_i, with a fused CPU kernel.

The pure-torch path (``_summary_torch``) runs anywhere (GPU, autograd-free analysis) and is the
reference. On CPU, float32/float64 inputs go through a numba kernel that reads each row once
from memory (the row's second pass hits cache), which is several times faster than composing
torch ops that each stream the whole ``[N, r]`` tensor (see ``benchmarks/bench_core.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from solo_qscore.activations import NORM_EPS, row_stats

PARALLEL_MIN_ELEMENTS = 1 << 22  # N * r from which the multi-threaded kernel pays off (~4M values)


class ActivationSummary(NamedTuple):
    counts: Tensor  # LongTensor[r]: number of finite rows with j in L_i
    num_active: Tensor  # LongTensor[N]: |L_i| (0 for non-finite rows)
    q: Tensor  # FloatTensor[N]: Q_i (0 for non-finite rows and empty L_i ∩ D)
    finite: Tensor  # BoolTensor[N]: rows without NaN/Inf


def _summary_torch(h: Tensor, discriminative: Tensor, eps: float) -> ActivationSummary:
    stats = row_stats(h, eps, validate=False)
    finite = torch.isfinite(stats.norm)
    active = (stats.h > stats.threshold[:, None]) & finite[:, None]
    selected = active & discriminative.to(active.device)
    count = selected.sum(1)
    total = torch.where(selected, stats.h, 0.0).sum(1)
    q = (total / count.clamp_min(1) - stats.mean) / stats.norm
    q = torch.where(count > 0, q, torch.zeros_like(q))
    return ActivationSummary(active.sum(0), active.sum(1), q, finite)


try:  # numba is a dependency, but the library keeps working (slower) without it
    import numba

    def _summary_rows(h, disc, eps, norm_eps, counts, num_active, q, finite):  # pragma: no cover
        n, r = h.shape
        nthreads = numba.get_num_threads()
        local = np.zeros((nthreads, r), dtype=np.int64)
        chunk = (n + nthreads - 1) // nthreads
        for t in numba.prange(nthreads):
            lt = local[t]
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                row = h[i]
                s = 0.0
                ss = 0.0
                for j in range(r):
                    s += row[j]
                    ss += row[j] * row[j]
                if not np.isfinite(ss):  # NaN/Inf anywhere in the row
                    finite[i] = False
                    continue
                finite[i] = True
                mean = s / r
                var = max(ss / r - mean * mean, 0.0)
                thr = mean + eps * np.sqrt(var)
                norm = max(np.sqrt(ss), norm_eps)
                total = 0.0
                cnt = 0
                act = 0
                for j in range(r):  # branch-free so it vectorises
                    x = row[j]
                    above = x > thr
                    lt[j] += above
                    act += above
                    sel = above & disc[j]
                    total += x * sel
                    cnt += sel
                num_active[i] = act
                q[i] = (total / cnt - mean) / norm if cnt > 0 else 0.0
        for t in range(nthreads):
            for j in range(r):
                counts[j] += local[t, j]

    # reassociation lets the row loops vectorise; no "nnan"/"ninf", so the finiteness test stays exact
    _FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
    _summary_kernel = numba.njit(parallel=True, fastmath=_FASTMATH)(_summary_rows)
    # a training batch is summarised in well under a millisecond by one thread; waking numba's thread
    # pool for it costs more than it saves, and its spinning workers compete with torch's threads
    _summary_kernel_serial = numba.njit(parallel=False)(_summary_rows)  # strict IEEE: keeps the NaN test
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False


def _summary_numba(h: Tensor, discriminative: Tensor, eps: float) -> ActivationSummary:
    array = np.ascontiguousarray(h.numpy())
    n, r = array.shape
    counts = np.zeros(r, dtype=np.int64)
    num_active = np.zeros(n, dtype=np.int64)
    q = np.zeros(n, dtype=array.dtype)
    finite = np.zeros(n, dtype=np.bool_)
    disc = np.ascontiguousarray(discriminative.cpu().numpy())
    if array.size >= PARALLEL_MIN_ELEMENTS and torch.get_num_threads() > 1:
        # as many numba threads as torch is allowed, so the two pools do not oversubscribe the CPU
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        _summary_kernel(array, disc, float(eps), NORM_EPS, counts, num_active, q, finite)
    else:
        _summary_kernel_serial(array, disc, float(eps), NORM_EPS, counts, num_active, q, finite)
    return ActivationSummary(
        torch.from_numpy(counts), torch.from_numpy(num_active), torch.from_numpy(q), torch.from_numpy(finite)
    )


def activation_summary(h: Tensor, discriminative: Tensor, eps: float = 4.0) -> ActivationSummary:
    """Counts of the highly activating sets and Q of every row in one pass (``h`` detached)."""
    h = h.detach()
    if HAVE_NUMBA and h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64) and h.numel():
        return _summary_numba(h, discriminative, eps)
    return _summary_torch(h, discriminative, eps)
