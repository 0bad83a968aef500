"""Activation statistics at ImageNet-1K scale: stream N x r synthetic features through ActivationStatistics.

    python benchmarks/bench_scale.py [--n 1281167] [--r 2048] [--batch 4096] [--device cpu|cuda]

Features are generated batch by batch (post-ReLU Gaussian), so only one batch exists at a time.
Prints throughput (samples/s, also net of generating the batch, measured in the same run) and the
peak memory the metric adds: its state is O(r) (counts) whatever N is, which the script checks by
reporting the metric's state size and the process's peak RSS against a baseline after the same
batches were generated without the metric.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from solo_qscore import ActivationStatistics


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_281_167)
    parser.add_argument("--r", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    sizes = [min(args.batch, args.n - s) for s in range(0, args.n, args.batch)]

    def batches():
        for size in sizes:
            yield torch.randn(size, args.r, generator=gen, device=device).relu_()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # baseline: generating the batches alone (same memory pattern, no metric)
    t0 = time.perf_counter()
    for _h in batches():
        pass
    sync()
    t_gen = time.perf_counter() - t0
    rss_base = peak_rss_mb()

    stats = ActivationStatistics(args.r).to(device)
    t0 = time.perf_counter()
    for h in batches():
        stats.update(h)
    A = stats.compute()
    sync()
    t_all = time.perf_counter() - t0
    rss_metric = peak_rss_mb()
    state_bytes = sum(getattr(stats, k).numel() * getattr(stats, k).element_size()
                      for k in ("counts", "num_samples", "num_active", "num_nonfinite"))
    assert int(stats.num_samples) == args.n and torch.isfinite(A).all()
    gpu = f", peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""
    print(f"N = {args.n:,}, r = {args.r:,}, batch {args.batch}, device {device}"
          f" ({'GPU present' if torch.cuda.is_available() else 'no GPU on this machine'}), "
          f"{torch.get_num_threads()} threads")
    print(f"{'what':<46}{'value':>16}")
    print(f"{'samples/s, generate + update':<46}{args.n / t_all:>16,.0f}")
    print(f"{'samples/s, update alone (net of generation)':<46}{args.n / max(t_all - t_gen, 1e-9):>16,.0f}")
    print(f"{'metric state (bytes), O(r)':<46}{state_bytes:>16,}")
    print(f"{'one batch of features (MiB)':<46}{args.batch * args.r * 4 / 2**20:>16.1f}")
    print(f"{'peak RSS, generation only (MiB)':<46}{rss_base:>16.0f}")
    print(f"{'peak RSS, with the metric (MiB)':<46}{rss_metric:>16.0f}{gpu}")
    print(f"{'all N features at once would be (MiB)':<46}{args.n * args.r * 4 / 2**20:>16,.0f}")
    print(f"mean |L_i| = {stats.mean_active:.3f}, features ever active: {int((stats.counts > 0).sum())}/{args.r}")


if __name__ == "__main__":
    main()
