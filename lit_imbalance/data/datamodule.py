"""LightningDataModules over datasets whose labels are known without reading the inputs.

:class:`LabeledDataModule` is the one base of every bundled data source
(arrays, CIFAR-LT, image folders, split files, tables): it serves the loaders
(a rebalancing sampler built from the training labels, unpadded evaluation
shards under DDP) and tells the app, the samplers and the mixin the same
things about every dataset: ``num_classes``, ``class_names``,
``train_labels`` and ``train_class_counts``. Subclasses only say where the
train/val/test datasets come from. :class:`ArrayDataModule` is the base for
in-memory feature arrays. Data is read and validated when the module is
built, so a bad config fails at instantiation, under its Hydra key, before
any process is launched.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from lit_imbalance._checks import check_in_unit_interval, check_positive_int, fail
from lit_imbalance.data.labels import class_counts, dataset_labels

SamplerFactory = Callable[[torch.Tensor], Sampler]
SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Features ``x`` of shape ``(N, D)`` (float32) and labels ``y`` of shape ``(N,)`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor


def make_split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int | None = None) -> Split:
    """Validate one split's arrays and convert them to tensors.

    Raises:
        ValueError: naming ``x_<name>`` / ``y_<name>`` when the split is empty, the
            shapes disagree, the labels are not integers or lie outside ``0..C-1``.

    Example:
        >>> make_split("test", np.zeros((2, 3)), np.array([0, 5]), num_classes=3)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `y_test` to be class indices in 0..2, but got 5.
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or y.shape[0] == 0:
        fail(f"y_{name}", "a non-empty 1-D label array", f"an array of shape {y.shape}")
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        fail(f"x_{name}", f"a 2-D feature array with {y.shape[0]} rows (one per label)", f"shape {x.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        # Strings, objects, booleans: not class indices (map names to 0..C-1 first).
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            fail(f"y_{name}", "integer class labels (map label names to 0..C-1 first)", f"dtype {y.dtype}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        fail(f"x_{name}", "real-valued numeric features", f"dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        fail(f"x_{name}", "finite features", "an array with NaN or inf")
    y = y.astype(np.int64)
    upper = num_classes - 1 if num_classes is not None else None
    bad = y[(y < 0) | (y > upper)] if upper is not None else y[y < 0]
    if bad.size:
        fail(f"y_{name}", f"class indices in 0..{upper}" if upper is not None else "non-negative class indices", int(bad[0]))
    return Split(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))


def check_test_fraction(test_fraction: float) -> float:
    """``test_fraction`` in (0, 1): 0 means "no hold-out" for validation, but a test split that is the
    training split measures nothing."""
    check_in_unit_interval("test_fraction", test_fraction, open_right=True)
    if test_fraction == 0:
        fail("test_fraction", "a share in (0, 1) of each class held out for test", test_fraction)
    return float(test_fraction)


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into (kept, held-out), holding out ``fraction`` of every class.

    Every class with at least two samples keeps at least one and gives at least
    one, so a rare class is neither lost from training nor absent from validation.
    ``fraction=0`` holds nothing out: both index sets are every sample, so
    validation scores the training samples (a rare class keeps all it has; select
    the last epoch then, never the best ``val/*``).

    Example:
        >>> kept, held = stratified_holdout(np.array([0] * 10 + [1] * 2), 0.2, seed=0)
        >>> np.bincount(np.asarray([0] * 10 + [1] * 2)[held]).tolist()
        [2, 1]
        >>> [len(part) for part in stratified_holdout(np.array([0] * 10 + [1] * 2), 0.0, seed=0)]
        [12, 12]
    """
    if fraction == 0:
        log.warning("val_fraction=0: no validation hold-out, val/* scores the training samples; "
                    "test the last epoch (callbacks.model_checkpoint.monitor=null)")
        everything = np.arange(len(y))
        return everything, everything
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        n_held = int(round(fraction * members.size))
        if members.size >= 2:
            n_held = min(max(n_held, 1), members.size - 1)
        else:
            n_held = 0
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


class LabeledDataModule(L.LightningDataModule):
    """Train/val/test datasets with integer labels known up front.

    Subclasses set :attr:`num_classes` and either :attr:`datasets` (a dict
    ``{"train"|"val"|"test": Dataset}``, each dataset readable by
    :func:`~lit_imbalance.data.labels.dataset_labels` without loading inputs,
    e.g. through a ``targets`` tensor) or override :meth:`dataset`. The
    training loader uses the sampler built by ``sampler(train_labels)`` when
    one is configured (see :mod:`lit_imbalance.sampling`) and plain shuffling
    otherwise. Under DDP the evaluation loaders shard without padding, so every
    test sample is counted exactly once in the per-class metrics.

    ``train_subset`` (indices into the training split, ``None`` for all of it)
    restricts what the training loader serves, and what ``train_labels``,
    ``train_class_counts`` and the sampler see; hard negative mining
    (:class:`~lit_imbalance.callbacks.HardNegativeMining`) grows it from
    ``train_pool``, the whole training split.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (defaults to ``batch_size``).
        num_workers: DataLoader workers (kept alive across epochs).
        pin_memory: page-locked batches, for faster host-to-GPU copies.
        sampler: a callable mapping the training labels to a sampler, or ``None``.
        class_names: display names of the classes (defaults to ``"0"..."C-1"``).
    """

    datasets: dict[str, Dataset]
    num_classes: int

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sampler: SamplerFactory | None = None,
        class_names: Sequence[str] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size or batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            fail("num_workers", "a non-negative integer", num_workers)
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.sampler = sampler
        self._class_names = list(class_names) if class_names is not None else None
        self.train_subset: torch.Tensor | None = None

    @property
    def class_names(self) -> list[str]:
        """One display name per class, used in metric keys such as ``val/recall/<name>``."""
        if self._class_names is None:
            return [str(i) for i in range(self.num_classes)]
        if len(self._class_names) != self.num_classes:
            fail("class_names", f"{self.num_classes} names (one per class)", self._class_names)
        return [str(name) for name in self._class_names]

    def model_inputs(self) -> dict[str, Any]:
        """Constructor arguments the model needs from the data besides the classes (none here)."""
        return {}

    def dataset(self, split: str) -> Dataset:
        """The ``(input, label)`` dataset of ``split``; its labels are readable without the inputs."""
        return self.datasets[split]

    def labels(self, split: str) -> torch.Tensor:
        """All labels of ``split``, 1-D int64, read without loading inputs."""
        return dataset_labels(self.dataset(split))

    @property
    def train_pool(self) -> Dataset:
        """Every training sample, whatever ``train_subset`` selects."""
        return self.dataset("train")

    @property
    def train_labels(self) -> torch.Tensor:
        """Labels of the training samples in use (``train_subset``, or all), 1-D int64."""
        labels = self.labels("train")
        return labels if self.train_subset is None else labels[self.train_subset]

    @property
    def train_class_counts(self) -> torch.Tensor:
        """Training samples per class, shape ``(num_classes,)``."""
        return class_counts(self.train_labels, self.num_classes)

    def train_dataloader(self) -> DataLoader:
        # The sampler indexes the dataset it is given: the subset's labels for the subset.
        sampler = self.sampler(self.train_labels) if self.sampler is not None else None
        pool = self.train_pool
        return DataLoader(
            pool if self.train_subset is None else Subset(pool, self.train_subset.tolist()),
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.evaluation_dataloader("test")

    def evaluation_transform(self) -> Callable[[Any], Any] | None:
        """The transform of evaluated inputs (no augmentation), for datasets whose training one augments."""
        return None

    def evaluation_dataset(self, split: str) -> Dataset:
        """``split`` as it is evaluated: the training split without its augmentation (same samples, same order)."""
        dataset = self.dataset(split)
        transform = self.evaluation_transform()
        if split == "train" and transform is not None and hasattr(dataset, "transform"):
            dataset = copy.copy(dataset)  # shares the samples; only the transform differs
            dataset.transform = transform
        return dataset

    def evaluation_dataloader(self, split: str) -> DataLoader:
        """``split`` in dataset order, unshuffled, unaugmented, sharded without padding under DDP.

        Also for ``"train"``: class means and other statistics of the whole training split.
        """
        dataset = self.evaluation_dataset(split)
        # Lightning's default DistributedSampler pads ranks with repeated samples,
        # which would count some test samples twice in per-class recall.
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False) if _is_distributed() else None
        return DataLoader(
            dataset, batch_size=self.eval_batch_size, sampler=sampler, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory,
        )


class ArrayDataModule(LabeledDataModule):
    """Train/val/test splits of flat feature vectors with integer labels, held in memory.

    Subclasses set :attr:`splits` (a dict ``{"train"|"val"|"test": Split}``) and
    :attr:`num_classes` in ``__init__``; everything else is
    :class:`LabeledDataModule`'s. The model gets ``input_dim`` from
    :meth:`model_inputs`.
    """

    splits: dict[str, Split]

    @property
    def num_features(self) -> int:
        """Length of one feature vector."""
        return int(self.splits["train"].x.shape[1])

    def model_inputs(self) -> dict[str, Any]:
        return {"input_dim": self.num_features}

    def dataset(self, split: str) -> TensorDataset:
        return TensorDataset(self.splits[split].x, self.splits[split].y)

    def labels(self, split: str) -> torch.Tensor:
        return self.splits[split].y


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
