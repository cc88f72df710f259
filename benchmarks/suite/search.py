"""Recipe search on validation only: knobs of the plain loop, scored on hold-outs of the training split.

Every candidate trains on the library's stratified hold-out split (``--val-fraction`` of
each class, at least one sample of every class that has two), drawn ``--holdouts`` times
with a new split and seed each, and is scored on the held-out part; the test split is
never read. Candidates are ordered by mean validation rank over the datasets given.
``experiment=longtail_recipe`` implements the candidate chosen by round 6's rule over the
suite and the probe tables of :mod:`benchmarks.suite.probe` (``recipe_search_round6.md``).

    python -m benchmarks.suite.search                  # every candidate, every dataset, 6 hold-outs
    python -m benchmarks.suite.search --out benchmarks/results/recipe_search.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.suite.datasets import BY_NAME, SuiteDataset, prepare
from benchmarks.suite.harness import ranks
from benchmarks.suite.references import plain_mlp
from lit_imbalance.data.datamodule import stratified_holdout

#: name -> knobs of :func:`benchmarks.suite.references.plain_mlp` (logit-adjusted, tau 1, unless set).
CANDIDATES: dict[str, dict] = {
    "la": {},
    "la_tau1.5": {"tau": 1.5},
    "la_wd1e-2": {"weight_decay": 1e-2},
    "la_steps1000": {"min_steps": 1000},
    "la_steps2000": {"min_steps": 2000},
    "mixup0.4": {"mixup_alpha": 0.4},
    "mixup1.0": {"mixup_alpha": 1.0},
    "mixup0.4_steps1000": {"mixup_alpha": 0.4, "min_steps": 1000},
    "mixup0.4_steps2000": {"mixup_alpha": 0.4, "min_steps": 2000},
    "mixup0.4_w1024": {"mixup_alpha": 0.4, "hidden": (1024,)},
    "w1024_steps1000": {"hidden": (1024,), "min_steps": 1000},
    "linear_steps1000": {"hidden": (), "min_steps": 1000},
    "linear_mixup0.4_steps1000": {"hidden": (), "mixup_alpha": 0.4, "min_steps": 1000},
    "la_swa0.5": {"average_from": 0.5},
    "la_steps1000_swa0.5": {"min_steps": 1000, "average_from": 0.5},
    "mixup0.4_steps1000_swa0.5": {"mixup_alpha": 0.4, "min_steps": 1000, "average_from": 0.5},
    "la_drop0.3_steps1000": {"dropout": 0.3, "min_steps": 1000},
    "la_drop0.3_steps1000_swa0.5": {"dropout": 0.3, "min_steps": 1000, "average_from": 0.5},
    "mixup0.4_steps1000_m3": {"mixup_alpha": 0.4, "min_steps": 1000, "members": 3},
    "la_m3": {"members": 3},
    # Round 3 (recipe_search_round3.md): mixup's alpha, and other model families and training knobs.
    "mixup0.2_steps1000": {"mixup_alpha": 0.2, "min_steps": 1000},
    "mixup0.1_steps1000": {"mixup_alpha": 0.1, "min_steps": 1000},
    "qt_la": {"quantile": True},
    "qt_mixup0.4_steps1000": {"quantile": True, "mixup_alpha": 0.4, "min_steps": 1000},
    "qt_cos_mixup0.4_steps1000": {"quantile": True, "cosine": True, "mixup_alpha": 0.4, "min_steps": 1000},
    "cos_mixup0.4_steps1000": {"cosine": True, "mixup_alpha": 0.4, "min_steps": 1000},
    "ls0.1_mixup0.4_steps1000": {"label_smoothing": 0.1, "mixup_alpha": 0.4, "min_steps": 1000},
    "bn_mixup0.4_steps1000": {"batch_norm": True, "mixup_alpha": 0.4, "min_steps": 1000},
    "res2_steps1000": {"residual_blocks": 2, "dropout": 0.1, "min_steps": 1000},
    "res2_mixup0.4_steps1000": {"residual_blocks": 2, "dropout": 0.1, "mixup_alpha": 0.4, "min_steps": 1000},
    "res2_mixup0.2_steps1000": {"residual_blocks": 2, "dropout": 0.1, "mixup_alpha": 0.2, "min_steps": 1000},
    # Round 4: mixup's last steps without mixing, and dropout beside mixup.
    "mixup0.2_steps1000_until0.5": {"mixup_alpha": 0.2, "min_steps": 1000, "mixup_until": 0.5},
    "mixup0.2_steps1000_until0.8": {"mixup_alpha": 0.2, "min_steps": 1000, "mixup_until": 0.8},
    "mixup0.4_steps1000_until0.8": {"mixup_alpha": 0.4, "min_steps": 1000, "mixup_until": 0.8},
    "mixup0.2_drop0.3_steps1000": {"mixup_alpha": 0.2, "dropout": 0.3, "min_steps": 1000},
    "mixup0.2_drop0.3_steps1000_until0.8": {"mixup_alpha": 0.2, "dropout": 0.3, "min_steps": 1000,
                                            "mixup_until": 0.8},
    # Round 5: the optimiser's step size and the batch, the two knobs no earlier round moved.
    "mixup0.2_steps1000_lr3e-3": {"mixup_alpha": 0.2, "min_steps": 1000, "lr": 3e-3},
    "mixup0.2_steps3000_lr3e-4": {"mixup_alpha": 0.2, "min_steps": 3000, "lr": 3e-4},
    "mixup0.2_steps1000_b32": {"mixup_alpha": 0.2, "min_steps": 1000, "batch_size": 32},
    "mixup0.2_steps1000_b128": {"mixup_alpha": 0.2, "min_steps": 1000, "batch_size": 128},
    "mixup0.2_w512_steps1000": {"mixup_alpha": 0.2, "hidden": (512,), "min_steps": 1000},
    # Round 6: dropout's dose beside mixup, after the probe tables (benchmarks/suite/probe.py).
    "mixup0.2_drop0.1_steps1000": {"mixup_alpha": 0.2, "dropout": 0.1, "min_steps": 1000},
    "mixup0.2_drop0.5_steps1000": {"mixup_alpha": 0.2, "dropout": 0.5, "min_steps": 1000},
}


def holdout(dataset: str | SuiteDataset, fraction: float, seed: int, raw: bool = False) -> dict[str, np.ndarray]:
    """Training split of ``dataset`` (a suite name or spec) cut into a fit part (``x_train``) and a validation part (``x_test``).

    ``raw``: the features in their own units (``datasets.build(raw=True)``).
    """
    spec = BY_NAME[dataset] if isinstance(dataset, str) else dataset
    with np.load(prepare(spec, raw=raw)) as archive:
        x, y = archive["x_train"], archive["y_train"]
    kept, held = stratified_holdout(y, fraction, seed)
    return {"x_train": x[kept], "y_train": y[kept], "x_test": x[held], "y_test": y[held]}


def validation_scores(dataset: str | SuiteDataset, candidates: list[str], holdouts: int,
                      fraction: float) -> dict[str, float]:
    """Each candidate's mean balanced accuracy over ``holdouts`` hold-outs of ``dataset``'s training split."""
    splits = [holdout(dataset, fraction, seed) for seed in range(holdouts)]
    return {candidate: statistics.fmean(plain_mlp(split, seed, logit_adjusted=True, **CANDIDATES[candidate])
                                        for seed, split in enumerate(splits))
            for candidate in candidates}


def markdown(val: dict[str, dict[str, float]], mean_rank: dict[str, float], args: argparse.Namespace,
             elapsed_s: float) -> str:
    """The search's table: mean hold-out balanced accuracy per dataset, mean rank, gain over ``la``."""
    datasets = list(val)
    lines = [f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; {time.strftime('%Y-%m-%d %H:%M %Z')}; "
             f"search time {elapsed_s / 60:.1f} min.", "",
             f"Validation only: {args.holdouts} stratified hold-outs of {args.val_fraction:g} of each class of the "
             "training split (split and seed r = 0, 1, ...); the test split is never read. Balanced accuracy (%), "
             "mean over hold-outs; rows by mean rank over the datasets.", "",
             "| candidate | " + " | ".join(datasets) + " | mean | mean rank | mean gain over `la` | datasets ≥ +1 |",
             "|---" * (len(datasets) + 5) + "|"]
    for candidate in sorted(mean_rank, key=mean_rank.get):
        gains = [val[d][candidate] - val[d]["la"] for d in datasets] if "la" in mean_rank else []
        mean = statistics.fmean(val[d][candidate] for d in datasets)
        lines.append(f"| {candidate} | " + " | ".join(f"{100 * val[d][candidate]:.1f}" for d in datasets)
                     + f" | {100 * mean:.2f} | {mean_rank[candidate]:.2f} | "
                     # gains counted as printed (to 0.1), so a printed +1.0 counts whatever the float's last bits
                     + (f"{100 * statistics.fmean(gains):+.1f} | {sum(round(100 * g, 1) >= 1.0 for g in gains)} |"
                        if gains else " | |"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, specs: dict[str, SuiteDataset] = BY_NAME,
         candidates: list[str] | None = None, holdouts: int = 6, description: str | None = __doc__) -> int:
    """The search's command line over ``specs`` (the suite's datasets unless given), printing its table.

    ``candidates`` and ``holdouts`` are the defaults of ``--candidates`` (every one)
    and ``--holdouts``; :mod:`benchmarks.suite.probe` runs it over other datasets.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(specs), choices=list(specs))
    parser.add_argument("--candidates", nargs="+", default=candidates or list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--holdouts", type=int, default=holdouts)
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    val: dict[str, dict[str, float]] = {}
    for name in args.datasets:
        val[name] = validation_scores(specs[name], args.candidates, args.holdouts, args.val_fraction)
        print(name, json.dumps({k: round(100 * v, 1) for k, v in val[name].items()}), flush=True)
    mean_rank = {c: statistics.fmean(ranks(val[d])[c] for d in val) for c in args.candidates}
    text = markdown(val, mean_rank, args, time.perf_counter() - started)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
