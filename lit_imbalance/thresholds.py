"""Decision thresholds for binary and multi-label scores, chosen on validation outputs.

A model trained on imbalanced data ranks well (AUROC) long before 0.5 is a good
cut on its probabilities. Each function here takes one label's validation
probabilities ``scores`` ``(N,)`` and 0/1 ``targets`` ``(N,)`` and returns the
threshold ``t`` of the rule "positive iff ``score > t``" (the rule of
:class:`~lit_imbalance.metrics.ImbalanceMetrics`) that is best by one criterion:

- :func:`best_f1_threshold`: the (near-)largest F1 of the positive class;
- :func:`recall_at_precision_threshold`: the largest recall whose precision is at
  least ``min_precision``;
- :func:`min_cost_threshold`: the smallest empirical cost under a 2x2 cost matrix.

The candidates (:func:`candidate_thresholds`) are the midpoints between
consecutive distinct scores, plus one below the lowest and one above the
highest: every distinct decision on the validation set, each taken with the
widest margin to the samples on either side. The callback that applies them
after training is :class:`~lit_imbalance.callbacks.ThresholdTuning`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lit_imbalance._checks import check_choice, check_in_unit_interval, fail
from lit_imbalance.metrics import IGNORE_INDEX, THRESHOLD, safe_divide

log = logging.getLogger(__name__)

#: How :func:`best_f1_threshold` picks among near-best thresholds.
F1_RULES = ("one_se", "argmax")
#: The criteria of the ``threshold`` config group (``none`` keeps 0.5).
THRESHOLD_METHODS = ("f1", "recall_at_precision", "cost")


def _checked(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64).cpu()
    targets = torch.as_tensor(targets).detach().reshape(-1).cpu()
    if scores.shape != targets.shape:
        fail("targets", f"one label per score ({scores.numel()})", f"{targets.numel()} labels")
    keep = targets != IGNORE_INDEX
    scores, targets = scores[keep], targets[keep]
    if scores.numel() == 0:
        fail("scores", "at least one scored sample with a label", "none")
    if not bool(((targets == 0) | (targets == 1)).all()):
        fail("targets", "0/1 labels", sorted(set(targets.tolist()))[:5])
    return scores, targets.to(torch.float64)


def candidate_thresholds(scores: Tensor) -> Tensor:
    """Midpoints between consecutive distinct scores, with one below the lowest and one above the highest.

    Example:
        >>> candidate_thresholds(torch.tensor([0.25, 0.5, 0.25, 1.0])).tolist()
        [0.125, 0.375, 0.75, 1.0]
    """
    unique = torch.unique(torch.as_tensor(scores, dtype=torch.float64).reshape(-1))
    # Below every score (all positive) and at 1 (no score in [0, 1] is above it: all negative).
    return torch.cat([unique[:1] / 2, (unique[1:] + unique[:-1]) / 2, unique.new_ones(1)])


def threshold_counts(scores: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Every candidate threshold and its confusion counts ``tp, fp, fn, tn`` (one sort, no loop).

    Example:
        >>> thresholds, counts = threshold_counts(torch.tensor([0.25, 0.5, 0.75]), torch.tensor([0, 1, 1]))
        >>> thresholds.tolist(), counts["tp"].tolist(), counts["fp"].tolist()
        ([0.125, 0.375, 0.625, 1.0], [2.0, 2.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0])
    """
    scores, targets = _checked(scores, targets)
    unique, inverse = torch.unique(scores, return_inverse=True)
    positives = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(0, inverse, targets)
    samples = torch.zeros(unique.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(targets))
    # Candidate j predicts positive the samples whose score is one of unique[j:]: suffix sums.
    tp = torch.cat([positives.flip(0).cumsum(0).flip(0), positives.new_zeros(1)])
    predicted = torch.cat([samples.flip(0).cumsum(0).flip(0), samples.new_zeros(1)])
    fp = predicted - tp
    fn, tn = targets.sum() - tp, (1 - targets).sum() - fp
    return candidate_thresholds(unique), {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def best_f1_threshold(scores: Tensor, targets: Tensor, rule: str = "one_se") -> float:
    r"""The threshold of (near-)largest F1 of the positive class.

    Args:
        scores, targets: one label's validation probabilities and 0/1 labels.
        rule: ``"argmax"``: the threshold of the largest F1 (the highest on
            ties); ``"one_se"`` (default): the median of the thresholds whose F1
            is within one standard error :math:`\sqrt{F_1^*(1 - F_1^*) / n_+}` of
            the largest (a plateau median with a binomial standard error). On a validation set
            with few positives the F1 curve is flat and noisy near its top, and
            its argmax lands anywhere on the plateau; the plateau's middle is
            the choice that moves least with the sample.

    Example:
        >>> scores, targets = torch.tensor([0.1, 0.3, 0.35, 0.9]), torch.tensor([0, 1, 1, 1])
        >>> round(best_f1_threshold(scores, targets, rule="argmax"), 4)
        0.2
    """
    check_choice("rule", rule, F1_RULES)
    thresholds, counts = threshold_counts(scores, targets)
    f1 = safe_divide(2 * counts["tp"], 2 * counts["tp"] + counts["fp"] + counts["fn"])
    if rule == "argmax":
        return _best(thresholds, f1)
    best = float(f1.max())
    positives = float(counts["tp"][0] + counts["fn"][0])
    tolerance = math.sqrt(best * (1.0 - best) / max(positives, 1.0))
    return float(thresholds[f1 >= best - tolerance].median())


def recall_at_precision_threshold(scores: Tensor, targets: Tensor, min_precision: float) -> float:
    """The threshold with the largest recall among those with precision ``>= min_precision``.

    Of equal recalls the highest threshold (fewest positives flagged) wins.
    When no threshold reaches ``min_precision`` the one of highest precision is
    returned and a warning logged.

    Example:
        >>> scores, targets = torch.tensor([0.2, 0.4, 0.6, 0.7, 0.9]), torch.tensor([0, 1, 0, 1, 1])
        >>> [round(recall_at_precision_threshold(scores, targets, p), 4) for p in (0.6, 0.9)]
        [0.3, 0.65]
    """
    check_in_unit_interval("min_precision", min_precision)
    thresholds, counts = threshold_counts(scores, targets)
    predicted = counts["tp"] + counts["fp"]
    precision = safe_divide(counts["tp"], predicted)
    recall = safe_divide(counts["tp"], counts["tp"] + counts["fn"])
    # Precision of an empty prediction is undefined, not 0: it qualifies only when nothing else does.
    reachable = (predicted > 0) & (precision >= min_precision)
    if not bool(reachable.any()):
        log.warning("No threshold reaches precision %s on validation (best %.4f): using the most precise one.",
                    min_precision, float(precision.max()))
        return _best(thresholds, torch.where(predicted > 0, precision, torch.zeros_like(precision)))
    return _best(thresholds, torch.where(reachable, recall, torch.full_like(recall, -1.0)))


def check_cost_matrix(cost_matrix: Sequence[Sequence[float]] | Tensor) -> Tensor:
    """A 2x2 float64 tensor ``[[tn, fp], [fn, tp]]`` of finite costs, or a one-line error.

    Example:
        >>> check_cost_matrix([[0, 1], [5, 0]]).tolist()
        [[0.0, 1.0], [5.0, 0.0]]
    """
    try:
        matrix = torch.as_tensor(cost_matrix, dtype=torch.float64)
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.shape != (2, 2) or not bool(torch.isfinite(matrix).all()):
        fail("cost_matrix", "a 2x2 matrix of finite costs [[tn, fp], [fn, tp]]", cost_matrix)
    return matrix


def min_cost_threshold(scores: Tensor, targets: Tensor, cost_matrix: Sequence[Sequence[float]] | Tensor) -> float:
    """The threshold of smallest total cost ``C_tn tn + C_fp fp + C_fn fn + C_tp tp`` on ``(scores, targets)``.

    ``cost_matrix`` is ``[[tn, fp], [fn, tp]]``: row = truth, column = decision.
    Of equal costs the highest threshold wins.

    Example:
        >>> scores, targets = torch.tensor([0.1, 0.3, 0.5, 0.8]), torch.tensor([0, 1, 0, 1])
        >>> [round(min_cost_threshold(scores, targets, costs), 4) for costs in ([[0, 1], [1, 0]], [[0, 1], [10, 0]])]
        [0.65, 0.2]
    """
    matrix = check_cost_matrix(cost_matrix)
    thresholds, counts = threshold_counts(scores, targets)
    cost = (matrix[0, 0] * counts["tn"] + matrix[0, 1] * counts["fp"]
            + matrix[1, 0] * counts["fn"] + matrix[1, 1] * counts["tp"])
    return _best(thresholds, -cost)


def choose_threshold(
    method: str,
    scores: Tensor,
    targets: Tensor,
    min_precision: float | None = None,
    cost_matrix: Sequence[Sequence[float]] | Tensor | None = None,
    f1_rule: str = "one_se",
) -> float:
    """The threshold of ``method`` (one of :data:`THRESHOLD_METHODS`, or ``"none"`` for 0.5).

    ``f1_rule`` is :func:`best_f1_threshold`'s ``rule``.

    Example:
        >>> round(choose_threshold("f1", torch.tensor([0.1, 0.3, 0.35, 0.9]), torch.tensor([0, 1, 1, 1])), 4)
        0.2
    """
    check_choice("method", method, ("none", *THRESHOLD_METHODS))
    if method == "none":
        return THRESHOLD
    if method == "f1":
        return best_f1_threshold(scores, targets, f1_rule)
    if method == "recall_at_precision":
        if min_precision is None:
            fail("min_precision", "a float in [0, 1] for method='recall_at_precision'", None)
        return recall_at_precision_threshold(scores, targets, min_precision)  # type: ignore[arg-type]
    if cost_matrix is None:
        fail("cost_matrix", "a 2x2 matrix [[tn, fp], [fn, tp]] for method='cost'", None)
    return min_cost_threshold(scores, targets, cost_matrix)  # type: ignore[arg-type]


def _best(thresholds: Tensor, score: Tensor) -> float:
    """The highest threshold of the highest ``score``: of equal ones, the fewest positives flagged."""
    best = score.max()
    return float(thresholds[(score == best).nonzero().max()])
