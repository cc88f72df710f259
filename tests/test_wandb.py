"""What an offline wandb run holds after `python train.py`: per-class metrics, table, pictures."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wandb.proto import wandb_internal_pb2

from tests.conftest import run_train_py

CLASSES = [str(c) for c in range(10)]
LOG_BLOCK = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks
FULL, LAST = 1, 4


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The protobuf records of a run's ``.wandb`` transaction log.

    wandb 0.2x+ no longer ships a Python reader (its Go core writes the file), so
    this reads the documented format: a 7-byte ``:W&B`` header, then records of
    ``crc32 (4) | length (2) | type (1) | data`` that never straddle a block
    (a fragment is FULL=1, FIRST=2, MIDDLE=3 or LAST=4).
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left_in_block = LOG_BLOCK - position % LOG_BLOCK
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left_in_block < 7 or (kind == 0 and length == 0):  # block padding
            position += left_in_block
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """The run record, the last logged value of every key and the files dir of one offline run."""
    (log_file,) = run_dir.glob("*.wandb")
    history: dict[str, Any] = {}
    run = None
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            for item in record.history.item:
                history["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    assert run is not None, f"no run record in {log_file}"
    return {"run": run, "history": history, "files": run_dir / "files"}


def offline_runs(directory: Path) -> list[Path]:
    return sorted(directory.glob("wandb/offline-run-*"))


def test_offline_run_holds_per_class_recall_table_and_pictures(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py("trainer.max_epochs=2", "trainer.enable_progress_bar=false", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (offline_dir,) = offline_runs(run_dir)
    wandb_run = read_offline_run(offline_dir)

    # Every per-class scalar made it into wandb, with the value metrics.json has.
    for name in CLASSES:
        assert wandb_run["history"][f"test/recall/{name}"] == pytest.approx(metrics[f"test/recall/{name}"])
        assert wandb_run["history"][f"test/support/{name}"] == 50
    # A single run is neither grouped nor named after overrides (wandb picks the name).
    assert wandb_run["run"].run_group == ""

    # The per-class table: one row per class, head class first, the run's own numbers.
    (table_file,) = (wandb_run["files"] / "media" / "table" / "test").glob("per_class_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["class", "train_count", "shot", "recall", "support"]
    rows = {row[0]: row for row in table["data"]}
    assert [row[1] for row in table["data"]] == sorted(metrics["train_class_counts"], reverse=True)
    for name in CLASSES:
        assert rows[name][1] == metrics["train_class_counts"][int(name)]
        assert rows[name][3] == pytest.approx(metrics[f"test/recall/{name}"])
        assert rows[name][4] == 50
    assert rows["0"][2] == "many" and rows["9"][2] == "few"
    # The bar chart is a vega spec over that table; the pictures are logged as images.
    assert wandb_run["history"]["test/per_class_recall_table/nrows"] == 10
    images = wandb_run["files"] / "media" / "images" / "test"
    assert list(images.glob("recall_by_frequency_*.png")) and list(images.glob("confusion_matrix_*.png"))
