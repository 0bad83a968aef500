r"""Label-free representation metrics, to rank encoders without labels and to compare Q-Score against.

Each metric is a pure function of the features (any float dtype in, a Python ``float`` out, float64
inside), and the same quantity is the ``compute()`` of a torchmetrics ``Metric`` of sufficient
statistics (float64 sums, summed across DDP processes, so two processes give the metric of one).

* **RankMe** (Garrido et al., "RankMe: Assessing the downstream performance of pretrained
  self-supervised representations by their rank", ICML 2023):
  :math:`\exp(-\sum_k p_k \log p_k)` with :math:`p_k = \sigma_k / \lVert\sigma\rVert_1 + \epsilon`
  over the ``min(N, r)`` singular values :math:`\sigma` of the **uncentred** ``[N, r]`` matrix; between
  1 and ``min(N, r)``. From the gram :math:`H^\top H`: :math:`\sigma_k = \sqrt{\lambda_k(H^\top H)}`.
* **α-ReQ** (Agrawal et al., "α-ReQ: Assessing representation quality in self-supervised learning by
  measuring eigenspectrum decay", NeurIPS 2022): the eigenvalues :math:`\lambda_1 \ge \lambda_2 \ge \dots`
  of the centred covariance decay as a power law :math:`\lambda_k \propto k^{-\alpha}`; α is the slope of
  the least-squares line :math:`\log\lambda_k = c - \alpha\log k`. The paper fits the decay of the
  spectrum's body and tail; as public implementations do, the first eigenvalues (the few dominant
  directions, which follow no power law) are skipped, and so is the end of the spectrum (where a finite
  sample's noise floor bends it): the fit is over :math:`k \in [3, \lceil K/2 \rceil]`, with
  :math:`K = \min(N - 1, r)` the rank of a covariance of N samples (both bounds are arguments).
* **LiDAR** (Thilak et al., "LiDAR: Sensing linear probing performance in joint embedding SSL
  architectures", ICLR 2024): the q augmented views of each of n images form a surrogate class.
  With :math:`\mu_x` an image's mean view and :math:`\mu` the mean of the :math:`\mu_x`,
  :math:`\Sigma_b = \frac{1}{n-1}\sum_x (\mu_x-\mu)(\mu_x-\mu)^\top`,
  :math:`\Sigma_w = \frac{1}{n(q-1)}\sum_x\sum_i (e_{xi}-\mu_x)(e_{xi}-\mu_x)^\top + \delta I`,
  :math:`\Sigma_{lda} = \Sigma_w^{-1/2}\Sigma_b\Sigma_w^{-1/2}`, and LiDAR is
  :math:`\exp(-\sum_k p_k\log p_k)`, :math:`p_k = \lambda_k/\lVert\lambda\rVert_1 + \epsilon`, over the
  eigenvalues of :math:`\Sigma_{lda}` (the effective rank of the LDA matrix).
* **Std of L2-normalised embeddings** (lightly's collapse signal): the mean over features of the
  (unbiased) std over samples of :math:`h_i/\lVert h_i\rVert`; about :math:`1/\sqrt r` when healthy, 0
  when collapsed.

NaN/Inf, as in :class:`~solo_qscore.core.statistics.ActivationStatistics`: the pure functions raise
``ValueError``; the metrics count such rows (``num_nonfinite``), leave them out of every other state
(``update`` never synchronises with the host), and ``compute()`` raises ``ValueError``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from solo_qscore.core._validation import check_count, check_finite_rows, check_nonnegative, check_representations

#: the defaults of the pure functions, which the metrics use too
RANKME_EPS = 1e-7
ALPHA_FIT_START = 3
ALPHA_FIT_STOP_FRACTION = 0.5
LIDAR_DELTA = 1e-4
LIDAR_EPS = 1e-8
#: eigenvalues below this fraction of the largest (or of the mean squared entry) are zeros, out of the α-ReQ fit
ALPHA_RELATIVE_FLOOR = 1e-12


# -- shared spectral steps (the pure functions and the metrics take the same path) ---------------
def _entropy_rank(values: Tensor, eps: float) -> float:
    r""":math:`\exp(-\sum p_k\log p_k)`, :math:`p_k = v_k/\lVert v\rVert_1 + \epsilon` (``values >= 0``).

    The ε in the denominator too keeps an all-zero spectrum finite (its rank is then about 1).
    """
    p = values / (values.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def _power_law_decay(eigenvalues: Tensor, num_samples: int, fit_start: int, fit_stop_fraction: float,
                     scale: float) -> float:
    """α of ``log λ_k = c - α log k`` over ``k in [fit_start, ceil(fit_stop_fraction * K)]`` (1-based).

    ``scale`` is the mean squared entry of the uncentred rows: a float64 covariance of such data carries
    rounding of about ``1e-16 * scale`` per entry (``sqrt(r)`` to ``r`` times that in its eigenvalues), so
    eigenvalues below ``1e-12 * max(λ_1, scale)`` are zeros (a collapsed representation's spectrum is all
    rounding: no fit, rather than a slope through noise).
    """
    descending = eigenvalues.flip(0)
    k_max = min(num_samples - 1, descending.numel())
    stop = math.ceil(round(fit_stop_fraction * k_max, 9))  # 0.3 * 10 is 3.0000000000000004, not above 3
    ks = torch.arange(fit_start, stop + 1, dtype=torch.float64, device=descending.device)
    lam = descending[fit_start - 1:stop] if stop >= fit_start else descending[:0]
    keep = (lam > 0) & (lam >= ALPHA_RELATIVE_FLOOR * max(float(descending[0]), scale))
    if int(keep.sum()) < 2:
        raise ValueError(
            f"alpha_req needs at least 2 positive eigenvalues in the fit range k = {fit_start}..{stop} "
            f"(K = min(N - 1, r) = {k_max}); got {int(keep.sum())}: too few samples or features, "
            "or a collapsed representation"
        )
    x, y = ks[keep].log(), lam[keep].log()
    x, y = x - x.mean(), y - y.mean()
    return float(-(x * y).sum() / (x * x).sum())


def _lda_rank(between: Tensor, within: Tensor, eps: float) -> float:
    r"""Effective rank of :math:`\Sigma_w^{-1/2}\Sigma_b\Sigma_w^{-1/2}` (``within`` positive definite)."""
    w, vectors = torch.linalg.eigh(within)
    inv_sqrt = (vectors * w.clamp_min(torch.finfo(w.dtype).tiny).rsqrt()) @ vectors.T
    lda = inv_sqrt @ between @ inv_sqrt
    lam = torch.linalg.eigvalsh((lda + lda.T) / 2).clamp_min(0.0)  # PSD: negatives are rounding
    return _entropy_rank(lam, eps)


def _check_fit_range(fit_start: int, fit_stop_fraction: float) -> tuple[int, float]:
    start = check_count(fit_start, "fit_start", minimum=1)
    fraction = check_nonnegative(fit_stop_fraction, "fit_stop_fraction")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fit_stop_fraction must be in (0, 1], got {fit_stop_fraction!r}")
    return start, fraction


def _check_lidar_settings(delta: float, eps: float) -> tuple[float, float]:
    d, e = check_nonnegative(delta, "delta"), check_nonnegative(eps, "eps")
    if d == 0.0:
        raise ValueError("delta must be > 0: Sigma_w is singular whenever r > N - n")
    return d, e


def _checked_float64(h: Tensor, name: str = "h", min_samples: int = 1) -> Tensor:
    check_representations(h, name)
    if h.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} sample(s), got shape {tuple(h.shape)}")
    check_finite_rows(h, name)
    return h.detach().double()


# -- pure functions ------------------------------------------------------------------------------
def rankme(h: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of ``h`` ``[N, r]``: the effective rank of the uncentred matrix (between 1 and ``min(N, r)``)."""
    return _entropy_rank(torch.linalg.svdvals(_checked_float64(h)), eps)


def normalized_embedding_std(h: Tensor) -> float:
    """Mean over features of the (unbiased) std over samples of the L2-normalised rows of ``h`` ``[N >= 2, r]``."""
    return float(F.normalize(_checked_float64(h, min_samples=2), dim=1).std(dim=0).mean())


def alpha_req(h: Tensor, fit_start: int = ALPHA_FIT_START, fit_stop_fraction: float = ALPHA_FIT_STOP_FRACTION) -> float:
    """α-ReQ of ``h`` ``[N, r]``: the power-law decay exponent of its centred covariance's eigenvalues.

    Args:
        fit_start: first eigenvalue index of the fit (1-based, ``>= 1``).
        fit_stop_fraction: the fit ends at ``ceil(fit_stop_fraction * K)``, ``K = min(N - 1, r)``.

    Raises:
        ValueError: fewer than 2 positive eigenvalues in the fit range (eigenvalues below ``1e-12``
            times the largest, or times the mean squared entry of ``h``, count as zeros: a collapsed
            representation has no spectrum to fit), or a bad ``h`` or range.
    """
    start, fraction = _check_fit_range(fit_start, fit_stop_fraction)
    x = _checked_float64(h, min_samples=2)
    centred = x - x.mean(dim=0)
    covariance = centred.T @ centred / (x.shape[0] - 1)
    scale = float(x.square().mean())
    return _power_law_decay(torch.linalg.eigvalsh(covariance), x.shape[0], start, fraction, scale)


def lidar(views: Tensor, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> float:
    """LiDAR of ``views`` ``[n, q, r]``: q augmented views of each of n images (each image a class).

    Raises:
        ValueError: not ``[n >= 2, q >= 2, r >= 1]`` floats, NaN/Inf, ``delta <= 0`` or ``eps < 0``.
    """
    delta, eps = _check_lidar_settings(delta, eps)
    if not isinstance(views, Tensor) or views.ndim != 3 or views.shape[0] < 2 or views.shape[1] < 2:
        shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"views must have shape [n >= 2 images, q >= 2 views, r features], got {shape}")
    n, q, r = views.shape
    x = _checked_float64(views.reshape(n * q, r), "views").reshape(n, q, r)
    means = x.mean(dim=1)
    spread = means - means.mean(dim=0)
    between = spread.T @ spread / (n - 1)
    deviations = (x - means[:, None]).reshape(n * q, r)
    within = deviations.T @ deviations / (n * (q - 1)) + delta * torch.eye(r, dtype=x.dtype, device=x.device)
    return _lda_rank(between, within, eps)


# -- sufficient statistics (torchmetrics) --------------------------------------------------------
def _finite_rows(h: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """``h`` as float64 on ``device`` with its NaN/Inf rows zeroed, and the mask of finite rows (no host sync)."""
    x = h.detach().to(device=device, dtype=torch.float64)
    finite = torch.isfinite(x).all(dim=1)
    return torch.where(finite[:, None], x, torch.zeros((), dtype=x.dtype, device=device)), finite


def _check_no_nonfinite(name: str, num_nonfinite: Tensor, num_samples: Tensor) -> None:
    if int(num_nonfinite) > 0:
        raise ValueError(
            f"{name} saw {int(num_nonfinite)} representation(s) with NaN or Inf values (out of "
            f"{int(num_nonfinite + num_samples)}); the encoder has diverged"
        )


class LabelFreeStatistics(Metric):
    r"""RankMe, α-ReQ and the normalised-embedding std of all rows seen, from :math:`O(r^2)` sums.

    Args:
        num_features: ``r >= 1``, the dimension of the representation.

    States (float64 sums, counts as integers; all summed across processes):
        ``gram`` :math:`\sum_i h_i h_i^\top` ``[r, r]``; ``feature_sum`` :math:`\sum_i h_i`;
        ``unit_sum``, ``unit_square_sum``: :math:`\sum_i u_i` and :math:`\sum_i u_i^2` with
        :math:`u_i = h_i/\lVert h_i\rVert`; ``num_samples``; ``num_nonfinite``.

    ``update`` takes ``[B, r]`` and never synchronises with the host: one float64 gram per batch
    (float64, not the features' dtype: the covariance is the gram minus :math:`N\mu\mu^\top`, and with
    ReLU features' large means a float32 gram's rounding swamps the small eigenvalues α-ReQ fits).
    ``compute()`` returns ``{"rankme", "alpha_req", "embedding_std", "num_samples"}`` (floats), each
    equal to its pure function on all rows seen, with the default settings of those. ``alpha_req`` is
    NaN where :func:`alpha_req` raises (a collapsed representation, or too few samples or features for
    its fit), so that RankMe and the std, which show a collapse, are still returned.

    Raises (``compute``):
        ValueError: a row with NaN/Inf was seen, or fewer than 2 samples.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    gram: Tensor
    feature_sum: Tensor
    unit_sum: Tensor
    unit_square_sum: Tensor
    num_samples: Tensor
    num_nonfinite: Tensor

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_features = r = check_count(num_features, "num_features")
        self.add_state("gram", torch.zeros(r, r, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("feature_sum", "unit_sum", "unit_square_sum"):
            self.add_state(name, torch.zeros(r, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_nonfinite", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, h: Tensor) -> None:  # type: ignore[override]
        """Add a batch of representations ``[B, r]`` (detached; rows with NaN/Inf only counted)."""
        check_representations(h, num_features=self.num_features)
        x, finite = _finite_rows(h, self.gram.device)
        self.gram += x.T @ x
        self.feature_sum += x.sum(dim=0)
        unit = F.normalize(x, dim=1)  # a zeroed row stays zero
        self.unit_sum += unit.sum(dim=0)
        self.unit_square_sum += unit.square().sum(dim=0)
        num_finite = finite.sum()
        self.num_samples += num_finite
        self.num_nonfinite += finite.numel() - num_finite

    def compute(self) -> dict[str, float]:
        """The metrics of every row seen (on all processes); see the class docstring."""
        _check_no_nonfinite("LabelFreeStatistics", self.num_nonfinite, self.num_samples)
        n = int(self.num_samples)
        if n < 2:
            raise ValueError(f"LabelFreeStatistics needs at least 2 samples, got {n}")
        eigenvalues = torch.linalg.eigvalsh(self.gram)
        singular = eigenvalues.flip(0)[:min(n, self.num_features)].clamp_min(0.0).sqrt()
        covariance = (self.gram - torch.outer(self.feature_sum, self.feature_sum) / n) / (n - 1)
        try:
            alpha = _power_law_decay(torch.linalg.eigvalsh(covariance), n, ALPHA_FIT_START, ALPHA_FIT_STOP_FRACTION,
                                     scale=float(self.gram.trace()) / (n * self.num_features))
        except ValueError:  # collapsed, or too few samples or features: RankMe and the std still say so
            alpha = math.nan
        mean_unit = self.unit_sum / n
        variance = (self.unit_square_sum - n * mean_unit.square()) / (n - 1)
        return {
            "rankme": _entropy_rank(singular, RANKME_EPS),
            "alpha_req": alpha,
            "embedding_std": float(variance.clamp_min(0.0).sqrt().mean()),
            "num_samples": float(n),
        }


class LiDARStatistics(Metric):
    r"""LiDAR from per-image sums: the views of one image may arrive in any batch, on any process.

    Args:
        num_features: ``r >= 1``; num_images: ``n >= 2``, the number of surrogate classes (images).
        delta, eps: as in :func:`lidar`.

    States (summed across processes): ``image_sums`` ``[n, r]`` and ``image_counts`` ``[n]`` (the views
    of each image), ``gram`` :math:`\sum e e^\top` ``[r, r]``, ``num_nonfinite``. Memory :math:`O(nr + r^2)`.

    ``update(h, image_index)`` checks that every index is in ``[0, n)`` (one host sync: an index out of
    range would otherwise corrupt memory on a GPU). Images with no view are left out; with unequal view
    counts :math:`q_x` the within-class normaliser is :math:`\sum_x (q_x - 1)` over the images seen (the
    unbiased pooled covariance; :math:`n(q-1)` when every image has q views, where ``compute()`` equals
    :func:`lidar`), and :math:`\mu` the unweighted mean of the image means.

    Raises (``compute``):
        ValueError: a row with NaN/Inf was seen, fewer than 2 images with views, or no image with 2.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    image_sums: Tensor
    image_counts: Tensor
    gram: Tensor
    num_nonfinite: Tensor

    def __init__(self, num_features: int, num_images: int, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_features = r = check_count(num_features, "num_features")
        self.num_images = n = check_count(num_images, "num_images", minimum=2)
        self.delta, self.eps = _check_lidar_settings(delta, eps)
        self.add_state("image_sums", torch.zeros(n, r, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("image_counts", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("gram", torch.zeros(r, r, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_nonfinite", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _check_index(self, image_index: Tensor, num_rows: int) -> None:
        if not isinstance(image_index, Tensor) or image_index.ndim != 1 or image_index.shape[0] != num_rows:
            shape = tuple(image_index.shape) if isinstance(image_index, Tensor) else type(image_index).__name__
            raise ValueError(f"image_index must be a 1-D tensor of {num_rows} image indices, got {shape}")
        if image_index.is_floating_point() or image_index.is_complex() or image_index.dtype == torch.bool:
            raise ValueError(f"image_index must hold integer image indices, got dtype {image_index.dtype}")
        if num_rows and bool(((image_index < 0) | (image_index >= self.num_images)).any()):
            low, high = int(image_index.min()), int(image_index.max())
            raise ValueError(f"image_index must be in [0, {self.num_images}), got values in [{low}, {high}]")

    def update(self, h: Tensor, image_index: Tensor) -> None:  # type: ignore[override]
        """Add views ``h`` ``[B, r]``; ``image_index`` ``[B]`` says which image each row is a view of."""
        check_representations(h, num_features=self.num_features)
        self._check_index(image_index, h.shape[0])
        x, finite = _finite_rows(h, self.gram.device)
        index = image_index.to(device=self.gram.device, dtype=torch.long)
        self.image_sums.index_add_(0, index, x)
        self.image_counts.index_add_(0, index, finite.long())
        self.gram += x.T @ x
        self.num_nonfinite += finite.numel() - finite.sum()

    def compute(self) -> float:
        """LiDAR of every view seen (on all processes)."""
        _check_no_nonfinite("LiDARStatistics", self.num_nonfinite, self.image_counts.sum())
        seen = self.image_counts > 0
        counts, sums = self.image_counts[seen].double(), self.image_sums[seen]
        n, total = counts.numel(), int(counts.sum())
        if n < 2 or total - n < 1:
            raise ValueError(f"LiDARStatistics needs at least 2 images with views and one image with 2 or more; "
                             f"got {n} image(s) with {total} view(s) in all")
        means = sums / counts[:, None]
        spread = means - means.mean(dim=0)
        between = spread.T @ spread / (n - 1)
        scatter = self.gram - sums.T @ means  # sum_x sum_i e e^T - sum_x q_x mu_x mu_x^T
        identity = torch.eye(self.num_features, dtype=scatter.dtype, device=scatter.device)
        within = (scatter + scatter.T) / 2 / (total - n) + self.delta * identity
        return _lda_rank(between, within, self.eps)
