"""Prototypes of the library changes the suite argues for, used as ``data._target_`` overrides.

They live here, not in :mod:`lit_imbalance.data`, until the data module is refactored; the
report of issue 13 describes the change each one stands for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lit_imbalance.data.datamodule import make_split
from lit_imbalance.data.npz import NpzDataModule


class FullTrainNpzDataModule(NpzDataModule):
    """``NpzDataModule`` that trains on *every* training sample: no validation hold-out.

    The validation loader serves the training split, so Lightning's loops and the
    metrics run unchanged, but ``val/*`` is a training score: select the last epoch
    (``callbacks.model_checkpoint.monitor=null``), never the best ``val/*``.
    Stands for ``NpzDataModule(val_fraction=0)`` meaning "no hold-out".
    """

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        with np.load(path) as archive:
            train = make_split("train", archive["x_train"], archive["y_train"], self.num_classes)
        self.splits = {"train": train, "val": train, "test": self.splits["test"]}
