r"""Class-feature associations of the discriminative features (the bar plots of the paper's Fig. 1).

The paper shows that a discriminative feature, found without labels, fires mostly for samples of
one class or a few classes. With labels :math:`y_i \in \{0, \dots, C-1\}` of a population of
:math:`N` samples (the train set, where :math:`A` and :math:`D` come from), the one-hot class matrix
:math:`Y \in \{0,1\}^{N \times C}` and the highly activating matrix
:math:`L \in \{0,1\}^{N \times r}`, :math:`L_{ij} = 1[j \in L_i]` (docs/CONVENTIONS.md §2):

.. math::

    M = Y^\top L,\qquad M_{cj} = \#\{i : y_i = c,\ j \in L_i\}
    \qquad\text{(class-activation counts)}

    n_j = \textstyle\sum_c M_{cj} = N A_j / 100
    \qquad\text{(support: samples that highly activate } j)

    F_{cj} = M_{cj} / n_j
    \qquad\text{(share of class } c \text{ among them; } \textstyle\sum_c F_{cj} = 1)

    c^*_j = \arg\max_c F_{cj},\qquad \mathrm{purity}_j = F_{c^*_j j}

    R_{cj} = M_{cj} / N_c
    \qquad\text{(coverage: fraction of class } c \text{ that highly activates } j)

A feature that fires independently of the class has :math:`E[F_{cj}] = \pi_c = N_c / N`, the class
prior, so a purity is read against the prior of its class; because the purity of a feature with a
small support is high by chance, :func:`association_summary` also reports the mean purity after a
seeded shuffle of the labels (same supports, no class information), and the table ranks features by
the Wilson lower confidence bound of the purity (``z = 1.96``), which discounts small supports:

.. math::

    \mathrm{lb}_j = \frac{p + \frac{z^2}{2n} - z\sqrt{\frac{p(1-p)}{n} + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}},
    \qquad p = \mathrm{purity}_j,\ n = n_j .

A feature no sample activates (:math:`n_j = 0`) has no association: its fractions are 0, its top
class is -1 and its purity NaN (``null`` in JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from solo_qscore.core._validation import check_class_labels, check_finite_rows, check_mask, check_representations
from solo_qscore.core.activations import highly_activating

__all__ = [
    "CLASS_NAMES",
    "FeatureClassAssociations",
    "association_summary",
    "association_table",
    "class_activation_counts",
    "dataset_class_names",
    "feature_class_associations",
    "purity_lower_bound",
]

#: Class names of the datasets whose label order is fixed (index = label).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "stl10": ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "mnist": tuple(str(d) for d in range(10)),
}

DEFINITION = (
    "M = one_hot(y)^T L over the train set (L_ij = 1[j in L_i]); support n_j = sum_c M_cj; "
    "fraction F_cj = M_cj / n_j (share of class c among the samples that highly activate j); "
    "purity_j = max_c F_cj; coverage R_cj = M_cj / N_c; prior pi_c = N_c / N"
)


def dataset_class_names(dataset: Any) -> list[str] | None:
    """Class names of a dataset (or a dataset name), index = label; ``None`` when unknown.

    Wrappers (subsets, transforms) are unwrapped through their ``.dataset``; a dataset with a
    ``classes`` list (image folders) gives it, Trifeature gives the names of its target attribute,
    CIFAR-10, STL-10, Fashion-MNIST and MNIST their fixed names (by the ``name`` of the data actually
    loaded, so a CIFAR-10 config that fell back to Fashion-MNIST gets Fashion-MNIST's names).
    """
    if isinstance(dataset, str):
        names = CLASS_NAMES.get(dataset.lower())
        return list(names) if names is not None else None
    base, seen = dataset, 0
    while hasattr(base, "dataset") and seen < 16:  # Subset / TransformDataset / LabelledSubset chains
        classes = getattr(base, "classes", None)
        if isinstance(classes, (list, tuple)) and classes:
            return [str(c) for c in classes]
        base, seen = base.dataset, seen + 1
    classes = getattr(base, "classes", None)
    if isinstance(classes, (list, tuple)) and classes:
        return [str(c) for c in classes]
    name = getattr(base, "name", None) or getattr(dataset, "name", None)
    if name == "trifeature":
        from solo_qscore.data import trifeature

        target = getattr(base, "target", "shape")
        return list({"color": trifeature.COLOR_NAMES, "shape": trifeature.SHAPE_NAMES,
                     "texture": trifeature.TEXTURE_NAMES}[target])
    return dataset_class_names(name) if isinstance(name, str) else None


def _check_labels(labels: Tensor, n: int, num_classes: int | None) -> int:
    """Validate the labels and return the number of classes (``num_classes`` or inferred)."""
    check_class_labels(labels, n)
    highest = int(labels.max()) + 1 if n else 0
    if num_classes is None:
        return max(highest, 1)
    if int(num_classes) < max(highest, 1):
        raise ValueError(f"labels go up to {highest - 1} but num_classes={num_classes}")
    return int(num_classes)


def class_activation_counts(active: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    r"""Class-activation counts :math:`M = Y^\top L` (``LongTensor[C, r]``), without forming :math:`Y`.

    Args:
        active: ``BoolTensor[N, r]``, :math:`L_{ij} = 1[j \in L_i]` (e.g. from
            :func:`~solo_qscore.highly_activating`).
        labels: class indices ``[N]``.
        num_classes: :math:`C`; defaults to ``labels.max() + 1``.
    """
    if not isinstance(active, Tensor) or active.dtype != torch.bool or active.ndim != 2:
        got = (active.dtype, tuple(active.shape)) if isinstance(active, Tensor) else type(active).__name__
        raise ValueError(f"active must be a bool tensor [N, r], got {got}")
    num_classes = _check_labels(labels, active.shape[0], num_classes)
    counts = torch.zeros(num_classes, active.shape[1], dtype=torch.long, device=active.device)
    # Y^T L as a scatter-add of each row of L into its class row: exact integer counts in O(N r),
    # where the one-hot matmul would cost O(N r C) (1000 classes on ImageNet)
    return counts.index_add_(0, labels.long().to(active.device), active.long())


@dataclass(frozen=True)
class FeatureClassAssociations:
    """Associations of the features ``features`` with the classes (see the module docstring).

    Column ``k`` of every ``[C, K]`` matrix belongs to feature ``features[k]``.
    """

    features: Tensor  # LongTensor[K]: feature indices j, ascending
    counts: Tensor  # LongTensor[C, K]: M_cj
    support: Tensor  # LongTensor[K]: n_j
    class_sizes: Tensor  # LongTensor[C]: N_c
    fractions: Tensor  # DoubleTensor[C, K]: F_cj (0 where n_j = 0)
    coverage: Tensor  # DoubleTensor[C, K]: R_cj (0 for empty classes)
    top_class: Tensor  # LongTensor[K]: c*_j (-1 where n_j = 0)
    purity: Tensor  # DoubleTensor[K]: F_{c*_j j} (NaN where n_j = 0)
    num_samples: int  # N

    @property
    def num_classes(self) -> int:
        return int(self.class_sizes.numel())

    @property
    def priors(self) -> Tensor:
        r""":math:`\pi_c = N_c / N` (``DoubleTensor[C]``)."""
        return self.class_sizes.double() / max(self.num_samples, 1)

    @property
    def activation_frequency(self) -> Tensor:
        r""":math:`A_j = 100\, n_j / N` of the features, in percent."""
        return self.support.double() * (100.0 / max(self.num_samples, 1))


def _from_counts(features: Tensor, counts: Tensor, class_sizes: Tensor, num_samples: int) -> FeatureClassAssociations:
    support = counts.sum(0)
    fractions = counts.double() / support.clamp_min(1).double()
    coverage = counts.double() / class_sizes.clamp_min(1).double()[:, None]
    if counts.shape[0]:
        purity, top = fractions.max(0)  # first maximum: the lowest class index on ties
    else:
        purity = torch.zeros(counts.shape[1], dtype=torch.float64)
        top = torch.zeros(counts.shape[1], dtype=torch.long)
    empty = support == 0
    top = torch.where(empty, torch.full_like(top, -1), top)
    purity = torch.where(empty, torch.full_like(purity, float("nan")), purity)
    return FeatureClassAssociations(features, counts, support, class_sizes, fractions, coverage, top, purity,
                                    int(num_samples))


def feature_class_associations(
    h: Tensor,
    labels: Tensor,
    features: Tensor | None = None,
    eps: float = 4.0,
    num_classes: int | None = None,
    chunk_size: int = 8192,
) -> FeatureClassAssociations:
    r"""Class-feature associations of representations ``h`` with labels ``labels`` (module docstring).

    :math:`L` is computed chunk by chunk, so the ``[N, r]`` boolean matrix is never held whole.

    Args:
        h: raw representations ``[N, r]`` (L2-normalisation does not change :math:`L_i`).
        labels: class indices ``[N]``.
        features: ``BoolTensor[r]`` of the features to describe (the discriminative set :math:`D`);
            ``None``: all ``r`` features.
        eps: threshold of the highly activating sets, in standard deviations.
        num_classes: :math:`C`; defaults to ``labels.max() + 1``.
        chunk_size: samples per chunk.

    Raises:
        ValueError: bad shapes, NaN/Inf in ``h``, invalid labels or feature mask.
    """
    check_representations(h)
    check_finite_rows(h)
    n, r = h.shape
    num_classes = _check_labels(labels, n, num_classes)
    if features is None:
        features = torch.ones(r, dtype=torch.bool)
    check_mask(features, r, "features")
    index = features.nonzero().flatten().to(h.device)
    labels = labels.long().to(h.device)
    counts = torch.zeros(num_classes, index.numel(), dtype=torch.long, device=h.device)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for start in range(0, n, int(chunk_size)):
        stop = start + int(chunk_size)
        active = highly_activating(h[start:stop], eps)[:, index]
        counts += class_activation_counts(active, labels[start:stop], num_classes)
    class_sizes = torch.bincount(labels, minlength=num_classes)
    return _from_counts(index.cpu(), counts.cpu(), class_sizes.cpu(), n)


WILSON_Z = 1.96


def purity_lower_bound(purity: Tensor, support: Tensor, z: float = WILSON_Z) -> Tensor:
    r"""Wilson lower confidence bound of a purity :math:`p` measured on :math:`n` samples (module docstring).

    NaN where ``support`` is 0.
    """
    n = support.double()
    p = purity.double()
    z2 = float(z) ** 2
    safe = n.clamp_min(1)
    centre = p + z2 / (2 * safe)
    spread = float(z) * torch.sqrt((p * (1 - p) / safe + z2 / (4 * safe * safe)).clamp_min(0))
    bound = (centre - spread) / (1 + z2 / safe)
    return torch.where(n > 0, bound, torch.full_like(bound, float("nan")))


def _ranking(assoc: FeatureClassAssociations, min_support: int) -> Tensor:
    """Feature positions by: support >= min_support first, then the purity's lower bound, then support."""
    order = torch.arange(assoc.features.numel())
    bound = torch.nan_to_num(purity_lower_bound(assoc.purity, assoc.support), nan=-1.0)
    # successive stable sorts, least significant key first; ties keep the lower feature index
    for key in (assoc.support.double(), bound, (assoc.support >= int(min_support)).double()):
        order = order[torch.sort(key[order], descending=True, stable=True).indices]
    return order


def association_table(
    assoc: FeatureClassAssociations,
    max_features: int = 12,
    top_k: int = 5,
    min_support: int = 5,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The most class-specific features as table rows (JSON-ready), best first.

    Features are ranked by the Wilson lower bound of their purity (then support, then index), so a
    feature with few activating samples needs a higher purity to rank high; those activated by fewer
    than ``min_support`` samples come last and features no sample activates are left out. Each row:
    ``feature``, ``support`` (:math:`n_j`), ``activation_frequency`` (:math:`A_j`, %), ``top_class``,
    ``purity``, ``purity_lower_bound``, and per top class (``top_k``
    largest :math:`F_{cj}`, ties by lower class) ``top_classes``, ``top_fractions``, ``top_coverage``,
    ``top_priors`` (and ``top_class_name``/``top_class_names`` when ``class_names`` is given).
    """
    if int(max_features) < 0 or int(top_k) < 1:
        raise ValueError(f"need max_features >= 0 and top_k >= 1, got {max_features} and {top_k}")
    if class_names is not None and len(class_names) < assoc.num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but there are {assoc.num_classes} classes")
    order = _ranking(assoc, min_support)
    order = order[assoc.support[order] > 0][: int(max_features)]
    k = min(int(top_k), assoc.num_classes)
    frac = assoc.fractions[:, order]
    top = torch.sort(frac, dim=0, descending=True, stable=True).indices[:k]  # [k, rows]
    priors = assoc.priors
    freq = assoc.activation_frequency
    bound = purity_lower_bound(assoc.purity, assoc.support)
    rows = []
    for col, pos in enumerate(order.tolist()):  # at most max_features rows: a table, not data
        classes = top[:, col]
        keep = frac[classes, col] > 0  # only classes that do activate the feature
        classes = classes[keep]
        row: dict[str, Any] = {
            "feature": int(assoc.features[pos]),
            "support": int(assoc.support[pos]),
            "activation_frequency": float(freq[pos]),
            "top_class": int(assoc.top_class[pos]),
            "purity": float(assoc.purity[pos]),
            "purity_lower_bound": float(bound[pos]),
            "top_classes": classes.tolist(),
            "top_fractions": frac[classes, col].tolist(),
            "top_coverage": assoc.coverage[classes, pos].tolist(),
            "top_priors": priors[classes].tolist(),
        }
        if class_names is not None:
            row["top_class_name"] = str(class_names[row["top_class"]])
            row["top_class_names"] = [str(class_names[c]) for c in row["top_classes"]]
        rows.append(row)
    return rows


def association_summary(
    assoc: FeatureClassAssociations,
    class_names: Sequence[str] | None = None,
    max_features: int = 12,
    top_k: int = 5,
    min_support: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    r"""JSON-ready summary: aggregate purity, features per top class and :func:`association_table`.

    ``mean_purity`` is the mean of :math:`\mathrm{purity}_j` over the features some sample activates;
    ``mean_purity_shuffled`` is the same after a seeded shuffle of the labels (same supports, no
    class information): the chance level to read it against, which lies above ``max_prior`` for
    features of small support. ``features_per_top_class[c]`` counts the features whose top class is c.
    """
    defined = assoc.support > 0
    n_defined = int(defined.sum())
    purity = assoc.purity[defined]
    shuffled = _shuffled_purity(assoc, seed)[defined] if n_defined else purity
    notes = []
    if assoc.features.numel() == 0:
        notes.append("no feature to describe (the discriminative set is empty)")
    elif n_defined == 0:
        notes.append("no sample highly activates any of these features: no class association is defined")
    elif n_defined < assoc.features.numel():
        notes.append(f"{assoc.features.numel() - n_defined} of {assoc.features.numel()} features are highly "
                     "activated by no sample (fractions 0, top class -1, purity null)")
    weak = int(((assoc.support > 0) & (assoc.support < int(min_support))).sum())
    if weak:
        notes.append(f"{weak} features have fewer than {int(min_support)} activating samples: their purity is "
                     "unreliable (ranked last in the table)")
    owned = torch.bincount(assoc.top_class[defined], minlength=assoc.num_classes) if n_defined else (
        torch.zeros(assoc.num_classes, dtype=torch.long))
    return {
        "definition": DEFINITION,
        "num_samples": assoc.num_samples,
        "num_classes": assoc.num_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "class_priors": assoc.priors.tolist(),
        "num_features": int(assoc.features.numel()),
        "num_features_activated": n_defined,
        "min_support": int(min_support),
        "mean_purity": float(purity.mean()) if n_defined else None,
        "median_purity": float(purity.median()) if n_defined else None,
        "mean_purity_shuffled": float(shuffled.mean()) if n_defined else None,
        "max_prior": float(assoc.priors.max()) if assoc.num_classes else None,
        "features_per_top_class": owned.tolist(),
        "features": association_table(assoc, max_features, top_k, min_support, class_names),
        "note": "; ".join(notes) if notes else None,
    }


def _shuffled_purity(assoc: FeatureClassAssociations, seed: int) -> Tensor:
    """Purity of each feature after a seeded shuffle of the labels (its support ``n_j`` unchanged).

    After a shuffle, the samples that activate feature j carry the labels of ``n_j`` draws without
    replacement from the population; the first ``n_j`` labels of one random permutation are such a
    draw (shared by the features, which leaves each feature's expected purity unchanged). The class
    counts among the first ``n_j`` are read off a sorted ``(label, position)`` key with
    ``searchsorted``: ``O(N + C K)`` memory, no ``[N, C]`` one-hot.
    """
    n, num_classes = assoc.num_samples, assoc.num_classes
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.repeat_interleave(torch.arange(num_classes), assoc.class_sizes)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    keys = (labels * (n + 1) + torch.arange(labels.numel())).sort().values
    base = torch.arange(num_classes)[:, None] * (n + 1)  # [C, 1]
    drawn = torch.searchsorted(keys, base + assoc.support[None, :]) - torch.searchsorted(keys, base)
    purity = drawn.double().max(0).values / assoc.support.clamp_min(1).double()
    return torch.where(assoc.support > 0, purity, torch.full_like(purity, float("nan")))
