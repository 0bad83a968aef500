"""Label-free metrics (solo_qscore.core.label_free): RankMe, α-ReQ, LiDAR, the normalised-embedding std,
each against a NumPy reference written from its paper, and their torchmetrics sufficient statistics
(equal to the pure functions, and under DDP: 2 gloo processes equal to one)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from solo_qscore.core.label_free import (
    LabelFreeStatistics,
    LiDARStatistics,
    alpha_req,
    lidar,
    normalized_embedding_std,
    rankme,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


# -- NumPy references, written from the papers ---------------------------------------------------
def np_rankme(h: np.ndarray, eps: float = 1e-7) -> float:
    """Garrido et al. 2023, eq. 1: p_k = sigma_k / ||sigma||_1 + eps, RankMe = exp(-sum p log p)."""
    s = np.linalg.svd(h.astype(np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def np_alpha_req(h: np.ndarray, fit_start: int = 3, fit_stop_fraction: float = 0.5) -> float:
    """Agrawal et al. 2022: lambda_k ~ k^-alpha over the covariance spectrum, fitted in log-log by polyfit."""
    lam = np.sort(np.linalg.eigvalsh(np.cov(h.astype(np.float64), rowvar=False)))[::-1]
    k_max = min(h.shape[0] - 1, h.shape[1])
    ks = np.arange(fit_start, math.ceil(fit_stop_fraction * k_max) + 1)
    vals = lam[ks - 1]
    keep = (vals > 0) & (vals >= 1e-12 * lam[0])
    slope, _ = np.polyfit(np.log(ks[keep]), np.log(vals[keep]), 1)
    return float(-slope)


def np_lidar(views: list[np.ndarray], delta: float = 1e-4, eps: float = 1e-8) -> float:
    """Thilak et al. 2024, eqs. 1-4, with one [q_x, r] array of views per image (sum_x (q_x - 1) normaliser)."""
    views = [v.astype(np.float64) for v in views]
    n, r = len(views), views[0].shape[1]
    mus = [v.mean(axis=0) for v in views]
    mu = np.mean(mus, axis=0)
    sigma_b = sum(np.outer(m - mu, m - mu) for m in mus) / (n - 1)
    sigma_w = sum(np.outer(e - m, e - m) for v, m in zip(views, mus) for e in v)
    sigma_w = sigma_w / sum(len(v) - 1 for v in views) + delta * np.eye(r)
    w, vecs = np.linalg.eigh(sigma_w)
    inv_sqrt = vecs @ np.diag(w ** -0.5) @ vecs.T
    lam = np.linalg.eigvalsh(inv_sqrt @ sigma_b @ inv_sqrt)
    p = lam / np.abs(lam).sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def np_embedding_std(h: np.ndarray) -> float:
    u = h.astype(np.float64) / np.linalg.norm(h.astype(np.float64), axis=1, keepdims=True)
    return float(u.std(axis=0, ddof=1).mean())


def gaussian(n: int, r: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(2.0, 0.1, r)  # an anisotropic spectrum, not a flat one
    return torch.randn(n, r, generator=g) * scales + shift


def power_law_features(n: int, r: int, alpha: float, seed: int) -> torch.Tensor:
    """Rows whose centred covariance has eigenvalues exactly k^-alpha (k = 1..r)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(n, r + 1, generator=g, dtype=torch.float64))
    ones = torch.ones(n, 1, dtype=torch.float64) / math.sqrt(n)
    u = basis[:, 1:] - ones @ (ones.T @ basis[:, 1:])  # columns orthogonal to the constant vector
    u, _ = torch.linalg.qr(u)
    v, _ = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=torch.float64))
    lam = torch.arange(1, r + 1, dtype=torch.float64) ** -alpha
    return u @ torch.diag((lam * (n - 1)).sqrt()) @ v.T + 3.0


# -- pure functions against the references -------------------------------------------------------
@pytest.mark.parametrize("n,r,seed", [(200, 32, 0), (40, 64, 1), (500, 16, 2)])
def test_pure_functions_equal_numpy_references(n, r, seed):
    h = gaussian(n, r, seed, shift=0.5)
    x = h.numpy()
    assert rankme(h) == pytest.approx(np_rankme(x), rel=1e-6)
    assert alpha_req(h) == pytest.approx(np_alpha_req(x), rel=1e-6)
    assert normalized_embedding_std(h) == pytest.approx(np_embedding_std(x), rel=1e-6)
    assert alpha_req(h, fit_start=1, fit_stop_fraction=1.0) == pytest.approx(np_alpha_req(x, 1, 1.0), rel=1e-6)
    views = h[: (n // 4) * 4].reshape(n // 4, 4, r)
    assert lidar(views) == pytest.approx(np_lidar(list(views.numpy())), rel=1e-6)
    assert lidar(views, delta=0.1, eps=1e-6) == pytest.approx(np_lidar(list(views.numpy()), 0.1, 1e-6), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_any_float_dtype_is_computed_in_float64(dtype):
    h = gaussian(128, 24, 3).to(dtype)
    x = h.double().numpy()  # the same values, exactly
    # float64 inside: agreement far below the input dtype's rounding (1e-3 for float16)
    assert rankme(h) == pytest.approx(np_rankme(x), rel=1e-8)
    assert alpha_req(h) == pytest.approx(np_alpha_req(x), rel=1e-8)
    assert normalized_embedding_std(h) == pytest.approx(np_embedding_std(x), rel=1e-8)
    assert lidar(h.reshape(32, 4, 24)) == pytest.approx(np_lidar(list(x.reshape(32, 4, 24))), rel=1e-8)


def test_rankme_counts_equal_singular_values():
    # r orthogonal directions of equal length: p_k = 1/r, entropy log r, effective rank r
    assert rankme(torch.eye(8) * 3.0) == pytest.approx(8.0, rel=1e-4)
    assert rankme(torch.eye(8)[:, :5]) == pytest.approx(5.0, rel=1e-4)
    rank_one = torch.randn(64, 1) @ torch.randn(1, 16)
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-3)
    h = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    assert 1.0 < rankme(h) <= 32.0 and rankme(h) > 0.8 * 32  # a full-rank Gaussian matrix


@pytest.mark.parametrize("k", [1, 3, 10])
def test_rankme_of_a_rank_k_matrix_is_about_k(k):
    g = torch.Generator().manual_seed(k)
    left, _ = torch.linalg.qr(torch.randn(300, k, generator=g))
    right, _ = torch.linalg.qr(torch.randn(48, k, generator=g))
    equal = left @ right.T * 7.0  # k equal singular values
    assert rankme(equal) == pytest.approx(k, rel=1e-4)
    assert rankme(equal) == pytest.approx(np_rankme(equal.numpy()), rel=1e-5)
    uneven = torch.randn(300, k, generator=g) @ torch.randn(k, 48, generator=g)
    assert 0.5 * k <= rankme(uneven) <= k + 1e-3


def test_collapsed_embedding_has_zero_std_and_rank_one():
    collapsed = torch.randn(1, 64).repeat(100, 1)
    assert normalized_embedding_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert rankme(collapsed) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="alpha_req needs at least 2 positive eigenvalues.*collapsed"):
        alpha_req(collapsed)  # a spectrum of rounding errors: no slope fitted through noise
    stats = LabelFreeStatistics(64)
    stats.update(collapsed[:30])
    stats.update(collapsed[30:])
    got = stats.compute()  # RankMe and the std still show the collapse; alpha is NaN, not noise
    assert got["rankme"] == pytest.approx(1.0, abs=1e-3) and got["embedding_std"] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(got["alpha_req"])


def test_normalized_embedding_std_is_about_one_over_sqrt_r_when_healthy():
    healthy = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    assert normalized_embedding_std(healthy) == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert normalized_embedding_std(healthy * 100.0) == pytest.approx(normalized_embedding_std(healthy), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 1.5, 3.0])
def test_alpha_req_recovers_a_power_law_built_by_construction(alpha):
    h = power_law_features(400, 64, alpha, seed=4)
    cov = torch.cov(h.T)
    expected = torch.arange(1, 65, dtype=torch.float64) ** -alpha
    torch.testing.assert_close(torch.linalg.eigvalsh(cov).flip(0), expected, rtol=1e-8, atol=1e-12)
    assert alpha_req(h) == pytest.approx(alpha, rel=1e-6)
    assert alpha_req(h, fit_start=1, fit_stop_fraction=1.0) == pytest.approx(alpha, rel=1e-6)
    assert alpha_req(h.float()) == pytest.approx(alpha, rel=1e-3)


def test_alpha_req_fit_range_and_too_few_points():
    h = gaussian(10, 32, 5)  # K = min(N - 1, r) = 9: k in [3, 5]
    assert alpha_req(h) == pytest.approx(np_alpha_req(h.numpy()), rel=1e-6)
    with pytest.raises(ValueError, match=r"k = 3\.\.2 \(K = min\(N - 1, r\) = 4\)"):
        alpha_req(gaussian(5, 32, 5))
    with pytest.raises(ValueError, match="fit_stop_fraction must be in"):
        alpha_req(h, fit_stop_fraction=1.5)
    with pytest.raises(ValueError, match="fit_start must be a whole number"):
        alpha_req(h, fit_start=0)
    with pytest.raises(ValueError, match="at least 2 sample"):
        alpha_req(h[:1])


def test_lidar_of_separated_surrogate_classes_beats_noise():
    """LiDAR is an effective rank of between- over within-image scatter: r for classes apart in every
    direction alike, about k for classes apart in k directions, and below r for views that are pure noise
    (the between-image scatter of noise is a sample covariance, its spectrum spread, Marchenko-Pastur)."""
    g = torch.Generator().manual_seed(6)
    n, q, r = 32, 4, 16
    signs = torch.tensor([1.0, -1.0]).repeat(r)[:, None]
    centres = (torch.eye(r).repeat_interleave(2, dim=0) * signs * 5.0)[:, None]  # +-5 e_j: Sigma_b = c I
    separated = centres + 1e-3 * torch.randn(n, q, r, generator=g)
    noise = torch.randn(n, q, r, generator=g)
    three = (torch.randn(n, 1, 3, generator=g).sign() * 5.0) @ torch.eye(3, r) + 0.1 * torch.randn(n, q, r, generator=g)
    assert lidar(separated) == pytest.approx(r, rel=1e-3)
    assert lidar(three) == pytest.approx(3.0, abs=0.2)
    assert lidar(noise) < 0.8 * lidar(separated)
    for views in (separated, noise, three):
        assert lidar(views) == pytest.approx(np_lidar(list(views.numpy())), rel=1e-6)


def test_bad_inputs_are_refused_clearly():
    bad = gaussian(16, 8, 7)
    bad[3, 2] = float("nan")
    for fn in (rankme, alpha_req, normalized_embedding_std):
        with pytest.raises(ValueError, match="NaN or Inf"):
            fn(bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lidar(bad.reshape(4, 4, 8))
    with pytest.raises(ValueError, match=r"shape \[N, r\]"):
        rankme(torch.randn(4))
    with pytest.raises(ValueError, match="floating-point"):
        rankme(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 sample"):
        normalized_embedding_std(torch.randn(1, 8))
    for views in (torch.randn(1, 4, 8), torch.randn(4, 1, 8), torch.randn(16, 8)):
        with pytest.raises(ValueError, match=r"n >= 2 images, q >= 2 views"):
            lidar(views)
    with pytest.raises(ValueError, match="delta must be > 0"):
        lidar(torch.randn(4, 2, 8), delta=0.0)


# -- the metrics equal the pure functions ----------------------------------------------------------
@pytest.mark.parametrize("features", ["centred", "shifted", "power_law_shifted"])
def test_label_free_statistics_equal_pure_functions(features):
    """Several unequal batches; with a large mean and a fast-decaying spectrum ("power_law_shifted", as
    ReLU features are) the covariance is the gram minus N mu mu^T: a float32 gram's rounding would move alpha."""
    h = {"centred": lambda: gaussian(300, 32, 8),
         "shifted": lambda: gaussian(300, 32, 8, shift=5.0),
         "power_law_shifted": lambda: power_law_features(300, 32, 1.5, seed=8).float()}[features]()
    stats = LabelFreeStatistics(32)
    for part in h.split([1, 120, 0, 179]):  # unequal batches, an empty one
        stats.update(part)
    got = stats.compute()
    assert set(got) == {"rankme", "alpha_req", "embedding_std", "num_samples"}
    assert got["num_samples"] == 300.0
    assert got["rankme"] == pytest.approx(rankme(h), rel=1e-5)
    assert got["alpha_req"] == pytest.approx(alpha_req(h), rel=1e-5)
    assert got["embedding_std"] == pytest.approx(normalized_embedding_std(h), rel=1e-5)
    assert all(isinstance(v, float) for v in got.values())


def test_label_free_statistics_with_fewer_samples_than_features_and_low_rank():
    h = gaussian(20, 64, 9)  # N < r: RankMe over min(N, r) singular values, as svdvals gives
    stats = LabelFreeStatistics(64)
    stats.update(h[:7])
    stats.update(h[7:])
    got = stats.compute()
    assert got["rankme"] == pytest.approx(rankme(h), rel=1e-5)
    assert got["alpha_req"] == pytest.approx(alpha_req(h), rel=1e-5)
    low = power_law_features(200, 32, 1.5, seed=10).float()
    stats = LabelFreeStatistics(32)
    stats.update(low)
    assert stats.compute()["alpha_req"] == pytest.approx(alpha_req(low), rel=1e-5)


def test_label_free_statistics_count_nonfinite_rows_and_refuse_to_compute():
    h = gaussian(64, 16, 11)
    h[[2, 40], [0, 5]] = torch.tensor([float("nan"), float("inf")])
    stats = LabelFreeStatistics(16)
    stats.update(h)
    assert int(stats.num_samples) == 62 and int(stats.num_nonfinite) == 2
    assert torch.isfinite(stats.gram).all()  # the bad rows are left out of every sum
    keep = torch.ones(64, dtype=torch.bool)
    keep[[2, 40]] = False
    clean = LabelFreeStatistics(16)
    clean.update(h[keep])
    for name in ("gram", "feature_sum", "unit_sum", "unit_square_sum"):  # the same sums (rows of zeros added)
        torch.testing.assert_close(getattr(stats, name), getattr(clean, name), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"saw 2 representation\(s\) with NaN or Inf values \(out of 64\)"):
        stats.compute()
    stats.reset()
    with pytest.warns(UserWarning, match="called before the ``update``"), \
            pytest.raises(ValueError, match="at least 2 samples, got 0"):
        stats.compute()
    with pytest.raises(ValueError, match="has 8 features but 16 were expected"):
        stats.update(torch.randn(4, 8))
    with pytest.raises(ValueError, match="num_features must be a whole number"):
        LabelFreeStatistics(2.5)


def test_update_never_reads_a_value_back_to_the_host(monkeypatch):
    """The training hot path: one update per step, NaN/Inf rows included, without a device-to-host read. On a
    CPU a read shows as a tensor turned into a Python value (``item``, ``bool``, ``float``, ``int``, ``tolist``),
    each of which would be a sync on a GPU: all of them fail here during ``update``."""
    stats = LabelFreeStatistics(32)
    h = torch.randn(64, 32)
    h[3, 1] = float("nan")

    def refuse(*args, **kwargs):
        raise AssertionError("update() read a tensor value back to the host")

    with monkeypatch.context() as patch:
        for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
            patch.setattr(torch.Tensor, name, refuse)
        stats.update(h)
        stats.update(h[10:].half())
    assert int(stats.num_samples) == 117 and int(stats.num_nonfinite) == 1


def test_lidar_statistics_equal_lidar_in_any_order_and_batches():
    n, q, r = 24, 4, 16
    g = torch.Generator().manual_seed(12)
    views = torch.randn(n, 1, r, generator=g) * 2.0 + 0.5 * torch.randn(n, q, r, generator=g) + 4.0
    rows, index = views.reshape(n * q, r), torch.arange(n).repeat_interleave(q)
    order = torch.randperm(n * q, generator=g)  # the views of one image in different batches
    stats = LiDARStatistics(r, n)
    for part in order.split([5, 50, 0, 41]):
        stats.update(rows[part], index[part])
    assert stats.compute() == pytest.approx(lidar(views), rel=1e-5)
    other = LiDARStatistics(r, n, delta=0.01, eps=1e-6)
    other.update(rows, index)
    assert other.compute() == pytest.approx(lidar(views, delta=0.01, eps=1e-6), rel=1e-5)


def test_lidar_statistics_with_unequal_view_counts_and_unseen_images():
    """sum_x (q_x - 1) normalises the within-class scatter; images with no view are left out."""
    g = torch.Generator().manual_seed(13)
    counts = [2, 5, 3, 1, 4, 0, 2]
    per_image = [torch.randn(1, 8, generator=g) * 3 + torch.randn(c, 8, generator=g) for c in counts]
    stats = LiDARStatistics(8, len(counts))
    stats.update(torch.cat(per_image), torch.arange(len(counts)).repeat_interleave(torch.tensor(counts)))
    expected = np_lidar([v.numpy() for v in per_image if len(v)])
    assert stats.compute() == pytest.approx(expected, rel=1e-5)


def test_lidar_statistics_refuse_bad_indices_shapes_and_nonfinite_views():
    stats = LiDARStatistics(8, 5)
    h = torch.randn(6, 8)
    for index, match in [(torch.tensor([0, 1, 2, 3, 4, 5]), r"in \[0, 5\), got values in \[0, 5\]"),
                         (torch.tensor([0, 1, 2, 3, 4, -1]), r"in \[0, 5\), got values in \[-1, 4\]"),
                         (torch.zeros(6), "integer image indices"),
                         (torch.zeros(6, dtype=torch.bool), "integer image indices"),
                         (torch.zeros(5, dtype=torch.long), "1-D tensor of 6 image indices"),
                         ([0, 1, 2, 3, 4, 4], "1-D tensor of 6 image indices")]:
        with pytest.raises(ValueError, match=match):
            stats.update(h, index)
    assert int(stats.image_counts.sum()) == 0  # nothing was added by a refused batch
    with pytest.raises(ValueError, match="has 4 features but 8 were expected"):
        stats.update(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="num_images must be a whole number >= 2"):
        LiDARStatistics(8, 1)
    stats.update(h[:2], torch.tensor([0, 1]))  # two images with one view each: no within-class spread
    with pytest.raises(ValueError, match="one image with 2 or more"):
        stats.compute()
    h[1, 1] = float("inf")
    stats.update(h, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert int(stats.image_counts[0]) == 2 and int(stats.num_nonfinite) == 1
    with pytest.raises(ValueError, match=r"LiDARStatistics saw 1 representation\(s\) with NaN or Inf"):
        stats.compute()


# -- DDP: two gloo processes give the metrics of one -----------------------------------------------
DDP_SCRIPT = textwrap.dedent('''
    import sys, warnings
    warnings.simplefilter("ignore")
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp


    def worker(rank, world, init, out, rows, rows_of, views, index, views_of):
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        torch.set_num_threads(1)
        from solo_qscore.core.label_free import LabelFreeStatistics, LiDARStatistics

        stats = LabelFreeStatistics(rows.shape[1])
        mine = rows[rows_of == rank]
        for part in mine.split([3, mine.shape[0] - 3]):  # unequal batches
            stats.update(part)
        lid = LiDARStatistics(views.shape[1], int(index.max()) + 1)
        picked = (views_of == rank).nonzero().flatten()
        for part in picked.split([7, picked.numel() - 7]):
            lid.update(views[part], index[part])
        result = {"label_free": stats.compute(), "lidar": lid.compute(), "world": dist.get_world_size(),
                  "local_samples": int(stats.num_samples)}  # compute() restores the local states
        torch.save(result, f"{out}.rank{rank}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        init, out = sys.argv[1], sys.argv[2]
        d = torch.load(f"{out}.inputs.pt")
        args = (2, init, out, d["rows"], d["rows_of"], d["views"], d["index"], d["views_of"])
        mp.spawn(worker, args=args, nprocs=2, join=True)
''')


def test_two_gloo_processes_equal_one(tmp_path):
    g = torch.Generator().manual_seed(14)
    rows = gaussian(90, 24, 15, shift=2.0)
    rows_of = (torch.arange(90) >= 37).long()  # 37 rows on rank 0, 53 on rank 1
    n, q, r = 12, 4, 10
    views = torch.randn(n, 1, r, generator=g) * 2 + torch.randn(n, q, r, generator=g)
    flat, index = views.reshape(n * q, r), torch.arange(n).repeat_interleave(q)
    # views 0-1 of every image and view 2 of the first half on rank 0: each image split over both processes
    view_number = torch.arange(q).repeat(n)
    views_of = ((view_number >= 2) & ~((view_number == 2) & (index < n // 2))).long()
    out = tmp_path / "ddp"
    torch.save({"rows": rows, "rows_of": rows_of, "views": flat, "index": index, "views_of": views_of},
               f"{out}.inputs.pt")
    script = tmp_path / "ddp_label_free.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), f"file://{tmp_path / 'init'}", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)  # a hang: pytest-timeout
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(f"{out}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["local_samples"] for r in ranks] == [37, 53]

    single = LabelFreeStatistics(24)
    single.update(rows)
    one = single.compute()
    single_lidar = LiDARStatistics(r, n)
    single_lidar.update(flat, index)
    for result in ranks:
        for key in ("rankme", "alpha_req", "embedding_std", "num_samples"):
            assert result["label_free"][key] == pytest.approx(one[key], rel=1e-5), key
        assert result["lidar"] == pytest.approx(single_lidar.compute(), rel=1e-5)
    assert one["rankme"] == pytest.approx(rankme(rows), rel=1e-5)
    assert ranks[0]["lidar"] == pytest.approx(lidar(views), rel=1e-5)
