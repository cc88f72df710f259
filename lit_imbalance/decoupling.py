"""Operations on a trained classifier head: tau-normalisation, nearest class means, weight scaling, MaxNorm.

The second stage of decoupled training (Kang et al., 2020, "Decoupling
representation and classifier for long-tailed recognition") and of weight
balancing (Alshammari et al., 2022) changes only the last layer. These are the
tensor definitions, usable on any ``nn.Linear`` head (and, where it makes
sense, on the cosine :class:`~lit_imbalance.heads.NormedLinear` of LDAM);
:mod:`lit_imbalance.stage2` runs them inside a Lightning fit.

All of them see a head's weight as ``(C, D)``, one row per class
(:func:`class_weight_rows`), whatever the layer stores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import check_non_negative, check_positive, fail
from lit_imbalance.heads import CLASSIFIER_LAYERS, NormedLinear

NCM_METRICS = ("cosine", "euclidean")


def class_weight_rows(head: nn.Module) -> Tensor:
    """The head's weight as a ``(C, D)`` view, one row per class (``NormedLinear`` stores ``(D, C)``).

    Example:
        >>> class_weight_rows(nn.Linear(4, 3)).shape, class_weight_rows(NormedLinear(4, 3)).shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """
    if not isinstance(head, CLASSIFIER_LAYERS):
        fail("head", "an nn.Linear or NormedLinear classifier layer", type(head).__name__, TypeError)
    return head.weight.t() if isinstance(head, NormedLinear) else head.weight


def tau_normalized(weight: Tensor, tau: float) -> Tensor:
    r"""Rows of ``weight`` divided by their norm to the power ``tau``: :math:`w_c / \|w_c\|^\tau`.

    ``tau=0`` is the identity, ``tau=1`` gives unit-norm rows (Kang et al., 2020).

    Example:
        >>> w = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
        >>> tau_normalized(w, 1.0).norm(dim=1).tolist(), torch.equal(tau_normalized(w, 0.0), w)
        ([1.0, 1.0], True)
    """
    check_non_negative("tau", tau)
    # clamp: a dead (all-zero) class row stays zero instead of becoming NaN.
    return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean feature vector of every class, ``(C, D)``; a class without samples gets zeros.

    Example:
        >>> class_means(torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]]), torch.tensor([0, 0, 2]), 3).tolist()
        [[2.0, 1.0], [0.0, 0.0], [0.0, 5.0]]
    """
    features = features.float()
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype).index_add_(0, labels.long(), features)
    counts = torch.bincount(labels.long(), minlength=num_classes).clamp_min(1).unsqueeze(1)
    return sums / counts


def nearest_class_mean_parameters(means: Tensor, metric: str = "cosine") -> tuple[Tensor, Tensor]:
    r"""A linear layer ``(W, b)`` whose argmax is the nearest class mean.

    * ``"euclidean"``: ``W = mu``, ``b_c = -|mu_c|^2 / 2``, so that
      ``W x + b = -|x - mu_c|^2 / 2 + |x|^2 / 2``; the last term is the same
      for every class, so the softmax and argmax are those of minus half the
      squared distance.
    * ``"cosine"``: ``W = mu / |mu|``, ``b = 0``; ``W x`` is ``|x|`` times the
      cosine similarity, whose argmax over classes is the most similar mean.

    Example:
        >>> means = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
        >>> weight, bias = nearest_class_mean_parameters(means, "euclidean")
        >>> (torch.tensor([[1.0, 0.0], [3.0, 1.0]]) @ weight.T + bias).argmax(dim=1).tolist()
        [0, 1]
    """
    if metric not in NCM_METRICS:
        fail("metric", f"one of {list(NCM_METRICS)}", metric)
    if metric == "euclidean":
        return means.clone(), -0.5 * means.pow(2).sum(dim=1)
    return F.normalize(means, dim=1), means.new_zeros(means.shape[0])


@torch.no_grad()
def tau_normalize_(head: nn.Module, tau: float) -> nn.Module:
    """Tau-normalise ``head``'s class weights in place (the bias is kept); returns ``head``.

    Raises:
        ValueError: for a ``NormedLinear`` head, whose forward normalises its weights anyway.
    """
    if isinstance(head, NormedLinear):
        fail("head", "a linear head whose weight norms reach the logits (NormedLinear normalises them)",
             type(head).__name__)
    rows = class_weight_rows(head)
    rows.copy_(tau_normalized(rows, tau))
    return head


@torch.no_grad()
def set_nearest_class_means_(head: nn.Module, means: Tensor, metric: str = "cosine") -> nn.Module:
    """Turn ``head`` into a nearest-class-mean classifier of ``means`` ``(C, D)`` in place; returns ``head``.

    A ``NormedLinear`` head compares normalised features with normalised
    weights, so it supports ``"cosine"`` only.
    """
    if isinstance(head, NormedLinear) and metric != "cosine":
        fail("metric", "'cosine' for a NormedLinear head (it normalises its inputs)", metric)
    weight, bias = nearest_class_mean_parameters(means, metric)
    rows = class_weight_rows(head)
    if rows.shape != weight.shape:
        fail("means", f"one {rows.shape[1]}-dimensional mean per class, shape {tuple(rows.shape)}", tuple(weight.shape))
    rows.copy_(weight.to(rows))
    if getattr(head, "bias", None) is not None:
        head.bias.copy_(bias.to(head.bias))
    elif metric == "euclidean":
        fail("head", "a layer with a bias for metric='euclidean' (b_c = -|mu_c|^2 / 2)", "bias=None")
    return head


@torch.no_grad()
def scale_classes_(head: nn.Module, scales: Tensor) -> nn.Module:
    """Multiply every class's logit by ``scales[c]`` for good: weight rows and bias scaled in place.

    This folds learnable weight scaling (LWS) back into a plain linear layer.
    """
    if isinstance(head, NormedLinear):
        fail("head", "an nn.Linear head (NormedLinear's outputs are cosines, which a weight scale cannot change)",
             type(head).__name__)
    rows = class_weight_rows(head)
    rows.mul_(scales.to(rows).unsqueeze(1))
    if getattr(head, "bias", None) is not None:
        head.bias.mul_(scales.to(head.bias))
    return head


@torch.no_grad()
def max_norm_(head: nn.Module, max_norm: float) -> nn.Module:
    """Project every class's weight row onto the ball of radius ``max_norm`` (``torch.renorm``); returns ``head``.

    Rows already inside the ball are unchanged, as in the per-class MaxNorm
    constraint of weight balancing; the bias is not constrained.

    Example:
        >>> head = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = head.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
        >>> max_norm_(head, 1.0).weight.norm(dim=1).tolist()
        [1.0, 0.5]
    """
    check_positive("max_norm", max_norm)
    if isinstance(head, NormedLinear):
        fail("head", "an nn.Linear head (NormedLinear normalises its weights: a norm bound changes nothing)",
             type(head).__name__)
    rows = class_weight_rows(head)
    rows.copy_(torch.renorm(rows, p=2, dim=0, maxnorm=max_norm))
    return head


@torch.no_grad()
def reset_head_(head: nn.Module) -> nn.Module:
    """Re-initialise ``head`` as a fresh layer of its type would be (zero bias); returns ``head``."""
    if isinstance(head, NormedLinear):
        head.weight.copy_(NormedLinear(head.in_features, head.out_features).weight.to(head.weight))
        return head
    if not isinstance(head, nn.Linear):
        fail("head", "an nn.Linear or NormedLinear classifier layer", type(head).__name__, TypeError)
    head.reset_parameters()
    if head.bias is not None:
        # Zero, not nn.Linear's uniform init: re-trained on balanced batches, no class is favoured at the start.
        head.bias.zero_()
    return head
