"""A multi-layer perceptron classifier for flat feature vectors: the default model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from lit_imbalance._checks import check_in_unit_interval, check_positive_int
from lit_imbalance.mixin import ImbalanceMixin
from lit_imbalance.tasks import Task
from lit_imbalance.schedule import LossWarmup

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class MLPClassifier(ImbalanceMixin, L.LightningModule):
    """``Linear -> ReLU -> Dropout`` blocks and a linear classifier head.

    Args:
        input_dim: length of a feature vector.
        num_classes: number of classes ``C``.
        loss: the training loss (plain cross-entropy when ``None``).
        hidden_sizes: width of each hidden layer.
        dropout: dropout probability after every hidden layer.
        optimizer: a callable taking the parameters (a Hydra ``_partial_``);
            AdamW with lr 1e-3 when ``None``.
        class_names: names for per-class metric keys.
        task: ``"multiclass"`` (``num_classes`` outputs), ``"binary"`` (one output)
            or ``"multilabel"``.
        warmup: a loss warm-up / DRW schedule towards ``loss``.
        bias_prior: initialise the head's bias to the training class prior.
        posthoc_tau: also report metrics of post-hoc adjusted logits, and predict them.

    Example:
        >>> model = MLPClassifier(input_dim=4, num_classes=3, hidden_sizes=[8])
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        loss: nn.Module | None = None,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        optimizer: OptimizerFactory | None = None,
        class_names: Sequence[str] | None = None,
        task: Task = "multiclass",
        warmup: LossWarmup | None = None,
        bias_prior: bool = True,
        posthoc_tau: float | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("input_dim", input_dim)
        check_in_unit_interval("dropout", dropout, open_right=True)
        self.save_hyperparameters(ignore=["loss", "optimizer", "warmup"])
        layers: list[nn.Module] = []
        width = input_dim
        for index, size in enumerate(hidden_sizes):
            layers += [nn.Linear(width, check_positive_int(f"hidden_sizes[{index}]", size)), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1 if task == "binary" else num_classes)
        self.optimizer_factory = optimizer
        self.configure_imbalance(
            loss=loss, num_classes=num_classes, task=task, head=self.head, warmup=warmup,
            bias_prior=bias_prior, class_names=class_names, posthoc_tau=posthoc_tau,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.imbalance_step("train", self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.imbalance_step("val", self(x), y)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.imbalance_step("test", self(x), y)

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.adjust_logits(self(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)
        return self.optimizer_factory(self.parameters())
