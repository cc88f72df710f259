"""DDP inside a Hydra multirun: make Lightning's re-launched ranks run the current job, once.

Lightning starts DDP ranks > 0 by re-running ``sys.argv``; in a multirun that
is the whole sweep. :func:`ddp_job_scope` points the children at the job.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import read_write

from lit_imbalance import _compat
from lit_imbalance._checks import fail
from lit_imbalance.runtime import in_multirun

log = logging.getLogger(__name__)

# Set by Lightning's script launcher for the children and by `_init_dist_connection`;
# left behind they would make the next job's trainer believe it was launched externally.
DDP_ENV_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides that belong to the sweep, not to the job a DDP child re-runs.
SWEEP_ONLY_OVERRIDES = ("hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher",
                        "hydra/launcher", "hydra.run", "hydra.job.name", "hydra.output_subdir")
CHILD_EXIT_TIMEOUT_S = 60.0
# Hydra's own launcher runs each job in the process that the command line started.
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


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
    if in_multirun():
        check_launcher_starts_ranks(trainer)
    # Under torchrun or SLURM every rank runs the sweep itself, in step: nothing to re-launch.
    if not (in_multirun() and _compat.script_relaunches(trainer)):
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
        _reap(trainer)
        _destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.argv = saved_argv
        with read_write(hydra.run):
            hydra.run.dir = saved_run_dir


def check_launcher_starts_ranks(trainer: L.Trainer) -> None:
    """Refuse, before training, DDP ranks that this multirun job's launcher cannot start.

    * A joblib (loky) worker starts no ranks at all: ``strategy=ddp`` re-runs the
      worker's command line, which is loky's, and ``ddp_spawn``'s children die on
      loky's start method (both seen: the jobs failed without a metrics.json).
    * Other launchers (submitit) run the job from their own command line too, so
      ``ddp`` cannot re-run it; ``ddp_spawn`` works there, and SLURM tasks
      (``tasks_per_node`` = devices) start every rank themselves.
    """
    launcher = str(HydraConfig.get().launcher.get("_target_", BASIC_LAUNCHER))
    if launcher == BASIC_LAUNCHER:
        return
    # ddp_spawn starts a process even for one device; ddp with one device starts none.
    if launcher.endswith("JoblibLauncher") and (trainer.world_size > 1 or _compat.spawns_processes(trainer)):
        fail("trainer.devices", "1 under hydra/launcher=joblib, whose worker processes cannot start DDP ranks "
             "(sweep DDP jobs with the basic launcher, or submitit with strategy=ddp_spawn)", trainer.num_devices)
    if _compat.script_relaunches(trainer) and trainer.world_size > 1:
        fail("strategy", f"ddp_spawn under {launcher.rsplit('.', 1)[-1]}, whose jobs do not run from the command "
             "line that strategy=ddp re-runs for ranks > 0", "ddp")


def _reap(trainer: L.Trainer) -> None:
    for child in _compat.take_relaunched_children(trainer):
        try:
            child.wait(timeout=CHILD_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("DDP child %s did not exit within %.0f s; killing it.", child.pid, CHILD_EXIT_TIMEOUT_S)
            child.kill()
            child.wait()


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
