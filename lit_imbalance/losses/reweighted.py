"""Cross-entropy and its re-weightings: by class, by cost matrix, by effective number (Cui et al.).

Every class weight comes from :func:`lit_imbalance.weights.class_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail
from lit_imbalance.losses._common import (
    REDUCTIONS,
    SIGMOID_REDUCTIONS,
    ClassCountsLoss,
    as_float_tensor,
    binary_targets,
    check_class_vector,
    check_gamma,
    check_logits,
    check_reduction,
    class_index_target,
    mask,
    per_class,
    reduce_loss,
    weighted_bce,
)
from lit_imbalance.losses._closed_form import ClosedFormLoss, bce_kernel, kernel_path, reduction_scale
from lit_imbalance.losses._fused_softmax import fused_softmax_loss
from lit_imbalance.losses.focal import _sigmoid_focal, _softmax_focal
from lit_imbalance.weights import NORMALIZATIONS, WEIGHT_SCHEMES, class_weights

WEIGHT_BY = ("target", "prediction")
CLASS_BALANCED_BASES = ("softmax", "sigmoid", "focal", "sigmoid_focal")


def _cross_entropy_terms(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    label_smoothing: float,
    ignore_index: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Per-sample (class-weighted) CE, the safe target, the valid mask and the per-sample weight."""
    safe_target, valid = class_index_target(logits, target, ignore_index)
    sample_weight = None
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
        check_class_vector(weight, logits.shape[1], "weight")
        sample_weight = mask(weight[safe_target], valid)
    loss = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="none", label_smoothing=label_smoothing
    )
    return loss, safe_target, valid, sample_weight


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy :math:`-w_y \log \mathrm{softmax}(x)_y`.

    Computed by the fused softmax kernel
    (:func:`~lit_imbalance.losses._fused_softmax.fused_softmax_loss`), or by
    ``F.cross_entropy`` with label smoothing. Same values as ``F.cross_entropy`` (with ``weight``, ``"mean"`` is PyTorch's
    weighted mean :math:`\sum_i w_{y_i} \ell_i / \sum_i w_{y_i}`), computed in
    fp32, with targets checked, and 0 instead of NaN for a batch whose targets
    are all ``ignore_index``.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        weight: optional non-negative per-class weights ``(C,)``.
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> cross_entropy(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.2201)
    """
    logits = check_logits(logits)
    check_in_unit_interval("label_smoothing", label_smoothing)
    check_reduction(reduction)
    if label_smoothing == 0.0:
        if weight is not None:
            check_class_vector(weight, logits.shape[1], "weight")
        return fused_softmax_loss(
            logits, target, class_weight=weight, weighted_mean=True, reduction=reduction, ignore_index=ignore_index
        )
    loss, _, valid, sample_weight = _cross_entropy_terms(logits, target, weight, label_smoothing, ignore_index)
    return reduce_loss(loss, reduction, valid, weight=sample_weight)


class CrossEntropyLoss(nn.Module):
    """Cross-entropy; see :func:`cross_entropy`.

    Example:
        >>> CrossEntropyLoss()(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.2201)
    """

    needs_class_counts = False

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.label_smoothing = check_in_unit_interval("label_smoothing", label_smoothing)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(logits, target, None, self.label_smoothing, self.ignore_index, self.reduction)


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor,
    weight_by: str = "target",
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Class-weighted cross-entropy, weighting each sample by its true or its predicted class.

    * ``weight_by="target"``: :math:`\ell_i = -w_{y_i} \log p_{i, y_i}` (the usual
      re-weighting; ``F.cross_entropy(weight=...)``).
    * ``weight_by="prediction"``: :math:`\ell_i = -w_{\hat y_i} \log p_{i, y_i}`
      with :math:`\hat y_i = \arg\max_c x_{i,c}` (no gradient through the
      argmax): a sample predicted as a rare class weighs more, which penalises
      rare-class false positives as well as rewarding their true positives.

    ``"mean"`` is the weighted mean :math:`\sum_i \ell_i / \sum_i w_i` in both
    cases (PyTorch's convention), so the loss scale does not depend on the
    weights' normalisation.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        weight: non-negative per-class weights ``(C,)``, e.g. from
            :func:`lit_imbalance.weights.class_weights`.
        weight_by: ``"target"`` or ``"prediction"``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
        >>> weight = class_weights([90, 10])
        >>> weighted_cross_entropy(logits, target, weight)
        tensor(0.7201)
        >>> weighted_cross_entropy(logits, target, weight, weight_by="prediction")  # the 2nd sample predicted 1
        tensor(1.1946)
    """
    logits = check_logits(logits)
    check_choice("weight_by", weight_by, WEIGHT_BY)
    check_reduction(reduction)
    if weight_by == "target":
        return cross_entropy(logits, target, weight, ignore_index=ignore_index, reduction=reduction)
    check_class_vector(weight, logits.shape[1], "weight")
    predicted = logits.detach().argmax(1)
    sample_weight = weight.to(device=logits.device, dtype=logits.dtype)[predicted]
    return fused_softmax_loss(
        logits, target, sample_weight=sample_weight, weighted_mean=True, reduction=reduction, ignore_index=ignore_index
    )


class WeightedCrossEntropyLoss(ClassCountsLoss):
    """Cross-entropy with class weights from the training class counts.

    The weights are ``class_weights(class_counts, scheme, beta, normalize)``
    (see :func:`lit_imbalance.weights.class_weights`); the loss is
    :func:`weighted_cross_entropy`.

    Args:
        class_counts: training samples per class; or set later with :meth:`set_class_counts`.
        scheme: ``"inverse"``, ``"sqrt"`` or ``"effective"``.
        beta: effective-number parameter in ``[0, 1)`` (``scheme="effective"`` only).
        normalize: ``"sum_to_C"``, ``"sum_to_1"`` or ``None``.
        weight_by: ``"target"`` or ``"prediction"``.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = WeightedCrossEntropyLoss(class_counts=[90, 10])
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.2946)
    """

    derived_buffers = ("class_weight",)

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor | None = None,
        scheme: str = "inverse",
        beta: float = 0.9999,
        normalize: str | None = "sum_to_C",
        weight_by: str = "target",
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.scheme = check_choice("scheme", scheme, WEIGHT_SCHEMES)
        self.beta = check_in_unit_interval("beta", beta, open_right=True)
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        self.weight_by = check_choice("weight_by", weight_by, WEIGHT_BY)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def statistics(self, class_counts: Tensor) -> Mapping[str, Tensor]:
        return {"class_weight": class_weights(class_counts, self.scheme, self.beta, self.normalize)}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        self.require_class_counts(logits.shape[1])
        return weighted_cross_entropy(
            logits, target, self.class_weight, self.weight_by, self.ignore_index, self.reduction
        )


def as_cost_matrix(cost_matrix: Sequence[Sequence[float]] | Tensor, num_classes: int | None = None) -> Tensor:
    """Validate a cost matrix: square, finite, non-negative and, when given, ``num_classes x num_classes``."""
    cost = as_float_tensor(cost_matrix, "cost_matrix")
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        fail("cost_matrix", "a square C x C matrix", cost.tolist())
    if (cost < 0).any():
        fail("cost_matrix", "non-negative costs", cost.tolist())
    check_cost_shape(cost, num_classes)
    return cost


def check_cost_shape(cost: Tensor, num_classes: int | None) -> None:
    """Raise unless the cost matrix is ``num_classes x num_classes``."""
    if num_classes is not None and cost.shape != (num_classes, num_classes):
        fail("cost_matrix", f"a {num_classes} x {num_classes} matrix (C x C for the logits)", cost.tolist())


def cost_sensitive_loss(
    logits: Tensor,
    target: Tensor,
    cost_matrix: Sequence[Sequence[float]] | Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy weighted by the expected misclassification cost of the current prediction.

    With :math:`p = \mathrm{softmax}(x)` and a cost matrix :math:`K_{y j}`
    (the cost of predicting :math:`j` when the truth is :math:`y`):

    .. math::
        \ell(x, y) = \Big(\textstyle\sum_j \bar p_j K_{y j}\Big)\,(-\log p_y),

    where :math:`\bar p` is :math:`p` without gradient. This is
    cost-proportionate example weighting (Zadrozny, Langford & Abe, 2003) with
    the example's cost estimated as the expected cost of the model's current
    prediction: a sample the model would send to an expensive class weighs
    more, a correctly and confidently classified one fades out (with zero
    diagonal costs). The weight is not differentiated, so the gradient stays
    CE's, rescaled per sample, and a proper scoring rule drives learning. For
    two classes the fixed point of this weighting puts the argmax exactly on
    the Bayes cost-sensitive decision (predict 1 iff
    :math:`P(1|x) K_{10} > P(0|x) K_{01}`). The default cost matrix
    ``1 - eye(C)`` (every error costs 1) gives the weight :math:`1 - p_y`.

    Runs on the fused softmax kernel. A matrix whose costs depend on the true
    class only (zero diagonal, constant rows off it, the default included) is
    a per-sample weight :math:`a_y (1 - p_y)` and costs about one CE; a general
    matrix needs :math:`\sum_j \bar p_j K_{yj}`, one more pass over the
    probabilities and an ``(N, C)`` gather of cost rows.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices, ``(N,)`` or ``(N, d1, ...)``.
        cost_matrix: ``(C, C)`` non-negative costs ``cost[true, predicted]``;
            ``None`` for the 0-1 cost. A class whose row is all zero is never learned.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"`` (over non-ignored samples), ``"sum"`` or ``"none"`` (per sample).

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> cost_sensitive_loss(logits, target, [[0.0, 1.0], [5.0, 0.0]])
        tensor(0.2182)
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    matrix = None if cost_matrix is None else as_cost_matrix(cost_matrix, logits.shape[1])
    cost = None if matrix is None else error_costs(matrix)
    return _cost_sensitive(logits, target, matrix, cost, ignore_index, reduction)


def _cost_sensitive(
    logits: Tensor,
    target: Tensor,
    cost_matrix: Tensor | None,
    cost: Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Tensor:
    """:func:`cost_sensitive_loss` on a validated matrix and its :func:`error_costs` form (``None``: 0-1 cost)."""
    num_classes = logits.shape[1]
    if cost is None:
        cost = logits.new_ones(num_classes)  # the 0-1 cost, in its O(N) form
    else:
        check_cost_shape(cost_matrix, num_classes)
    return fused_softmax_loss(logits, target, cost=cost, reduction=reduction, ignore_index=ignore_index)


def error_costs(cost: Tensor) -> Tensor:
    """The cost matrix in the fused kernel's cheapest form: ``(C,)`` when it depends on the true class only.

    A matrix with a zero diagonal and each row constant off it, ``K = a 1^T - diag(a)``,
    gives the weight :math:`a_y (1 - p_y)` in O(N); any other matrix is kept
    whole and costs one more pass over the probabilities.
    """
    num_classes = cost.shape[0]
    if num_classes < 2:
        return cost
    # Row i's first off-diagonal cost (column 1 for row 0, else column 0); exact, no sum to round.
    errors = cost[torch.arange(num_classes), (torch.arange(num_classes) == 0).long()]
    if torch.equal(cost, errors.unsqueeze(1) * (1.0 - torch.eye(cost.shape[0], dtype=cost.dtype))):
        return errors
    return cost


class CostSensitiveLoss(nn.Module):
    """Cross-entropy weighted by the expected cost of the prediction; see :func:`cost_sensitive_loss`.

    Args:
        cost_matrix: ``(C, C)`` costs ``cost[true, predicted]``; ``None`` for the 0-1 cost.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = CostSensitiveLoss(cost_matrix=[[0.0, 1.0], [5.0, 0.0]])
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.2182)
    """

    needs_class_counts = False

    def __init__(
        self,
        cost_matrix: Sequence[Sequence[float]] | Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.register_buffer("cost_matrix", None if cost_matrix is None else as_cost_matrix(cost_matrix))
        # Derived once here, not per batch: checking the structure reads all C^2 costs.
        self.register_buffer(
            "kernel_cost", None if self.cost_matrix is None else error_costs(self.cost_matrix), persistent=False
        )
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        return _cost_sensitive(logits, target, self.cost_matrix, self.kernel_cost, self.ignore_index, self.reduction)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]
        if self.cost_matrix is not None:  # a loaded matrix replaces the one the kernel form came from
            self.kernel_cost = error_costs(self.cost_matrix.cpu()).to(self.cost_matrix.device)


def class_balanced_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: Sequence[int] | Tensor,
    beta: float = 0.9999,
    base: str = "softmax",
    gamma: float = 2.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    r"""Class-balanced loss (Cui et al., 2019): a base loss weighted by the inverse effective number.

    .. math::
        \mathrm{CB}(x, y) = w_y\,\mathcal{L}(x, y), \qquad
        w_c \propto \frac{1 - \beta}{1 - \beta^{n_c}}, \quad \sum_c w_c = C,

    the weights of ``class_weights(class_counts, "effective", beta)``.
    ``beta=0`` gives equal weights, i.e. the base loss exactly; ``beta -> 1``
    approaches inverse-frequency weighting. ``"mean"`` averages over samples
    (elements for sigmoid bases), not over weights, as in the paper's code.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices ``(N, d1, ...)``; sigmoid bases also take
            targets shaped like ``logits``, whose row weight is
            :math:`\sum_c w_c t_c` (the paper's formula; a row without
            positives gets weight 0).
        class_counts: training samples per class ``(C,)``.
        beta: in ``[0, 1)``.
        base: ``"softmax"`` (CE), ``"focal"`` (softmax focal), ``"sigmoid"``
            (BCE on one-hot targets, the whole row weighted by :math:`w_y`) or
            ``"sigmoid_focal"`` (the paper's focal variant, no ``alpha``).
        gamma: focusing parameter of the focal bases.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"``, ``"none"``, or ``"positives"`` for sigmoid bases.

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
        >>> class_balanced_loss(logits, target, class_counts=[90, 10], beta=0.99)
        tensor(0.2875)
        >>> class_balanced_loss(logits, target, class_counts=[90, 10], beta=0.0)  # == CE
        tensor(0.2201)
    """
    weight = class_weights(class_counts, "effective", beta)
    check_choice("base", base, CLASS_BALANCED_BASES)
    check_reduction(reduction, class_balanced_reductions(base))
    return _class_balanced(check_logits(logits), target, weight, base, check_gamma(gamma), ignore_index, reduction)


def class_balanced_reductions(base: str) -> tuple[str, ...]:
    """Reductions a class-balanced loss supports with ``base``."""
    return SIGMOID_REDUCTIONS if base.startswith("sigmoid") else REDUCTIONS


def _class_balanced(
    logits: Tensor, target: Tensor, weight: Tensor, base: str, gamma: float, ignore_index: int, reduction: str
) -> Tensor:
    """:func:`class_balanced_loss` from per-class weights ``(C,)``."""
    check_class_vector(weight, logits.shape[1], "class_counts")
    if base == "focal":
        return _softmax_focal(logits, target, gamma, weight, ignore_index, reduction)
    if base == "softmax":
        return fused_softmax_loss(logits, target, class_weight=weight, reduction=reduction, ignore_index=ignore_index)
    targets, valid = binary_targets(logits, target, ignore_index)
    if target.shape != logits.shape and logits.shape[1] > 1:
        # Class indices: a sample's weight is its class's, one gather instead of a pass over the one-hot.
        row_weight = weight.to(logits)[target.clamp(0, logits.shape[1] - 1)].unsqueeze(1)
    elif targets.ndim == 2:
        row_weight = (targets @ weight.to(targets)).unsqueeze(1)  # one matrix-vector pass over the targets
    else:
        row_weight = (targets * per_class(weight, targets)).sum(1, keepdim=True)
    if base == "sigmoid":
        element_weight = row_weight if valid is None else row_weight * valid
        if kernel_path("auto", logits, targets)[0]:
            # BCE and its gradient in one compiled pass, the row weight broadcast inside it.
            return ClosedFormLoss.apply(bce_kernel, True, logits, targets, (), element_weight,
                                        reduction_scale(reduction, logits, valid, targets))
        return weighted_bce(logits, targets, element_weight, reduction, valid)
    loss = _sigmoid_focal(logits, targets, None, None, gamma, None, "none")
    return reduce_loss(mask(loss * row_weight, valid), reduction, valid, targets=targets)


class ClassBalancedLoss(ClassCountsLoss):
    """Class-balanced loss (Cui et al., 2019); see :func:`class_balanced_loss`.

    Args:
        class_counts: training samples per class; or set later with :meth:`set_class_counts`.
        beta: in ``[0, 1)``.
        base: ``"softmax"``, ``"focal"``, ``"sigmoid"`` or ``"sigmoid_focal"``.
        gamma: focusing parameter of the focal bases.
        ignore_index: target value that contributes no loss.
        reduction: ``"mean"``, ``"sum"``, ``"none"``, or ``"positives"`` for sigmoid bases.

    Example:
        >>> loss = ClassBalancedLoss(class_counts=[90, 10], beta=0.99)
        >>> loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.2875)
    """

    derived_buffers = ("class_weight",)

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor | None = None,
        beta: float = 0.9999,
        base: str = "softmax",
        gamma: float = 2.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.beta = check_in_unit_interval("beta", beta, open_right=True)
        self.base = check_choice("base", base, CLASS_BALANCED_BASES)
        self.gamma = check_gamma(gamma)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction, class_balanced_reductions(base))
        if class_counts is not None:
            self.set_class_counts(class_counts)

    @property
    def sigmoid_outputs(self) -> bool:
        """Whether the base reads each logit as an independent sigmoid (bias prior ``logit(pi_c)``)."""
        return self.base.startswith("sigmoid")

    def statistics(self, class_counts: Tensor) -> Mapping[str, Tensor]:
        return {"class_weight": class_weights(class_counts, "effective", self.beta)}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = check_logits(logits)
        self.require_class_counts(logits.shape[1])
        return _class_balanced(
            logits, target, self.class_weight, self.base, self.gamma, self.ignore_index, self.reduction
        )
