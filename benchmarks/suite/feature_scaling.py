"""Feature scaling of files of raw features, on validation only: what ``data=npz`` should do to them.

Every suite dataset is read with its features in their own units (``datasets.build(raw=True)``),
its training split cut into the search's stratified hold-outs (``search.holdout``), and each
scaling is fitted on the fit part only, then applied to both parts, as the library's data
module does after its own hold-out. The test split is never read.

    python -m benchmarks.suite.feature_scaling                      # every scaling, every dataset
    python -m benchmarks.suite.feature_scaling --datasets leaf_r20 --scalings none standardize
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.suite.datasets import BY_NAME, standardise
from benchmarks.suite.references import plain_mlp
from benchmarks.suite.search import CANDIDATES, holdout

Arrays = dict[str, np.ndarray]


def standardized(split: Arrays) -> Arrays:
    """The library's ``data.standardize`` (through ``datasets.standardise``): the fit part's mean and std."""
    x_train, x_test = standardise(split["x_train"], split["x_test"])
    return {**split, "x_train": x_train, "x_test": x_test}


def min_max(split: Arrays) -> Arrays:
    """Each feature to [0, 1] over the fit part's rows (a constant feature: its value subtracted)."""
    low, high = split["x_train"].min(axis=0), split["x_train"].max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return {**split, "x_train": ((split["x_train"] - low) / span).astype(np.float32),
            "x_test": ((split["x_test"] - low) / span).astype(np.float32)}


SCALINGS: dict[str, Callable[[Arrays], Arrays]] = {"none": lambda split: split, "standardize": standardized,
                                                   "min_max": min_max}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(BY_NAME), choices=list(BY_NAME))
    parser.add_argument("--scalings", nargs="+", default=list(SCALINGS), choices=list(SCALINGS))
    parser.add_argument("--candidates", nargs="+", default=["la", "mixup0.2_steps1000"], choices=list(CANDIDATES))
    parser.add_argument("--holdouts", type=int, default=6)
    parser.add_argument("--val-fraction", type=float, default=0.25)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    for name in args.datasets:
        splits = [holdout(name, args.val_fraction, seed, raw=True) for seed in range(args.holdouts)]
        scores = {f"{scaling}/{candidate}": round(100 * statistics.fmean(
                      plain_mlp(SCALINGS[scaling](split), seed, logit_adjusted=True, **CANDIDATES[candidate])
                      for seed, split in enumerate(splits)), 1)
                  for scaling in args.scalings for candidate in args.candidates}
        print(name, json.dumps(scores), flush=True)
    print(f"feature scaling search: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
