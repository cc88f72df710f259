"""Multiruns: the summary, failed jobs, wandb grouping, DDP inside a sweep, the Optuna search."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from lit_imbalance.job_failures import keep_sweeping, record_failure
from lit_imbalance.sweep import SweepSummary, heatmap_grid
from tests.conftest import CONF_DIR, ROOT, subprocess_env
from tests.test_plots import read_png
from tests.test_wandb import offline_runs, read_offline_run

TEXT_COLUMNS = ("status", "overrides", "error", "dir")
QUIET = ("trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
HAS_FOCAL = (CONF_DIR / "loss" / "focal.yaml").is_file()
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
HAS_JOBLIB = importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
# The alpha x gamma grid of the issue once the focal loss exists; two model knobs until then.
if HAS_FOCAL:
    GRID = {"loss.alpha": (0.25, 0.75), "loss.gamma": (0.0, 2.0)}
    GRID_EXTRA: tuple[str, ...] = ("loss=focal",)
else:
    GRID = {"model.dropout": (0.0, 0.5), "model.optimizer.lr": (0.003, 0.03)}
    GRID_EXTRA = ()


def run_multirun(
    *overrides: str, sweep_dir: Path, timeout: float = 600, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python train.py -m <overrides>`` in a subprocess, Hydra writing the sweep to ``sweep_dir``."""
    env = subprocess_env(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *overrides, *QUIET, f"hydra.sweep.dir={sweep_dir}"],
        cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=timeout,
    )


def read_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """sweep_summary.csv with numbers as floats (rank and job as ints)."""
    with open(sweep_dir / "sweep_summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key in TEXT_COLUMNS:
                continue
            try:
                row[key] = int(value) if key in ("rank", "job") else float(value)
            except ValueError:
                pass
    return rows


def job_metrics(sweep_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    return json.loads((sweep_dir / str(row["dir"]) / "metrics.json").read_text())


# --- real multiruns -----------------------------------------------------------------------


def test_grid_sweep_is_summarised_ranked_and_drawn(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    swept = [f"{key}={','.join(str(v) for v in values)}" for key, values in GRID.items()]
    result = run_multirun(*GRID_EXTRA, *swept, "logger=none", "trainer.max_epochs=2", sweep_dir=sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = read_summary(sweep_dir)
    row_key, column_key = GRID
    assert sorted((row[row_key], row[column_key]) for row in rows) == sorted(itertools.product(*GRID.values()))
    assert sorted(row["job"] for row in rows) == [0, 1, 2, 3]
    for row in rows:  # every number comes from that job's own metrics.json
        metrics = job_metrics(sweep_dir, row)
        assert row["status"] == metrics["status"] == "finished"
        assert row["objective"] == pytest.approx(metrics["objective"])
        assert row["test/balanced_acc"] == pytest.approx(metrics["test/balanced_acc"])
        assert row["test/few_recall"] == pytest.approx(metrics["test/few_recall"])
    assert [row["rank"] for row in rows] == [1, 2, 3, 4]
    objectives = [row["objective"] for row in rows]
    assert objectives == sorted(objectives, reverse=True)

    markdown = (sweep_dir / "sweep_summary.md").read_text()
    assert "4 jobs, 0 failed" in markdown and f"Best: job {rows[0]['job']} " in markdown
    assert sum(line.startswith("| ") for line in markdown.splitlines()) == 1 + len(rows)

    # The heat-map shows the objective of each (row, column) job.
    row_values, column_values, grid = heatmap_grid(rows, row_key, column_key)
    assert (row_values, column_values) == (list(GRID[row_key]), list(GRID[column_key]))
    for row in rows:
        cell = grid[row_values.index(row[row_key]), column_values.index(row[column_key])]
        assert cell == pytest.approx(row["objective"])
    image = read_png(sweep_dir / "sweep_heatmap.png")
    assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0


def test_failed_job_is_a_row_and_wandb_runs_are_grouped_by_sweep(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # dropout=1.5 composes but fails when the model is built: a bad value in one job.
    result = run_multirun("model.dropout=0.1,1.5", "trainer.max_epochs=1", sweep_dir=sweep_dir)
    # The sweep went on past the failed job, wrote its summary, and its exit code says a job failed.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "failed; the sweep goes on" in result.stdout + result.stderr
    assert "did not finish" in result.stdout + result.stderr

    rows = {row["job"]: row for row in read_summary(sweep_dir)}
    assert rows[0]["status"] == "finished" and rows[0]["rank"] == 1
    assert rows[1]["status"] == "failed" and rows[1]["rank"] == "" and rows[1]["objective"] == ""
    assert "`dropout`" in rows[1]["error"] and "1.5" in rows[1]["error"]
    assert json.loads((sweep_dir / "1" / "metrics.json").read_text())["status"] == "failed"
    assert "2 jobs, 1 failed" in (sweep_dir / "sweep_summary.md").read_text()

    # The finished job's wandb run: grouped by the sweep, named after its overrides.
    (job_run,) = offline_runs(sweep_dir / "0")
    record = read_offline_run(job_run)["run"]
    override_dirname = OmegaConf.load(sweep_dir / "0" / ".hydra" / "hydra.yaml").hydra.job.override_dirname
    assert record.run_group == sweep_dir.name
    assert record.display_name == override_dirname and "model.dropout=0.1" in record.display_name
    assert "test/recall/9" in read_offline_run(job_run)["history"]
    # ...and the summary is a run of the same group.
    (summary_run,) = offline_runs(sweep_dir)
    summary = read_offline_run(summary_run)
    assert summary["run"].run_group == sweep_dir.name and summary["run"].job_type == "sweep-summary"
    assert summary["history"]["sweep/summary/nrows"] == 2


def test_ddp_jobs_of_a_multirun_each_run_once_in_their_own_dir(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_multirun(
        "model.dropout=0.1,0.3", "strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "logger=none",
        "trainer.max_epochs=1", sweep_dir=sweep_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Without the job scope each child would re-run the whole sweep ("Launching 2 jobs" twice more).
    assert (result.stdout + result.stderr).count("Launching 2 jobs locally") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    for job in ("0", "1"):
        job_dir = sweep_dir / job
        assert (job_dir / "train_ddp_process_1.log").is_file()  # rank 1 of this job wrote here
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert metrics["status"] == "finished"
        assert sum(metrics[f"test/support/{c}"] for c in range(10)) == 500
    assert sorted(p.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob("metrics.json")) == [
        "0/metrics.json", "1/metrics.json"]
    assert [row["status"] for row in read_summary(sweep_dir)] == ["finished", "finished"]


# --- other launchers: joblib (parallel processes) and submitit (local processes, SLURM jobs) ---


TINY = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1")


def run_default_sweep(*overrides: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``python train.py -m <overrides>`` in ``cwd`` with conf/train.yaml's own sweep directory, and that directory.

    Not ``hydra.sweep.dir=...``: the default directory ends in ``${run_id:}``, which every
    worker process re-resolves, and all jobs must still land in the launcher's directory.
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *overrides, *QUIET, *TINY],
        cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    sweep_dirs = list((cwd / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweep_dirs) == 1, (sweep_dirs, result.stderr[-3000:])
    return result, sweep_dirs[0]


def assert_complete_summary(sweep_dir: Path, jobs: int) -> list[dict[str, Any]]:
    """Every job a finished, ranked row whose objective is the one in its own metrics.json."""
    rows = read_summary(sweep_dir)
    assert sorted(row["job"] for row in rows) == list(range(jobs))
    assert [row["rank"] for row in rows] == list(range(1, jobs + 1))
    for row in rows:
        metrics = job_metrics(sweep_dir, row)
        assert row["status"] == metrics["status"] == "finished"
        assert isinstance(row["objective"], float) and row["objective"] == pytest.approx(metrics["objective"])
        assert row["test/balanced_acc"] == pytest.approx(metrics["test/balanced_acc"])
    return rows


@pytest.mark.skipif(not HAS_JOBLIB, reason='the joblib launcher is an extra: pip install -e ".[sweep]"')
def test_joblib_sweep_runs_jobs_in_parallel_and_is_summarised(tmp_path: Path) -> None:
    # In parallel: each job waits, before it trains, until both have started (tests.sweep_probe.meet),
    # which jobs run one after another never do. Comparing log times instead raced the workers' start.
    result, sweep_dir = run_default_sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.dropout=0.1,0.3",
                                          "logger=none", "+callbacks.meet._target_=tests.sweep_probe.meet",
                                          "+callbacks.meet.directory=${hydra:sweep.dir}/started", "+callbacks.meet.jobs=2",
                                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    rows = assert_complete_summary(sweep_dir, 2)
    assert sorted(row["model.dropout"] for row in rows) == [0.1, 0.3]
    assert len(list((sweep_dir / "started").glob("started_*"))) == 2  # two worker processes


@pytest.mark.skipif(not HAS_JOBLIB, reason='the joblib launcher is an extra: pip install -e ".[sweep]"')
def test_joblib_sweep_with_a_failing_job_exits_1_with_a_failed_row_and_grouped_wandb_runs(tmp_path: Path) -> None:
    result, sweep_dir = run_default_sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.dropout=0.1,1.5",
                                          cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "did not finish" in result.stdout + result.stderr
    rows = {row["job"]: row for row in read_summary(sweep_dir)}
    assert rows[0]["status"] == "finished" and rows[0]["rank"] == 1
    assert rows[0]["objective"] == pytest.approx(job_metrics(sweep_dir, rows[0])["objective"])
    assert rows[1]["status"] == "failed" and rows[1]["rank"] == "" and rows[1]["objective"] == ""
    assert "`dropout`" in rows[1]["error"] and "1.5" in rows[1]["error"]
    # The worker process's wandb run: grouped by the sweep, named after the job's overrides.
    (job_run,) = offline_runs(sweep_dir / "0")
    record = read_offline_run(job_run)["run"]
    assert record.run_group == sweep_dir.name and "model.dropout=0.1" in record.display_name
    (summary_run,) = offline_runs(sweep_dir)
    assert read_offline_run(summary_run)["history"]["sweep/summary/nrows"] == 2


@pytest.mark.skipif(not HAS_JOBLIB, reason='the joblib launcher is an extra: pip install -e ".[sweep]"')
def test_joblib_sweep_whose_worker_dies_outright_still_summarises_the_finished_job(tmp_path: Path) -> None:
    # Job 1's worker exits with os._exit(3) once job 0 has finished: no Python cleanup, as a segfault or an
    # OOM kill, and joblib's TerminatedWorkerError then ends the launcher before on_multirun_end.
    result, sweep_dir = run_default_sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=none",
                                          "+callbacks.crash._target_=tests.sweep_probe.survive,"
                                          "tests.sweep_probe.die_once_finished",
                                          "+callbacks.crash.after=${hydra:sweep.dir}/0/metrics.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "TerminatedWorkerError" in result.stderr and "before all its jobs returned" in result.stdout + result.stderr
    rows = {row["job"]: row for row in read_summary(sweep_dir)}
    assert rows[0]["status"] == "finished" and rows[0]["rank"] == 1
    assert rows[0]["objective"] == pytest.approx(job_metrics(sweep_dir, rows[0])["objective"])
    assert rows[1]["status"] == "failed" and rows[1]["objective"] == ""


@pytest.mark.skipif(not HAS_SUBMITIT, reason='the submitit launcher is an extra: pip install -e ".[sweep]"')
def test_submitit_local_sweep_is_summarised(tmp_path: Path) -> None:
    result, sweep_dir = run_default_sweep("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                                          "model.dropout=0.1,0.3", "logger=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = assert_complete_summary(sweep_dir, 2)
    assert sorted(row["model.dropout"] for row in rows) == [0.1, 0.3]
    # Each job ran as its own submitit process, whose logs submitit keeps beside the jobs.
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2


DDP_ON_CPU = ("trainer.devices=2", "trainer.accelerator=cpu", "logger=none")


@pytest.mark.skipif(not HAS_SUBMITIT, reason='the submitit launcher is an extra: pip install -e ".[sweep]"')
def test_submitit_local_runs_ddp_spawn_jobs_and_refuses_ddp_before_training(tmp_path: Path) -> None:
    """``ddp_spawn`` ranks start inside a submitit job; ``ddp`` would re-run submitit's command line."""
    result, sweep_dir = run_default_sweep("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                                          "strategy=ddp_spawn,ddp", *DDP_ON_CPU, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    rows = {row["strategy"]: row for row in read_summary(sweep_dir)}
    spawned = job_metrics(sweep_dir, rows["ddp_spawn"])
    assert rows["ddp_spawn"]["status"] == spawned["status"] == "finished"
    assert sum(spawned[f"test/support/{c}"] for c in range(10)) == 500  # both ranks' test shards counted
    assert rows["ddp"]["status"] == "failed" and rows["ddp"]["error"] == (
        "ValueError: Expected argument `strategy` to be ddp_spawn under LocalLauncher, whose jobs do not run from "
        "the command line that strategy=ddp re-runs for ranks > 0, but got 'ddp'.")
    assert not list((sweep_dir / str(rows["ddp"]["job"])).rglob("*.ckpt"))  # refused before training


@pytest.mark.skipif(not HAS_JOBLIB, reason='the joblib launcher is an extra: pip install -e ".[sweep]"')
def test_joblib_refuses_ddp_jobs_before_training_with_the_key_and_value(tmp_path: Path) -> None:
    result, sweep_dir = run_default_sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                          "strategy=ddp,ddp_spawn", *DDP_ON_CPU, "trainer.devices=2,1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    rows = read_summary(sweep_dir)
    # ddp on one device starts no process: it runs; ddp_spawn starts one even then: refused.
    (one_device_ddp,) = [row for row in rows if row["trainer.devices"] == 1 and row["strategy"] == "ddp"]
    assert one_device_ddp["status"] == "finished"
    rows = [row for row in rows if row is not one_device_ddp]
    assert sorted((row["strategy"], row["trainer.devices"]) for row in rows) == [
        ("ddp", 2), ("ddp_spawn", 1), ("ddp_spawn", 2)]
    for row in rows:
        assert row["status"] == "failed" and row["error"].startswith(
            "ValueError: Expected argument `trainer.devices` to be 1 under hydra/launcher=joblib")
        assert row["error"].endswith(f"but got {int(row['trainer.devices'])}.")
        assert not list((sweep_dir / str(row["job"])).rglob("*.ckpt"))


@pytest.mark.skipif(not HAS_OPTUNA, reason='the Optuna sweeper is an extra: pip install -e ".[sweep]"')
@pytest.mark.skipif(not HAS_FOCAL, reason="hparams_search=focal_optuna needs loss=focal (conf/loss/focal.yaml)")
def test_optuna_searches_alpha_and_gamma_and_maximises_the_returned_objective(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_multirun("hparams_search=focal_optuna", "hydra.sweeper.n_trials=3", "logger=none",
                          "trainer.max_epochs=1", sweep_dir=sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_summary(sweep_dir)
    assert len(rows) == 3 and all(row["status"] == "finished" for row in rows)
    for row in rows:
        assert 0.05 <= row["loss.alpha"] <= 0.95 and 0.0 <= row["loss.gamma"] <= 5.0
    # Optuna's best is the summary's first row: the value it maximised is what `train` returned.
    optuna_result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert optuna_result["best_value"] == pytest.approx(rows[0]["objective"])
    assert optuna_result["best_params"] == pytest.approx({"loss.alpha": rows[0]["loss.alpha"],
                                                          "loss.gamma": rows[0]["loss.gamma"]})
    assert read_png(sweep_dir / "sweep_scatter.png").std() > 0


# --- the summary and the failure path, without training ----------------------------------


def make_job(sweep_dir: Path, num: int, overrides: list[str], metrics: dict[str, Any] | None) -> None:
    job_dir = sweep_dir / str(num)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))


def summarise(sweep_dir: Path, mode: str = "max") -> list[dict[str, Any]]:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}, "optimized_metric": "val/macro_f1"})
    SweepSummary(mode=mode, wandb=False).summarise(sweep_dir, config)
    return read_summary(sweep_dir)


def test_multirun_end_exits_nonzero_after_summarising_failed_jobs(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["a=1"], {"status": "finished", "objective": 0.6})
    make_job(tmp_path, 1, ["a=2"], {"status": "failed", "error": "ValueError: boom"})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "optimized_metric": "val/macro_f1"})
    with pytest.raises(SystemExit) as stopped:
        SweepSummary(wandb=False).on_multirun_end(config)
    assert stopped.value.code == 1
    assert [row["status"] for row in read_summary(tmp_path)] == ["finished", "failed"]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_summary_ranks_finished_jobs_and_lists_every_other_job_unranked(tmp_path: Path, mode: str) -> None:
    finished = {"status": "finished", "test/balanced_acc": 0.5}
    make_job(tmp_path, 0, ["a=1", "b=10", "seed=3"], {**finished, "objective": 0.6})
    make_job(tmp_path, 1, ["a=1", "b=20", "seed=3"], {"status": "failed", "error": "ValueError: boom"})
    make_job(tmp_path, 2, ["a=2", "b=10", "seed=3"], {**finished, "objective": 0.8})
    make_job(tmp_path, 3, ["a=2", "b=20", "seed=3"], None)  # died before writing anything
    rows = summarise(tmp_path, mode)

    assert [row["job"] for row in rows] == ([2, 0, 1, 3] if mode == "max" else [0, 2, 1, 3])
    assert [row["rank"] for row in rows] == [1, 2, "", ""]
    assert [row["status"] for row in rows[2:]] == ["failed", "failed"]
    assert [row["error"] for row in rows[2:]] == ["ValueError: boom", "no metrics.json"]
    assert "seed" not in rows[0]  # not swept: one value only
    assert "val/macro_f1" in (tmp_path / "sweep_summary.md").read_text()
    _, _, grid = heatmap_grid(rows, "a", "b")
    np.testing.assert_allclose(grid, [[0.6, np.nan], [0.8, np.nan]])
    assert (tmp_path / "sweep_heatmap.png").is_file()


def test_summary_draws_no_grid_for_one_or_three_swept_parameters(tmp_path: Path) -> None:
    for num, (a, b, c) in enumerate([(1, 1, 1), (2, 2, 2)]):
        make_job(tmp_path, num, [f"a={a}", f"b={b}", f"c={c}"], {"status": "finished", "objective": 0.1 * num})
    summarise(tmp_path)
    assert not list(tmp_path.glob("sweep_*.png"))


def test_keep_sweeping_only_swallows_errors_in_a_multirun() -> None:
    def task(cfg: Any) -> float:
        raise RuntimeError("broken job")

    with pytest.raises(RuntimeError, match="broken job"):  # a single run still fails loudly
        keep_sweeping(task)(OmegaConf.create({}))


def test_record_failure_keeps_what_the_run_had_measured(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"status": "running", "val/balanced_acc": 0.4}))
    record_failure(path, ValueError("late"))
    assert json.loads(path.read_text()) == {"status": "failed", "error": "ValueError: late", "val/balanced_acc": 0.4}
    record_failure(path, RuntimeError("teardown"))  # the first error is the one that matters
    assert json.loads(path.read_text())["error"] == "ValueError: late"
    record_failure(tmp_path / "new" / "metrics.json", KeyError("x"))
    assert json.loads((tmp_path / "new" / "metrics.json").read_text())["status"] == "failed"
