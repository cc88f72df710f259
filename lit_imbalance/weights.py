"""Per-class weights from class counts: the single source for losses and samplers.

Every re-weighting in the project (weighted CE, class-balanced losses, DRW,
weighted sampling) calls :func:`class_weights`, so that ``scheme="effective"``
means the same thing whether it scales a loss or a sampling probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail

WeightScheme = Literal["inverse", "sqrt", "effective"]
Normalization = Literal["sum_to_C", "sum_to_1"] | None

WEIGHT_SCHEMES = ("inverse", "sqrt", "effective")
NORMALIZATIONS = ("sum_to_C", "sum_to_1", None)


def as_class_counts(class_counts: Sequence[float] | torch.Tensor, name: str = "class_counts") -> torch.Tensor:
    """Validate class counts and return them as a 1-D float64 tensor.

    Args:
        class_counts: number of training samples per class, shape ``(C,)``.
        name: argument name used in error messages.

    Raises:
        ValueError: if the counts are not 1-D, are negative, non-finite or all zero.

    Example:
        >>> as_class_counts([3, 1])
        tensor([3., 1.], dtype=torch.float64)
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    if counts.ndim != 1 or counts.numel() == 0:
        fail(name, "a non-empty 1-D sequence of per-class counts", class_counts)
    if not torch.isfinite(counts).all() or (counts < 0).any():
        fail(name, "finite non-negative per-class counts", counts.tolist())
    if counts.sum() == 0:
        fail(name, "counts with at least one non-zero class", counts.tolist())
    return counts


def class_weights(
    class_counts: Sequence[float] | torch.Tensor,
    scheme: WeightScheme = "inverse",
    beta: float = 0.9999,
    normalize: Normalization = "sum_to_C",
) -> torch.Tensor:
    r"""Per-class weights that grow as a class gets rarer.

    With :math:`n_c` the number of training samples of class :math:`c`:

    * ``"inverse"``: :math:`w_c = 1 / n_c` (re-weighting by inverse frequency);
    * ``"sqrt"``: :math:`w_c = 1 / \sqrt{n_c}` (a softer version);
    * ``"effective"``: :math:`w_c = (1 - \beta) / (1 - \beta^{n_c})`, the inverse
      effective number of samples of Cui et al. (2019). ``beta=0`` gives equal
      weights, ``beta -> 1`` approaches ``"inverse"``.

    A class with zero samples gets weight 0: no training sample can carry it,
    and an infinite weight would poison the normalisation.

    Args:
        class_counts: samples per class, shape ``(C,)``.
        scheme: ``"inverse"``, ``"sqrt"`` or ``"effective"``.
        beta: the effective-number hyper-parameter in ``[0, 1)``; only used by
            ``"effective"``.
        normalize: ``"sum_to_C"`` (weights sum to the number of classes, so the
            average weight is 1 and the loss scale matches unweighted CE),
            ``"sum_to_1"`` (a probability vector) or ``None`` (raw weights).

    Returns:
        float32 tensor of shape ``(C,)``.

    Example:
        >>> class_weights([100, 10, 1], scheme="inverse", normalize="sum_to_1")
        tensor([0.0090, 0.0901, 0.9009])
        >>> class_weights([100, 10], scheme="effective", beta=0.0)
        tensor([1., 1.])
    """
    counts = as_class_counts(class_counts)
    check_choice("scheme", scheme, WEIGHT_SCHEMES)
    check_choice("normalize", normalize, NORMALIZATIONS)
    present = counts > 0
    safe_counts = counts.clamp_min(1.0)
    if scheme == "inverse":
        weights = 1.0 / safe_counts
    elif scheme == "sqrt":
        weights = safe_counts.rsqrt()
    else:
        beta = check_in_unit_interval("beta", beta, open_right=True)
        # -expm1(n * log(beta)) == 1 - beta**n without cancellation for beta near 1.
        if beta == 0.0:
            weights = torch.ones_like(counts)
        else:
            weights = (1.0 - beta) / -torch.expm1(safe_counts * torch.log(torch.tensor(beta, dtype=torch.float64)))
    weights = torch.where(present, weights, torch.zeros_like(weights))
    if normalize == "sum_to_C":
        weights = weights * (counts.numel() / weights.sum())
    elif normalize == "sum_to_1":
        weights = weights / weights.sum()
    return weights.to(torch.float32)
