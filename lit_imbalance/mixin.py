"""ImbalanceMixin: make any LightningModule imbalance-aware with one call.

The mixin owns three things a classifier on long-tailed data needs and that
are easy to get subtly wrong by hand: the loss and the class statistics it is
fed, and per-class metrics that are synced across ranks. It relies on the
LightningModule hooks ``setup``, ``on_validation_epoch_end`` and
``on_test_epoch_end``; a subclass that overrides one of them must call
``super()`` so the mixin's part still runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_positive_int, fail
from lit_imbalance.data.labels import class_counts as count_classes
from lit_imbalance.data.labels import dataset_labels
from lit_imbalance.metrics import ImbalanceMetrics

EVAL_STAGES = ("val", "test")


class ImbalanceMixin:
    """Imbalance-aware loss, class counts and per-class metrics for a LightningModule.

    Put it before ``LightningModule`` in the bases, call
    :meth:`configure_imbalance` at the end of ``__init__`` and return
    :meth:`imbalance_step` from the step methods::

        class Model(ImbalanceMixin, L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(64, 10)
                self.configure_imbalance(loss=losses.FocalLoss(gamma=2.0), num_classes=10)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return self.imbalance_step("train", self.net(x), y)

    Validation and test epochs then log ``<stage>/acc``, ``<stage>/balanced_acc``,
    ``<stage>/macro_f1``, ``<stage>/recall/<class>``, ``<stage>/support/<class>``
    and ``<stage>/{many,medium,few}_recall``.
    """

    imbalance_loss: nn.Module
    imbalance_metrics: nn.ModuleDict
    class_counts: Tensor

    def configure_imbalance(
        self,
        loss: nn.Module | None = None,
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        class_counts: Sequence[int] | Tensor | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
    ) -> None:
        """Attach the loss, the class statistics and the metrics.

        Args:
            loss: the training loss, ``loss(logits, target)``; plain cross-entropy
                when ``None``. A loss with ``set_class_counts`` receives the
                training class counts before the first step.
            num_classes: number of classes ``C``.
            class_names: names used in per-class metric keys (default ``"0".."C-1"``).
            class_counts: training samples per class; found from the datamodule
                (``train_class_counts`` or the training dataset's labels) when ``None``.
            many_threshold: classes with more training samples count as many-shot.
            few_threshold: classes with fewer training samples count as few-shot.
        """
        check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.imbalance_loss = loss if loss is not None else nn.CrossEntropyLoss()
        self.imbalance_metrics = nn.ModuleDict(
            {stage: ImbalanceMetrics(num_classes, class_names, many_threshold, few_threshold) for stage in EVAL_STAGES}
        )
        # A buffer, so the counts a model was trained with travel in its checkpoint.
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long))
        self.last_confusion: dict[str, Tensor] = {}
        self._given_class_counts = None
        if class_counts is not None:
            self._given_class_counts = count_tensor(class_counts, num_classes)

    # --- class statistics -------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        if stage == "fit":
            self.apply_class_counts(self.find_class_counts())

    def find_class_counts(self) -> Tensor:
        """Training samples per class: given, from the datamodule, or from the train dataset's labels."""
        if self._given_class_counts is not None:
            return self._given_class_counts
        datamodule = getattr(self.trainer, "datamodule", None)
        counts = getattr(datamodule, "train_class_counts", None)
        if counts is not None:
            return count_tensor(counts, self.num_classes)
        dataset = getattr(datamodule, "train_dataset", None)
        if dataset is None:
            fail(
                "class_counts",
                "given to configure_imbalance, or a datamodule with `train_class_counts` or `train_dataset`",
                None,
            )
        return count_classes(dataset_labels(dataset), self.num_classes)

    def apply_class_counts(self, class_counts: Sequence[int] | Tensor) -> None:
        """Hand the training class counts to the loss and the shot-group metrics."""
        counts = count_tensor(class_counts, self.num_classes).to(self.class_counts.device)
        self.class_counts.copy_(counts)
        if hasattr(self.imbalance_loss, "set_class_counts"):
            self.imbalance_loss.set_class_counts(counts)
        for metrics in self.imbalance_metrics.values():
            metrics.set_class_counts(counts)

    # --- steps and epochs ---------------------------------------------------------------

    def imbalance_step(self, stage: str, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch, logged as ``<stage>/loss``; val/test batches also update the metrics.

        Args:
            stage: ``"train"``, ``"val"`` or ``"test"``.
            logits: model outputs ``(N, C)``.
            target: class indices ``(N,)``.

        Returns:
            The loss, ready to be returned from ``training_step``.
        """
        loss = self.imbalance_loss(logits, target)
        is_train = stage == "train"
        self.log(  # type: ignore[attr-defined]
            f"{stage}/loss", loss, on_step=is_train, on_epoch=True, prog_bar=is_train,
            sync_dist=not is_train, batch_size=target.shape[0],
        )
        if stage in self.imbalance_metrics:
            self.imbalance_metrics[stage].update(logits.detach(), target)
        return loss

    def on_validation_epoch_end(self) -> None:
        self.log_imbalance_metrics("val")
        super().on_validation_epoch_end()  # type: ignore[misc]

    def on_test_epoch_end(self) -> None:
        self.log_imbalance_metrics("test")
        super().on_test_epoch_end()  # type: ignore[misc]

    def log_imbalance_metrics(self, stage: str) -> dict[str, Tensor]:
        """Compute (synced across ranks), log and reset the metrics of ``stage``."""
        metrics = self.imbalance_metrics[stage]
        values = {f"{stage}/{name}": value for name, value in metrics.compute().items()}
        # Kept for callbacks that draw the confusion matrix after the epoch (plots, reports).
        self.last_confusion[stage] = metrics.confusion_matrix().detach().cpu()
        headline = f"{stage}/balanced_acc"
        # Already reduced across ranks by torchmetrics: no second sync.
        for name, value in values.items():
            self.log(name, value, sync_dist=False, prog_bar=name == headline)  # type: ignore[attr-defined]
        metrics.reset()
        return values


def count_tensor(class_counts: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Class counts as an int64 tensor of length ``num_classes``, or a clear error."""
    counts = torch.as_tensor(class_counts).detach().cpu()
    if counts.ndim != 1 or counts.numel() != num_classes or (counts < 0).any():
        fail("class_counts", f"{num_classes} non-negative counts (one per class)", counts.tolist())
    return counts.to(torch.long)
