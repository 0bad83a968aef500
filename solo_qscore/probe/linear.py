r"""A fast, deterministic linear probe on cached (frozen) representations.

The linear evaluation of self-supervised learning usually trains a linear layer for 100 epochs
of SGD. On cached features the same model is a convex problem, multinomial logistic
regression, which a full-batch quasi-Newton method solves in a few dozen iterations:

.. math::

    \min_{W, b}\ \frac{1}{N} \sum_{i=1}^{N} -\log \operatorname{softmax}(W x_i + b)_{y_i}
    \;+\; \frac{\lambda}{2} \lVert W \rVert_F^2,
    \qquad x_i = \frac{h_i - m}{s} \ \text{(standardised with train mean } m \text{ and std } s),

solved with ``torch.optim.LBFGS`` (strong Wolfe line search) from a zero initialisation, so the
result is deterministic. The bias is not penalised. This is the objective of scikit-learn's
``LogisticRegression(C=1/(λN))`` (lbfgs solver), with the same solution.

Preconditioning. Self-supervised features are strongly correlated: the eigenvalues of their
correlation matrix :math:`A = \frac1N X^\top X` span six orders of magnitude (2e-4 to 312 on a
ResNet-18's 512 standardised features), and plain L-BFGS crawls: its steps are limited by the few
dominant directions. The fit therefore runs in the coordinates :math:`V = W L` (so :math:`W = V L^{-1}`),

.. math::

    L L^\top = A + \mu I, \qquad \mu = \max\bigl(\lambda,\ \rho \operatorname{tr}(A) / r\bigr),

which rescales every direction with eigenvalue above :math:`\mu` to unit curvature and leaves the weak
ones about as they are (whitening those too, :math:`\rho \to 0`, slows the fit down on data where
confident samples add little curvature there). It is the same objective and the same optimum,
reached in about a third of the iterations (263 instead of 896 on ResNet-18 features, 439 instead of
1,356 on Fashion-MNIST pixels; ``benchmarks/bench_probe.py``). :math:`A` is
estimated on at most ``precondition_samples`` evenly spaced rows: a rough estimate changes the path,
not the optimum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from solo_qscore.core._validation import check_class_labels, check_finite_rows, check_nonnegative, check_representations

__all__ = ["LinearProbe", "ProbeResult", "feature_mean_std", "fit_linear_probe", "probe_correctness"]


def _check_features(features: Tensor, name: str) -> None:
    check_representations(features, name)
    check_finite_rows(features, name)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


SMALL_PROBLEM = 20_000_000  # N * r * C below which a single CPU thread is faster


@contextmanager
def _cpu_threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads is None or int(num_threads) == previous:
        yield
        return
    torch.set_num_threads(max(1, int(num_threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def feature_mean_std(features: Tensor, chunk_size: int = 16384) -> tuple[Tensor, Tensor]:
    r"""Per-feature mean and population std of ``[N, r]`` features, accumulated in float64 by chunks.

    Two passes (mean, then :math:`\frac1N\sum_i (x_{ij} - m_j)^2`) avoid cancellation; no float64 copy
    of the whole matrix is made. A (numerically) constant feature gets std 1, so standardising
    leaves it constant instead of blowing up rounding noise. Returns float32 tensors on the
    features' device.
    """
    n = features.shape[0]
    total = torch.zeros(features.shape[1], dtype=torch.float64, device=features.device)
    for start in range(0, n, chunk_size):
        total += features[start : start + chunk_size].double().sum(0)
    mean = total / max(n, 1)
    squares = torch.zeros_like(total)
    for start in range(0, n, chunk_size):
        squares += (features[start : start + chunk_size].double() - mean).pow(2).sum(0)
    std = (squares / max(n, 1)).sqrt()
    std = torch.where(std > 1e-7 * (mean.abs() + 1e-30), std, torch.ones_like(std))
    return mean.float(), std.float()


class LinearProbe(nn.Module):
    r"""A fitted linear classifier :math:`p(y \mid h) = \operatorname{softmax}(W (h - m)/s + b)`.

    Attributes (buffers): ``weight`` ``[C, r]``, ``bias`` ``[C]``, ``mean`` ``[r]`` and ``std`` ``[r]``
    (the standardisation statistics of the train features; zeros and ones when not standardised).
    ``num_iterations`` and ``final_loss`` describe the fit.
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor,
        mean: Tensor,
        std: Tensor,
        num_iterations: int = 0,
        final_loss: float = float("nan"),
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())
        self.num_iterations = int(num_iterations)
        self.final_loss = float(final_loss)

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.weight.shape[1])

    def transform(self, features: Tensor) -> Tensor:
        """Standardise ``features`` with the train statistics (float32, on the probe's device)."""
        x = features.to(device=self.weight.device, dtype=self.weight.dtype)
        return (x - self.mean) / self.std

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``[N, C]``."""
        _check_features(features, "features")
        if features.shape[1] != self.num_features:
            raise ValueError(f"probe expects {self.num_features} features, got {features.shape[1]}")
        with torch.no_grad():
            return torch.addmm(self.bias, self.transform(features), self.weight.t())

    def predict_proba(self, features: Tensor) -> Tensor:
        """Class probabilities ``[N, C]`` (softmax of the logits)."""
        return self.forward(features).softmax(dim=1)

    def predict(self, features: Tensor) -> Tensor:
        """Predicted class indices ``LongTensor[N]`` (argmax of the logits, lowest index on ties)."""
        return self.forward(features).argmax(dim=1)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, num_classes={self.num_classes}"


@dataclass
class ProbeResult:
    """Outcome of :func:`probe_correctness` on the validation set."""

    correct: Tensor  # BoolTensor[N_val]: prediction == label
    probs: Tensor  # FloatTensor[N_val, C]
    preds: Tensor  # LongTensor[N_val]
    accuracy: float  # fraction in [0, 1]
    probe: LinearProbe


def fit_linear_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    standardize: bool = True,
    tolerance_grad: float = 1e-6,
    history_size: int = 20,
    num_threads: int | None = None,
    precondition: bool = True,
    precondition_samples: int = 8192,
    precondition_shift: float = 0.1,
) -> LinearProbe:
    r"""Fit multinomial logistic regression full-batch with L-BFGS (see the module docstring).

    Args:
        features: train representations ``[N, r]`` (any float dtype; computed in float32 on their device).
        labels: class indices ``LongTensor[N]``.
        num_classes: ``C``; defaults to ``labels.max() + 1``.
        weight_decay: :math:`\lambda`, the L2 penalty on the weights (the loss is a mean over samples,
            so this matches scikit-learn's ``C = 1 / (λ N)``).
        max_iter: maximum number of L-BFGS iterations, ``>= 1``.
        standardize: standardise each feature with the train mean and (population) std first.
        tolerance_grad: stop when the largest entry of the objective's gradient with respect to
            :math:`W` and :math:`b` is below this.
        history_size: L-BFGS memory.
        num_threads: CPU threads for the fit. ``None``: one thread for small problems
            (``N·r·C < 2e7``, where thread synchronisation costs more than it saves, and much more
            on a busy machine), torch's setting otherwise. Restored afterwards.
        precondition: optimise in the coordinates :math:`W = V L^{-1}`, :math:`L L^\top = A + \mu I`
            (module docstring); same optimum, fewer iterations on correlated features.
        precondition_samples: rows used to estimate :math:`A` (evenly spaced; all when fewer).
        precondition_shift: :math:`\rho`, the shift :math:`\mu` relative to the mean eigenvalue of :math:`A`.

    Raises:
        ValueError: bad shapes, NaN/Inf features, invalid labels, ``max_iter < 1``, ``history_size < 1``,
            or a negative ``weight_decay``, ``tolerance_grad`` or ``precondition_shift``.
    """
    max_iter = _positive_int(max_iter, "max_iter")
    history_size = _positive_int(history_size, "history_size")
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    tolerance_grad = check_nonnegative(tolerance_grad, "tolerance_grad")
    precondition_shift = check_nonnegative(precondition_shift, "precondition_shift")
    _check_features(features, "features")
    n, r = features.shape
    check_class_labels(labels, n, "labels")
    if n == 0:
        raise ValueError("cannot fit a linear probe on an empty train set")
    max_label = int(labels.max()) + 1
    num_classes = max_label if num_classes is None else int(num_classes)
    if num_classes < max_label:
        raise ValueError(f"labels go up to {max_label - 1} but num_classes={num_classes}")
    device = features.device
    if num_threads is None and n * r * max(num_classes, 2) < SMALL_PROBLEM:
        num_threads = 1
    with _cpu_threads(num_threads if device.type == "cpu" else None):
        return _fit(
            features, labels, num_classes, weight_decay, max_iter, standardize, tolerance_grad, history_size,
            precondition_samples if precondition else 0, precondition_shift,
        )


def _fit(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    standardize: bool,
    tolerance_grad: float,
    history_size: int,
    precondition_samples: int,
    precondition_shift: float,
) -> LinearProbe:
    n, r = features.shape
    device = features.device
    y = labels.to(device=device, dtype=torch.long)
    if standardize:
        mean, std = feature_mean_std(features)
    else:
        mean = torch.zeros(r, device=device)
        std = torch.ones(r, device=device)
    # Samples along the columns: the softmax over C classes then runs across contiguous rows of
    # length N (30x faster on CPU than along rows of length C); filled by chunks, one copy at a time.
    x_t = torch.empty(r, n, device=device, dtype=torch.float32)
    for start in range(0, n, 16384):
        x_t[:, start : start + 16384] = ((features[start : start + 16384].to(torch.float32) - mean) / std).t()

    # optimise V with W = V @ inv_factor (identity when not preconditioning)
    will_fit = num_classes > 1
    inv_factor = (_inverse_cholesky_factor(x_t, weight_decay, precondition_shift, precondition_samples)
                  if precondition_samples and will_fit else None)
    coords = torch.zeros(num_classes, r, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [coords, bias],
        lr=1.0,
        max_iter=int(max_iter),
        max_eval=int(max_iter) * 5 // 4 + 1,
        tolerance_grad=0.0,  # the closure checks the gradient in W's own coordinates
        tolerance_change=1e-10,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )
    half_decay = 0.5 * float(weight_decay)

    def weight_of(v: Tensor) -> Tensor:
        return v if inv_factor is None else v @ inv_factor

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=False)
        weight = weight_of(coords)
        if inv_factor is not None:
            weight.retain_grad()
        loss = _objective(x_t, y, weight, bias, half_decay)
        loss.backward()
        # L-BFGS would test the gradient in V's coordinates, whose scale the preconditioner changes
        if torch.maximum(weight.grad.abs().max(), bias.grad.abs().max()) <= tolerance_grad:
            raise _Converged
        return loss

    if will_fit:
        with torch.enable_grad():
            try:
                optimizer.step(closure)
            except _Converged:  # the parameters hold the point whose gradient passed the test
                pass
        iterations = int(optimizer.state[coords].get("n_iter", 0))
        with torch.no_grad():
            weight = weight_of(coords)
            final_loss = float(_objective(x_t, y, weight, bias, half_decay))
    else:
        weight, iterations, final_loss = coords, 0, float("nan")
    return LinearProbe(weight, bias, mean, std, num_iterations=iterations, final_loss=final_loss)


def _objective(x_t: Tensor, y: Tensor, weight: Tensor, bias: Tensor, half_decay: float) -> Tensor:
    """Mean cross-entropy of ``W x + b`` plus ``half_decay * ||W||^2``, with ``x_t`` = ``[r, N]``."""
    logits_t = torch.addmm(bias.unsqueeze(1), weight, x_t)  # [C, N]
    return -logits_t.log_softmax(dim=0).gather(0, y.unsqueeze(0)).mean() + half_decay * weight.pow(2).sum()


class _Converged(Exception):
    """Raised by the L-BFGS closure at a point that meets ``tolerance_grad``."""


def _inverse_cholesky_factor(x_t: Tensor, weight_decay: float, relative_shift: float, max_samples: int) -> Tensor:
    r""":math:`L^{-1}` for :math:`L L^\top = A + \mu I`, :math:`\mu = \max(\lambda, \rho \operatorname{tr}(A)/r)`,
    :math:`A = \frac1n X_S^\top X_S` over up to ``max_samples`` evenly spaced samples (columns of
    ``x_t`` = :math:`X^\top`). The product is taken in the features' dtype (it only shapes the path),
    the factorisation in float64."""
    r, n = x_t.shape
    cols = x_t if n <= max_samples else x_t[:, torch.linspace(0, n - 1, max_samples, device=x_t.device).long()]
    second_moment = (cols @ cols.t()).double() / cols.shape[1]
    mean_eigenvalue = float(second_moment.diagonal().mean())
    shift = max(float(weight_decay), float(relative_shift) * mean_eigenvalue, 1e-12 * mean_eigenvalue)
    eye = torch.eye(r, dtype=torch.float64, device=x_t.device)
    factor, info = torch.linalg.cholesky_ex(second_moment + shift * eye)
    if int(info) != 0 or shift <= 0:  # all-zero features or a failed factorisation: no preconditioning
        return torch.eye(r, dtype=x_t.dtype, device=x_t.device)
    return torch.linalg.solve_triangular(factor, eye, upper=False).to(x_t.dtype)


def probe_correctness(
    train_h: Tensor,
    train_y: Tensor,
    val_h: Tensor,
    val_y: Tensor,
    num_classes: int | None = None,
    **probe_kwargs,
) -> ProbeResult:
    r"""Fit the probe on the train set and mark each validation sample correct or not.

    ``correct_i = 1[argmax_c p(c | h_i) = y_i]`` and ``accuracy = mean_i correct_i`` (a fraction).
    ``num_classes`` defaults to ``max(train_y.max(), val_y.max()) + 1``; other keyword arguments go
    to :func:`fit_linear_probe`.
    """
    _check_features(val_h, "val_h")
    check_class_labels(val_y, val_h.shape[0], "val_y")
    if train_h.ndim == 2 and val_h.shape[1] != train_h.shape[1]:
        raise ValueError(f"train_h has {train_h.shape[1]} features but val_h has {val_h.shape[1]}")
    if num_classes is None:
        highest = int(train_y.max()) if train_y.numel() else 0
        if val_y.numel():
            highest = max(highest, int(val_y.max()))
        num_classes = highest + 1
    probe = fit_linear_probe(train_h, train_y, num_classes=num_classes, **probe_kwargs)
    logits = probe(val_h)
    probs = logits.softmax(dim=1)
    preds = logits.argmax(dim=1)
    correct = preds == val_y.to(preds.device)
    accuracy = float(correct.double().mean()) if correct.numel() else float("nan")
    return ProbeResult(correct=correct, probs=probs, preds=preds, accuracy=accuracy, probe=probe)
