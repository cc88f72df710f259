"""Label-distribution-aware margin loss (LDAM, Cao et al., 2019)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lit_imbalance._checks import check_choice, check_in_unit_interval, check_positive
from lit_imbalance.losses._common import (
    ClassCountsLoss,
    check_class_vector,
    check_logits,
    check_reduction,
)
from lit_imbalance.losses._fused_softmax import fused_softmax_loss
from lit_imbalance.priors import positive_class_counts
from lit_imbalance.weights import WEIGHT_SCHEMES, class_weights


def ldam_margins(class_counts: Sequence[int] | Tensor, max_m: float = 0.5) -> Tensor:
    r"""Per-class margins :math:`\Delta_c \propto n_c^{-1/4}`, scaled so the largest is ``max_m``.

    Args:
        class_counts: training samples per class ``(C,)``, all positive.
        max_m: margin of the rarest class, ``> 0``.

    Returns:
        float32 tensor ``(C,)``.

    Example:
        >>> ldam_margins([10000, 16, 1], max_m=0.5)
        tensor([0.0500, 0.2500, 0.5000])
    """
    counts = positive_class_counts(class_counts, reason="the margin n^(-1/4) is infinite")
    check_positive("max_m", max_m)
    margins = counts.pow(-0.25)
    return (margins * (max_m / margins.max())).to(torch.float32)


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    margins: Tensor,
    s: float = 30.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""LDAM loss: cross-entropy after subtracting a class-dependent margin from the true logit.

    .. math::
        \ell(x, y) = -w_y \log \frac{e^{s (x_y - \Delta_y)}}
                     {e^{s (x_y - \Delta_y)} + \sum_{c \ne y} e^{s x_c}}

    Cao et al. apply it to cosine logits (a normalised last layer) with
    ``s=30``; with raw logits a smaller ``s`` is usually better. Rare classes
    get the larger margins, pushing their decision boundary away from their
    few samples.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        margins: ``(C,)`` margins, from :func:`ldam_margins`.
        s: logit scale, ``> 0``.
        weight: optional per-class weights (the re-weighted stage of LDAM-DRW);
            ``"mean"`` is then the weighted mean, as with ``F.cross_entropy``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> ldam_loss(logits, target, ldam_margins([90, 10], max_m=0.5), s=1.0)
        tensor(0.3201)
    """
    logits = check_logits(logits)
    check_positive("s", s)
    check_reduction(reduction)
    check_class_vector(margins, logits.shape[1], "margins")
    if weight is not None:
        check_class_vector(weight, logits.shape[1], "weight")
    return fused_softmax_loss(
        logits,
        target,
        target_margin=margins,
        scale=s,
        class_weight=weight,
        weighted_mean=True,
        reduction=reduction,
        ignore_index=ignore_index,
    )


class LDAMLoss(ClassCountsLoss):
    """LDAM loss with margins from the training class counts; see :func:`ldam_loss`.

    Deferred re-weighting (LDAM-DRW) is a warm-up schedule whose target is
    this loss with ``reweight="effective"``: the same margins plus class
    weights ``class_weights(class_counts, reweight, beta)``.

    Args:
        class_counts: training samples per class, all positive; or set later
            with :meth:`set_class_counts`.
        max_m: margin of the rarest class.
        s: logit scale.
        reweight: ``None`` (no class weights) or a scheme of
            :func:`lit_imbalance.weights.class_weights` (``"inverse"``,
            ``"sqrt"``, ``"effective"``).
        beta: effective-number parameter for ``reweight="effective"``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = LDAMLoss(class_counts=[90, 10], s=1.0)
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.3201)
    """

    derived_buffers = ("margins", "class_weight")

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor | None = None,
        max_m: float = 0.5,
        s: float = 30.0,
        reweight: str | None = None,
        beta: float = 0.9999,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.max_m = check_positive("max_m", max_m)
        self.s = check_positive("s", s)
        self.reweight = check_choice("reweight", reweight, (None, *WEIGHT_SCHEMES))
        self.beta = check_in_unit_interval("beta", beta, open_right=True)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def statistics(self, class_counts: Tensor) -> Mapping[str, Tensor]:
        statistics = {"margins": ldam_margins(class_counts, self.max_m)}
        if self.reweight is not None:
            statistics["class_weight"] = class_weights(class_counts, self.reweight, self.beta)
        return statistics

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        self.require_class_counts(logits.shape[1])
        return ldam_loss(logits, target, self.margins, self.s, self.class_weight, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, reweight={self.reweight!r}"
