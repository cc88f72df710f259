"""Per-class classification metrics for imbalanced data, on top of torchmetrics.

:class:`ImbalanceMetrics` is a :class:`torchmetrics.Metric` whose one state is
a confusion matrix (``add_state(..., dist_reduce_fx="sum")``); accuracy,
per-class recall, balanced accuracy, macro F1, per-class support and
many/medium/few-shot recall are all read off it. One state means one DDP sync
per epoch and numbers that agree with each other by construction (balanced
accuracy *is* the mean of the logged per-class recalls for multiclass and
binary tasks).

Binary and multi-label tasks also keep the epoch's scores (``dist_reduce_fx="cat"``)
for the threshold-free AUROC and average precision of torchmetrics' functional API.

The expected calibration error (``ece``) comes from a child torchmetrics
``CalibrationError`` (15 equal-width bins, L1), synced with the parent; the
same synced confidences give the reliability bins of :func:`reliability_bins`.

The functions above the class are the arithmetic; the class only accumulates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import torch
from dataclasses import dataclass

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multilabel_auroc,
    multilabel_average_precision,
)
from torchmetrics.utilities import dim_zero_cat

from lit_imbalance import _compat
from lit_imbalance._checks import check_positive_int, fail
from lit_imbalance.tasks import Task, check_task

IGNORE_INDEX = -100
#: Probability above which a sigmoid output counts as a positive prediction, unless a threshold is set.
THRESHOLD = 0.5
#: Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15).
CALIBRATION_BINS = 15


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0 (torchmetrics' zero_division=0)."""
    nonzero = denominator > 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1), torch.zeros_like(numerator))


def per_class_recall(confusion: Tensor) -> Tensor:
    """Recall of every class from a ``(C, C)`` confusion matrix ``[true, pred]``.

    A class without samples gets 0, as in torchmetrics.

    Example:
        >>> per_class_recall(torch.tensor([[3, 1], [0, 0]]))
        tensor([0.7500, 0.0000])
    """
    confusion = confusion.to(torch.float64)
    return safe_divide(confusion.diagonal(), confusion.sum(dim=1)).float()


def shot_groups(
    class_counts: Tensor, many_threshold: int = 100, few_threshold: int = 20
) -> dict[str, Tensor]:
    """Masks of the many-shot (``n > many``), medium-shot and few-shot (``n < few``) classes.

    The thresholds are the long-tail literature's (Liu et al. 2019): more than
    100 training samples is many-shot, fewer than 20 is few-shot.

    Example:
        >>> {k: v.tolist() for k, v in shot_groups(torch.tensor([150, 50, 5])).items()}
        {'many': [True, False, False], 'medium': [False, True, False], 'few': [False, False, True]}
    """
    if few_threshold > many_threshold:
        fail("few_threshold", f"at most many_threshold={many_threshold}", few_threshold)
    many = class_counts > many_threshold
    few = class_counts < few_threshold
    return {"many": many, "medium": ~many & ~few, "few": few}


def class_rates(true_positives: Tensor, false_positives: Tensor, false_negatives: Tensor) -> dict[str, Tensor]:
    """Per-class recall, precision and F1 from per-class counts (0 where undefined).

    Example:
        >>> rates = class_rates(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0]))
        >>> {k: v.tolist() for k, v in rates.items()}
        {'recall': [0.75, 0.0], 'precision': [0.75, 0.0], 'f1': [0.75, 0.0]}
    """
    recall = safe_divide(true_positives, true_positives + false_negatives)
    precision = safe_divide(true_positives, true_positives + false_positives)
    return {"recall": recall, "precision": precision, "f1": safe_divide(2 * precision * recall, precision + recall)}


@dataclass(frozen=True)
class ReliabilityBins:
    """A reliability diagram's numbers: equal-width confidence bins over ``[0, 1]``.

    For multiclass tasks the confidence is the top softmax probability and the
    accuracy whether the top class was right; for binary and multi-label tasks
    (one sigmoid per output, as torchmetrics' ``BinaryCalibrationError``) the
    confidence is the predicted probability of the positive label and the
    "accuracy" the fraction of positives. Empty bins have confidence and
    accuracy 0 and count 0.

    Attributes:
        confidence: ``(B,)`` mean confidence per bin.
        accuracy: ``(B,)`` accuracy (fraction of positives) per bin.
        count: ``(B,)`` samples per bin.
        ece: the expected calibration error of these samples.
    """

    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    ece: float

    @property
    def edges(self) -> Tensor:
        """The ``B + 1`` bin edges, ``0, 1/B, ..., 1``."""
        return torch.linspace(0, 1, len(self.count) + 1, dtype=torch.float64)


def reliability_bins(confidences: Tensor, accuracies: Tensor, n_bins: int = CALIBRATION_BINS) -> ReliabilityBins:
    """Bin ``confidences`` into ``n_bins`` equal-width bins ``[k/B, (k+1)/B)`` (the last one closed).

    ``ece`` is ``sum_b (n_b / N) |acc_b - conf_b|``, torchmetrics' L1 calibration
    error (which gives a confidence of exactly 1.0 a bin of its own; here it
    belongs to the last bin).

    Args:
        confidences: ``(N,)`` probabilities in ``[0, 1]``.
        accuracies: ``(N,)`` 1 where the prediction was right (the label positive), else 0.
        n_bins: number of bins ``B``.

    Example:
        >>> bins = reliability_bins(torch.tensor([0.25, 0.25, 0.5, 1.0]), torch.tensor([0, 1, 1, 1]), n_bins=2)
        >>> bins.confidence.tolist(), bins.accuracy.tolist(), bins.count.tolist(), bins.ece
        ([0.25, 0.75], [0.5, 1.0], [2, 2], 0.25)
    """
    check_positive_int("n_bins", n_bins)
    confidences = confidences.detach().reshape(-1).to(torch.float64).cpu()
    accuracies = accuracies.detach().reshape(-1).to(torch.float64).cpu()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # right=True puts a value on an inner edge into the bin that starts there; 1.0 joins the last bin.
    index = (torch.bucketize(confidences, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(confidences))
    confidence_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidences)
    accuracy_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, accuracies)
    confidence, accuracy = safe_divide(confidence_sum, count), safe_divide(accuracy_sum, count)
    ece = float((count / count.sum().clamp_min(1) * (accuracy - confidence).abs()).sum())
    return ReliabilityBins(confidence.float(), accuracy.float(), count.long(), ece)


@dataclass(frozen=True)
class EvaluationSummary:
    """What a stage's metrics saw in one epoch, for callbacks that draw or report it.

    Attributes:
        confusion: the synced confusion matrix, ``(C, C)`` ``[true, pred]``
            (multi-label: ``(L, 2, 2)`` ``[label, true, pred]``), on the CPU.
        class_names: display name of every class.
        class_counts: training samples (multi-label: positives) per class.
        many_threshold: more training samples than this is many-shot.
        few_threshold: fewer training samples than this is few-shot.
        reliability: the reliability bins of the epoch's confidences (synced),
            ``None`` when the metrics saw hard labels instead of logits.
    """

    confusion: Tensor
    class_names: list[str]
    class_counts: Tensor
    many_threshold: int
    few_threshold: int
    reliability: ReliabilityBins | None = None

    @property
    def support(self) -> Tensor:
        """Samples (multi-label: positives) of every class in the evaluated split."""
        return self.confusion[:, 1, :].sum(-1) if self.confusion.ndim == 3 else self.confusion.sum(1)

    def classes_without_support(self) -> list[str]:
        """Names of the classes the evaluated split has no sample of (their recall is undefined)."""
        return [name for name, count in zip(self.class_names, self.support.tolist()) if count == 0]


class ImbalanceMetrics(Metric):
    """Accuracy, balanced accuracy, macro F1, per-class recall/support and shot-group recall.

    A :class:`torchmetrics.Metric`: ``update`` per batch, ``compute`` (synced
    across DDP ranks, once) returns a flat dict of scalar tensors, ``reset``
    starts the next epoch. Lightning's ``self.log`` takes only metrics that
    compute one scalar, so the dict is logged with
    ``self.log_dict(metrics.compute())`` at the epoch end, followed by
    ``metrics.reset()`` (torchmetrics' own recipe for dict-valued metrics);
    :class:`~lit_imbalance.ImbalanceMixin` does both.

    What the keys mean per task:

    * ``multiclass``: ``preds`` are logits ``(N, C)`` or class indices ``(N,)``.
      ``balanced_acc`` is the mean recall over the classes that occur (sklearn's
      ``balanced_accuracy_score``); a class without samples in the split has
      ``recall/<class>`` NaN (``null`` in ``metrics.json``), not 0.
    * ``binary`` (``num_classes=2``): ``preds`` are logits ``(N,)`` or ``(N, 1)``
      (thresholded at probability 0.5) or hard 0/1 labels. Class ``0`` is the
      negative class, so ``recall/<0>`` is the specificity, ``recall/<1>`` the
      sensitivity and ``balanced_acc`` their mean. Adds ``auroc`` and
      ``average_precision`` (from the probabilities, not the thresholded labels).
    * ``multilabel`` (``num_classes`` labels): ``preds`` are logits ``(N, L)``,
      ``target`` is multi-hot ``(N, L)``. ``recall/<l>`` and ``support/<l>`` are
      the label's sensitivity and positive count, ``acc`` is the element-wise
      (Hamming) accuracy and ``balanced_acc`` the mean over labels of
      ``(sensitivity + specificity) / 2``, so it is *not* the mean of the
      logged recalls (a model that says "yes" to everything would score 1 on
      that). Adds macro ``auroc`` and ``average_precision``.

    From logits, every task also reports ``ece``, the expected calibration
    error of torchmetrics' ``MulticlassCalibrationError`` (top-label) or
    ``BinaryCalibrationError`` (binary; multi-label: over every label entry),
    15 bins, L1; :meth:`summary` carries its reliability bins. Binary tasks add
    ``precision`` and ``f1`` of the positive class; with ``nll=True`` every
    task adds ``nll``, the mean negative log-likelihood (cross-entropy, or
    binary cross-entropy per label entry).

    Targets equal to ``-100`` are ignored. Updating never synchronises with the
    device (no ``.item()``, no data-dependent shapes on the hot path).

    Args:
        num_classes: number of classes ``C`` (2 for binary) or labels ``L``.
        class_names: names used in the keys ``recall/<name>`` and ``support/<name>``.
        many_threshold: a class with more training samples is many-shot.
        few_threshold: a class with fewer training samples is few-shot.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        threshold: binary and multi-label tasks predict positive above this
            probability (multi-label: one per label, or one for all); see
            :meth:`set_threshold`.
        nll: also report the mean negative log-likelihood ``nll``.
        **kwargs: forwarded to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).

    Example:
        >>> metrics = ImbalanceMetrics(3, class_names=["a", "b", "c"])
        >>> metrics.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]))
        >>> {k: round(v.item(), 4) for k, v in metrics.compute().items() if "/" not in k}
        {'acc': 0.5, 'balanced_acc': 0.6667, 'macro_f1': 0.3889}
        >>> binary = ImbalanceMetrics(2, task="binary")
        >>> binary.update(torch.tensor([-2.0, 1.0, -1.0, 3.0]), torch.tensor([0, 0, 1, 1]))
        >>> {k: round(v.item(), 4) for k, v in binary.compute().items() if "/" not in k}
        {'acc': 0.5, 'balanced_acc': 0.5, 'macro_f1': 0.5, 'precision': 0.5, 'f1': 0.5, 'auroc': 0.75, 'average_precision': 0.8333, 'ece': 0.4072}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: Tensor

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        task: Task = "multiclass",
        threshold: float | Sequence[float] = THRESHOLD,
        nll: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        check_positive_int("num_classes", num_classes)
        self.task = check_task(task)
        if task == "binary" and num_classes != 2:
            fail("num_classes", "2 for task='binary' (negative and positive class)", num_classes)
        names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != num_classes:
            fail("class_names", f"{num_classes} names (one per class)", list(names))
        self.num_classes = num_classes
        self.class_names = names
        # Checked now: shot_groups would otherwise raise at the end of the first validation epoch.
        for name, value in (("many_threshold", many_threshold), ("few_threshold", few_threshold)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(name, "a non-negative integer number of training samples", value)
        shot_groups(torch.zeros(1, dtype=torch.long), many_threshold, few_threshold)
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        shape = (num_classes, 2, 2) if task == "multilabel" else (num_classes, num_classes)
        self.add_state("confusion", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        if task != "multiclass":
            self.add_state("scores", [], dist_reduce_fx="cat")
            self.add_state("labels", [], dist_reduce_fx="cat")
        self.nll = False
        self.track_nll(nll)
        # A child metric, synced by compute() below together with this one's states. validate_args
        # off: its checks read values on the host (a device sync per batch) and the inputs are ours.
        calibration_args = dict(n_bins=CALIBRATION_BINS, norm="l1", ignore_index=IGNORE_INDEX, validate_args=False,
                                sync_on_compute=False)
        self.calibration: Metric = (
            MulticlassCalibrationError(num_classes, **calibration_args) if task == "multiclass"
            else BinaryCalibrationError(**calibration_args)
        )
        # Not metric states: the training counts, for the shot groups (set once per fit), and the
        # decision threshold (set after it was chosen on validation data).
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long), persistent=False)
        self.register_buffer("threshold", torch.full((), THRESHOLD), persistent=False)
        self.set_threshold(threshold)
        self.synced_confusion: Tensor | None = None
        self.synced_reliability: ReliabilityBins | None = None

    def set_threshold(self, threshold: float | Sequence[float] | Tensor) -> None:
        """Predict positive above ``threshold`` (binary: one probability; multi-label: one or one per label)."""
        labels = self.num_classes if self.task == "multilabel" else 1
        value = check_thresholds(threshold, labels)
        if self.task == "multiclass" and float(value.reshape(-1)[0]) != THRESHOLD:
            fail("threshold", f"{THRESHOLD} for task='multiclass' (the top class is predicted)", value.tolist())
        self.threshold = value.reshape(-1)[0].clone() if value.numel() == 1 else value.clone()
        self.threshold = self.threshold.to(self.class_counts.device)

    def reset(self) -> None:
        super().reset()
        self.calibration.reset()

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Training samples (multi-label: positives) per class; enables the many/medium/few-shot keys."""
        self.class_counts = torch.as_tensor(class_counts, dtype=torch.long, device=self.class_counts.device)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` are logits (or hard labels), see the class docstring for shapes."""
        target = target.long()
        if self.task == "multiclass":
            from_logits = preds.is_floating_point() and preds.ndim > 1
            predicted = preds.argmax(dim=1) if from_logits else preds.long()
            self._count(target.reshape(-1), predicted.reshape(-1), self.num_classes)
            if from_logits:
                # Classes last, one row per prediction: (N, C) and (N, C, d1, ...) alike.
                log_probs = preds.detach().float().movedim(1, -1).reshape(-1, self.num_classes).log_softmax(-1)
                self._add_nll(log_probs, target.reshape(-1))
                self.calibration.update(log_probs.exp(), target.reshape(-1))
            return
        if self.task == "binary":
            preds, target = preds.reshape(-1), target.reshape(-1)
        scores = preds.float().sigmoid() if preds.is_floating_point() else None
        predicted = (scores > self.threshold).long() if scores is not None else preds.long()
        if self.task == "binary":
            self._count(target, predicted, 2)
        else:
            # One 2x2 matrix per label: the label index is the leading coordinate.
            labels = torch.arange(self.num_classes, device=target.device).expand_as(target)
            valid = target != IGNORE_INDEX
            flat = (labels * 4 + target.clamp_min(0) * 2 + predicted)[valid]
            self.confusion.view(-1).index_add_(0, flat, torch.ones_like(flat))
        if scores is not None:
            self.scores.append(scores.detach())
            self.labels.append(target)
            self._add_nll(preds.detach().float(), target)
            self.calibration.update(scores.detach().reshape(-1), target.reshape(-1))

    def track_nll(self, enabled: bool) -> None:
        """Report ``nll`` from now on (or not); its two states exist only once asked for, one more sync each."""
        self.nll = bool(enabled)
        if self.nll and not hasattr(self, "nll_sum"):
            for name in ("nll_sum", "nll_count"):
                self.add_state(name, torch.zeros((), dtype=torch.float64, device=self.confusion.device),
                               dist_reduce_fx="sum")

    def _add_nll(self, outputs: Tensor, target: Tensor) -> None:
        """Sum and count of the negative log-likelihood: ``outputs`` are log-probabilities ``(N, C)`` or logits."""
        if not self.nll:
            return
        valid = target != IGNORE_INDEX
        if self.task == "multiclass":
            losses = -outputs.gather(1, target.clamp_min(0).unsqueeze(1)).squeeze(1)
        else:
            losses = torch.nn.functional.binary_cross_entropy_with_logits(
                outputs, target.clamp_min(0).to(outputs.dtype), reduction="none"
            )
        # Masked sums, not boolean indexing: no data-dependent shape, no host sync.
        self.nll_sum += torch.where(valid, losses, torch.zeros_like(losses)).sum().double()
        self.nll_count += valid.sum().double()

    def _count(self, target: Tensor, predicted: Tensor, num_classes: int) -> None:
        valid = target != IGNORE_INDEX
        flat = (target * num_classes + predicted)[valid]
        self.confusion.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def compute(self) -> dict[str, Tensor]:
        """Scalar tensors keyed by metric name, from the states synced across DDP ranks."""
        confusion = self.confusion.to(torch.float64)
        self.synced_confusion = self.confusion.detach().cpu().clone()
        if self.task == "multilabel":
            values, support, recall = multilabel_summary(confusion)
        else:
            values, support, recall = multiclass_summary(confusion)
        if self.task == "binary":
            positive = class_rates(confusion[1, 1], confusion[0, 1], confusion[1, 0])
            values["precision"], values["f1"] = positive["precision"], positive["f1"]
        if self.task != "multiclass" and self.scores:
            scores, labels = dim_zero_cat(self.scores), dim_zero_cat(self.labels)
            if self.task == "binary":
                values["auroc"] = binary_auroc(scores, labels, ignore_index=IGNORE_INDEX)
                values["average_precision"] = binary_average_precision(scores, labels, ignore_index=IGNORE_INDEX)
            else:
                values["auroc"] = multilabel_auroc(scores, labels, self.num_classes, ignore_index=IGNORE_INDEX)
                values["average_precision"] = multilabel_average_precision(
                    scores, labels, self.num_classes, ignore_index=IGNORE_INDEX
                )
        if self.nll:
            values["nll"] = self.nll_sum / self.nll_count.clamp_min(1)
        self.synced_reliability = None
        if self.calibration.update_count > 0:
            values["ece"], self.synced_reliability = self._calibration_error()
        # A class with no samples in this split has no recall: NaN (null in metrics.json), never
        # 0.0, so that balanced accuracy is the mean of the recalls that are logged as numbers.
        recall = torch.where(support > 0, recall, torch.full_like(recall, float("nan")))
        for name, class_recall, class_support in zip(self.class_names, recall, support):
            values[f"recall/{name}"] = class_recall
            values[f"support/{name}"] = class_support
        if self.class_counts.sum() > 0:
            present = support > 0
            for group, mask in shot_groups(self.class_counts, self.many_threshold, self.few_threshold).items():
                mask = mask.to(recall.device) & present
                if mask.any():
                    values[f"{group}_recall"] = recall[mask].mean()
        return {key: value.float() for key, value in values.items()}

    def _calibration_error(self) -> tuple[Tensor, ReliabilityBins]:
        """torchmetrics' calibration error and the reliability bins, both from the synced confidences."""
        calibration = self.calibration
        # The child syncs only here (its own sync_on_compute is off), once, for both numbers;
        # this metric's own sync_on_compute (and the distributed check) decide as for its states.
        with calibration.sync_context(dist_sync_fn=self.dist_sync_fn, process_group=self.process_group,
                                      should_sync=self.sync_on_compute):
            ece = calibration.compute()
            bins = reliability_bins(*_compat.calibration_samples(calibration), CALIBRATION_BINS)
        return ece, bins

    def summary(self) -> EvaluationSummary:
        """The confusion matrix the last :meth:`compute` read (synced), with names and training counts."""
        if self.synced_confusion is None:
            fail("compute", "called before summary()", None, exc=RuntimeError)
        return EvaluationSummary(
            confusion=self.synced_confusion,  # type: ignore[arg-type]
            class_names=list(self.class_names),
            class_counts=self.class_counts.detach().cpu(),
            many_threshold=self.many_threshold,
            few_threshold=self.few_threshold,
            reliability=self.synced_reliability,
        )


def multiclass_summary(confusion: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Accuracy, balanced accuracy and macro F1 (plus per-class support and recall) of a ``(C, C)`` matrix."""
    support = confusion.sum(dim=1)
    predicted = confusion.sum(dim=0)
    true_positives = confusion.diagonal()
    rates = class_rates(true_positives, predicted - true_positives, support - true_positives)
    present = support > 0
    values = {
        "acc": true_positives.sum() / support.sum().clamp_min(1),
        # Mean over the classes that occur, like sklearn's balanced_accuracy_score.
        "balanced_acc": rates["recall"][present].mean() if present.any() else support.new_zeros(()),
        # Over the classes that occur in targets or predictions, like sklearn's f1_score.
        "macro_f1": rates["f1"][present | (predicted > 0)].mean() if present.any() else support.new_zeros(()),
    }
    return values, support, rates["recall"]


def multilabel_summary(confusion: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Hamming accuracy, mean balanced accuracy and macro F1 (plus support and recall) of ``(L, 2, 2)``."""
    true_negatives, false_positives = confusion[:, 0, 0], confusion[:, 0, 1]
    false_negatives, true_positives = confusion[:, 1, 0], confusion[:, 1, 1]
    support = true_positives + false_negatives
    rates = class_rates(true_positives, false_positives, false_negatives)
    specificity = class_rates(true_negatives, false_negatives, false_positives)["recall"]
    values = {
        "acc": (true_positives + true_negatives).sum() / confusion.sum().clamp_min(1),
        "balanced_acc": ((rates["recall"] + specificity) / 2).mean(),
        # Every label counts, like sklearn's f1_score(average="macro") on multi-label targets.
        "macro_f1": rates["f1"].mean(),
    }
    return values, support, rates["recall"]


def check_thresholds(threshold: float | Sequence[float] | Tensor, labels: int) -> Tensor:
    """``threshold`` as a float32 CPU tensor of one probability, or one per label, or a one-line error.

    Example:
        >>> check_thresholds([0.2, 0.7], labels=2).tolist()
        [0.20000000298023224, 0.699999988079071]
    """
    value = torch.as_tensor(threshold, dtype=torch.float32).detach().cpu()
    if value.ndim > 1 or value.numel() not in (1, labels) or not bool(((value >= 0) & (value <= 1)).all()):
        fail("threshold", f"a probability in [0, 1] (or {labels} of them, one per label)", value.tolist())
    return value


def balanced_accuracy(logits: Tensor, target: Tensor, num_classes: int) -> float:
    """Balanced accuracy of multiclass ``logits`` ``(N, C)`` over one whole set, as the logged ``*/balanced_acc``.

    For choices made on outputs already gathered from every rank (the τ of
    τ-normalisation, the post-hoc τ): the metric is not synced again.

    Example:
        >>> balanced_accuracy(torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]), 2)
        0.75
    """
    metrics = ImbalanceMetrics(num_classes, sync_on_compute=False)
    metrics.update(logits, target)
    return float(metrics.compute()["balanced_acc"])


def best_on_grid(grid: Sequence[float], score: Callable[[float], float]) -> tuple[float, list[float]]:
    """The value of ``grid`` with the highest ``score``, the smallest of equal best ones, and every score.

    The smallest: every grid here starts at "no change" (τ = 0), and of equally
    good values the one that changes the model least is the robust choice.

    Example:
        >>> best_on_grid([0.0, 0.5, 1.0, 1.5], lambda tau: min(tau, 1.0))
        (1.0, [0.0, 0.5, 1.0, 1.0])
    """
    if len(grid) == 0:
        fail("grid", "at least one candidate value", list(grid))
    scores = [float(score(float(value))) for value in grid]
    best = max(scores)
    return min(float(v) for v, s in zip(grid, scores) if s == best), scores
