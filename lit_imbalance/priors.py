"""Class priors as logits: bias-prior initialisation and post-hoc logit adjustment.

Both start from the same vector, the *prior logits*: the logits whose
prediction is the training class prior. For a softmax classifier (multiclass)
that is ``log pi_c``; for a sigmoid output (binary, multi-label) it is the
log-odds ``log(pi / (1 - pi)) = -log((1 - pi) / pi)``. Setting a classifier's
bias to it makes the untrained model predict the prior (Lin et al. 2017,
"Focal Loss": no early flood of loss from the frequent classes); subtracting
``tau`` times it from trained logits removes the prior the model learned
(Menon et al. 2021, "Long-tail learning via logit adjustment").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, check_non_negative, fail
from lit_imbalance.weights import as_class_counts

PriorTask = Literal["multiclass", "binary", "multilabel"]


def log_prior(class_counts: Sequence[float] | Tensor) -> Tensor:
    """``log pi_c = log(n_c / sum(n))``, float32; a zero count gives ``-inf``.

    Example:
        >>> log_prior([3, 1]).exp()
        tensor([0.7500, 0.2500])
    """
    counts = as_class_counts(class_counts)
    return (counts / counts.sum()).log().float()


def adjust_logits(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment: ``logits - tau * log_prior``.

    ``log_prior`` broadcasts over the last dimension of ``logits``: ``(C,)``
    class log-priors for softmax logits ``(N, C)``, or the log-odds of
    :func:`prior_logits` for sigmoid logits. ``tau = 1`` is the Bayes-optimal
    correction for balanced error when the model fits the training prior.

    Example:
        >>> adjust_logits(torch.zeros(1, 2), log_prior([3, 1]))
        tensor([[0.2877, 1.3863]])
    """
    check_non_negative("tau", tau)
    return logits - tau * log_prior.to(device=logits.device, dtype=logits.dtype)


def prior_logits(
    class_counts: Sequence[float] | Tensor | None = None,
    *,
    prior: Sequence[float] | Tensor | float | None = None,
    task: PriorTask = "multiclass",
    num_samples: int | None = None,
) -> Tensor:
    r"""The logits that predict the class prior: ``log pi_c`` (multiclass), ``logit(pi)`` (sigmoid).

    With class counts, :math:`\pi` is estimated from them:

    * ``multiclass``: counts ``(C,)``, :math:`b_c = \log \pi_c`, so
      ``softmax(b) == pi``;
    * ``binary``: counts ``(2,)`` = (negatives, positives), one output
      :math:`b = -\log((1 - \pi) / \pi)` with :math:`\pi` the positive rate;
    * ``multilabel``: positives per label ``(L,)`` out of ``num_samples``
      samples, :math:`b_l = -\log((1 - \pi_l) / \pi_l)`, so ``sigmoid(b) == pi``.

    Smoothing: a count of 0 (a class never seen, a label never or always on)
    would give an infinite logit, so every count — of a class, or of a label's
    positives and negatives — is raised to at least 1 first. Classes with
    samples keep their exact prior when none is 0.

    Args:
        class_counts: training counts as above; ignored when ``prior`` is given.
        prior: the prior itself: ``(C,)`` probabilities summing to 1
            (multiclass), the positive rate (binary) or ``(L,)`` positive rates
            (multi-label), each strictly between 0 and 1.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        num_samples: number of training samples (multi-label counts only).

    Returns:
        float32 tensor ``(C,)``, ``(1,)`` or ``(L,)``.

    Example:
        >>> prior_logits([90, 10], task="binary")
        tensor([-2.1972])
        >>> prior_logits([5, 0, 15]).softmax(0)  # the empty class counts as 1
        tensor([0.2381, 0.0476, 0.7143])
        >>> prior_logits(prior=0.01, task="binary")
        tensor([-4.5951])
    """
    check_choice("task", task, ("multiclass", "binary", "multilabel"))
    if prior is not None:
        return _logits_of_prior(prior, task)
    if class_counts is None:
        fail("class_counts", "given when `prior` is None", None)
    counts = as_class_counts(class_counts)
    if task == "multiclass":
        return log_prior(counts.clamp_min(1))
    if task == "binary":
        if counts.numel() != 2:
            fail("class_counts", "2 counts (negatives, positives) for task='binary'", counts.tolist())
        negatives, positives = counts[:1], counts[1:]
    else:
        if num_samples is None or num_samples < counts.max():
            fail("num_samples", "the number of training samples (at least every label's positive count)", num_samples)
        negatives, positives = num_samples - counts, counts
    negatives, positives = negatives.clamp_min(1), positives.clamp_min(1)
    return torch.logit(positives / (positives + negatives)).float()


def _logits_of_prior(prior: Sequence[float] | Tensor | float, task: PriorTask) -> Tensor:
    values = torch.as_tensor(prior, dtype=torch.float64).reshape(-1)
    if values.numel() == 0 or not ((values > 0) & (values < 1)).all():
        fail("prior", "probabilities strictly between 0 and 1", values.tolist())
    if task == "multiclass":
        if values.numel() < 2 or abs(float(values.sum()) - 1.0) > 1e-4:
            fail("prior", "class probabilities summing to 1 for task='multiclass'", values.tolist())
        return values.log().float()
    if task == "binary" and values.numel() != 1:
        fail("prior", "one positive rate for task='binary'", values.tolist())
    return torch.logit(values).float()


def init_bias_prior(head: nn.Module, bias: Tensor) -> None:
    """Copy ``bias`` (e.g. :func:`prior_logits`) into ``head.bias``, without autograd.

    Example:
        >>> head = nn.Linear(4, 3)
        >>> init_bias_prior(head, prior_logits([60, 30, 10]))
        >>> head.bias.detach().softmax(0)
        tensor([0.6000, 0.3000, 0.1000])
    """
    current = getattr(head, "bias", None)
    if not isinstance(current, Tensor):
        fail("head", "a layer with a bias (e.g. nn.Linear(..., bias=True))", type(head).__name__)
    if current.shape != bias.shape:
        fail("head", f"a layer with {bias.numel()} outputs (its bias has shape {tuple(current.shape)})", type(head).__name__)
    with torch.no_grad():
        current.copy_(bias.to(device=current.device, dtype=current.dtype))
