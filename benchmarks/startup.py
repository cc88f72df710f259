"""Start-up cost: ``import lit_imbalance`` (and the app) against ``import lightning``, in fresh processes.

    python benchmarks/startup.py            # 9 interleaved rounds, medians
    python benchmarks/startup.py --rounds 3

Each round starts one fresh interpreter per variant, in turn, and times the
import inside it (``time.perf_counter`` around the import statement), so
interpreter start-up and disk-cache effects hit every variant alike. The
ratio is the median of ``lit_imbalance`` over the median of ``lightning``.
Target (issue 15): at most 1.2x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

VARIANTS = {
    "lightning": "import lightning",
    "lit_imbalance": "import lit_imbalance",
    "lit_imbalance.app": "import lit_imbalance.app",
}


def time_import(statement: str) -> float:
    """Seconds that ``statement`` takes in a fresh interpreter."""
    code = f"import time; start = time.perf_counter(); {statement}; print(time.perf_counter() - start)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    time_import("import lightning")  # warm the disk cache once
    for _ in range(args.rounds):
        for name, statement in VARIANTS.items():
            times[name].append(time_import(statement))
    baseline = statistics.median(times["lightning"])
    print(f"{'import':20} {'median s':>9} {'vs lightning':>13}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:20} {median:9.2f} {median / baseline:12.2f}x")


if __name__ == "__main__":
    main()
