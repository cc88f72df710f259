"""User data from one ``.npz`` file of feature arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lit_imbalance._checks import check_in_unit_interval, fail
from lit_imbalance.data.datamodule import ArrayDataModule, make_split, stratified_holdout

REQUIRED_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class NpzDataModule(ArrayDataModule):
    """Splits read from an ``.npz`` file with arrays ``x_train, y_train, x_test, y_test``.

    ``x_*`` are flat float feature vectors ``(N, D)``, ``y_*`` integer labels
    ``(N,)``. ``x_val, y_val`` are used when present; otherwise a stratified
    ``val_fraction`` of the training split is held out (seeded by ``split_seed``).

    Args:
        path: the ``.npz`` file.
        num_classes: number of classes; inferred as ``max(label) + 1`` over all
            splits when ``None``.
        val_fraction: share of each training class held out for validation
            when the file has no validation arrays.
        split_seed: seed of that hold-out.
        class_names: optional display names, one per class.
        **loader_kwargs: forwarded to :class:`ArrayDataModule`.
    """

    def __init__(
        self,
        path: str,
        num_classes: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_in_unit_interval("val_fraction", val_fraction, open_right=True)
        file = Path(str(path)).expanduser()
        if not file.is_file():
            fail("path", "an existing .npz file", str(path), exc=FileNotFoundError)
        with np.load(file) as archive:
            arrays = {name: archive[name] for name in archive.files}
        missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
        if missing:
            fail("path", f"an .npz file with arrays {', '.join(REQUIRED_ARRAYS)} (missing: {', '.join(missing)})", str(path))
        if num_classes is None:
            num_classes = 1 + max(int(np.max(arrays[k])) for k in arrays if k.startswith("y_") and arrays[k].size)
        self.num_classes = num_classes
        if "x_val" in arrays and "y_val" in arrays:
            pick = {name: (arrays[f"x_{name}"], arrays[f"y_{name}"]) for name in ("train", "val", "test")}
        else:
            x, y = arrays["x_train"], np.asarray(arrays["y_train"])
            if y.ndim != 1:
                fail("y_train", "a 1-D label array", f"an array of shape {y.shape}")
            kept, held = stratified_holdout(y, val_fraction, split_seed)
            pick = {"train": (x[kept], y[kept]), "val": (x[held], y[held]), "test": (arrays["x_test"], arrays["y_test"])}
        self.splits = {name: make_split(name, x, y, num_classes) for name, (x, y) in pick.items()}
