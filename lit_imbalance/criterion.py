"""The imbalance criterion: the loss, its warm-up / DRW schedule and the class prior, as one module.

:class:`ImbalanceCriterion` is what a training step calls instead of a bare
loss. It owns the training class counts (one buffer, in the checkpoint) and
hands them to the loss and its schedule; it knows the prior they imply and the
bias that makes an untrained head predict it. It needs no Lightning: any
training loop calls :meth:`~ImbalanceCriterion.set_class_counts` once and
:meth:`~ImbalanceCriterion.set_progress` before each step.

Example:
    >>> import torch
    >>> from lit_imbalance.losses import LDAMLoss
    >>> from lit_imbalance.schedule import LossWarmup
    >>> criterion = ImbalanceCriterion(LDAMLoss(), num_classes=3, warmup=LossWarmup(epochs=2, reweight="effective"))
    >>> criterion.set_class_counts(torch.tensor([60, 30, 10]))
    >>> criterion.set_progress(epoch=0, step=0)
    >>> logits, y = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([2])
    >>> bool(criterion(logits, y) > 0), criterion.warmup_factor
    (True, 0.0)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_imbalance._checks import fail
from lit_imbalance.losses.logit_adjusted import LogitAdjustedLoss
from lit_imbalance.priors import adjust_logits, prior_logits
from lit_imbalance.schedule import LossWarmup
from lit_imbalance.tasks import Task, check_task, num_outputs, resolve_num_classes


class ImbalanceCriterion(nn.Module):
    """Loss + optional warm-up / DRW schedule + class prior, fed by the training class counts.

    Args:
        loss: the training loss, ``loss(logits, target)``; ``None`` gives plain
            cross-entropy (multiclass) or ``BCEWithLogitsLoss`` (binary,
            multi-label). A loss with ``set_class_counts`` receives the counts.
        num_classes: number of classes ``C`` (multiclass), labels ``L``
            (multi-label); 2 or ``None`` for binary.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"`` (see
            :mod:`lit_imbalance.tasks`). Binary and multi-label losses receive
            float targets shaped like the logits.
        warmup: a :class:`~lit_imbalance.schedule.LossWarmup` moving from a start
            loss to ``loss`` (or carrying its own target); a schedule of length
            0 without re-weighting is no warm-up.
        prior: the class prior to use instead of the one the counts imply.
    """

    class_counts: Tensor
    num_train_samples: Tensor

    def __init__(
        self,
        loss: nn.Module | None = None,
        num_classes: int | None = None,
        task: Task = "multiclass",
        warmup: LossWarmup | None = None,
        prior: Sequence[float] | Tensor | float | None = None,
    ) -> None:
        super().__init__()
        self.task = check_task(task)
        self.num_classes = resolve_num_classes(task, num_classes)
        if prior is not None:
            prior_logits(prior=prior, task=task)  # validate now, not at the first fit
        self.prior = prior
        default_loss: nn.Module = nn.CrossEntropyLoss() if task == "multiclass" else nn.BCEWithLogitsLoss()
        if warmup is not None and not isinstance(warmup, LossWarmup):
            fail("warmup", "a LossWarmup or None", type(warmup).__name__, TypeError)
        if warmup is not None and warmup.target is not None:
            if loss is not None:
                fail("loss", "None when the warm-up already has a target loss", type(loss).__name__)
            loss = warmup.target if warmup.is_noop else warmup
        elif warmup is not None and not warmup.is_noop:
            loss = warmup.set_target(loss if loss is not None else default_loss, default_start=default_loss)
        self.loss = loss if loss is not None else default_loss
        # Buffers: the statistics a model was trained with travel in its checkpoint.
        self.register_buffer("class_counts", torch.zeros(self.num_classes, dtype=torch.long))
        self.register_buffer("num_train_samples", torch.zeros((), dtype=torch.long))

    @property
    def warmup(self) -> LossWarmup | None:
        """The warm-up schedule, when one is configured."""
        return self.loss if isinstance(self.loss, LossWarmup) else None

    @property
    def counts_known(self) -> bool:
        """Whether training class counts have been set (or restored from a checkpoint)."""
        return bool(self.class_counts.sum() > 0)

    def set_class_counts(self, class_counts: Sequence[int] | Tensor, num_samples: int | None = None) -> None:
        """Record the training class counts and hand them to the loss (and its schedule).

        Args:
            class_counts: samples per class (multi-label: positives per label).
            num_samples: number of training samples; required for multi-label
                counts, the sum of the counts otherwise.
        """
        counts = count_tensor(class_counts, self.num_classes)
        if self.task == "multilabel":
            if num_samples is None or num_samples < int(counts.max()):
                fail("num_samples", "the number of training samples (multi-label counts are positives per label)",
                     num_samples)
        else:
            num_samples = int(counts.sum())
        self.class_counts.copy_(counts)
        self.num_train_samples.fill_(num_samples)
        if callable(getattr(self.loss, "set_class_counts", None)):
            self.loss.set_class_counts(self.class_counts)

    def set_progress(self, epoch: int, step: int) -> None:
        """Tell the warm-up schedule where training is (epochs done, optimizer steps taken)."""
        if self.warmup is not None:
            self.warmup.advance(epoch=epoch, step=step)

    @property
    def warmup_factor(self) -> float:
        """Weight of the target loss in the warm-up mix (1.0 without a warm-up)."""
        return self.warmup.factor if self.warmup is not None else 1.0

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss of a batch, computed in float32 (also under mixed precision)."""
        logits = logits.float()
        if self.task != "multiclass":
            # Sigmoid losses take float targets of the logits' shape; binary logits may be (N, 1).
            logits, target = logits.reshape(target.shape), target.to(logits.dtype)
        return self.loss(logits, target)

    # --- the prior ------------------------------------------------------------------------

    def prior_logits(self) -> Tensor:
        """The logits of the training prior (given ``prior``, or the class counts), see :func:`prior_logits`."""
        if self.prior is not None:
            return prior_logits(prior=self.prior, task=self.task)
        if not self.counts_known:
            fail("class_counts", "known (fit the model, or pass class_counts or prior) before the prior is used", 0)
        return prior_logits(
            self.class_counts.cpu(), task=self.task, num_samples=int(self.num_train_samples)
        ).to(self.class_counts.device)

    def initial_bias(self) -> Tensor:
        """The bias prior: the prior logits, less what the first training loss adds to the logits itself.

        Logit-adjusted losses (balanced softmax is ``tau = 1``) train
        ``logits + tau * log pi``; the model predicts the prior when *that* sum is
        ``log pi``, i.e. with a bias of ``(1 - tau) * log pi``. (The full ``log pi``
        on top cost 1.6 points of balanced accuracy with balanced softmax on
        digits-LT, 5 seeds.) Sigmoid losses on multiclass targets (one sigmoid per
        class) get ``-log((1 - pi_c) / pi_c)``. With a warm-up, the loss of the
        first step counts.
        """
        first_loss = self.loss
        if self.warmup is not None:
            first_loss = self.warmup.start if self.warmup.length > 0 else self.warmup.target
        if isinstance(first_loss, LogitAdjustedLoss):
            return self.prior_logits() * (1.0 - first_loss.tau)
        if self.task == "multiclass" and trains_sigmoid_outputs(first_loss):
            if self.prior is not None:
                return prior_logits(prior=self.prior, task="multilabel")
            return prior_logits(
                self.class_counts.cpu(), task="multilabel", num_samples=int(self.num_train_samples)
            ).to(self.class_counts.device)
        return self.prior_logits()

    def adjust_logits(self, logits: Tensor, tau: float) -> Tensor:
        """Post-hoc adjusted logits ``logits - tau * prior_logits`` (Menon et al. 2021)."""
        # adjust_logits adds tau * prior along dim 1: a negative tau removes it.
        if logits.ndim == 1:  # binary logits (N,)
            return adjust_logits(logits.unsqueeze(1), self.prior_logits(), -tau).squeeze(1)
        return adjust_logits(logits, self.prior_logits(), -tau)


def trains_sigmoid_outputs(loss: nn.Module | None) -> bool:
    """Whether ``loss`` reads every logit as an independent sigmoid rather than one softmax over the classes."""
    return bool(getattr(loss, "sigmoid_outputs", isinstance(loss, nn.BCEWithLogitsLoss)))


def count_tensor(class_counts: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Class counts as an int64 CPU tensor of length ``num_classes``, or a clear error.

    Example:
        >>> count_tensor([3, 0, 1], 3)
        tensor([3, 0, 1])
    """
    counts = torch.as_tensor(class_counts).detach().cpu()
    if counts.ndim != 1 or counts.numel() != num_classes or (counts < 0).any():
        fail("class_counts", f"{num_classes} non-negative counts (one per class)", counts.tolist())
    return counts.to(torch.long)


def check_soft_targets(criterion: ImbalanceCriterion, key: str) -> None:
    """Fail in one line, naming ``key``, unless every loss of ``criterion`` is linear in soft (mixed) targets.

    Mixing is meaningful for a loss linear in its target: then the loss of a
    mixed label ``lam e_i + (1 - lam) e_j`` is ``lam`` times the loss of ``e_i``
    plus ``(1 - lam)`` times that of ``e_j``. Probed on a copy with placeholder
    class counts and summed per-sample losses, before any data is read: CE,
    weighted CE, class-balanced with the softmax base, logit-adjusted, balanced
    softmax and their DRW schedules pass, and so do BCE-type binary and
    multi-label losses; margins (LDAM), focal factors, cost matrices,
    truncation, GHM's and OHEM's loss-dependent weights do not.
    """
    probe = copy.deepcopy(criterion)
    probe.set_class_counts(torch.arange(2, criterion.num_classes + 2, dtype=torch.long),
                           num_samples=criterion.num_classes + 2 if criterion.task == "multilabel" else None)
    generator = torch.Generator().manual_seed(0)
    outputs = num_outputs(criterion.task, criterion.num_classes)
    # 64 samples: enough that a loss choosing samples by their loss (OHEM) chooses differently.
    logits = torch.randn(64, outputs, generator=generator, dtype=torch.float64) * 2
    if criterion.task == "multiclass":
        first, second = (F.one_hot(torch.randint(0, outputs, (64,), generator=generator), outputs).double()
                         for _ in range(2))
    else:
        first, second = (torch.randint(0, 2, (64, outputs), generator=generator).double() for _ in range(2))
    if criterion.task == "binary":
        logits, first, second = logits.view(-1), first.view(-1), second.view(-1)
    losses = [probe.loss] if probe.warmup is None else [probe.warmup.start, probe.warmup.target]
    for loss in losses:
        if getattr(loss, "reduction", None) in ("mean", "none", "positives"):
            loss.reduction = "sum"  # a mean weighted by the targets is a ratio: sums are what is linear
        try:
            mixed = loss(logits, 0.3 * first + 0.7 * second)
            linear = 0.3 * loss(logits, first) + 0.7 * loss(logits, second)
            accepted = bool(torch.allclose(mixed, linear, rtol=1e-6, atol=1e-9))
        except (ValueError, TypeError, RuntimeError):
            accepted = False
        if not accepted:
            fail(key, "a loss linear in soft (mixed) targets: ce, weighted_ce, class_balanced (softmax base), "
                 "logit_adjusted, balanced_softmax, their warm-up/DRW schedules, or BCE-type binary losses",
                 type(loss).__name__)
