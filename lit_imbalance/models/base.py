"""The LightningModule plumbing every bundled classifier shares.

A bundled model is a network (inputs to logits) plus what
:class:`ImbalanceClassifier` does for all of them: the imbalance-aware steps
of :class:`~lit_imbalance.mixin.ImbalanceMixin`, the optimizer and learning-rate
schedule of the ``optimizer`` and ``scheduler`` config groups, and the
channels-last memory format for convolutional networks on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lit_imbalance._checks import fail
from lit_imbalance.mixin import ImbalanceMixin
from lit_imbalance.mixing import BatchMixer
from lit_imbalance.tasks import Task
from lit_imbalance.heads import find_classifier_head
from lit_imbalance.schedule import LossWarmup

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
# Not hyperparameters: objects built by their own config groups (and the network itself).
NOT_HYPERPARAMETERS = ["network", "head", "loss", "optimizer", "scheduler", "warmup", "mixup"]


class ImbalanceClassifier(ImbalanceMixin, L.LightningModule):
    """A network's logits trained and evaluated with the imbalance mixin.

    Args:
        network: maps a batch of inputs to logits ``(N, C)`` (``(N, 1)`` for binary),
            registered as ``self.network``; or named stages applied in order
            (``{"backbone": ..., "head": ...}``), each registered under its name.
        num_classes: number of classes ``C``.
        loss: the training loss (plain cross-entropy when ``None``).
        optimizer: a callable taking the parameters (a Hydra ``_partial_``, see
            ``conf/optimizer/``); AdamW with lr 1e-3 when ``None``.
        scheduler: a callable taking the optimizer and returning a learning-rate
            scheduler stepped once per epoch (``conf/scheduler/``), or ``None``.
        class_names: names for per-class metric keys.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"`` (see
            :meth:`~lit_imbalance.mixin.ImbalanceMixin.configure_imbalance`).
        warmup: a loss warm-up / DRW schedule towards ``loss``.
        bias_prior: initialise the head's bias to the training class prior.
        posthoc_tau: also report metrics of post-hoc adjusted logits, and predict them
            (``"tune"``: chosen on validation at the start of the test).
        head: the classifier layer inside ``network``; found by
            :func:`~lit_imbalance.heads.find_classifier_head` when ``None``.
        channels_last: on a CUDA device, keep weights and image batches in the
            channels-last memory format (faster convolutions with tensor cores);
            ignored elsewhere.
        mixup: a training-batch transform (``conf/mixup/``: mixup, remix,
            label-aware smoothing), see :mod:`lit_imbalance.mixing`.

    Example:
        >>> model = ImbalanceClassifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), num_classes=3)
        >>> model(torch.zeros(2, 3, 2, 2)).shape, model.classifier_head() is model.network[1]
        (torch.Size([2, 3]), True)
    """

    def __init__(
        self,
        network: nn.Module | Mapping[str, nn.Module],
        num_classes: int,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        class_names: Sequence[str] | None = None,
        task: Task = "multiclass",
        warmup: LossWarmup | None = None,
        bias_prior: bool = True,
        posthoc_tau: float | str | None = None,
        head: nn.Module | None = None,
        channels_last: bool = False,
        mixup: BatchMixer | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=NOT_HYPERPARAMETERS)
        stages = dict(network) if isinstance(network, Mapping) else {"network": network}
        for name, stage in stages.items():
            if not isinstance(stage, nn.Module):
                fail("network", "an nn.Module or a mapping of names to nn.Modules", type(stage).__name__, TypeError)
            self.add_module(name, stage)
        self.stage_names = list(stages)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = bool(channels_last)
        self.configure_imbalance(
            loss=loss, num_classes=num_classes, task=task,
            # A single network may say where its head is (timm's get_classifier); stages are searched together.
            head=head if head is not None else find_classifier_head(
                network if isinstance(network, nn.Module) else self, 1 if task == "binary" else num_classes
            ),
            warmup=warmup, bias_prior=bias_prior, class_names=class_names, posthoc_tau=posthoc_tau, mixup=mixup,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self._memory_format(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = self.mix_batch(*batch)
        return self.imbalance_step("train", self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.imbalance_step("val", self(x), y)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.imbalance_step("test", self(x), y)

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        """Multiclass: the (post-hoc adjusted) logits, whose top class is the decision; binary and
        multi-label: the 0/1 decisions at the chosen threshold (0.5 before one was chosen)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        logits = self(x)
        if self.imbalance_task == "multiclass":
            return self.adjust_logits(logits)
        return self.predict_labels(logits)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
        else:
            optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # Every bundled schedule (warm-up + steps, cosine) counts epochs, as the papers' do.
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    @property
    def uses_channels_last(self) -> bool:
        """Whether batches and weights are kept channels-last: asked for, and on a CUDA device."""
        return self.channels_last and self.device.type == "cuda"

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._weights_to_channels_last()

    def on_test_start(self) -> None:
        super().on_test_start()
        self._weights_to_channels_last()

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._weights_to_channels_last()

    def _weights_to_channels_last(self) -> None:
        # Here, not in __init__: only now is the module on its device.
        if self.uses_channels_last:
            self.to(memory_format=torch.channels_last)

    def _memory_format(self, x: Tensor) -> Tensor:
        if self.uses_channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
