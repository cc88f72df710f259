"""Long-tailed digits: scikit-learn's bundled 8x8 digits, cut to an exponential long tail."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from lit_imbalance._checks import check_positive_int
from lit_imbalance.data.datamodule import ArrayDataModule, make_split
from lit_imbalance.data.long_tail import long_tail

NUM_CLASSES = 10


class DigitsLTDataModule(ArrayDataModule):
    """Digits with a balanced test and validation split and a long-tailed training split.

    Per class, ``test_per_class`` and ``val_per_class`` samples are held out
    (balanced, as in the CIFAR-LT protocol), and the rest is cut to
    ``n_i = n_max * rho^(-i/(C-1))`` with ``n_max`` the smallest remaining class,
    so class 0 is the head and class 9 the tail. The split is fixed by
    ``split_seed`` and independent of the training seed. Pixel values are
    scaled to ``[0, 1]``. Nothing is downloaded: the data ships with scikit-learn.

    Args:
        imbalance_ratio: ``rho``, head size over tail size (1 gives a balanced set).
        test_per_class: held-out test samples per class.
        val_per_class: held-out validation samples per class.
        split_seed: seed of the held-out draws and of the long-tail cut.
        **loader_kwargs: forwarded to :class:`ArrayDataModule`.

    Example:
        >>> dm = DigitsLTDataModule(imbalance_ratio=10)
        >>> dm.train_class_counts.tolist()
        [104, 80, 62, 48, 37, 28, 22, 17, 13, 10]
    """

    def __init__(
        self,
        imbalance_ratio: float = 50.0,
        test_per_class: int = 50,
        val_per_class: int = 20,
        split_seed: int = 0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_positive_int("test_per_class", test_per_class)
        check_positive_int("val_per_class", val_per_class)
        self.num_classes = NUM_CLASSES
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        rng = np.random.default_rng(split_seed)
        test_idx, val_idx, rest_idx = [], [], []
        for cls in range(NUM_CLASSES):
            members = rng.permutation(np.flatnonzero(y == cls))
            test_idx.append(members[:test_per_class])
            val_idx.append(members[test_per_class : test_per_class + val_per_class])
            rest_idx.append(members[test_per_class + val_per_class :])
        rest = np.concatenate(rest_idx)
        train = rest[long_tail(y[rest], imbalance_ratio, seed=split_seed).numpy()]
        pick = {"train": train, "val": np.concatenate(val_idx), "test": np.concatenate(test_idx)}
        self.splits = {name: make_split(name, x[idx], y[idx], NUM_CLASSES) for name, idx in pick.items()}
