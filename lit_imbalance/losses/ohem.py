"""Online hard example mining (OHEM) over per-element binary cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_positive, check_positive_int
from lit_imbalance.losses._common import (
    SIGMOID_REDUCTIONS,
    binary_targets,
    check_logits,
    check_reduction,
    weighted_bce,
)


def ohem_loss(
    logits: Tensor,
    target: Tensor,
    neg_pos_ratio: float = 3.0,
    top_k: int | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy on the hard examples of the batch only.

    Per element (a logit and its target), :math:`\ell = \mathrm{BCE}(x, t)`.
    Mining picks, over the whole batch:

    * by default (SSD-style hard negative mining, Liu et al., 2016): every
      positive element (:math:`t > 0`) and the
      :math:`\lfloor r \cdot \#\text{positives} \rfloor` negatives with the
      largest loss, :math:`r` = ``neg_pos_ratio``; a batch without positives
      keeps nothing;
    * with ``top_k`` (Shrivastava et al., 2016): the ``top_k`` elements with the
      largest loss, positive or negative.

    Selection ranks the losses computed once without autograd, and the kept
    elements then enter ``binary_cross_entropy_with_logits`` as its weight, so
    the loss, its reduction and its gradient are one library kernel and no
    element-wise loss tensor is kept for backward.

    The selection carries no gradient. On the CPU it reads the number of
    negatives to keep and takes them with ``topk``; on other devices (and under
    ``torch.compile``) it ranks the negatives with one sort instead, so it
    never waits for the device. Both keep the same elements up to ties, which
    have equal losses, so the value is the same.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)`` (or any shape with same-shape targets).
        target: same shape as ``logits``, or integer class indices ``(N, d1, ...)``
            one-hot encoded along dim 1 (``ignore_index`` rows masked).
        neg_pos_ratio: hard negatives kept per positive, ``> 0``.
        top_k: keep the ``top_k`` hardest elements instead.
        ignore_index: class index whose rows are ignored (class-index targets only).
        reduction: ``"mean"`` (over the kept elements), ``"sum"``, ``"none"``
            (zero where not kept) or ``"positives"`` (sum over ``max(1, #positives)``, SSD's normaliser).

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.5], [0.5, 3.0, -2.0]])
        >>> ohem_loss(logits, torch.tensor([0, 1]), neg_pos_ratio=1.0)
        tensor(0.5309)
    """
    logits = check_logits(logits, min_ndim=1)
    check_positive("neg_pos_ratio", neg_pos_ratio)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    check_reduction(reduction, SIGMOID_REDUCTIONS)
    targets, valid = binary_targets(logits, target, ignore_index)
    with torch.no_grad():
        scores = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    keep = hard_examples(scores, targets, valid, neg_pos_ratio, top_k)
    # The kept elements as BCE's own weight; "mean" divides by the number kept.
    return weighted_bce(logits, targets, keep.to(logits.dtype), reduction, keep)


def hard_examples(
    loss: Tensor,
    targets: Tensor,
    valid: Tensor | None,
    neg_pos_ratio: float,
    top_k: int | None,
    sync_free: bool | None = None,
) -> Tensor:
    """Boolean mask (shaped like ``loss``) of the elements :func:`ohem_loss` keeps.

    ``sync_free=None`` picks the host-sync-free sort everywhere but on the CPU
    outside ``torch.compile`` (see :func:`ohem_loss`).
    """
    flat_loss = loss.flatten()
    ignored = None if valid is None else ~valid.expand_as(loss).flatten()
    if top_k is not None:
        scores = flat_loss if ignored is None else flat_loss.masked_fill(ignored, -torch.inf)
        hardest = scores.topk(min(top_k, flat_loss.numel())).indices
        keep = torch.zeros(flat_loss.shape, dtype=torch.bool, device=loss.device).index_fill_(0, hardest, True)
        return (keep if ignored is None else keep & ~ignored).view_as(loss)
    positive = targets.detach().flatten() > 0
    if ignored is not None:
        positive &= ~ignored
    not_negative = positive if ignored is None else positive | ignored
    num_positive = positive.sum()
    num_hard = (num_positive * neg_pos_ratio).floor()
    negative_loss = flat_loss.masked_fill(not_negative, -torch.inf)
    if sync_free is None:
        sync_free = flat_loss.device.type != "cpu" or torch.compiler.is_compiling()
    if sync_free:
        order = negative_loss.argsort(descending=True)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        return (positive | (~not_negative & (rank < num_hard))).view_as(loss)
    # Reading the count is free on the CPU. The count-th largest negative loss (a selection, O(n)) is
    # about 3x faster than topk of count elements, which sorts them: keep every negative above it,
    # and of those equal to it as many as the count still asks for (in index order).
    num_counted = flat_loss.numel() if ignored is None else int((~ignored).sum())
    count = min(int(num_hard), num_counted - int(num_positive))
    if count <= 0:
        return positive.view_as(loss)
    threshold = negative_loss.kthvalue(negative_loss.numel() - count + 1).values
    keep = positive.logical_or_(negative_loss > threshold)
    tied = negative_loss == threshold
    missing = count - (int(keep.sum()) - int(num_positive))
    if int(tied.sum()) > missing:  # rare (equal losses): the first ones in index order
        tied &= tied.cumsum(0) <= missing
    return keep.logical_or_(tied).view_as(loss)


class OHEMLoss(nn.Module):
    """Online hard example mining; see :func:`ohem_loss`.

    Example:
        >>> loss = OHEMLoss(neg_pos_ratio=1.0)
        >>> loss(torch.tensor([[2.0, -1.0, 0.5], [0.5, 3.0, -2.0]]), torch.tensor([0, 1]))
        tensor(0.5309)
    """

    needs_class_counts = False
    # One independent sigmoid per logit: the bias prior is logit(pi_c), not log(pi_c).
    sigmoid_outputs = True

    def __init__(
        self,
        neg_pos_ratio: float = 3.0,
        top_k: int | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.neg_pos_ratio = check_positive("neg_pos_ratio", neg_pos_ratio)
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction, SIGMOID_REDUCTIONS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return ohem_loss(logits, target, self.neg_pos_ratio, self.top_k, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"neg_pos_ratio={self.neg_pos_ratio}, top_k={self.top_k}"
