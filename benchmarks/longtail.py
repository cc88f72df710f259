"""Long-tail benchmark: every method x imbalance ratio x seed through the real app.

One Hydra multirun (``train.py -m method=... seed=... data.imbalance_ratio=...``)
does the runs; this script only launches it and aggregates the per-job
``metrics.json`` files into a table (mean ± std over seeds) and a bar chart.

    python benchmarks/longtail.py                          # the default matrix (~15 min on 2 cores)
    python benchmarks/longtail.py --npz my.npz             # your data instead of digits
    python benchmarks/longtail.py --methods ce focal --seeds 0 --epochs 1 --ratios 10   # a smoke run
    python benchmarks/longtail.py --suite                  # every preset and recipe on the real-data suite
    python benchmarks/longtail.py --suite --quick          # 2 variants, 1 seed, every dataset (< 10 min)

Balanced accuracy and shot-group recalls are read from the test split; the
validation balanced accuracy is reported beside them because the recommended
recipe is chosen on validation only.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

# `python benchmarks/longtail.py` puts benchmarks/ first on sys.path; the suite is `benchmarks.suite`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_imbalance.sweep import collect_jobs

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# --suite --quick: the reference's loss and the recipe, one seed (3 variants took 11.5 min on a loaded machine).
QUICK_METHODS, QUICK_EXPERIMENTS, QUICK_SEEDS = ["logit_adjusted"], ["longtail_recipe"], [0]
COLUMNS = ["method", "imbalance_ratio", "seeds", "test_balanced_acc", "test_balanced_acc_std",
           "val_balanced_acc", "many_recall", "medium_recall", "few_recall", "train_time_s"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS, metavar="METHOD",
                        help=f"presets from conf/method/ (default: all of {', '.join(METHODS)})")
    parser.add_argument("--ratios", nargs="+", type=float, default=[10, 50, 100], help="data.imbalance_ratio values")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="(default: 0 1 2; --quick: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the config's)")
    parser.add_argument("--npz", type=Path, default=None, help="benchmark on this data=npz file instead of digits")
    parser.add_argument("--out", type=Path, default=None,
                        help="sweep directories (default: outputs/benchmarks/longtail, or .../suite with --suite)")
    suite = parser.add_argument_group("the real-data suite (benchmarks/suite/)")
    suite.add_argument("--suite", action="store_true", help="run on the suite's datasets instead of digits")
    suite.add_argument("--quick", action="store_true",
                       help=f"with --suite: methods {' '.join(QUICK_METHODS)}, recipe {' '.join(QUICK_EXPERIMENTS)}, seed 0")
    suite.add_argument("--datasets", nargs="+", default=None, metavar="DATASET", help="suite datasets (default: all)")
    suite.add_argument("--experiments", nargs="*", default=None, metavar="EXPERIMENT",
                       help=f"recipes from conf/experiment/ (default: all of {', '.join(EXPERIMENTS)})")
    suite.add_argument("--references", nargs="+", default=None, metavar="REFERENCE",
                       help="reference rows (default: plain_ce plain_la logreg_balanced)")
    suite.add_argument("--collect", type=Path, default=None, metavar="SWEEP_DIR",
                       help="re-aggregate an earlier --suite sweep directory instead of running one")
    suite.add_argument("--rename", nargs="+", default=[], metavar="OLD=NEW",
                       help="with --collect: rows of a config since renamed (e.g. longtail_recipe=longtail_la)")
    suite.add_argument("--raw", action="store_true",
                       help="features in their own units, not standardised (the library standardises data=npz itself)")
    suite.add_argument("--jobs", type=int, default=2, help="datasets trained at once (one process each)")
    suite.add_argument("--results", type=Path, default=None,
                       help="where suite.csv/.md go (default: benchmarks/results; the sweep dir with --quick)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args(argv)
    if args.quick and not args.suite:
        parser.error("--quick applies to --suite")
    method_given = any(a == "--methods" for a in (argv if argv is not None else sys.argv[1:]))
    if args.suite and args.quick and not method_given:
        args.methods = QUICK_METHODS
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else [0, 1, 2]
    if args.out is None:
        args.out = ROOT / "outputs" / "benchmarks" / ("suite" if args.suite else "longtail")
    return args


def sweep_command(args: argparse.Namespace, sweep_dir: Path) -> list[str]:
    """The one ``train.py -m`` call that runs the whole matrix."""
    command = [sys.executable, str(ROOT / "train.py"), "-m",
               f"method={','.join(args.methods)}", f"seed={','.join(map(str, args.seeds))}",
               "logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
               # Checkpoints of 100 jobs are not wanted; the best one is still kept per job for testing.
               "callbacks.last_checkpoint=null",
               f"hydra.sweep.dir={sweep_dir}"]
    if args.npz is not None:
        command += ["data=npz", f"data.path={args.npz.resolve()}"]
    else:
        command.append(f"data.imbalance_ratio={','.join(f'{r:g}' for r in args.ratios)}")
    if args.epochs is not None:
        command.append(f"trainer.max_epochs={args.epochs}")
    return command + list(args.overrides)


def job_rows(sweep_dir: Path) -> list[dict]:
    """One row per job that wrote metrics: its method, ratio, seed and what it measured."""
    rows = []
    for job in collect_jobs(sweep_dir):
        if not job.metrics:
            continue
        cfg = OmegaConf.load(job.directory / ".hydra" / "config.yaml")
        metrics = job.metrics
        prefix = "test/adjusted/" if "test/adjusted/balanced_acc" in metrics else "test/"
        rows.append({
            "method": job.parameters["method"],
            "imbalance_ratio": cfg.data.get("imbalance_ratio", "npz"),
            "seed": cfg.seed,
            "test_balanced_acc": metrics.get(f"{prefix}balanced_acc"),
            # The best validation score of the metric the job optimised (adjusted for post-hoc methods).
            "val_balanced_acc": metrics.get("objective"),
            **{f"{g}_recall": metrics.get(f"{prefix}{g}_recall") for g in ("many", "medium", "few")},
            "train_time_s": metrics.get("train_time_s"),
            "status": metrics.get("status"),
        })
    return rows


def ratio_order(ratio: object) -> float:
    """Numeric ratios in increasing order, a user's npz file last."""
    return float(ratio) if isinstance(ratio, (int, float)) else float("inf")


def mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean (and std of test balanced accuracy) over seeds, per method and ratio."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["imbalance_ratio"])].append(row)
    table = []
    for (method, ratio), members in sorted(groups.items(), key=lambda kv: (ratio_order(kv[0][1]), kv[0][0])):
        scores = [m["test_balanced_acc"] for m in members if m["test_balanced_acc"] is not None]
        table.append({
            "method": method, "imbalance_ratio": ratio, "seeds": len(members),
            "test_balanced_acc": mean(scores),
            "test_balanced_acc_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            **{key: mean([m[key] for m in members])
               for key in ("val_balanced_acc", "many_recall", "medium_recall", "few_recall", "train_time_s")},
        })
    return table


def validation_ranking(table: list[dict]) -> list[tuple[str, float]]:
    """Methods ranked by validation balanced accuracy averaged over the ratios: the recipe's only input."""
    per_method: dict[str, list[float]] = defaultdict(list)
    for row in table:
        if row["val_balanced_acc"] is not None:
            per_method[row["method"]].append(row["val_balanced_acc"])
    return sorted(((m, statistics.fmean(v)) for m, v in per_method.items()), key=lambda mv: -mv[1])


def fmt(value: object, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def pivot(table: list[dict]) -> list[str]:
    """Markdown rows: one method per row, one imbalance ratio per column."""
    ratios = sorted({r["imbalance_ratio"] for r in table}, key=ratio_order)
    cells = {(r["method"], r["imbalance_ratio"]): r for r in table}
    lines = ["| method | " + " | ".join(f"ρ={fmt(r)}" for r in ratios) + " |", "|---" * (len(ratios) + 1) + "|"]
    for method, _ in validation_ranking(table):
        row = [cells.get((method, r)) for r in ratios]
        lines.append(f"| {method} | " + " | ".join(
            f"{fmt(c['test_balanced_acc'])} ± {fmt(c['test_balanced_acc_std'])}" if c else "" for c in row) + " |")
    return lines


def write_table(table: list[dict], out: Path) -> None:
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    lines = ["| method | ρ | seeds | test bal. acc | val bal. acc | many | medium | few |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['method']} | {fmt(r['imbalance_ratio'])} | {r['seeds']} | "
            f"{fmt(r['test_balanced_acc'])} ± {fmt(r['test_balanced_acc_std'])} | {fmt(r['val_balanced_acc'])} | "
            f"{fmt(r['many_recall'])} | {fmt(r['medium_recall'])} | {fmt(r['few_recall'])} |"
        )
    lines += ["", "Test balanced accuracy, mean ± std over seeds:", "", *pivot(table)]
    lines += ["", "Ranked by validation balanced accuracy (mean over ratios; no test label used):", ""]
    lines += [f"{rank}. {method}: {score:.3f}" for rank, (method, score) in enumerate(validation_ranking(table), 1)]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot(table: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = sorted({r["method"] for r in table})
    ratios = sorted({r["imbalance_ratio"] for r in table}, key=ratio_order)
    width = 0.8 / max(1, len(ratios))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(methods) + 2), 4))
    for i, ratio in enumerate(ratios):
        cells = {r["method"]: r for r in table if r["imbalance_ratio"] == ratio}
        heights = [cells[m]["test_balanced_acc"] or 0 if m in cells else 0 for m in methods]
        errors = [cells[m]["test_balanced_acc_std"] if m in cells else 0 for m in methods]
        ax.bar(np.arange(len(methods)) + i * width, heights, width, yerr=errors, capsize=2, label=f"ρ={fmt(ratio)}")
    ax.set_xticks(np.arange(len(methods)) + width * (len(ratios) - 1) / 2, methods, rotation=30, ha="right")
    ax.set_ylabel("test balanced accuracy\n(mean ± std over seeds)")
    # Every method lands between 0.4 and 1: a zero baseline would flatten the differences.
    ax.set_ylim(0.4, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=len(ratios), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def run_suite(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--suite``: every variant on every suite dataset, then the references; write suite.{csv,md}."""
    from benchmarks.suite import harness
    from benchmarks.suite.datasets import BY_NAME

    experiments = args.experiments if args.experiments is not None else (
        QUICK_EXPERIMENTS if args.quick else EXPERIMENTS)
    unknown = [d for d in args.datasets or [] if d not in BY_NAME]
    if unknown:
        raise ValueError(f"Expected argument `--datasets` to name suite datasets ({', '.join(BY_NAME)}), but got {unknown[0]}.")
    run = harness.SuiteRun(datasets=args.datasets or list(BY_NAME), methods=args.methods, experiments=experiments,
                           seeds=args.seeds, references=args.references or list(harness.REFERENCES),
                           epochs=args.epochs, overrides=args.overrides, jobs=args.jobs, raw=args.raw)
    started = time.perf_counter()
    if args.collect is not None:
        sweep_dir, codes = args.collect.resolve(), []
        renames = dict(pair.split("=", 1) for pair in args.rename)
        rows = [{**row, "method": renames.get(row["method"], row["method"])}
                for name in run.datasets for row in harness.job_rows(name, sweep_dir / name)]
    else:
        sweep_dir = (args.out / time.strftime("%Y-%m-%d_%H-%M-%S")).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        print(f"suite: {len(run.datasets)} datasets x {len(run.methods) + len(experiments)} variants x "
              f"{len(run.seeds)} seeds, logs in {sweep_dir}", flush=True)
        rows, codes = harness.launch(run, sweep_dir)
    launched = time.perf_counter() - started
    rows += harness.references(run)
    elapsed = time.perf_counter() - started
    if not any(r["kind"] != "reference" for r in rows):
        print(f"no job finished (train.py exit codes {codes})", file=sys.stderr)
        return 1
    table = harness.aggregate(rows)
    command = "python benchmarks/longtail.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = harness.markdown(table, run.datasets, elapsed, command.strip())
    picks = [f"{r['dataset']}/{r['seed']}: {r['picked']}" for r in rows if r.get("picked")]
    if picks:
        text += "\n`auto` (experiment=auto) picked, by mean hold-out validation balanced accuracy: " + "; ".join(picks) + ".\n"
    if args.collect is not None:
        text += f"\nRe-aggregated from {sweep_dir}; library runs {launched:.0f} s to collect here, references included above.\n"
    if args.raw:
        text = ("Raw features (`--raw`): every file holds the features in their own units; the library "
                "standardises data=npz itself (data.standardize), the references train on them as stored.\n\n" + text)
    # Quick and raw runs never replace the committed (standardised, full) results.
    results = args.results or (sweep_dir if args.quick or args.raw else ROOT / "benchmarks" / "results")
    harness.write(table, Path(results), text)
    print(text)
    print(f"suite run time: {elapsed:.0f} s ({elapsed / 60:.1f} min) for {len(rows)} runs; "
          f"suite.csv/.md in {results}", flush=True)
    return max(codes, default=0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.suite:
        return run_suite(args, argv)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    sweep_dir = (args.out / stamp).resolve()
    command = sweep_command(args, sweep_dir)
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT)
    elapsed = time.perf_counter() - started
    rows = job_rows(sweep_dir)
    if not rows:
        print(f"no job finished (train.py exit code {completed.returncode})", file=sys.stderr)
        return 1
    table = aggregate(rows)
    write_table(table, sweep_dir)
    plot(table, sweep_dir)
    print((sweep_dir / "results.md").read_text())
    print(f"{len(rows)} jobs in {elapsed:.0f} s; table and chart in {sweep_dir}")
    return 0 if completed.returncode == 0 else completed.returncode


if __name__ == "__main__":
    sys.exit(main())
