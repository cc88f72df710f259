"""Class priors from class counts, and logit adjustment by them.

One helper, :func:`adjust_logits`, shifts logits by ``tau * log prior``; the
balanced-softmax and logit-adjusted losses add the prior during training, and
:func:`posthoc_logit_adjustment` subtracts it at prediction time (Menon et al.,
2021, "Long-tail learning via logit adjustment").

:func:`prior_logits` generalises the log prior to sigmoid outputs (the
log-odds of binary and multi-label tasks) for the mixin's bias-prior
initialisation (:func:`init_bias_prior`, Lin et al. 2017, "Focal Loss") and its
post-hoc adjustment, so both use the same vector.
"""

from __future__ import annotations

from collections.abc import Sequence


import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_choice, fail
from lit_imbalance.tasks import Task
from lit_imbalance.weights import as_class_counts


def positive_class_counts(class_counts: Sequence[float] | Tensor, reason: str = "its log is -inf") -> Tensor:
    """Validate class counts that must be ``> 0`` for every class; return them as float64.

    Args:
        class_counts: samples per class, shape ``(C,)``.
        reason: why an empty class is a problem, quoted in the error.

    Raises:
        ValueError: if a class has no sample (or the counts are otherwise invalid).

    Example:
        >>> positive_class_counts([3, 1])
        tensor([3., 1.], dtype=torch.float64)
    """
    counts = as_class_counts(class_counts)
    if (counts == 0).any():
        fail("class_counts", f"at least one sample in every class (for an empty class {reason})", counts.tolist())
    return counts


def log_prior(class_counts: Sequence[float] | Tensor) -> Tensor:
    r"""Log class prior :math:`\log \pi_c = \log n_c - \log \sum_k n_k`.

    Args:
        class_counts: training samples per class, shape ``(C,)``; every count
            must be positive (an empty class has prior 0 and log prior
            :math:`-\infty`, which would turn adjusted logits into NaN).

    Returns:
        float32 tensor of shape ``(C,)``.

    Example:
        >>> log_prior([3, 1]).exp()
        tensor([0.7500, 0.2500])
    """
    counts = positive_class_counts(class_counts)
    return (counts.log() - counts.sum().log()).to(torch.float32)


def adjust_logits(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    r"""Shift logits by the scaled log prior: :math:`f_c(x) + \tau \log \pi_c`.

    The class dimension is dim 1, so ``(N, C)`` and ``(N, C, d1, ...)`` logits
    both work. ``tau > 0`` adds the prior (the training-time adjustment of the
    balanced-softmax and logit-adjusted losses); a negative ``tau`` removes it
    (post-hoc adjustment).

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        log_prior: ``(C,)``, e.g. from :func:`log_prior`.
        tau: scale of the prior.

    Returns:
        Adjusted logits, same shape and dtype as ``logits``.

    Example:
        >>> adjust_logits(torch.zeros(1, 2), log_prior([3, 1]))
        tensor([[-0.2877, -1.3863]])
    """
    if logits.ndim < 2 or log_prior.shape != (logits.shape[1],):
        fail(
            "log_prior",
            f"a tensor of shape (C,) matching dim 1 of logits of shape {tuple(logits.shape)}",
            f"shape {tuple(log_prior.shape)}",
        )
    shift = log_prior.to(device=logits.device, dtype=logits.dtype).view(1, -1, *([1] * (logits.ndim - 2)))
    return logits + tau * shift


def posthoc_logit_adjustment(logits: Tensor, class_counts: Sequence[float] | Tensor, tau: float = 1.0) -> Tensor:
    r"""Post-hoc logit adjustment (Menon et al., 2021): :math:`f_c(x) - \tau \log \pi_c`.

    Apply it at prediction time to a model trained with plain cross-entropy:
    ``argmax`` of the adjusted logits approximates the balanced-error-optimal
    prediction (``tau=1``). Do not apply it to a model trained with
    ``balanced_softmax`` or ``logit_adjusted``: those already learned
    prior-free logits.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ...)``.
        class_counts: training samples per class, shape ``(C,)``, all positive.
        tau: strength of the adjustment; 0 returns the logits unchanged.

    Example:
        >>> logits = torch.tensor([[1.0, 0.5]])
        >>> posthoc_logit_adjustment(logits, class_counts=[90, 10]).argmax(1)
        tensor([1])
    """
    return adjust_logits(logits, log_prior(class_counts), -tau)




def prior_logits(
    class_counts: Sequence[float] | Tensor | None = None,
    *,
    prior: Sequence[float] | Tensor | float | None = None,
    task: Task = "multiclass",
    num_samples: int | None = None,
) -> Tensor:
    r"""The logits that predict the class prior: ``log pi_c`` (multiclass), ``logit(pi)`` (sigmoid).

    With class counts, :math:`\pi` is estimated from them:

    * ``multiclass``: counts ``(C,)``, :math:`b_c = \log \pi_c` (:func:`log_prior`),
      so ``softmax(b) == pi``;
    * ``binary``: counts ``(2,)`` = (negatives, positives), one output
      :math:`b = -\log((1 - \pi) / \pi)` with :math:`\pi` the positive rate;
    * ``multilabel``: positives per label ``(L,)`` out of ``num_samples``
      samples, :math:`b_l = -\log((1 - \pi_l) / \pi_l)`, so ``sigmoid(b) == pi``.

    Smoothing: a count of 0 (a class never seen, a label never or always on)
    would give an infinite logit, so every count (of a class, or of a label's
    positives and negatives) is raised to at least 1 first. When no count is 0
    the prior is exact.

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


def _logits_of_prior(prior: Sequence[float] | Tensor | float, task: Task) -> Tensor:
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


#: The tau grid of ``posthoc_tau="tune"``: 0 (no adjustment) to 2 in steps of 0.1.
TAU_GRID = tuple(round(0.1 * step, 1) for step in range(21))


def tune_posthoc_tau(
    logits: Tensor, targets: Tensor, prior_logits: Tensor, grid: Sequence[float] = TAU_GRID
) -> tuple[float, list[float]]:
    r"""The :math:`\tau` of the grid whose adjusted logits ``logits - tau * prior_logits`` have the best balanced accuracy.

    Balanced accuracy is the mean recall over the classes present in
    ``targets`` (targets ``-100`` ignored). Of equal scores the smallest
    :math:`\tau` (the least adjustment) wins.

    Args:
        logits: validation logits ``(N, C)``.
        targets: class indices ``(N,)``.
        prior_logits: ``(C,)`` log prior of the training classes.
        grid: the candidate values of :math:`\tau`.

    Returns:
        The chosen :math:`\tau` and the balanced accuracy of every grid value.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5], [2.0, 1.9], [0.0, 1.0]])
        >>> tune_posthoc_tau(logits, torch.tensor([0, 1, 1]), torch.tensor([0.0, -1.0]), grid=[0.0, 1.0])
        (1.0, [0.75, 1.0])
    """
    from lit_imbalance.metrics import balanced_accuracy, best_on_grid  # metrics is heavier than priors' users need

    logits, targets = logits.detach().float().cpu(), targets.detach().long().cpu()
    prior = prior_logits.float().cpu()
    return best_on_grid(grid, lambda tau: balanced_accuracy(adjust_logits(logits, prior, -tau), targets, logits.shape[1]))
