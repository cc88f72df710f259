"""Sampler speed and memory: lit_imbalance.sampling against torch's WeightedRandomSampler.

    python benchmarks/samplers.py            # 10M labels against the baseline, then 100M labels
    python benchmarks/samplers.py --quick    # 200k and 2^24 + 1 labels, in seconds

Labels are long-tailed (``--classes`` classes, exponential profile, head/tail
ratio ``--imbalance``), shuffled, held as an int64 tensor as a data module
holds them. "Epoch" is the time to produce one epoch of indices the way a
DataLoader consumes them (iterating the sampler to the end); "init" is the
constructor. Every sampler is built once, then each round times one epoch of
every sampler in turn (a new epoch each round): ``--warmup`` rounds, then
``--repeats`` timed ones. "epoch" is a sampler's median; the speed-up is the
median over rounds of baseline epoch / our epoch, so load that hits one round
hits both sides of its ratio. The baseline is ``WeightedRandomSampler`` with
the same per-sample inverse-frequency weights, for rows with the same number
of draws.

Samplers draw host-side indices with numpy (a DataLoader consumes Python ints),
so there is no GPU variant: ``--device`` is accepted for symmetry with
benchmarks/losses.py and only changes where torch's baseline keeps its weights.

The large size runs each sampler in a fresh process: "peak" is that process's
peak resident memory minus its resident memory once the labels (and, for
per-sample weights, the weight tensor) exist, i.e. what the sampler adds.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from lit_imbalance.sampling import (
    ClassAwareSampler,
    OverSampler,
    ProgressivelyBalancedSampler,
    UnderSampler,
    WeightedSampler,
)
from lit_imbalance.weights import class_weights


def long_tailed_labels(size: int, classes: int, imbalance: float, seed: int = 0) -> torch.Tensor:
    """``size`` shuffled int64 labels, class ``c`` with share proportional to ``imbalance^(-c / (C - 1))``."""
    share = imbalance ** (-np.arange(classes) / (classes - 1))
    counts = np.floor(size * share / share.sum()).astype(np.int64)
    counts[0] += size - counts.sum()
    labels = np.repeat(np.arange(classes, dtype=np.int64), counts)
    np.random.default_rng(seed).shuffle(labels)
    return torch.from_numpy(labels)


def inverse_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights 1 / n_c, from the project's class_weights (float64, as torch's sampler takes them)."""
    return class_weights(torch.bincount(labels), "inverse", normalize=None).double()[labels]


# name -> (builder(labels, weights), baseline name or None, needs per-sample weights)
Builder = Callable[[torch.Tensor, torch.Tensor | None], object]
CASES: dict[str, tuple[Builder, str | None, bool]] = {
    "torch WeightedRandomSampler": (lambda y, w: WeightedRandomSampler(w, y.numel()), None, True),
    "WeightedSampler(inverse)": (lambda y, w: WeightedSampler(y, "inverse"), "torch WeightedRandomSampler", False),
    "WeightedSampler(per-sample w)": (lambda y, w: WeightedSampler(y, w), "torch WeightedRandomSampler", True),
    "WeightedSampler(inverse), rank 0 of 2": (
        lambda y, w: WeightedSampler(y, "inverse", num_replicas=2, rank=0), None, False,
    ),
    "torch WRS(replacement=False, N/2)": (
        lambda y, w: WeightedRandomSampler(w, y.numel() // 2, replacement=False), None, True,
    ),
    "WeightedSampler(inverse, replacement=False, N/2)": (
        lambda y, w: WeightedSampler(y, "inverse", num_samples=y.numel() // 2, replacement=False),
        "torch WRS(replacement=False, N/2)", False,
    ),
    "WeightedSampler(per-sample w, replacement=False, N/2)": (
        lambda y, w: WeightedSampler(y, w, num_samples=y.numel() // 2, replacement=False),
        "torch WRS(replacement=False, N/2)", True,
    ),
    "ProgressivelyBalancedSampler(T=10), epoch 0": (lambda y, w: ProgressivelyBalancedSampler(y, 10), None, False),
    "ClassAwareSampler": (lambda y, w: ClassAwareSampler(y), None, False),
    "UnderSampler(auto)": (lambda y, w: UnderSampler(y), None, False),
    "OverSampler(auto)": (lambda y, w: OverSampler(y), None, False),
}
LARGE_CASES = [
    "torch WeightedRandomSampler",
    "WeightedSampler(inverse)",
    "WeightedSampler(per-sample w)",
    "WeightedSampler(inverse, replacement=False, N/2)",
    "WeightedSampler(per-sample w, replacement=False, N/2)",
    "ProgressivelyBalancedSampler(T=10), epoch 0",
    "ClassAwareSampler",
    "UnderSampler(auto)",
]  # OverSampler's epoch is C * n_head (~4.6x the dataset here): left out at the large size.


def epoch_seconds(sampler: object, epoch: int) -> float:
    """Seconds to iterate one epoch of ``sampler`` to the end, as a DataLoader does."""
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    start = time.perf_counter()
    collections.deque(iter(sampler), maxlen=0)  # consume at C speed, as a DataLoader's islice does
    return time.perf_counter() - start


def build_case(name: str, labels: torch.Tensor, weights: torch.Tensor | None) -> tuple[object, float]:
    """The sampler and its constructor's seconds."""
    start = time.perf_counter()
    sampler = CASES[name][0](labels, weights)
    return sampler, time.perf_counter() - start


def run_case(name: str, labels: torch.Tensor, weights: torch.Tensor | None) -> dict:
    """One sampler alone, one epoch: the large size, where each sampler runs in its own process."""
    sampler, init = build_case(name, labels, weights)
    return {"init": init, "epoch": epoch_seconds(sampler, 0), "draws": len(sampler)}


def run_interleaved(labels: torch.Tensor, weights: torch.Tensor, warmup: int, repeats: int) -> dict[str, dict]:
    """Every case, epochs timed round by round (see the module docstring)."""
    built = {name: build_case(name, labels, weights) for name in CASES}
    epochs: dict[str, list[float]] = {name: [] for name in CASES}
    for round_ in range(warmup + repeats):
        for name, (sampler, _) in built.items():
            seconds = epoch_seconds(sampler, round_)
            if round_ >= warmup:
                epochs[name].append(seconds)
    results = {}
    for name, (sampler, init) in built.items():
        baseline = CASES[name][1]
        speedup = statistics.median(b / o for b, o in zip(epochs[baseline], epochs[name])) if baseline else None
        results[name] = {"init": init, "epoch": statistics.median(epochs[name]), "draws": len(sampler),
                         "speedup": speedup}  # fmt: skip
    return results


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def child(name: str, size: int, classes: int, imbalance: float) -> None:
    """One large case in this process: print a JSON result (or the error) on stdout."""
    labels = long_tailed_labels(size, classes, imbalance)
    weights = inverse_sample_weights(labels) if CASES[name][2] else None
    before = rss_bytes()
    try:
        result = run_case(name, labels, weights)
    except Exception as error:  # the baseline's failure is the result we want to show
        result = {"error": f"{type(error).__name__}: {error}"}
    result["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps(result))


def format_row(name: str, result: dict, ratio: str) -> str:
    return f"{name:<54}{result['draws']:>12,}{result['init']:>9.2f}s{result['epoch']:>9.2f}s" \
           f"{1e9 * result['epoch'] / result['draws']:>9.1f}{ratio:>10}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200k and 2^24 + 1 labels")
    parser.add_argument("--size", type=int, default=None, help="labels for the comparison (default 10M)")
    parser.add_argument("--large-size", type=int, default=None, help="labels for the scale run (default 100M)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (one epoch of every sampler each)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--device", default="cpu", help="where torch's WeightedRandomSampler weights live")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.classes, args.imbalance)
    size = args.size or (200_000 if args.quick else 10_000_000)
    large = args.large_size or (2**24 + 1 if args.quick else 100_000_000)

    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.classes} classes, imbalance {args.imbalance:g}")
    labels = long_tailed_labels(size, args.classes, args.imbalance)
    weights = inverse_sample_weights(labels).to(args.device)
    counts = torch.bincount(labels)
    print(f"\n{size:,} labels (head {int(counts.max()):,}, tail {int(counts.min()):,}); "
          f"medians of {args.repeats} interleaved rounds after {args.warmup} warm-up")
    print(f"{'sampler':<54}{'draws':>12}{'init':>10}{'epoch':>10}{'ns/draw':>9}{'speed-up':>10}")
    baselines = {baseline for _, baseline, _ in CASES.values()}
    for name, result in run_interleaved(labels, weights, args.warmup, args.repeats).items():
        ratio = f"{result['speedup']:.1f}x" if result["speedup"] else "baseline" if name in baselines else ""
        print(format_row(name, result, ratio), flush=True)

    print(f"\n{large:,} labels, one epoch, each sampler in a fresh process")
    print(f"{'sampler':<54}{'draws':>12}{'init':>10}{'epoch':>10}{'ns/draw':>9}{'peak mem':>10}")
    for name in LARGE_CASES:
        command = [sys.executable, __file__, "--child", name, str(large), "--classes", str(args.classes),
                   "--imbalance", str(args.imbalance)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name:<54}crashed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        peak = f"{result['peak'] / 2**30:.2f} GiB"
        if "error" in result:
            print(f"{name:<54}fails: {result['error']}")
        else:
            print(f"{format_row(name, result, '')[:-10]}{peak:>10}  ({result['peak'] / large:.1f} B/label)")


if __name__ == "__main__":
    main()
