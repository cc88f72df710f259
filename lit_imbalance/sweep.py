"""The summary of a Hydra multirun: every job's record in one ranked table, and a picture.

``python train.py -m loss=focal loss.alpha=0.25,0.5 loss.gamma=0,2`` runs one
Hydra job per parameter set, each in ``<sweep dir>/<job number>/`` with its own
``metrics.json`` (:mod:`lit_imbalance.record`). :class:`SweepSummary`, a Hydra
callback (``hydra.callbacks`` in ``conf/train.yaml``), reads them all at the
end of the multirun and writes ``sweep_summary.csv`` / ``sweep_summary.md``
ranked by the objective, plus a heat-map when exactly two numeric parameters
were swept.

The other parts of a sweep live beside this module: a failing job becomes a
failed row through :func:`lit_imbalance.job_failures.keep_sweeping`, DDP
inside a job is :func:`lit_imbalance.ddp_multirun.ddp_job_scope`, and the wandb
naming resolvers are :mod:`lit_imbalance.resolvers`.
"""

from __future__ import annotations

import atexit
import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lit_imbalance._checks import check_choice
from lit_imbalance.record import RECORD_FILE, Key, Status, read_record
from lit_imbalance.runtime import is_launching_process

log = logging.getLogger(__name__)

#: Record keys shown for every job, after the objective.
SUMMARY_METRICS = (
    Key.best("val/balanced_acc"),
    "test/balanced_acc",
    "test/many_recall",
    "test/medium_recall",
    "test/few_recall",
    Key.TRAIN_TIME_S,
)


@dataclass
class JobResult:
    """One job of a sweep: its overrides and what its ``metrics.json`` says."""

    num: int
    directory: Path
    overrides: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        # No metrics.json at all: the job failed before anything could record it.
        return str(Status(self.metrics.get(Key.STATUS, Status.FAILED)).value)

    @property
    def objective(self) -> float | None:
        value = self.metrics.get(Key.OBJECTIVE)
        finished = self.status == Status.FINISHED
        return float(value) if finished and isinstance(value, (int, float)) and math.isfinite(value) else None

    @property
    def parameters(self) -> dict[str, Any]:
        """``key -> value`` of the overrides, values parsed as numbers where they are numbers."""
        return dict(parse_override(o) for o in self.overrides if "=" in o)


def parse_override(override: str) -> tuple[str, Any]:
    """Split ``key=value`` (``+``/``++``/``~`` prefixes dropped), reading numbers as floats.

    Example:
        >>> parse_override("loss.gamma=2"), parse_override("+trainer.foo=bar")
        (('loss.gamma', 2.0), ('trainer.foo', 'bar'))
    """
    key, _, value = override.partition("=")
    try:
        parsed: Any = float(value)
    except ValueError:
        parsed = value
    return key.lstrip("+~"), parsed


def collect_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job directory under ``sweep_dir`` (one with ``.hydra/overrides.yaml``), by job number."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        hydra_file = directory / ".hydra" / "hydra.yaml"
        num = OmegaConf.load(hydra_file).hydra.job.num if hydra_file.is_file() else len(jobs)
        metrics = read_record(directory / RECORD_FILE)
        overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_file))]  # type: ignore[union-attr]
        jobs.append(JobResult(int(num), directory, overrides, metrics))
    return sorted(jobs, key=lambda job: job.num)


def swept_parameters(jobs: Sequence[JobResult]) -> list[str]:
    """Override keys that take more than one value across ``jobs``, in command-line order.

    Example:
        >>> jobs = [JobResult(0, Path("0"), ["a=1", "b=x", "c=0"]), JobResult(1, Path("1"), ["a=2", "b=x", "c=1"])]
        >>> swept_parameters(jobs)
        ['a', 'c']
    """
    keys: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in job.parameters.items():
            keys.setdefault(key, set()).add(repr(value))
    return [key for key, values in keys.items() if len(values) > 1]


def rank_jobs(jobs: Sequence[JobResult], mode: str = "max") -> list[JobResult]:
    """Finished jobs best first by objective, then the others (failed, unfinished) by job number.

    Example:
        >>> jobs = [JobResult(0, Path("0"), [], {"status": "finished", "objective": 0.5}),
        ...         JobResult(1, Path("1"), [], {"status": "failed"}),
        ...         JobResult(2, Path("2"), [], {"status": "finished", "objective": 0.7})]
        >>> [job.num for job in rank_jobs(jobs)]
        [2, 0, 1]
    """
    check_choice("mode", mode, ("max", "min"))
    scored = [job for job in jobs if job.objective is not None]
    scored.sort(key=lambda job: job.objective, reverse=mode == "max")  # type: ignore[arg-type, return-value]
    return scored + [job for job in jobs if job.objective is None]


def summary_rows(jobs: Sequence[JobResult], mode: str = "max") -> list[dict[str, Any]]:
    """One flat row per job, ranked (``rank`` is empty for jobs without an objective)."""
    parameters = swept_parameters(jobs)
    rows = []
    for position, job in enumerate(rank_jobs(jobs, mode), start=1):
        row: dict[str, Any] = {"rank": position if job.objective is not None else "", "job": job.num,
                               "status": job.status}
        row.update({key: job.parameters.get(key, "") for key in parameters})
        row["objective"] = job.objective if job.objective is not None else ""
        row.update({key: job.metrics.get(key, "") if job.status == Status.FINISHED else "" for key in SUMMARY_METRICS})
        row["overrides"] = " ".join(job.overrides)
        row["error"] = job.metrics.get(Key.ERROR, "" if job.status == Status.FINISHED else f"no {RECORD_FILE}")
        row["dir"] = job.directory.name
        rows.append(row)
    return rows


def heatmap_grid(
    rows: Sequence[dict[str, Any]], row_key: str, column_key: str, value_key: str = "objective"
) -> tuple[list[float], list[float], np.ndarray] | None:
    """The ``row_key`` x ``column_key`` grid of ``value_key``, or ``None`` if the jobs are not a full grid.

    Cells of jobs without a value (failed) are NaN. A full grid is what Hydra's
    basic sweeper produces from ``a=1,2 b=3,4``; Optuna's samples are not one.

    Example:
        >>> rows = [{"a": 1.0, "b": 0.0, "objective": 0.5}, {"a": 1.0, "b": 2.0, "objective": 0.7},
        ...         {"a": 2.0, "b": 0.0, "objective": ""}, {"a": 2.0, "b": 2.0, "objective": 0.6}]
        >>> heatmap_grid(rows, "a", "b")
        ([1.0, 2.0], [0.0, 2.0], array([[0.5, 0.7],
               [nan, 0.6]]))
    """
    if not all(isinstance(row.get(key), float) for row in rows for key in (row_key, column_key)):
        return None
    row_values = sorted({row[row_key] for row in rows})
    column_values = sorted({row[column_key] for row in rows})
    cells = {(row[row_key], row[column_key]) for row in rows}
    if len(cells) != len(rows) or len(cells) != len(row_values) * len(column_values):
        return None
    grid = np.full((len(row_values), len(column_values)), np.nan)
    for row in rows:
        value = row.get(value_key)
        if isinstance(value, (int, float)):
            grid[row_values.index(row[row_key]), column_values.index(row[column_key])] = value
    return row_values, column_values, grid


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` (dicts with the same keys) as CSV."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``columns``; floats with 4 decimals.

    Example:
        >>> print(markdown_table([{"a": 0.123456, "b": "x|y"}], ["a", "b"]))
        | a | b |
        |---|---|
        | 0.1235 | x\\|y |
    """

    def cell(value: Any) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return " ".join(text.split()).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class SweepSummary(Callback):
    """Summarise a multirun in its sweep directory when it ends.

    Writes ``sweep_summary.csv`` and ``sweep_summary.md``: one row per job
    (rank, job number, status, each swept parameter, objective, best validation
    and test balanced accuracy, many/medium/few-shot test recall, training
    time, overrides, error), finished jobs ranked by the objective, failed jobs
    last. With exactly two numeric swept parameters it also draws
    ``sweep_heatmap.png`` (a full grid, as ``a=1,2 b=3,4`` gives) or
    ``sweep_scatter.png`` (sampled points, as Optuna gives) of the objective,
    and logs the table and picture to a wandb run of the sweep's group when the
    config has a wandb logger.

    Args:
        mode: ``"max"`` when a larger objective is better, ``"min"`` otherwise.
        plots: draw the heat-map / scatter picture.
        wandb: log the summary to wandb (only when ``logger.wandb`` is configured).
    """

    def __init__(self, mode: str = "max", plots: bool = True, wandb: bool = True) -> None:
        self.mode = check_choice("mode", mode, ("max", "min"))
        self.plots = plots
        self.wandb = wandb
        self._unfinished: tuple[Path, DictConfig] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_launching_process():
            return
        # A launcher whose worker dies outright (a segfault, an OOM kill: joblib's TerminatedWorkerError)
        # raises past on_multirun_end; the jobs that did finish still get their summary when Hydra exits.
        self._unfinished = (Path(config.hydra.sweep.dir), config)
        atexit.register(self._summarise_unfinished_sweep)

    def _summarise_unfinished_sweep(self) -> None:
        if self._unfinished is None:
            return
        sweep_dir, config = self._unfinished
        self._unfinished = None
        log.error("The multirun ended before all its jobs returned (a job's process died, or the launcher "
                  "failed): summarising the jobs under %s as they are.", sweep_dir)
        self.summarise(sweep_dir, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_launching_process():
            return
        self._unfinished = None
        rows = self.summarise(Path(config.hydra.sweep.dir), config)
        failed = [row["job"] for row in rows if row["status"] != Status.FINISHED]
        if failed:
            # The summary is written; the exit code still says that not every job succeeded.
            log.error("Sweep jobs %s did not finish (see sweep_summary.md); exiting with status 1.", failed)
            raise SystemExit(1)

    def summarise(self, sweep_dir: Path, config: DictConfig) -> list[dict[str, Any]]:
        """Write the summary of the jobs under ``sweep_dir`` (also of an interrupted sweep); returns its rows.

        ``config`` is the sweep's or a job's config: its ``optimized_metric``
        names the objective, its ``logger.wandb`` (if any) receives the table.
        """
        jobs = collect_jobs(sweep_dir)
        if not jobs:
            log.warning("No job directories under %s: nothing to summarise.", sweep_dir)
            return []
        objective_name = OmegaConf.select(config, "optimized_metric", default=None) or "objective"
        rows = summary_rows(jobs, self.mode)
        parameters = swept_parameters(jobs)
        write_csv(rows, sweep_dir / "sweep_summary.csv")
        picture = self.draw(rows, parameters, objective_name, sweep_dir) if self.plots else None
        (sweep_dir / "sweep_summary.md").write_text(self.markdown(rows, parameters, objective_name, sweep_dir, picture))
        failed = sum(row["status"] != "finished" for row in rows)
        log.info("Sweep summary of %d jobs (%d failed): %s", len(rows), failed, sweep_dir / "sweep_summary.md")
        if self.wandb and OmegaConf.select(config, "logger.wandb", default=None) is not None:
            self.log_to_wandb(config, rows, picture, sweep_dir)
        return rows

    def markdown(self, rows: Sequence[dict[str, Any]], parameters: Sequence[str], objective_name: str,
                 sweep_dir: Path, picture: Path | None) -> str:
        failed = sum(row["status"] != "finished" for row in rows)
        best = rows[0] if rows[0]["rank"] == 1 else None
        lines = [f"# Sweep summary: {sweep_dir.name}", "",
                 f"{len(rows)} jobs, {failed} failed. Ranked by `{objective_name}` ({self.mode})."]
        if best is not None:
            swept = ", ".join(f"{key}={best[key]:g}" if isinstance(best[key], float) else f"{key}={best[key]}"
                              for key in parameters)
            lines.append(f"Best: job {best['job']} ({swept or best['overrides']}), "
                         f"{objective_name} = {best['objective']:.4f}.")
        lines += ["", markdown_table(rows, [c for c in rows[0] if c not in ("overrides", "dir")]), ""]
        if picture is not None:
            lines += [f"![{objective_name}]({picture.name})", ""]
        return "\n".join(lines)

    def draw(self, rows: Sequence[dict[str, Any]], parameters: Sequence[str], objective_name: str,
             sweep_dir: Path) -> Path | None:
        if len(parameters) != 2:
            return None
        from lit_imbalance import plots  # matplotlib only when there is something to draw

        row_key, column_key = parameters
        grid = heatmap_grid(rows, row_key, column_key)
        if grid is not None:
            figure = plots.sweep_heatmap(*grid, row_label=row_key, column_label=column_key,
                                         value_label=objective_name, mode=self.mode)
            path = sweep_dir / "sweep_heatmap.png"
        elif all(isinstance(row.get(key), float) for row in rows for key in parameters):
            figure = plots.sweep_scatter(
                [row[column_key] for row in rows], [row[row_key] for row in rows],
                [row["objective"] if row["objective"] != "" else math.nan for row in rows],
                x_label=column_key, y_label=row_key, value_label=objective_name, mode=self.mode,
            )
            path = sweep_dir / "sweep_scatter.png"
        else:
            return None
        plots.save_figure(figure, path)
        return path

    def log_to_wandb(self, config: DictConfig, rows: Sequence[dict[str, Any]], picture: Path | None,
                     sweep_dir: Path) -> None:
        import wandb

        settings = config.logger.wandb
        run = wandb.init(
            project=OmegaConf.select(settings, "project", default=None),
            entity=OmegaConf.select(settings, "entity", default=None),
            group=sweep_dir.name, job_type="sweep-summary", name=f"{sweep_dir.name}-summary",
            dir=str(sweep_dir), mode="offline" if OmegaConf.select(settings, "offline", default=False) else None,
            reinit="finish_previous",
        )
        try:
            # Empty cells become None: a wandb column holds one type, optional values allowed.
            data = [[None if value == "" else value for value in row.values()] for row in rows]
            run.log({"sweep/summary": wandb.Table(columns=list(rows[0]), data=data)})
            if picture is not None:
                run.log({"sweep/objective": wandb.Image(str(picture))})
        finally:
            run.finish()
