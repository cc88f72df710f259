"""Per-class classification metrics for imbalanced data, on top of torchmetrics.

One torchmetrics confusion matrix is the state; accuracy, per-class recall,
balanced accuracy, macro F1, per-class support and many/medium/few-shot recall
are all read off it. One state means one DDP sync per epoch and numbers that
agree with each other by construction (balanced accuracy *is* the mean of the
logged per-class recalls).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_imbalance._checks import check_positive_int, fail


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


class ImbalanceMetrics(nn.Module):
    """Accuracy, balanced accuracy, macro F1, per-class recall/support and shot-group recall.

    Args:
        num_classes: number of classes ``C``.
        class_names: names used in the keys ``recall/<name>`` and ``support/<name>``.
        many_threshold: a class with more training samples is many-shot.
        few_threshold: a class with fewer training samples is few-shot.

    Example:
        >>> metrics = ImbalanceMetrics(3, class_names=["a", "b", "c"])
        >>> metrics.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]))
        >>> {k: round(v.item(), 4) for k, v in metrics.compute().items() if "/" not in k}
        {'acc': 0.5, 'balanced_acc': 0.6667, 'macro_f1': 0.3889}
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != num_classes:
            fail("class_names", f"{num_classes} names (one per class)", list(names))
        self.class_names = names
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=-100)
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long), persistent=False)

    def set_class_counts(self, class_counts: Tensor) -> None:
        """Training samples per class; enables the many/medium/few-shot keys."""
        self.class_counts = torch.as_tensor(class_counts, dtype=torch.long, device=self.class_counts.device)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` are logits ``(N, C)`` or class indices ``(N,)``."""
        self.confusion.update(preds, target)

    def reset(self) -> None:
        self.confusion.reset()

    def compute(self) -> dict[str, Tensor]:
        """Scalar tensors keyed by metric name, synced across DDP ranks by torchmetrics."""
        confusion = self.confusion.compute().to(torch.float64)
        support = confusion.sum(dim=1)
        predicted = confusion.sum(dim=0)
        true_positives = confusion.diagonal()
        recall = safe_divide(true_positives, support)
        precision = safe_divide(true_positives, predicted)
        f1 = safe_divide(2 * precision * recall, precision + recall)
        present = support > 0
        values: dict[str, Tensor] = {
            "acc": true_positives.sum() / support.sum().clamp_min(1),
            # Mean over the classes that occur, like sklearn's balanced_accuracy_score.
            "balanced_acc": recall[present].mean() if present.any() else recall.new_zeros(()),
            # Over the classes that occur in targets or predictions, like sklearn's f1_score.
            "macro_f1": f1[present | (predicted > 0)].mean() if present.any() else f1.new_zeros(()),
        }
        for name, class_recall, class_support in zip(self.class_names, recall, support):
            values[f"recall/{name}"] = class_recall
            values[f"support/{name}"] = class_support
        if self.class_counts.sum() > 0:
            for group, mask in shot_groups(self.class_counts, self.many_threshold, self.few_threshold).items():
                mask = mask.to(recall.device) & present
                if mask.any():
                    values[f"{group}_recall"] = recall[mask].mean()
        return {key: value.float() for key, value in values.items()}

    def confusion_matrix(self) -> Tensor:
        """The synced ``(C, C)`` confusion matrix ``[true, pred]``."""
        return self.confusion.compute()
