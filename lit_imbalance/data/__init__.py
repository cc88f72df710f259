"""Datasets, long-tail construction and class-count discovery."""

from lit_imbalance.data.labels import as_label_tensor, class_counts, dataset_labels

__all__ = ["as_label_tensor", "class_counts", "dataset_labels"]
