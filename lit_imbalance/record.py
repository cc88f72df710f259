"""``metrics.json``: the one record of a run, with its keys defined here.

The writer callback (:class:`~lit_imbalance.callbacks.MetricsJsonWriter`), the
app, the sweep summary and the benchmarks read and write it through this
module only. The record is a flat JSON object: the fixed fields below, plus
every logged scalar under its logged name (``val/balanced_acc``,
``test/recall/<class>``, ...; see :class:`~lit_imbalance.ImbalanceMixin`).
"""

from __future__ import annotations

import json
import os
import uuid
from enum import Enum
from pathlib import Path
from typing import Any

#: The file name of the record in a run directory.
RECORD_FILE = "metrics.json"


class Status(str, Enum):
    """How far a run got. A JSON string in the record (``"finished"``, ...)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Key:
    """The fixed fields of the record (the logged metrics use their logged names)."""

    #: A :class:`Status` value.
    STATUS = "status"
    #: ``"<ExceptionType>: <message>"`` of a failed or interrupted run.
    ERROR = "error"
    #: What a sweeper optimises: the best value of ``OPTIMIZED_METRIC`` (validation only).
    OBJECTIVE = "objective"
    #: The name of the metric behind ``OBJECTIVE``, e.g. ``val/balanced_acc``.
    OPTIMIZED_METRIC = "optimized_metric"
    #: Training samples per class (multi-label: positives per label).
    TRAIN_CLASS_COUNTS = "train_class_counts"
    #: What a rebalancing sampler draws per class and epoch, in expectation.
    SAMPLER_EXPECTED_CLASS_COUNTS = "sampler_expected_class_counts"
    #: Seconds from the start to the end of ``fit``.
    TRAIN_TIME_S = "train_time_s"
    #: Names of the classes with no training sample (the model cannot learn them).
    CLASSES_ABSENT_FROM_TRAIN = "classes_absent_from_train"

    @staticmethod
    def without_support(stage: str) -> str:
        """The key of the classes ``stage`` (``val``, ``test``) has no sample of.

        Example:
            >>> Key.without_support("test")
            'test/classes_without_support'
        """
        return f"{stage}/classes_without_support"

    @staticmethod
    def best(monitor: str) -> str:
        """The key of the checkpoint callback's best score of ``monitor``.

        Example:
            >>> Key.best("val/balanced_acc")
            'best/val/balanced_acc'
        """
        return f"best/{monitor}"


def read_record(path: Path) -> dict[str, Any]:
    """The JSON object at ``path``, or ``{}`` when there is no file yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Replace ``path`` with ``record`` atomically: a reader never sees a half-written file.

    The scratch file is unique to this write (process and call), so concurrent
    writers never share one; the last rename wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        scratch.write_text(json.dumps(record, indent=2, sort_keys=True, default=_json_value) + "\n")
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
