"""Callbacks for sweep tests: one job that dies outright once another job has finished.

``_target_`` of a callback entry, swept per job: ``survive`` builds a callback that does
nothing; ``die_once_finished`` waits until the record at ``after`` says ``finished`` and
then ends its process with ``os._exit(3)`` (no Python cleanup, as a segfault or an OOM kill).
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
