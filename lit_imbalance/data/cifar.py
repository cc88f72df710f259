"""CIFAR-10-LT and CIFAR-100-LT, built exactly as the LDAM-DRW code builds them.

The construction (Cao et al. 2019, ``imbalance_cifar.py``): class ``i`` of the
official training set, in the official class order, keeps
``n_i = int(n_max * (1/rho)^(i/(C-1)))`` images (``n_max`` 5000 or 500), chosen
by ``np.random.seed(0)`` and one ``np.random.shuffle`` of each class's indices
in turn. The full balanced test set is the test split. Validation images come
from the training images the cut left out, so validation never touches test.

The files are the python-pickle versions of the datasets, read here rather
than through ``torchvision.datasets.CIFAR10``, whose integrity check accepts
only the official files (tests use small generated archives of the same
layout). ``download=True`` fetches and checks the official archive with
torchvision, once.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lit_imbalance._checks import fail
from lit_imbalance.data.datamodule import LabeledDataModule
from lit_imbalance.data.labels import as_label_tensor
from lit_imbalance.data.long_tail import long_tail_counts

# The normalisation of the LDAM-DRW training script (per-channel mean and std of CIFAR-10).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CIFARLayout:
    """Where one CIFAR variant keeps its pickles and which keys hold labels and names."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    archive: str
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CIFARLayout(
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    archive="cifar-10-python.tar.gz",
    num_classes=10,
)
CIFAR100 = CIFARLayout(
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    archive="cifar-100-python.tar.gz",
    num_classes=100,
)


def cifar_folder(root: str | Path, layout: CIFARLayout) -> Path:
    """The directory holding ``layout``'s pickles: ``root/<folder>``, or ``root`` itself if it is that folder.

    Raises:
        FileNotFoundError: in one line naming ``root``, the missing files and how to get them.
    """
    base = Path(str(root)).expanduser()
    folder = base if base.name == layout.folder and not (base / layout.folder).is_dir() else base / layout.folder
    missing = [name for name in layout.files if not (folder / name).is_file()]
    if missing:
        fail(
            "root",
            f"a directory holding {layout.folder}/ ({', '.join(layout.files)}; missing: {', '.join(missing)}); "
            f"get it with data.download=true on a machine with internet, or copy the python version "
            f"{layout.archive} from {CIFAR_URL} and extract it there",
            str(root),
            exc=FileNotFoundError,
        )
    return folder


def read_cifar(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[Tensor, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of the pickled batches ``files``, in order.

    Each pickle is a dict with ``data``, an ``(n, 3072)`` uint8 array of
    channel-major rows (1024 red, 1024 green, 1024 blue values), and a label list.
    """
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as handle:
            # The official pickles were written by Python 2; latin1 keeps their bytes as they are.
            batch = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), np.concatenate(labels)


def read_class_names(folder: Path, layout: CIFARLayout) -> list[str]:
    """The class names of the meta pickle, in label order."""
    with open(folder / layout.meta_file, "rb") as handle:
        return [str(name) for name in pickle.load(handle, encoding="latin1")[layout.names_key]]


def cifar_long_tail(labels: np.ndarray, imbalance_ratio: float, seed: int = 0) -> np.ndarray:
    """Indices of the LDAM-DRW long-tailed subset of a balanced CIFAR training set.

    ``n_max`` is the images per class (5000 or 500); class ``i`` keeps
    :func:`~lit_imbalance.data.long_tail_counts` ``(n_max, C, rho)[i]`` images
    (the reference's ``int(n_max * (1/rho)^(i/(C-1)))``, except that no class
    drops to zero images when ``rho > n_max``). The images are those of the
    reference: ``np.random.seed(seed)``, then for each class in label order its
    indices shuffled once and the first ``n_i`` taken. The indices come in that
    order too (class by class, shuffled within a class), so ``data[indices]`` is
    the reference's array. The global numpy state is left alone.

    Example:
        >>> labels = np.repeat(np.arange(3), 10)
        >>> np.bincount(labels[cifar_long_tail(labels, imbalance_ratio=10)]).tolist()
        [10, 3, 1]
    """
    labels = np.asarray(labels)
    classes, available = np.unique(labels, return_counts=True)
    n_max = len(labels) // len(classes)
    quotas = long_tail_counts(n_max, len(classes), imbalance_ratio)
    # The generator behind np.random.seed/np.random.shuffle, without touching the global one.
    generator = np.random.RandomState(seed)
    picked = []
    for cls, quota, size in zip(classes, quotas, available):
        if size < quota:
            fail("labels", f"at least {quota} images of class {cls} (a balanced CIFAR training set)", int(size))
        members = np.flatnonzero(labels == cls)
        generator.shuffle(members)
        picked.append(members[:quota])
    return np.concatenate(picked)


def held_out_per_class(labels: np.ndarray, excluded: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` indices of each class among those not in ``excluded``, drawn with ``seed``, sorted.

    Example:
        >>> labels = np.repeat([0, 1], 4)
        >>> held_out_per_class(labels, excluded=np.arange(6), per_class=3, seed=0).tolist()
        [6, 7]
    """
    rng = np.random.default_rng(seed)
    free = np.ones(len(labels), dtype=bool)
    free[excluded] = False
    chosen = [
        rng.permutation(np.flatnonzero(free & (labels == cls)))[:per_class] for cls in np.unique(labels)
    ]
    return np.sort(np.concatenate(chosen))


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)``, transformed per sample.

    ``targets`` (int64, ``(N,)``) gives the labels without touching the images.
    """

    def __init__(self, images: Tensor, targets: Tensor | np.ndarray, transform: Any = None) -> None:
        self.images = images
        self.targets = as_label_tensor(targets, name="targets")
        if self.images.shape[0] != self.targets.shape[0]:
            fail("targets", f"{self.images.shape[0]} labels (one per image)", self.targets.shape[0])
        self.transform = transform

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


def cifar_transforms(train: bool) -> v2.Compose:
    """The LDAM-DRW transforms: random 32 crop with 4 padding and horizontal flip (train), normalisation."""
    augment = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if train else []
    return v2.Compose([*augment, v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR_MEAN, CIFAR_STD)])


class CIFARLTDataModule(LabeledDataModule):
    """A long-tailed CIFAR training set, validation from its left-out images, the full test set.

    Use :class:`CIFAR10LTDataModule` or :class:`CIFAR100LTDataModule`.

    The head class keeps all of its images (``n_0 = n_max``), so it has none
    left for validation: the validation split holds up to ``val_per_class``
    left-out images of every other class, and ``val/balanced_acc`` (a mean over
    the classes present) is the mean recall of classes ``1..C-1``. Nothing of the
    training split or of the test split is given up for it.

    Args:
        root: the directory holding the python-version folder
            (``cifar-10-batches-py`` / ``cifar-100-python``), or that folder.
        imbalance_ratio: ``rho = n_0 / n_{C-1}`` (100 and 50 are the published settings).
        val_per_class: validation images per class, drawn from the training
            images the long-tail cut left out (fewer where fewer are left).
        split_seed: the reference's ``rand_number`` (0 in the papers): seed of the
            long-tail subset, and of the validation draw.
        download: fetch and verify the official archive into ``root`` with
            torchvision first (needs internet).
        augment: random crop and flip on training images.
        **loader_kwargs: forwarded to :class:`~lit_imbalance.data.datamodule.LabeledDataModule`.
    """

    layout: ClassVar[CIFARLayout]

    def __init__(
        self,
        root: str,
        imbalance_ratio: float = 100.0,
        val_per_class: int = 20,
        split_seed: int = 0,
        download: bool = False,
        augment: bool = True,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        if isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 0:
            fail("val_per_class", "a non-negative integer", val_per_class)
        if download:
            download_cifar(root, self.layout)
        folder = cifar_folder(root, self.layout)
        self.num_classes = self.layout.num_classes
        if self._class_names is None:
            self._class_names = read_class_names(folder, self.layout)
        train_images, train_labels = read_cifar(folder, self.layout.train_files, self.layout.label_key)
        test_images, test_labels = read_cifar(folder, self.layout.test_files, self.layout.label_key)
        for split, labels in (("train", train_labels), ("test", test_labels)):
            if labels.min() < 0 or labels.max() >= self.num_classes:
                fail("root", f"{self.layout.folder} {split} labels in 0..{self.num_classes - 1}", int(labels.max()))
        train = cifar_long_tail(train_labels, imbalance_ratio, seed=split_seed)
        val = held_out_per_class(train_labels, train, val_per_class, seed=split_seed)
        self.datasets = {
            "train": TensorImageDataset(train_images[train], train_labels[train], cifar_transforms(train=augment)),
            "val": TensorImageDataset(train_images[val], train_labels[val], cifar_transforms(train=False)),
            "test": TensorImageDataset(test_images, test_labels, cifar_transforms(train=False)),
        }

    def evaluation_transform(self) -> v2.Compose:
        return cifar_transforms(train=False)


class CIFAR10LTDataModule(CIFARLTDataModule):
    """CIFAR-10-LT: 5000 images per class before the cut; 12,406 training images at ``rho = 100``.

    Example:
        >>> CIFAR10LTDataModule(root="/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: Expected argument `root` to be a directory holding cifar-10-batches-py/ (...data.download=true...
    """

    layout = CIFAR10


class CIFAR100LTDataModule(CIFARLTDataModule):
    """CIFAR-100-LT: 500 images per class before the cut; 10,847 training images at ``rho = 100``."""

    layout = CIFAR100


def download_cifar(root: str, layout: CIFARLayout) -> None:
    """Download, verify (official md5) and extract ``layout``'s archive into ``root`` with torchvision."""
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10
    from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

    dataset = TorchvisionCIFAR10 if layout is CIFAR10 else TorchvisionCIFAR100
    Path(str(root)).expanduser().mkdir(parents=True, exist_ok=True)
    dataset(str(Path(str(root)).expanduser()), train=True, download=True)
