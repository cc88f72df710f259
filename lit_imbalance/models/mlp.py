"""A multi-layer perceptron classifier for flat feature vectors: the default model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from lit_imbalance._checks import check_in_unit_interval, check_positive_int
from lit_imbalance.tasks import Task
from lit_imbalance.models.base import ImbalanceClassifier


class MLPClassifier(ImbalanceClassifier):
    """``Linear -> ReLU -> Dropout`` blocks and a linear classifier head.

    Args:
        input_dim: length of a feature vector.
        num_classes: number of classes ``C``.
        hidden_sizes: width of each hidden layer.
        dropout: dropout probability after every hidden layer.
        task: ``"multiclass"`` (``num_classes`` outputs), ``"binary"`` (one output)
            or ``"multilabel"``.
        **classifier_args: ``loss``, ``optimizer``, ``scheduler``, ``class_names``,
            ``warmup``, ``bias_prior``, ``posthoc_tau``: see
            :class:`~lit_imbalance.models.base.ImbalanceClassifier`.

    Example:
        >>> import torch
        >>> model = MLPClassifier(input_dim=4, num_classes=3, hidden_sizes=[8])
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """

    backbone: nn.Sequential
    head: nn.Linear

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        task: Task = "multiclass",
        **classifier_args: Any,
    ) -> None:
        check_positive_int("input_dim", input_dim)
        check_in_unit_interval("dropout", dropout, open_right=True)
        layers: list[nn.Module] = []
        width = input_dim
        for index, size in enumerate(hidden_sizes):
            layers += [nn.Linear(width, check_positive_int(f"hidden_sizes[{index}]", size)), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        head = nn.Linear(width, 1 if task == "binary" else num_classes)
        # Two stages, so the checkpoint keys stay backbone.* and head.*.
        stages = {"backbone": nn.Sequential(*layers), "head": head}
        super().__init__(stages, num_classes=num_classes, task=task, head=head, **classifier_args)
