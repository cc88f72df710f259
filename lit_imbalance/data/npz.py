"""User data from one ``.npz`` file of feature arrays."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lit_imbalance._checks import check_bool, check_in_unit_interval, check_positive_int, fail
from lit_imbalance.data.datamodule import ArrayDataModule, Split, make_split, stratified_holdout
from lit_imbalance.data.scaling import Standardizer, same_state

REQUIRED_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class NpzDataModule(ArrayDataModule):
    """Splits read from an ``.npz`` file with arrays ``x_train, y_train, x_test, y_test``.

    ``x_*`` are flat float feature vectors ``(N, D)``, ``y_*`` integer labels
    ``(N,)``. ``x_val, y_val`` are used when present; otherwise a stratified
    ``val_fraction`` of the training split is held out (seeded by ``split_seed``).
    With ``standardize`` (the default), every feature is scaled by the mean and
    standard deviation of the training split's rows (after the hold-out), see
    :mod:`lit_imbalance.data.scaling`; already standardised features barely move.

    Args:
        path: the ``.npz`` file.
        num_classes: number of classes; inferred as ``max(label) + 1`` over all
            splits when ``None``.
        val_fraction: share of each training class held out for validation
            when the file has no validation arrays.
        split_seed: seed of that hold-out.
        standardize: scale the features with the training rows' statistics
            (:attr:`feature_scaler` keeps them); ``False`` keeps them as stored.
        class_names: optional display names, one per class.
        **loader_kwargs: forwarded to :class:`ArrayDataModule`.
    """

    def __init__(
        self,
        path: str,
        num_classes: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        standardize: bool = True,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_in_unit_interval("val_fraction", val_fraction, open_right=True)
        check_bool("standardize", standardize)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        arrays = read_npz(path)
        missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
        if missing:
            fail("path", f"an .npz file with arrays {', '.join(REQUIRED_ARRAYS)} (missing: {', '.join(missing)})", str(path))
        check_arrays(arrays)
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
        self.splits = {name: make_split(name, x, y, num_classes) for name, (x, y) in pick.items()}  # validated as stored
        self.path = str(path)
        self.feature_scaler = Standardizer.fit(pick["train"][0]) if standardize else None
        if self.feature_scaler is not None:
            self.splits = {name: Split(self.feature_scaler.transform(x, f"x_{name}"), self.splits[name].y)
                           for name, (x, _) in pick.items()}

    def state_dict(self) -> dict[str, Any]:
        """The feature scaling, which Lightning saves in every checkpoint: predictions need the same inputs.

        ``checkpoint["NpzDataModule"]`` holds ``standardize`` and, when it is set,
        ``feature_scaler`` with ``mean`` and ``std``. (Lightning saves only a
        non-empty state, so ``standardize`` is always there.)
        """
        state: dict[str, Any] = {"standardize": self.feature_scaler is not None}  # never empty: Lightning saves it
        if self.feature_scaler is not None:
            state["feature_scaler"] = self.feature_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume, refuse a checkpoint whose model was trained on differently scaled features."""
        # The first checkpoints with a scaling held only ``feature_scaler``: their setting follows from it.
        state_dict = {"standardize": "feature_scaler" in state_dict, **state_dict}
        if not same_state(state_dict, self.state_dict()):
            fail("path", "the data (and standardize setting) the checkpoint was trained with: its feature "
                 "scaling differs", self.path)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path``, or one clear error naming ``path``.

    Object arrays are refused (``allow_pickle=False``): an ``.npz`` never runs code when read.
    """
    file = Path(str(path)).expanduser()
    if not file.is_file():
        fail("path", "an existing .npz file", str(path), exc=FileNotFoundError)
    if file.stat().st_size == 0:
        fail("path", "a non-empty .npz file", f"{path} (0 bytes)")
    with open(file, "rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        fail("path", "an .npz archive of named arrays (np.savez), not a single .npy array", str(path))
    if not zipfile.is_zipfile(file):
        fail("path", "an .npz archive (written by np.savez or np.savez_compressed)", str(path))
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:  # object arrays, e.g. labels stored as Python strings
        fail("path", f"an .npz file of numeric arrays ({error})", str(path))
    except (zipfile.BadZipFile, OSError, EOFError, AttributeError):
        fail("path", "an .npz archive (written by np.savez or np.savez_compressed)", str(path))
    raise AssertionError("fail() raises")


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Every split has as many labels as feature rows, and as many features as the training split.

    Checked before anything is split or trained: a misaligned file would
    otherwise lose a class silently, and a feature-count mismatch surface only
    at test time.
    """
    train_features = np.asarray(arrays["x_train"]).shape[1:] if np.asarray(arrays["x_train"]).ndim >= 2 else None
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays or f"y_{split}" not in arrays:
            continue
        x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
        if x.ndim != 2:
            fail(f"x_{split}", "a 2-D (samples, features) array", f"shape {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            fail(f"y_{split}", f"a 1-D label array with one label per row of x_{split} ({x.shape[0]})",
                 f"shape {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            fail(f"y_{split}", "integer class labels (map label names to 0..C-1 first)", f"dtype {y.dtype}")
        if x.shape[1:] != train_features:
            fail(f"x_{split}", f"{train_features[0]} features per row, as x_train has", x.shape[1])
