"""Recipe search on validation only: knobs of the plain loop, scored on a hold-out of the training split.

Every candidate trains on the library's stratified hold-out split (``val_fraction`` of each
class, at least one sample of every class that has two) and is scored on the held-out part;
the test split is never read. Candidates are ordered by mean validation rank over the suite.

    python -m benchmarks.suite.search                 # every candidate, every dataset, seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from benchmarks.suite.datasets import BY_NAME, prepare
from benchmarks.suite.harness import ranks
from benchmarks.suite.references import plain_mlp
from lit_imbalance.data.datamodule import stratified_holdout

CANDIDATES: dict[str, dict] = {
    "la": {},
    "la_tau1.5": {"tau": 1.5},
    "la_tau2": {"tau": 2.0},
    "la_wd1e-2": {"weight_decay": 1e-2},
    "la_steps1000": {"min_steps": 1000},
    "la_steps2000": {"min_steps": 2000},
    "la_steps1000_tau1.5": {"min_steps": 1000, "tau": 1.5},
}


def holdout(name: str, fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Training split of ``name`` cut into a fit part (``x_train``) and a validation part (``x_test``)."""
    with np.load(prepare(BY_NAME[name])) as archive:
        x, y = archive["x_train"], archive["y_train"]
    kept, held = stratified_holdout(y, fraction, seed)
    return {"x_train": x[kept], "y_train": y[kept], "x_test": x[held], "y_test": y[held]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(BY_NAME))
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    val: dict[str, dict[str, float]] = {}
    for name in args.datasets:
        val[name] = {}
        for candidate in args.candidates:
            scores = [plain_mlp(holdout(name, args.val_fraction, seed), seed, logit_adjusted=True, **CANDIDATES[candidate])
                      for seed in args.seeds]
            val[name][candidate] = statistics.fmean(scores)
        print(name, json.dumps({k: round(100 * v, 1) for k, v in val[name].items()}), flush=True)
    mean_rank = {c: statistics.fmean(ranks(val[d])[c] for d in val) for c in args.candidates}
    for candidate in sorted(mean_rank, key=mean_rank.get):
        print(f"{candidate}: mean val rank {mean_rank[candidate]:.2f}, "
              f"mean val bal. acc {100 * statistics.fmean(val[d][candidate] for d in val):.1f}")
    print(f"search time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
