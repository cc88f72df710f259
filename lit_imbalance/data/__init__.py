"""Datasets, long-tail construction and class-count discovery."""

from lit_imbalance.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule, cifar_long_tail
from lit_imbalance.data.datamodule import ArrayDataModule, LabeledDataModule, Split
from lit_imbalance.data.digits import DigitsLTDataModule
from lit_imbalance.data.images import ImageFolderDataModule, SplitFilesDataModule
from lit_imbalance.data.labels import as_label_tensor, class_counts, dataset_labels
from lit_imbalance.data.long_tail import long_tail, long_tail_counts
from lit_imbalance.data.npz import NpzDataModule
from lit_imbalance.data.tables import TableDataModule

__all__ = [
    "ArrayDataModule",
    "CIFAR100LTDataModule",
    "CIFAR10LTDataModule",
    "DigitsLTDataModule",
    "ImageFolderDataModule",
    "LabeledDataModule",
    "NpzDataModule",
    "Split",
    "SplitFilesDataModule",
    "TableDataModule",
    "as_label_tensor",
    "cifar_long_tail",
    "class_counts",
    "dataset_labels",
    "long_tail",
    "long_tail_counts",
]
