"""A failing job must not end a sweep: the task wrapper that turns its error into a failed record."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_imbalance.record import RECORD_FILE, Key, Status, read_record, write_record
from lit_imbalance.resolvers import register_resolvers
from lit_imbalance.runtime import in_multirun

log = logging.getLogger(__name__)

# Launchers that run jobs in other processes (joblib, submitit) unpickle the task there without
# running train.py's module code, and resolve the job's `hydra.sweep.dir` (`${run_id:}`) before
# the task starts: importing the task's wrapper, as unpickling it does, must register them.
register_resolvers()

#: What a failed job returns to the sweeper: Optuna records a NaN objective as a failed trial.
FAILED = float("nan")


def keep_sweeping(task: Callable[[DictConfig], float | None]) -> Callable[[DictConfig], float | None]:
    """Wrap a Hydra task so that, in a multirun, a failing job does not end the sweep.

    Hydra's sweepers stop at the first failed job (the basic sweeper after its
    batch, without calling ``on_multirun_end``; Optuna's by default too). In a
    multirun the wrapped task logs the traceback to the job's log, records
    ``status: failed`` and the error in the job's ``metrics.json`` (the writer
    callback already does so for errors inside ``fit``; this covers errors
    before it, e.g. a bad override value) and returns :data:`FAILED`. A single
    run still raises.

    A job stopped by Ctrl-C or SIGTERM stops the sweep (that is what the user
    or the scheduler asked for), but first the sweep's summary is written for
    the jobs that ran, so their results are not lost.
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
            record_failure(Path(HydraConfig.get().runtime.output_dir) / RECORD_FILE, error)
            return FAILED
        except (KeyboardInterrupt, SystemExit):
            summarise_interrupted_sweep(cfg)
            raise

    return run


def summarise_interrupted_sweep(cfg: DictConfig) -> None:
    """Write the summary the sweep would have written at its end, from the jobs under its directory."""
    hydra = HydraConfig.get()
    summary_config = OmegaConf.select(hydra, "callbacks.sweep_summary", default=None)
    if summary_config is None:
        return
    from lit_imbalance.sweep import SweepSummary  # the summary's plotting stack only when needed

    summary = instantiate(summary_config)
    if isinstance(summary, SweepSummary):
        log.warning("Sweep interrupted in job #%s: writing the summary of the jobs so far.", hydra.job.num)
        summary.summarise(Path(hydra.sweep.dir), cfg)


def record_failure(path: Path, error: BaseException) -> None:
    """Mark the run at ``path`` (a ``metrics.json``) as failed, keeping what it had measured."""
    values = read_record(path)
    if values.get(Key.STATUS) != Status.FAILED:
        values[Key.STATUS] = Status.FAILED
        values[Key.ERROR] = f"{type(error).__name__}: {error}"
    write_record(path, values)
