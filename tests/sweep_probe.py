"""Callbacks for sweep tests: one job that dies outright once another job has finished, and jobs that meet.

``_target_`` of a callback entry, swept per job: ``survive`` builds a callback that does
nothing; ``die_once_finished`` waits until the record at ``after`` says ``finished`` and
then ends its process with ``os._exit(3)`` (no Python cleanup, as a segfault or an OOM kill).
``meet`` holds each job until every job of the sweep has started: jobs that run one after
another never meet, so their first job fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from lit_imbalance.record import read_record


def survive(after: str) -> Callback:
    """A callback that does nothing (``after`` only mirrors :func:`die_once_finished`)."""
    return Callback()


def die_once_finished(after: str, timeout_s: float = 300.0) -> Callback:
    """Wait for ``after`` (a metrics.json) to record a finished run, then exit this process at once."""
    deadline = time.monotonic() + timeout_s
    while read_record(Path(after)).get("status") != "finished" and time.monotonic() < deadline:
        time.sleep(0.2)
    os._exit(3)


def meet(directory: str, jobs: int, timeout_s: float = 120.0) -> Callback:
    """Mark this job as started in ``directory``, then wait until ``jobs`` jobs have, or raise."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"started_{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(Path(directory).glob("started_*"))) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only this job of {jobs} started within {timeout_s} s: the jobs ran one at a time")
        time.sleep(0.1)
    return Callback()
