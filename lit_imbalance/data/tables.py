"""Tables (``data=csv``): a CSV or parquet file, one row per sample, one column holding the label.

The file is read with pandas (``.parquet``/``.pq`` through pyarrow, anything
else as CSV). Every other column is a feature: numeric columns are
standardised with the mean and standard deviation of the *training* rows
only; other columns are categorical, one-hot or integer coded from the
categories seen in training (a category first seen in validation or test
becomes all-zeros, or code -1). Labels may be strings; classes are then the
sorted training labels and keep their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lit_imbalance._checks import check_choice, check_in_unit_interval, check_positive_int, fail
from lit_imbalance.data.datamodule import check_test_fraction, ArrayDataModule, make_split, stratified_holdout
from lit_imbalance.data.scaling import Standardizer, same_state

CategoricalEncoding = Literal["onehot", "ordinal"]
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(key: str, path: str) -> pd.DataFrame:
    """The table at ``path`` (parquet by extension, else CSV), or an error naming ``key``."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        fail(key, "an existing .csv or .parquet file", str(path), exc=FileNotFoundError)
    return pd.read_parquet(file) if file.suffix.lower() in PARQUET_SUFFIXES else pd.read_csv(file)


@dataclass
class TableEncoder:
    """Feature encoding fitted on the training rows: standardisation and category codes.

    Example:
        >>> train = pd.DataFrame({"age": [20.0, 40.0], "city": ["a", "b"]})
        >>> encoder = TableEncoder.fit(train, categorical="onehot")
        >>> encoder.transform(pd.DataFrame({"age": [30.0], "city": ["z"]})).tolist()
        [[0.0, 0.0, 0.0]]
        >>> encoder.feature_names
        ['age', 'city=a', 'city=b']
    """

    numeric: list[str]
    scaler: Standardizer
    categories: dict[str, list[str]]
    categorical: CategoricalEncoding

    @classmethod
    def fit(cls, train: pd.DataFrame, categorical: CategoricalEncoding = "onehot",
            max_categories: int | None = 1000) -> TableEncoder:
        """The encoding of the ``train`` rows' columns.

        Raises:
            ValueError: naming ``features`` when a one-hot coded column has more
                than ``max_categories`` categories (``None``: no limit). An
                identifier or free-text column would otherwise become one feature
                per row, as wide as the table is long, and carry nothing.
        """
        check_choice("categorical", categorical, ("onehot", "ordinal"))
        numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c]) and not pd.api.types.is_bool_dtype(train[c])]
        scaler = Standardizer.fit(train[numeric].to_numpy(dtype=np.float64), "path", numeric)
        categories = {
            c: sorted(train[c].dropna().astype(str).unique().tolist()) for c in train.columns if c not in numeric
        }
        if categorical == "onehot" and max_categories is not None:
            for column, values in categories.items():
                if len(values) > max_categories:
                    fail("features", f"columns with at most max_categories={max_categories} categories to one-hot "
                         "code (leave an identifier out with data.features, or raise data.max_categories)",
                         f"{column} ({len(values)} categories)")
        return cls(numeric, scaler, categories, categorical)

    @property
    def feature_names(self) -> list[str]:
        """One name per output column."""
        if self.categorical == "ordinal":
            return [*self.numeric, *self.categories]
        return [*self.numeric, *(f"{c}={v}" for c, values in self.categories.items() for v in values)]

    def transform(self, table: pd.DataFrame, name: str = "path") -> np.ndarray:
        """``(N, D)`` float32 features; missing numbers become the training mean (0 after scaling).

        Raises:
            ValueError: naming ``name`` (the table's config key) when a feature
                column is missing or a number is past float32's range once scaled.
        """
        missing = [c for c in [*self.numeric, *self.categories] if c not in table.columns]
        if missing:
            fail(name, f"a table with the training table's feature columns (missing: {', '.join(map(str, missing))})",
                 list(table.columns))
        numeric = self.scaler.transform(table[self.numeric].to_numpy(dtype=np.float64), name, self.numeric).numpy()
        numeric[np.isnan(numeric)] = 0.0  # missing only: an infinite value stays, for make_split to refuse by split
        blocks = [numeric]
        for column, values in self.categories.items():
            codes = pd.Categorical(table[column].astype(str).where(table[column].notna()), categories=values).codes
            if self.categorical == "ordinal":
                blocks.append(codes[:, None].astype(np.float32))  # -1: missing or unseen in training
            else:
                blocks.append(np.eye(len(values) + 1, dtype=np.float32)[codes][:, :-1] if values
                              else np.zeros((len(table), 0), dtype=np.float32))
        return np.concatenate(blocks, axis=1)

    def state_dict(self) -> dict[str, Any]:
        """The fitted encoding as plain containers (loadable with ``weights_only=True``)."""
        return {"numeric": list(self.numeric), **self.scaler.state_dict(),
                "categories": {c: list(v) for c, v in self.categories.items()}, "categorical": self.categorical}


class TableDataModule(ArrayDataModule):
    """A CSV/parquet table split into train/val/test, with features encoded on train only.

    Without ``test_path`` a stratified ``test_fraction`` of the rows is the test
    split; without ``val_path`` a stratified ``val_fraction`` of the remaining
    training rows is validation (both seeded by ``split_seed``, see
    :func:`~lit_imbalance.data.datamodule.stratified_holdout`).

    Args:
        path: the table (``.csv``, or ``.parquet``/``.pq``).
        label: the label column.
        val_path: a separate validation table with the same columns.
        test_path: a separate test table with the same columns.
        features: the feature columns; every column but the label when ``None``.
        categorical: ``"onehot"`` or ``"ordinal"`` (integer codes) for non-numeric columns.
        max_categories: most categories a one-hot coded column may have; ``None`` for no limit.
        val_fraction: share of each class held out for validation without ``val_path``.
        test_fraction: share of each class held out for test without ``test_path``.
        split_seed: seed of the hold-outs.
        **loader_kwargs: forwarded to :class:`~lit_imbalance.data.datamodule.ArrayDataModule`.
    """

    def __init__(
        self,
        path: str,
        label: str,
        val_path: str | None = None,
        test_path: str | None = None,
        features: Sequence[str] | None = None,
        categorical: CategoricalEncoding = "onehot",
        max_categories: int | None = 1000,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        check_choice("categorical", categorical, ("onehot", "ordinal"))
        check_in_unit_interval("val_fraction", val_fraction, open_right=True)
        check_test_fraction(test_fraction)
        if max_categories is not None:
            check_positive_int("max_categories", max_categories)
        tables = {"train": read_table("path", path)}
        for split, key, extra in (("val", "val_path", val_path), ("test", "test_path", test_path)):
            if extra is not None:
                tables[split] = read_table(key, extra)
        for split, table in tables.items():
            if label not in table.columns:
                fail("label", f"a column of the {split} table ({', '.join(map(str, table.columns))})", label)
        columns = list(features) if features is not None else [c for c in tables["train"].columns if c != label]
        unknown = [c for c in columns if c not in tables["train"].columns or c == label]
        if unknown:
            fail("features", f"columns of the train table other than the label ({', '.join(map(str, tables['train'].columns))})",
                 unknown[0])
        for split in ("test", "val"):
            if split not in tables:
                fraction = test_fraction if split == "test" else val_fraction
                codes = pd.factorize(tables["train"][label])[0]
                kept, held = stratified_holdout(codes, fraction, split_seed + (split == "val"))
                tables[split] = tables["train"].iloc[held].reset_index(drop=True)
                tables["train"] = tables["train"].iloc[kept].reset_index(drop=True)
        labels, names = encode_labels(tables["train"][label], {s: t[label] for s, t in tables.items()})
        self.num_classes = len(names)
        if self._class_names is None:
            self._class_names = names
        self.path = str(path)
        self.label_names = names
        self.encoder = TableEncoder.fit(tables["train"][columns], categorical, max_categories)
        source = {"train": "path", "val": "path" if val_path is None else "val_path",
                  "test": "path" if test_path is None else "test_path"}
        self.splits = {
            split: make_split(split, self.encoder.transform(tables[split], source[split]), labels[split],
                              self.num_classes)
            for split in ("train", "val", "test")
        }

    def state_dict(self) -> dict[str, Any]:
        """The feature encoding and the label names, which Lightning saves in every checkpoint.

        ``checkpoint["TableDataModule"]`` holds ``encoder`` (numeric columns with their
        training ``mean`` and ``std``, categories per column, the categorical coding)
        and ``label_names``: predictions need the same inputs and class indices.
        """
        return {"encoder": self.encoder.state_dict(), "label_names": list(self.label_names)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume or test from a checkpoint, refuse one trained on a differently encoded table.

        A changed training table would otherwise shift one-hot columns, scaling or
        class indices under the restored weights without a word.
        """
        if not same_state(state_dict, self.state_dict()):
            fail("path", "the table (and features, categorical and split settings) the checkpoint was trained with: "
                 "its feature encoding or label names differ", self.path)


def encode_labels(train: pd.Series, splits: dict[str, pd.Series]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Class indices of every split's labels, and the class names.

    Integer labels are their own indices (classes ``0..max``); any other labels
    are indexed in the sorted order of the training labels, and a label absent
    from training is an error naming the split.

    Example:
        >>> labels, names = encode_labels(pd.Series(["b", "a"]), {"test": pd.Series(["a", "a"])})
        >>> labels["test"].tolist(), names
        ([0, 0], ['a', 'b'])
    """
    if pd.api.types.is_integer_dtype(train):
        top = max(int(s.max()) for s in splits.values())
        return {k: s.to_numpy(dtype=np.int64) for k, s in splits.items()}, [str(i) for i in range(top + 1)]
    names = sorted(train.astype(str).unique().tolist())
    index = {name: i for i, name in enumerate(names)}
    encoded = {}
    for split, series in splits.items():
        unseen = sorted(set(series.astype(str)) - set(index))
        if unseen:
            fail(f"{split} labels", f"classes seen in training ({', '.join(names)})", unseen[0])
        encoded[split] = series.astype(str).map(index).to_numpy(dtype=np.int64)
    return encoded, names
