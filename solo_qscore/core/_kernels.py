"""One-pass activation summary: per-feature counts of L_i, |L_i| and Q_i, with a fused CPU kernel.

The pure-torch path (``_summary_torch``) runs anywhere (GPU, autograd-free analysis) and is the
reference. On CPU, when numba is installed (the optional extra ``solo-qscore[fast]``), float32/float64
inputs go through a numba kernel that reads each row once from memory (its further passes hit cache),
which is several times faster than composing torch ops that each stream the whole ``[N, r]`` tensor
(``benchmarks/bench_core.py``; measurements and the decision in docs/DEPENDENCIES.md).

Both paths work on the row rescaled by a power of two, ``y_i = 2^-e_i h_i`` (exact; see
:mod:`solo_qscore.core.activations`), and take its variance in two passes (mean, then the mean squared
deviation from it): a one-pass ``E[y^2] - E[y]^2`` cancels catastrophically when the row's mean is
large against its spread. The torch path computes in the input's float type, centred on the row's
float mean so that the comparison with the threshold is exact near it. The kernel for float64 rows
accumulates in float64. The kernel for float32 rows does the same in float32 SIMD (16 lanes; the
mean, variance, threshold and Q are formed in float64 from the float32 partial sums): it reads the
row once from memory (its sum), then in cache takes the squared deviations from the float mean and
tests each value against the threshold, rounded down to float32, so the last pass compares raw
values. The row is rescaled by ``2^-e_i`` only where its float32 squares would overflow or underflow
(tests/test_numerics.py pins the sets to those of a float64 reference).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from solo_qscore.core.activations import NORM_EPS, check_eps, row_stats

PARALLEL_MIN_ELEMENTS = 1 << 22  # N * r from which the multi-threaded kernel pays off (~4M values)
TORCH_CHUNK_ELEMENTS = 1 << 24  # rows per step of the torch path: bounds its [rows, r] temporaries (64 MB)
F32_MAX_FEATURES = 1 << 24  # float32 rows narrower than this take the float32 kernel (exact float32 counts)


class ActivationSummary(NamedTuple):
    counts: Tensor  # LongTensor[r]: number of finite rows with j in L_i
    num_active: Tensor  # LongTensor[N]: |L_i| (0 for non-finite rows)
    q: Tensor  # FloatTensor[N]: Q_i (0 for non-finite rows and empty L_i ∩ D)
    finite: Tensor  # BoolTensor[N]: rows without NaN/Inf


def _summary_torch_rows(h: Tensor, discriminative: Tensor, eps: float) -> ActivationSummary:
    stats = row_stats(h, eps, validate=False)
    active = (stats.centred > stats.threshold[:, None]) & stats.finite[:, None]
    selected = active & discriminative.to(active.device)
    count = selected.sum(1)
    total = torch.where(selected, stats.centred, 0.0).sum(1)  # sum of y_ij - c_i over L_i ∩ D
    q = (total / count.clamp_min(1) - stats.offset) / stats.norm
    q = torch.where(count > 0, q, torch.zeros_like(q))
    return ActivationSummary(active.sum(0), active.sum(1), q, stats.finite)


def _summary_torch(h: Tensor, discriminative: Tensor, eps: float) -> ActivationSummary:
    rows = max(1, TORCH_CHUNK_ELEMENTS // max(1, h.shape[1]))
    if h.shape[0] <= rows:
        return _summary_torch_rows(h, discriminative, eps)
    parts = [_summary_torch_rows(chunk, discriminative, eps) for chunk in h.split(rows)]
    counts = torch.stack([p.counts for p in parts]).sum(0)
    return ActivationSummary(counts, *(torch.cat(field) for field in zip(*(p[1:] for p in parts))))


try:  # numba is optional (extra [fast]); without it every input takes the torch path
    import math

    import numba

    # exponent range of the row scale 2^-e: normal float64 powers of two
    _EXP_MIN, _EXP_MAX = -1022, 1022
    # a row with L1 norm below 2^-960 (float64 inputs only) is summed again after rescaling,
    # so that partial sums never reach the subnormal range
    _EXP_RESUM = -960

    def _summary_rows(h, disc, eps, norm_eps, counts, num_active, q, finite):  # pragma: no cover
        n, r = h.shape
        nthreads = numba.get_num_threads()
        local = np.zeros((nthreads, r), dtype=np.int64)
        chunk = (n + nthreads - 1) // nthreads
        for t in numba.prange(nthreads):
            lt = local[t]
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                row = h[i]
                # pass 1 (from memory): sum and L1 norm, in float64
                s = 0.0
                l1 = 0.0
                for j in range(r):
                    x = row[j]
                    s += x
                    l1 += abs(x)
                resum = False
                if not np.isfinite(l1):  # NaN/Inf in the row, or a float64 row whose L1 norm overflows
                    ok = True
                    l1 = 0.0
                    for j in range(r):
                        x = row[j]
                        if not np.isfinite(x):
                            ok = False
                            break
                        l1 = max(l1, abs(x))
                    if not ok:
                        finite[i] = False
                        continue
                    resum = True
                finite[i] = True
                # y = x * 2^-e, exact; sum(|y|) < 1, so no square below overflows or underflows
                e = min(max(math.frexp(l1)[1], _EXP_MIN), _EXP_MAX)
                scale = math.ldexp(1.0, -e)
                if resum or e < _EXP_RESUM:
                    s = 0.0
                    for j in range(r):
                        s += row[j] * scale
                else:
                    s *= scale  # exact: a power of two
                mean = s / r
                # pass 2 (from cache): moments of d = y - mean, not E[y^2] - mean^2; their mean `offset`
                # is the rounding of `mean` (a constant row gets var = 0 exactly, so an empty L_i)
                so = 0.0
                ss = 0.0
                for j in range(r):
                    d = row[j] * scale - mean
                    so += d
                    ss += d * d
                offset = so / r
                var = max(ss / r - offset * offset, 0.0)
                thr = offset + eps * np.sqrt(var)  # j in L_i iff y_j - mean > thr
                sumsq = max(ss + 2.0 * mean * so + r * mean * mean, 0.0)  # sum of y^2
                norm = max(np.sqrt(sumsq), norm_eps * scale)  # ||y|| = 2^-e ||h||, clamped: docs/CONVENTIONS.md §1
                # pass 3 (from cache): L_i, its counts and Q_i; branch-free so it vectorises
                total = 0.0
                cnt = 0
                act = 0
                for j in range(r):
                    d = row[j] * scale - mean
                    above = d > thr
                    lt[j] += above
                    act += above
                    sel = above & disc[j]
                    total += (d - offset) * sel
                    cnt += sel
                num_active[i] = act
                q[i] = total / cnt / norm if cnt > 0 else 0.0
        for t in range(nthreads):
            for j in range(r):
                counts[j] += local[t, j]

    # float32 rows: the bits of |x| as int32 (NaN and Inf compare above every finite value); the
    # exponent range of the fallback's row scale 2^-e (normal float32 powers of two, so flushing
    # subnormals to zero cannot turn the scale into 0); the smallest sum of squared deviations that the
    # fast path keeps (below it, terms that underflow float32 could matter); the rows after which the
    # int8 per-thread counts are flushed into int64
    _F32_ABS, _F32_INF = 0x7FFFFFFF, 0x7F800000
    _F32_EXP_MIN, _F32_EXP_MAX = -126, 126
    _F32_SS_MIN = 2.0**-90
    _F32_FLUSH_ROWS = 127

    def _rescaled_moments_f32(row, row_bits, x0, shift):  # pragma: no cover
        """The float32 kernel's fallback: ``(finite, scale, centre, sum of d, sum of d^2)`` of ``y = scale * x``.

        ``scale = 2^-e`` with ``2^(e-1) <= max |x| < 2^e`` (clamped), exact, so ``|y| < 4`` and no float32
        square overflows; ``finite`` is False for a row with NaN/Inf (the other values are then unused).
        """
        r = row.shape[0]
        m = np.int32(0)
        for j in range(r):
            m = max(m, np.int32(row_bits[j] & _F32_ABS))
        if m >= _F32_INF:  # NaN or Inf in the row
            return False, 1.0, np.float32(0.0), 0.0, np.float32(0.0)
        if not np.isfinite(shift):  # values near float32's max overflowed the float32 sum
            shift = 0.0
            for j in range(r):
                shift += np.float64(row[j]) - x0
        e = min(max((m >> 23) - 126, _F32_EXP_MIN), _F32_EXP_MAX)
        scale64 = math.ldexp(1.0, -e)
        scale = np.float32(scale64)
        centre = np.float32((x0 + shift / r) * scale64)
        so = np.float32(0.0)
        ss = np.float32(0.0)
        for j in range(r):
            d = row[j] * scale - centre
            so += d
            ss += d * d
        return True, scale64, centre, np.float64(so), ss

    def _summary_rows_f32(h, bits, weight, eps, norm_eps, counts, num_active, q, finite):  # pragma: no cover
        """float32 rows (``bits``: the same memory as int32; ``weight``: 1.0 on D, 0.0 elsewhere).

        One read of each row from memory and two passes over it in cache, all in float32 SIMD (16 lanes).
        The row is used as it is unless its squares overflow or underflow float32 (or it holds NaN/Inf,
        or is constant): then it is rescaled by a power of two, as in the float64 kernel. The threshold
        is compared with the raw values, so the last pass does no arithmetic before the comparison.
        """
        n, r = h.shape
        nthreads = numba.get_num_threads()
        local = np.zeros((nthreads, r), dtype=np.int64)
        chunk = (n + nthreads - 1) // nthreads
        one = np.float32(1.0)
        zero = np.float32(0.0)
        for t in numba.prange(nthreads):
            lt = np.zeros(r, dtype=np.int8)  # int8: an eighth of the int64 traffic; flushed below
            pending = 0
            for i in range(t * chunk, min(n, (t + 1) * chunk)):
                row = h[i]
                # pass 1 (from memory): the sum of x - x0, x0 = row[0], so that a row whose mean is large
                # against its spread keeps its digits
                x0 = row[0]
                s = zero
                for j in range(r):
                    s += row[j] - x0
                shift = np.float64(s)
                # pass 2 (from cache): the sum of squares of d = y - centre, y = x * scale, centre the float
                # mean of y (d is exact near the mean: Sterbenz), so the variance is not E[y^2] - mean^2;
                # 16 lanes x 4 float32 partial sums of r / 64 terms each. The sum of d follows from pass 1.
                scale64 = 1.0
                scale = one
                centre = np.float32(x0 + shift / r)
                so64 = shift + r * (np.float64(x0) - centre)  # sum of x - centre
                ss = zero
                for j in range(r):
                    d = row[j] - centre
                    ss += d * d
                if not (ss >= _F32_SS_MIN and ss < np.inf):
                    # rare: NaN/Inf, a constant row, or squares that overflow or underflow float32
                    ok, scale64, centre, so64, ss = _rescaled_moments_f32(row, bits[i], x0, shift)
                    if not ok:
                        finite[i] = False
                        continue
                    scale = np.float32(scale64)
                finite[i] = True
                ss64 = np.float64(ss)
                offset = so64 / r  # mean(y) - centre
                var = max(ss64 / r - offset * offset, 0.0)
                # j in L_i iff y_j > centre + offset + eps * std, i.e. x_j > that / scale (exact), i.e.
                # x_j > the largest float32 not above it: the last pass compares the raw float32 values
                limit = (np.float64(centre) + (offset + eps * np.sqrt(var))) / scale64
                limit32 = np.float32(limit)
                if limit32 > limit:
                    limit32 = np.nextafter(limit32, np.float32(-np.inf))
                sumsq = max(ss64 + 2.0 * np.float64(centre) * so64 + r * np.float64(centre) * centre, 0.0)
                norm = max(np.sqrt(sumsq), norm_eps * scale64)  # ||y|| = scale ||h||, clamped: docs/CONVENTIONS.md §1
                # pass 3 (from cache): L_i, its counts and Q_i; branch-free (selects) so it vectorises;
                # the float32 counts are exact (r < 2^24)
                act = zero
                cnt = zero
                total = zero
                for j in range(r):
                    x = row[j]
                    above = x > limit32
                    lt[j] += above
                    act += one if above else zero
                    w = weight[j] if above else zero  # 1 on L_i and D
                    cnt += w
                    total += (x * scale - centre) * w
                num_active[i] = np.int64(act)
                q[i] = (np.float64(total) / cnt - offset) / norm if cnt > 0 else 0.0
                pending += 1
                if pending == _F32_FLUSH_ROWS:
                    for j in range(r):
                        local[t, j] += lt[j]
                        lt[j] = 0
                    pending = 0
            for j in range(r):
                local[t, j] += lt[j]
        for t in range(nthreads):
            for j in range(r):
                counts[j] += local[t, j]

    # reassociation lets the row loops vectorise; no "nnan"/"ninf", so the finiteness tests stay exact,
    # and no "nsz": with "nsz" and "reassoc" together, LLVM (numba 0.68) folds away isfinite() of the sum of |x|
    _FASTMATH = {"reassoc", "contract", "arcp"}
    _summary_kernel = numba.njit(parallel=True, fastmath=_FASTMATH)(_summary_rows)
    # a training batch is summarised in well under a millisecond by one thread; waking numba's thread
    # pool for it costs more than it saves, and its spinning workers compete with torch's threads
    _summary_kernel_serial = numba.njit(parallel=False, fastmath=_FASTMATH)(_summary_rows)
    _rescaled_moments_f32 = numba.njit(fastmath=_FASTMATH)(_rescaled_moments_f32)
    _summary_kernel_f32 = numba.njit(parallel=True, fastmath=_FASTMATH)(_summary_rows_f32)
    _summary_kernel_f32_serial = numba.njit(parallel=False, fastmath=_FASTMATH)(_summary_rows_f32)
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
    parallel = array.size >= PARALLEL_MIN_ELEMENTS and torch.get_num_threads() > 1
    if parallel:
        # as many numba threads as torch is allowed, so the two pools do not oversubscribe the CPU
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    if array.dtype == np.float32 and r < F32_MAX_FEATURES:
        kernel = _summary_kernel_f32 if parallel else _summary_kernel_f32_serial
        weight = disc.astype(np.float32)
        kernel(array, array.view(np.int32), weight, float(eps), NORM_EPS, counts, num_active, q, finite)
    else:
        kernel = _summary_kernel if parallel else _summary_kernel_serial
        kernel(array, disc, float(eps), NORM_EPS, counts, num_active, q, finite)
    return ActivationSummary(
        torch.from_numpy(counts), torch.from_numpy(num_active), torch.from_numpy(q), torch.from_numpy(finite)
    )


def activation_summary(h: Tensor, discriminative: Tensor, eps: float = 4.0) -> ActivationSummary:
    """Counts of the highly activating sets and Q of every row in one pass (``h`` detached).

    An empty batch (``N = 0``) gives zero counts and empty per-row tensors.
    """
    eps = check_eps(eps)
    h = h.detach()
    if h.shape[0] == 0:
        r, device = h.shape[1], h.device
        empty = torch.zeros(0, dtype=torch.long, device=device)
        q = torch.zeros(0, dtype=h.dtype if h.dtype == torch.float64 else torch.float32, device=device)
        return ActivationSummary(torch.zeros(r, dtype=torch.long, device=device), empty, q,
                                 torch.zeros(0, dtype=torch.bool, device=device))
    if HAVE_NUMBA and h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):
        return _summary_numba(h, discriminative, eps)
    return _summary_torch(h, discriminative, eps)
