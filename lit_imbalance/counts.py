"""Where the training class counts of a fit come from: public Trainer attributes only.

In order: the counts given to the model; the datamodule (``trainer.datamodule``:
its ``train_class_counts``, ``train_labels`` or ``train_dataset``); the dataset
of the loader Lightning has set up for training (``trainer.train_dataloader``,
available from ``on_train_start`` on). Labels are read without loading
inputs (:func:`lit_imbalance.data.labels.dataset_labels`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from lit_imbalance._checks import fail
from lit_imbalance.data.labels import LABEL_ATTRIBUTES, dataset_labels
from lit_imbalance.data.labels import class_counts as count_classes
from lit_imbalance.tasks import Task

#: Counts and number of samples (they differ for multi-label data, whose counts are positives per label).
ClassCounts = tuple[Tensor, int]


def datamodule_class_counts(trainer: L.Trainer, task: Task, num_classes: int) -> ClassCounts | None:
    """Counts from ``trainer.datamodule`` (``train_class_counts``, ``train_labels``, ``train_dataset``), if any."""
    datamodule = trainer.datamodule
    if datamodule is None:
        return None
    if task != "multilabel":
        counts = getattr(datamodule, "train_class_counts", None)
        if counts is not None:
            counts = torch.as_tensor(counts)
            return counts, int(counts.sum())
    labels = getattr(datamodule, "train_labels", None)
    if labels is not None:
        return counts_of_labels(torch.as_tensor(labels), task, num_classes)
    dataset = getattr(datamodule, "train_dataset", None)
    return dataset_class_counts(dataset, task, num_classes) if dataset is not None else None


def train_loader_class_counts(trainer: L.Trainer, task: Task, num_classes: int) -> ClassCounts | None:
    """Counts of the dataset behind ``trainer.train_dataloader`` (set up by Lightning by ``on_train_start``)."""
    loader: Any = trainer.train_dataloader
    if loader is None:
        return None
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        fail("train_dataloaders", "one DataLoader (pass class_counts to configure_imbalance otherwise)",
             type(loader).__name__)
    return dataset_class_counts(dataset, task, num_classes)


def dataset_class_counts(dataset: Dataset, task: Task, num_classes: int) -> ClassCounts:
    """Counts of a dataset's labels, read without loading its inputs."""
    labels = label_matrix(dataset) if task == "multilabel" else dataset_labels(dataset)
    return counts_of_labels(labels, task, num_classes)


def counts_of_labels(labels: Tensor, task: Task, num_classes: int) -> ClassCounts:
    """``(counts, num_samples)`` of class indices, or of a multi-hot ``(N, L)`` label matrix."""
    if task == "multilabel":
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            fail("train labels", f"a multi-hot (N, {num_classes}) matrix", f"shape {tuple(labels.shape)}")
        return labels.long().sum(0), int(labels.shape[0])
    counts = count_classes(labels, num_classes)
    return counts, int(counts.sum())


def label_matrix(dataset: Dataset) -> Tensor:
    """The multi-hot ``(N, L)`` labels of a dataset: its ``targets``/``labels``/``y``, or a TensorDataset's last tensor."""
    found = (getattr(dataset, attribute, None) for attribute in LABEL_ATTRIBUTES)
    labels = next((labels for labels in found if labels is not None), None)
    if labels is None and isinstance(dataset, TensorDataset):
        labels = dataset.tensors[-1]
    if labels is None:
        fail("dataset", "a dataset with a `targets` multi-hot label matrix (or pass class_counts)", type(dataset).__name__)
    return torch.as_tensor(labels)
