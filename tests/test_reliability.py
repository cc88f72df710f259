"""Real runs survive: exact resume, preemption, interrupts, concurrent runs, honest exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import ROOT, run_train_py, subprocess_env
from tests.test_sweep import read_summary, run_multirun

QUIET = ("logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.plots=null")
# Long enough to be interrupted mid-fit on any machine, short enough for a test (digits: ~30 ms an epoch).
LONG_FIT = "trainer.max_epochs=150"
COMPARED = ("test/balanced_acc", "test/loss", "val/balanced_acc", "best/val/balanced_acc", "objective",
            "train/loss_epoch", "test/recall/9")


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def start_train_py(*overrides: str, run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent, env=subprocess_env({"OMP_NUM_THREADS": "1"}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )


def default_sigint() -> None:
    """In the child, before exec: SIGINT as a shell leaves it.

    A process started with SIGINT ignored keeps it ignored (Python installs its
    KeyboardInterrupt handler only for a signal that is not), and an earlier
    in-process test can leave a pytest worker ignoring it (Lightning sets SIG_IGN
    in its shutdown paths; which test did it in two CI runs is not pinned down).
    Ctrl-C then did nothing there, and the run finished with exit 0.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_after_checkpoints(process: subprocess.Popen[str], run_dir: Path, sig: signal.Signals) -> int:
    """Send ``sig`` once the run has written a few epoch-end checkpoints; returns the exit code."""
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(sig)
    process.communicate(timeout=300)
    return process.returncode


def test_sigterm_mid_fit_then_resume_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    whole, preempted = tmp_path / "whole", tmp_path / "preempted"
    result = run_train_py(*QUIET, LONG_FIT, run_dir=whole, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]

    code = interrupt_after_checkpoints(start_train_py(*QUIET, LONG_FIT, run_dir=preempted), preempted, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM  # preempted is not finished: the scheduler must see it
    interrupted = record(preempted)
    assert interrupted["status"] == "interrupted" and "SIGTERM" in interrupted["error"]
    stopped_at = torch.load(preempted / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert 3 <= stopped_at < 149

    resumed = run_train_py(*QUIET, LONG_FIT, "ckpt_path=last", run_dir=preempted, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record(preempted)["status"] == "finished"
    assert {k: record(preempted)[k] for k in COMPARED} == {k: record(whole)[k] for k in COMPARED}


def test_ctrl_c_is_an_interrupted_run_with_a_nonzero_exit(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = interrupt_after_checkpoints(start_train_py(*QUIET, LONG_FIT, run_dir=run_dir), run_dir, signal.SIGINT)
    assert code != 0
    assert record(run_dir)["status"] == "interrupted"


def test_checkpoints_hold_plain_containers_and_last_is_every_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py(*QUIET, "trainer.max_epochs=4", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    # weights_only=True refuses anything but tensors and plain containers (no OmegaConf, no numpy).
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3  # the final epoch, whether or not validation improved in it
    assert isinstance(last["hyper_parameters"]["hidden_sizes"], list)
    assert "metrics.json" in result.stdout + result.stderr  # the run says where its record went


def test_runs_started_together_get_their_own_directories(tmp_path: Path) -> None:
    """Default run directories (time to the second) of two runs started at once never collide."""
    commands = [[sys.executable, str(ROOT / "train.py"), *QUIET, f"loss={loss}", "trainer.max_epochs=2"]
                for loss in ("ce", "focal")]
    processes = [subprocess.Popen(c, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for c in commands]
    for process in processes:
        process.communicate(timeout=300)
        assert process.returncode == 0
    run_dirs = sorted((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(run_dirs) == 2
    losses = {}
    for run_dir in run_dirs:
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        losses["focal" if "loss=focal" in overrides else "ce"] = record(run_dir)["test/loss"]
    assert set(losses) == {"ce", "focal"} and losses["ce"] != losses["focal"]


def test_sweep_whose_jobs_all_fail_exits_nonzero_with_a_summary(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_multirun("model.dropout=1.5,2.5", "trainer.max_epochs=1", "logger=none", sweep_dir=sweep_dir)
    assert result.returncode == 1
    assert [row["status"] for row in read_summary(sweep_dir)] == ["failed", "failed"]


def test_interrupted_sweep_summarises_the_jobs_that_finished(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *QUIET, "trainer.max_epochs=2,150",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=subprocess_env({"OMP_NUM_THREADS": "1"}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    code = interrupt_after_checkpoints(process, sweep_dir / "1", signal.SIGTERM)
    assert code != 0
    rows = {row["job"]: row for row in read_summary(sweep_dir)}
    assert rows[0]["status"] == "finished" and rows[0]["rank"] == 1
    assert rows[1]["status"] == "interrupted"
