"""Exponential long-tail construction, the protocol of the CIFAR-LT benchmarks."""

from __future__ import annotations

import numpy as np
import torch

from lit_imbalance._checks import check_positive_int, fail
from lit_imbalance.data.labels import as_label_tensor, class_counts


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    r"""Per-class sizes of an exponential long tail.

    :math:`n_i = \lfloor n_{max} \cdot \rho^{-i/(C-1)} \rfloor`, at least 1, so
    class 0 keeps ``n_max`` samples and class ``C-1`` about ``n_max / rho``.

    Args:
        n_max: size of the head class.
        num_classes: number of classes ``C``.
        imbalance_ratio: ``rho = n_0 / n_{C-1}``, at least 1.

    Example:
        >>> long_tail_counts(100, 3, 100)
        [100, 10, 1]
    """
    check_positive_int("n_max", n_max)
    check_positive_int("num_classes", num_classes)
    if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, (int, float)) or not imbalance_ratio >= 1:
        fail("imbalance_ratio", "a float >= 1", imbalance_ratio)
    if num_classes == 1:
        return [n_max]
    # The small epsilon keeps exact powers (100 * 100**-0.5 = 10) from flooring to 9.
    return [
        max(1, int(n_max * imbalance_ratio ** (-i / (num_classes - 1)) + 1e-9)) for i in range(num_classes)
    ]


def long_tail(
    labels: torch.Tensor | np.ndarray,
    imbalance_ratio: float,
    n_max: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Indices of a random subset of ``labels`` that follows an exponential long tail.

    Class ``i`` keeps ``long_tail_counts(n_max, C, imbalance_ratio)[i]`` samples,
    drawn without replacement with a fixed ``seed``, so the same call always
    gives the same subset.

    Args:
        labels: 1-D integer labels of the full (balanced) set.
        imbalance_ratio: head-to-tail ratio ``rho``.
        n_max: size of the head class; defaults to the smallest class size in
            ``labels`` so that every class can supply its quota.
        seed: seed of the draw.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: if a class has fewer samples than its quota.

    Example:
        >>> labels = torch.arange(4).repeat_interleave(8)
        >>> torch.bincount(labels[long_tail(labels, imbalance_ratio=8)]).tolist()
        [8, 4, 2, 1]
    """
    labels = as_label_tensor(labels)
    available = class_counts(labels)
    if n_max is None:
        n_max = int(available.min())
    quotas = long_tail_counts(n_max, available.numel(), imbalance_ratio)
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for cls, quota in enumerate(quotas):
        members = torch.nonzero(labels == cls).flatten()
        if members.numel() < quota:
            fail("n_max", f"at most {members.numel()} (class {cls} has only {members.numel()} samples)", n_max)
        kept.append(members[torch.randperm(members.numel(), generator=generator)[:quota]])
    return torch.cat(kept).sort().values
