"""Datasets, long-tail construction and class-count discovery.

The data modules are imported on first use (PEP 562 ``__getattr__``): each
format pulls in its own heavy dependency (scikit-learn for digits,
torchvision for images and CIFAR, pandas for tables), and a run that uses
one of them never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from lit_imbalance.data.labels import as_label_tensor, class_counts, dataset_labels
from lit_imbalance.data.long_tail import long_tail, long_tail_counts

#: Public name -> the module that defines it.
_LAZY = {
    "ArrayDataModule": "datamodule",
    "LabeledDataModule": "datamodule",
    "Split": "datamodule",
    "CIFAR10LTDataModule": "cifar",
    "CIFAR100LTDataModule": "cifar",
    "cifar_long_tail": "cifar",
    "DigitsLTDataModule": "digits",
    "ImageFolderDataModule": "images",
    "SplitFilesDataModule": "images",
    "NpzDataModule": "npz",
    "TableDataModule": "tables",
}

__all__ = sorted([*_LAZY, "as_label_tensor", "class_counts", "dataset_labels", "long_tail", "long_tail_counts"])


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # imported once
    return value
