"""Speed of the core: q_score + ActivationStatistics against a per-sample reference and a plain read.

    python benchmarks/bench_core.py [--n 65536] [--r 2048] [--batch 8192] [--threads 1,2]

Prints time per 1,000 samples of (a) q_score + statistics on the whole [N, r] float32 tensor in
batches, (b) a straightforward per-sample Python/NumPy reference of the paper's definitions (on a
subset, scaled per 1,000 samples), (c) a plain ``h.sum()`` over the same tensor; then the ratios.
(a) and (c) are timed with the same number of threads, once for each count in ``--threads``
(default: 1 and torch's default): torch's ``h.sum()`` uses that many threads, and so does the
kernel (numba's pool is set to torch's count; batches under ``PARALLEL_MIN_ELEMENTS`` run on one).
Repeats of (a) and (c) alternate, so a change of load on a shared machine hits both; the best of
each is reported, with the load average before and after.
Targets (issue "Core library"): (b)/(a) >= 50 and (a)/(c) <= 4 (issue 15: <= 2).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from solo_qscore import ActivationStatistics, discriminative_mask, q_score
from solo_qscore.core import _kernels


def reference_per_sample(h: np.ndarray, discriminative: np.ndarray, eps: float = 4.0):
    """The paper's definitions, one sample at a time."""
    counts = np.zeros(h.shape[1], dtype=np.int64)
    q = np.zeros(h.shape[0])
    for i in range(h.shape[0]):
        x = h[i] / max(np.linalg.norm(h[i]), 1e-12)
        mu, sigma = x.mean(), x.std()
        active = [j for j in range(x.shape[0]) if x[j] > mu + eps * sigma]
        counts[active] += 1
        selected = [j for j in active if discriminative[j]]
        q[i] = np.mean([x[j] - mu for j in selected]) if selected else 0.0
    return counts, q


def best_of_interleaved(fns: dict, repeats: int) -> dict:
    """Best wall time of each function, the repeats of all of them alternating."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def numba_threads() -> str:
    if not _kernels.HAVE_NUMBA:
        return "no numba (torch path)"
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = numba.config.THREADING_LAYER
    return f"numba {numba.__version__} (pool of {numba.config.NUMBA_NUM_THREADS}, {layer} layer)"


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--r", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8192, help="rows per update/q_score call")
    parser.add_argument("--reference-samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=str, default=None,
                        help="comma-separated thread counts for (a) and (c) (default: 1 and torch's default)")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    counts = sorted({1, default_threads}) if args.threads is None else [int(t) for t in args.threads.split(",")]

    torch.manual_seed(0)
    h = torch.randn(args.n, args.r).relu_()  # post-ReLU-like features
    D = discriminative_mask(torch.rand(args.r))

    def ours():  # statistics and Q in one pass over each batch
        stats = ActivationStatistics(args.r)
        for chunk in h.split(args.batch):
            stats.update_and_score(chunk, D)
        stats.compute()

    def ours_separate():  # the two public calls one after the other
        stats = ActivationStatistics(args.r)
        for chunk in h.split(args.batch):
            stats.update(chunk)
            q_score(chunk, D)
        stats.compute()

    def plain_read():
        h.sum()

    m = args.reference_samples
    t0 = time.perf_counter()
    ref_counts, ref_q = reference_per_sample(h[:m].numpy(), D.numpy())
    t_ref = time.perf_counter() - t0
    # the two agree on the subset
    stats = ActivationStatistics(args.r)
    stats.update(h[:m])
    assert np.array_equal(stats.counts.numpy(), ref_counts), "statistics disagree with the reference"
    assert np.allclose(q_score(h[:m], D).numpy(), ref_q, atol=1e-5), "q_score disagrees with the reference"

    per_k = lambda t, n: 1e6 * t / n  # noqa: E731  (ms per 1,000 samples)
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    gb = h.numel() * h.element_size() / 1e9
    kernel = "float32 kernel" if _kernels.HAVE_NUMBA else "torch path"
    print(f"N = {args.n:,}, r = {args.r:,}, float32 ({gb:.2f} GB), batch {args.batch}, torch {torch.__version__}, "
          f"{kernel}; {len(os.sched_getaffinity(0))} CPUs usable, torch default {default_threads} threads")
    print(f"{'per-sample Python/NumPy reference':<44}{per_k(t_ref, m):>18.3f} ms / 1k samples")
    for threads in counts:
        torch.set_num_threads(threads)
        ours()  # warm-up (compiles the kernel for this thread count's path)
        before = load()
        best = best_of_interleaved({"ours": ours, "separate": ours_separate, "read": plain_read}, args.repeats)
        t_ours, t_separate, t_read = best["ours"], best["separate"], best["read"]
        parallel = args.batch * args.r >= _kernels.PARALLEL_MIN_ELEMENTS and threads > 1
        ours_on = f"kernel on {threads if parallel else 1}" if _kernels.HAVE_NUMBA else f"torch path on {threads}"
        print(f"-- {threads} thread(s): h.sum() on {threads}, {ours_on}; load average {before} -> {load()}")
        print(f"{'what':<44}{'ms / 1k samples':>18}{'GB/s':>10}")
        print(f"{'q_score + ActivationStatistics (ours)':<44}{per_k(t_ours, args.n):>18.3f}{gb / t_ours:>10.2f}")
        print(f"{'update() then q_score() (two passes)':<44}{per_k(t_separate, args.n):>18.3f}"
              f"{gb / t_separate:>10.2f}")
        print(f"{'plain h.sum() (read bandwidth)':<44}{per_k(t_read, args.n):>18.3f}{gb / t_read:>10.2f}")
        speedup = per_k(t_ref, m) / per_k(t_ours, args.n)
        vs_read = t_ours / t_read
        print(f"speed-up over the reference: {speedup:,.0f}x   (target >= 50x: {verdict(speedup >= 50)})")
        print(f"time vs plain read: {vs_read:.2f}x            (target <= 4x: {verdict(vs_read <= 4)}; "
              f"<= 2x: {verdict(vs_read <= 2)})")
    torch.set_num_threads(default_threads)
    print(numba_threads())


if __name__ == "__main__":
    main()
