"""Hydra multiruns: a summary of every sweep, failed jobs as rows, DDP inside sweeps.

``python train.py -m loss=focal loss.alpha=0.25,0.5 loss.gamma=0,2`` runs one
Hydra job per parameter set, each in ``<sweep dir>/<job number>/`` with its own
``metrics.json``. This module adds the three things a sweep needs on top:

- :class:`SweepSummary`, a Hydra callback (``hydra.callbacks`` in
  ``conf/train.yaml``) that reads every job's ``metrics.json`` at the end of the
  multirun and writes ``sweep_summary.csv`` / ``sweep_summary.md`` ranked by the
  objective, plus a heat-map when exactly two numeric parameters were swept;
- :func:`keep_sweeping`, for the task function: in a multirun a job that raises
  is logged, recorded as ``status: failed`` and the sweep goes on;
- :func:`ddp_job_scope`, for the app: makes Lightning's DDP re-launch
  (``strategy=ddp``, or ``auto`` with several devices) run *this job* in the
  child processes instead of the whole sweep.

It also registers the ``sweep_group`` and ``sweep_job_name`` resolvers used by
``conf/logger/wandb.yaml`` to group a sweep's wandb runs and name them after
their overrides.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf, read_write

from lit_imbalance._checks import check_choice
from lit_imbalance.callbacks.metrics_json import read_record, write_record

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: What a failed job returns to the sweeper: Optuna records a NaN objective as a failed trial.
FAILED = float("nan")
#: metrics.json keys shown for every job, after the objective.
SUMMARY_METRICS = (
    "best/val/balanced_acc",
    "test/balanced_acc",
    "test/many_recall",
    "test/medium_recall",
    "test/few_recall",
    "train_time_s",
)
# Set by Lightning's script launcher for the children and by `_init_dist_connection`;
# left behind they would make the next job's trainer believe it was launched externally.
DDP_ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides that belong to the sweep, not to the job a DDP child re-runs.
SWEEP_ONLY_OVERRIDES = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher",
                        "hydra/launcher", "hydra.run", "hydra.job.name", "hydra.output_subdir")
CHILD_EXIT_TIMEOUT_S = 60.0


def in_multirun() -> bool:
    """Whether the current process runs a job of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_launching_process() -> bool:
    """False in processes started by a launcher with a rank (DDP children, torchrun, SLURM tasks > 0)."""
    rank = next((os.environ[key] for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if key in os.environ), "0")
    return rank == "0"


# --- the task side ------------------------------------------------------------------------


def keep_sweeping(task: Callable[[DictConfig], float | None]) -> Callable[[DictConfig], float | None]:
    """Wrap a Hydra task so that, in a multirun, a failing job does not end the sweep.

    Hydra's sweepers stop at the first failed job (the basic sweeper after its
    batch, without calling ``on_multirun_end``; Optuna's by default too). In a
    multirun the wrapped task logs the traceback to the job's log, records
    ``status: failed`` and the error in the job's ``metrics.json`` (the writer
    callback already does so for errors inside ``fit``; this covers errors
    before it, e.g. a bad override value) and returns :data:`FAILED`. A single
    run still raises.
    """

    @functools.wraps(task)
    def run(cfg: DictConfig) -> float | None:
        if not in_multirun():
            return task(cfg)
        try:
            return task(cfg)
        except Exception as error:
            job = HydraConfig.get().job
            log.exception("Job #%s (%s) failed; the sweep goes on and lists it as failed.",
                          job.num, job.override_dirname)
            record_failure(Path(HydraConfig.get().runtime.output_dir) / METRICS_FILE, error)
            return FAILED

    return run


def record_failure(path: Path, error: BaseException) -> None:
    """Mark the run at ``path`` (a ``metrics.json``) as failed, keeping what it had measured."""
    values = read_record(path)
    if values.get("status") != "failed":
        values["status"] = "failed"
        values["error"] = f"{type(error).__name__}: {error}"
    write_record(path, values)


@contextmanager
def ddp_job_scope(trainer: L.Trainer) -> Iterator[None]:
    """Make a DDP re-launch inside a multirun job run that job, once, in the job's directory.

    Lightning starts DDP ranks > 0 by re-running ``sys.argv`` with
    ``hydra.run.dir=<HydraConfig.run.dir>``. In a multirun ``sys.argv`` holds the
    whole sweep (``-m a=1,2``) and ``run.dir`` is not the job's directory, so each
    child would run its own copy of the sweep elsewhere. Within this scope the
    children get the job's own overrides in run mode and the job's output
    directory; afterwards the children are reaped and the process group and the
    DDP environment variables are cleared, so the next job launches afresh.
    Outside a multirun, with another launcher (``ddp_spawn``, one device) or
    when the processes are started externally (torchrun, SLURM), it does nothing.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    # Under torchrun or SLURM every rank runs the sweep itself, in step: nothing to re-launch.
    relaunches = (isinstance(launcher, _SubprocessScriptLauncher)
                  and not launcher.cluster_environment.creates_processes_externally)
    if not (in_multirun() and relaunches):
        yield
        return
    hydra = HydraConfig.get()
    saved_argv, saved_run_dir = sys.argv, hydra.run.dir
    saved_env = {key: os.environ.get(key) for key in DDP_ENV_VARS}
    carried = [o for o in hydra.overrides.hydra if not o.lstrip("+~").startswith(SWEEP_ONLY_OVERRIDES)]
    # hydra.mode=RUN: a config that sets `hydra.mode: MULTIRUN` (hparams_search) must not sweep in a child.
    sys.argv = [saved_argv[0], *hydra.overrides.task, *carried, "hydra.mode=RUN"]
    with read_write(hydra.run):
        hydra.run.dir = hydra.runtime.output_dir
    failed = True
    try:
        yield
        failed = False
    finally:
        # A failed rank 0 leaves the children waiting in a collective: close the group
        # first so they fail fast; a finished one lets them finish their teardown first.
        if failed:
            _destroy_process_group()
        _reap(launcher)
        _destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.argv = saved_argv
        with read_write(hydra.run):
            hydra.run.dir = saved_run_dir


def _reap(launcher: _SubprocessScriptLauncher) -> None:
    children = list(launcher.procs)
    # Lightning's observer thread kills this process when a child exits non-zero;
    # emptying the list it watches ends it, so one failed job cannot end the sweep.
    launcher.procs.clear()
    for child in children:
        try:
            child.wait(timeout=CHILD_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("DDP child %s did not exit within %.0f s; killing it.", child.pid, CHILD_EXIT_TIMEOUT_S)
            child.kill()
            child.wait()


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- wandb naming -------------------------------------------------------------------------


def sweep_group() -> str | None:
    """The sweep directory's name in a multirun (groups the sweep's wandb runs), else ``None``."""
    return Path(HydraConfig.get().sweep.dir).name if in_multirun() else None


def sweep_job_name() -> str | None:
    """The job's overrides (``loss.alpha=0.25,loss.gamma=2``) in a multirun, else ``None``."""
    return (HydraConfig.get().job.override_dirname or None) if in_multirun() else None


for _name, _resolver in (("sweep_group", sweep_group), ("sweep_job_name", sweep_job_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


# --- the summary --------------------------------------------------------------------------


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
        return str(self.metrics.get("status", "failed"))

    @property
    def objective(self) -> float | None:
        value = self.metrics.get("objective")
        finished = self.status == "finished"
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
        metrics = read_record(directory / METRICS_FILE)
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
        row.update({key: job.metrics.get(key, "") if job.status == "finished" else "" for key in SUMMARY_METRICS})
        row["overrides"] = " ".join(job.overrides)
        row["error"] = job.metrics.get("error", "" if job.status == "finished" else "no metrics.json")
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

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_launching_process():
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir)
        if not jobs:
            log.warning("No job directories under %s: nothing to summarise.", sweep_dir)
            return
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
