"""Image files on disk: class folders (``data=image_folder``) and split lists (``data=split_files``).

Both know every label from the directory names or the list files, so class
counts, samplers and the bias prior never open an image; images are decoded
lazily with PIL in the loader workers, then transformed with torchvision's
transforms v2 (random-resized crop and flip for training, resize and centre
crop for evaluation, ImageNet normalisation by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import v2

from lit_imbalance._checks import check_in_unit_interval, check_positive_int, fail
from lit_imbalance.data.datamodule import check_test_fraction, LabeledDataModule, stratified_holdout
from lit_imbalance.data.labels import as_label_tensor
from lit_imbalance.data.long_tail import long_tail

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation resizes to image_size / 0.875 before the centre crop (224 -> 256), the ImageNet habit.
EVAL_CROP_FRACTION = 0.875

Samples = tuple[list[str], np.ndarray]  # image paths and their integer labels


class ImageFileDataset(Dataset):
    """Images read from ``paths`` when indexed (RGB, via PIL); ``targets`` holds every label up front."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int] | np.ndarray, transform: Any = None) -> None:
        self.paths = list(paths)
        self.targets = as_label_tensor(np.asarray(targets, dtype=np.int64), name="targets")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, Tensor]:
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


def image_transforms(
    train: bool, image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Random-resized crop and flip (train) or resize and centre crop (eval) to ``image_size``, then normalise.

    Example:
        >>> image = Image.new("RGB", (40, 30), color=(255, 0, 0))
        >>> image_transforms(train=False, image_size=16)(image).shape
        torch.Size([3, 16, 16])
    """
    if train:
        geometry = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(round(image_size / EVAL_CROP_FRACTION), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class ImageFilesDataModule(LabeledDataModule):
    """Train/val/test lists of image files and labels; the shared part of the image-folder and split-file modules.

    Subclasses call :meth:`build` with the samples they found. A missing
    validation (or test) split is a stratified hold-out of the training
    samples; with ``imbalance_ratio`` the training split, after those hold-outs,
    is cut to an exponential long tail by
    :func:`~lit_imbalance.data.long_tail.long_tail`, so held-out splits stay as
    balanced as the source.

    Args:
        image_size: side of the square crops fed to the model.
        imbalance_ratio: cut the training split to ``n_i = n_max * rho^(-i/(C-1))``
            (class order = label order; ``n_max`` the smallest class); ``None`` keeps it.
        val_fraction: share of each training class held out for validation when there is no validation split.
        test_fraction: share of each class held out for test when there is no test split.
        split_seed: seed of the hold-outs and of the long-tail cut.
        mean: normalisation mean per channel.
        std: normalisation standard deviation per channel.
        augment: random crops and flips on training images.
        **loader_kwargs: forwarded to :class:`~lit_imbalance.data.datamodule.LabeledDataModule`.
    """

    def __init__(
        self,
        image_size: int = 224,
        imbalance_ratio: float | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: bool = True,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        self.image_size = check_positive_int("image_size", image_size)
        check_in_unit_interval("val_fraction", val_fraction, open_right=True)
        check_test_fraction(test_fraction)
        self.imbalance_ratio = imbalance_ratio
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.mean, self.std, self.augment = tuple(mean), tuple(std), augment

    def build(self, train: Samples, val: Samples | None, test: Samples | None, num_classes: int) -> None:
        """Hold out the missing splits, cut the long tail, and make the three datasets."""
        self.num_classes = num_classes
        for name, samples in (("train", train), ("val", val), ("test", test)):
            if samples is not None:
                _check_labels(name, samples[1], num_classes)
        if test is None:
            train, test = _hold_out(train, self.test_fraction, self.split_seed)
        if val is None:
            train, val = _hold_out(train, self.val_fraction, self.split_seed + 1)
        if self.imbalance_ratio is not None:
            keep = long_tail(train[1], self.imbalance_ratio, seed=self.split_seed).numpy()
            train = ([train[0][i] for i in keep], train[1][keep])
        self.datasets = {
            name: ImageFileDataset(*samples, image_transforms(name == "train" and self.augment, self.image_size, self.mean, self.std))
            for name, samples in (("train", train), ("val", val), ("test", test))
        }

    def evaluation_transform(self) -> v2.Compose:
        return image_transforms(False, self.image_size, self.mean, self.std)


class ImageFolderDataModule(ImageFilesDataModule):
    """``root/train/<class>/*`` (and optional ``root/val/<class>/*``, ``root/test/<class>/*``).

    Classes are the sorted folder names of ``root/train`` (as in torchvision's
    ``ImageFolder``); files with the usual image extensions count. A ``val`` or
    ``test`` folder may lack some classes but not add new ones.

    Args:
        root: the directory holding ``train/`` (and optionally ``val/``, ``test/``).
        **kwargs: see :class:`ImageFilesDataModule`.
    """

    def __init__(self, root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        base = Path(str(root)).expanduser()
        if not (base / "train").is_dir():
            fail("root", "a directory with a train/ folder of class folders (root/train/<class>/<image>)", str(root),
                 exc=FileNotFoundError)
        classes, class_to_idx = find_classes(str(base / "train"))
        splits: dict[str, Samples | None] = {}
        for split in ("train", "val", "test"):
            folder = base / split
            if not folder.is_dir():
                splits[split] = None
                continue
            unknown = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
            if unknown:
                fail("root", f"{split}/ class folders that train/ has too (unknown: {', '.join(unknown)})", str(root))
            samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
            if not samples:
                fail("root", f"images in {split}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)})", str(root),
                     exc=FileNotFoundError)
            splits[split] = ([path for path, _ in samples], np.asarray([label for _, label in samples], dtype=np.int64))
        if self._class_names is None:
            self._class_names = classes
        self.build(splits["train"], splits["val"], splits["test"], num_classes=len(classes))  # type: ignore[arg-type]


class SplitFilesDataModule(ImageFilesDataModule):
    """An image root and list files of ``relative/path label`` lines (ImageNet-LT, Places-LT, iNaturalist).

    Paths are relative to ``root``; labels are integers ``0..C-1``. Blank lines
    are skipped; a path may contain spaces (the label is the last field).

    Args:
        root: the directory the listed paths are relative to.
        train_list: the training list file.
        val_list: the validation list, or ``None`` for a stratified hold-out of the training list.
        test_list: the test list, or ``None`` for a stratified hold-out of the training list.
        num_classes: number of classes; ``max(label) + 1`` over all lists when ``None``.
        **kwargs: see :class:`ImageFilesDataModule`.
    """

    def __init__(
        self,
        root: str,
        train_list: str,
        val_list: str | None = None,
        test_list: str | None = None,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        base = Path(str(root)).expanduser()
        if not base.is_dir():
            fail("root", "an existing directory of images", str(root), exc=FileNotFoundError)
        lists = {"train_list": train_list, "val_list": val_list, "test_list": test_list}
        splits = {key: read_split_file(key, path, base) if path is not None else None for key, path in lists.items()}
        if num_classes is None:
            num_classes = 1 + max(int(s[1].max()) for s in splits.values() if s is not None and len(s[1]))
        self.build(splits["train_list"], splits["val_list"], splits["test_list"], num_classes=num_classes)  # type: ignore[arg-type]


def read_split_file(key: str, path: str, root: Path) -> Samples:
    """The ``(paths under root, labels)`` of a list file of ``relative/path label`` lines.

    Raises:
        FileNotFoundError: naming ``key`` for a missing list, ``root`` for a missing image.
        ValueError: naming ``key`` and the line number of a malformed line.
    """
    file = Path(str(path)).expanduser()
    if not file.is_file():
        fail(key, "an existing file of `relative/path label` lines", str(path), exc=FileNotFoundError)
    paths, labels = [], []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip().rsplit(maxsplit=1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            fail(key, f"lines `relative/path label` with an integer label ({file.name}, line {number})", line)
        paths.append(str(root / fields[0]))
        labels.append(int(fields[1]))
    if not paths:
        fail(key, "a list with at least one `relative/path label` line", str(path))
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        fail("root", f"the image root of {file.name} ({len(missing)} listed files missing, e.g. {missing[0]})",
             str(root), exc=FileNotFoundError)
    return paths, np.asarray(labels, dtype=np.int64)


def _check_labels(split: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size == 0:
        fail(split, "a non-empty split", "no samples")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        fail(f"{split} labels", f"class indices in 0..{num_classes - 1}", int(bad[0]))


def _hold_out(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    paths, labels = samples
    kept, held = stratified_holdout(labels, fraction, seed)
    return ([paths[i] for i in kept], labels[kept]), ([paths[i] for i in held], labels[held])
