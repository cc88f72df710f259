"""Labels and class counts of a dataset, read without touching its inputs.

Class counts are computed once, from label arrays, never per batch: losses,
bias priors and samplers all start from :func:`class_counts`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from lit_imbalance._checks import fail

LABEL_ATTRIBUTES = ("targets", "labels", "y")


def as_label_tensor(labels: Sequence[int] | np.ndarray | torch.Tensor, name: str = "labels") -> torch.Tensor:
    """Return labels as a 1-D int64 CPU tensor, or raise naming ``name``.

    Example:
        >>> as_label_tensor([0, 2, 1])
        tensor([0, 2, 1])
    """
    tensor = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if tensor.ndim != 1:
        fail(name, "a 1-D sequence of integer class indices", f"a tensor of shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        fail(name, "integer class indices", f"dtype {tensor.dtype}")
    return tensor.to(device="cpu", dtype=torch.int64)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels of ``dataset`` as a 1-D int64 tensor, without loading its inputs.

    Looks, in order, for a ``targets``/``labels``/``y`` attribute, the last
    tensor of a :class:`~torch.utils.data.TensorDataset`, and recurses through
    :class:`~torch.utils.data.Subset` and :class:`~torch.utils.data.ConcatDataset`.
    Only when none applies does it fall back to one pass over ``dataset[i][1]``
    (which loads every input once) and warns about it.

    Example:
        >>> ds = TensorDataset(torch.zeros(3, 2), torch.tensor([1, 0, 1]))
        >>> dataset_labels(Subset(ds, [2, 1]))
        tensor([1, 0])
    """
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([dataset_labels(part) for part in dataset.datasets])
    for attribute in LABEL_ATTRIBUTES:
        labels = getattr(dataset, attribute, None)
        if labels is not None:
            return as_label_tensor(labels, name=f"{type(dataset).__name__}.{attribute}")
    if isinstance(dataset, TensorDataset):
        return as_label_tensor(dataset.tensors[-1], name="TensorDataset.tensors[-1]")
    warnings.warn(
        f"{type(dataset).__name__} has no `targets` or `labels` attribute; reading labels by "
        "iterating the dataset once, which loads every input. Add a `targets` attribute to skip this.",
        stacklevel=2,
    )
    return as_label_tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def class_counts(labels: Sequence[int] | np.ndarray | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Number of samples per class, shape ``(num_classes,)``, int64.

    Args:
        labels: 1-D integer class indices.
        num_classes: number of classes ``C``; inferred as ``max(labels) + 1`` when ``None``.

    Raises:
        ValueError: if a label lies outside ``0..C-1``.

    Example:
        >>> class_counts([0, 2, 2], num_classes=4)
        tensor([1, 0, 2, 0])
    """
    labels = as_label_tensor(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        fail("labels", f"class indices in 0..{num_classes - 1}", bad)
    return torch.bincount(labels, minlength=num_classes)
