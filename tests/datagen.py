"""Small data sets written in the real on-disk formats the loaders read.

CIFAR pickles in the official python-version layout, PNG class folders,
ImageNet-LT-style split lists. Every image encodes where it came from, so a
test can tell which source images a split picked without trusting the loader.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from lit_imbalance.data.cifar import CIFAR10, CIFAR100, CIFARLayout

TEST_FLAG = 255  # first pixel's value in the red channel marks a test image


def encode_index(index: np.ndarray) -> np.ndarray:
    """The 3 bytes written at the start of an image's green row: its source index, base 256."""
    return np.stack([index // 65536, (index // 256) % 256, index % 256], axis=1).astype(np.uint8)


def decode_index(images: np.ndarray) -> np.ndarray:
    """Source indices of images ``(N, 3, 32, 32)`` written by :func:`write_cifar`."""
    first = images.reshape(len(images), -1)[:, 1024:1027].astype(np.int64)
    return first[:, 0] * 65536 + first[:, 1] * 256 + first[:, 2]


def write_cifar(
    root: Path, layout: CIFARLayout, per_class: int, test_per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``root/<layout.folder>`` with shuffled, balanced train and test pickles; return (train rows, labels).

    Rows are ``(N, 3072)`` uint8 in the official channel-major order; pixel
    values are small noise, except a test flag and the source index at the
    start of the green channel.
    """
    rng = np.random.default_rng(seed)
    folder = root / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in (("train", per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(layout.num_classes), count))
        rows = rng.integers(0, 8, size=(labels.size, 3072), dtype=np.uint8)
        rows[:, 0] = TEST_FLAG if split == "test" else 0
        rows[:, 1024:1027] = encode_index(np.arange(labels.size))
        splits[split] = (rows, labels)
    for split, files in (("train", layout.train_files), ("test", layout.test_files)):
        rows, labels = splits[split]
        for part, name in zip(np.array_split(np.arange(len(labels)), len(files)), files):
            batch = {"batch_label": f"{split} batch", layout.label_key: labels[part].tolist(),
                     "data": rows[part], "filenames": [f"img_{i}.png" for i in part]}
            if layout is CIFAR100:
                batch["coarse_labels"] = (labels[part] // 5).tolist()
            with open(folder / name, "wb") as handle:
                pickle.dump(batch, handle, protocol=pickle.HIGHEST_PROTOCOL)
    names = [f"class_{c}" for c in range(layout.num_classes)]
    meta = {layout.names_key: names}
    meta.update({"num_cases_per_batch": 10000, "num_vis": 3072} if layout is CIFAR10 else {"coarse_label_names": names[:20]})
    with open(folder / layout.meta_file, "wb") as handle:
        pickle.dump(meta, handle)
    return splits["train"]


def write_png(path: Path, value: int, size: int = 32) -> None:
    """A ``size x size`` RGB PNG whose red channel is ``value`` (its identity) over light noise."""
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 16, size=(size, size, 3), dtype=np.uint8)
    pixels[..., 0] = value % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_image_folder(root: Path, counts: dict[str, int], size: int = 32, start: int = 0) -> int:
    """``root/<class>/<i>.png``: ``counts[class]`` images per class; returns the next free image value."""
    value = start
    for name, count in counts.items():
        for _ in range(count):
            write_png(root / name / f"{value}.png", value, size)
            value += 1
    return value


