"""Bad input fails before training, in one line naming the key and the value, with exit status 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_train_py

FAST = ("logger=none", "trainer.max_epochs=1", "trainer.enable_progress_bar=false")


def write_files(directory: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)), np.repeat([0, 1, 2], 40)
    files = {name: directory / f"{name}.npz" for name in ("short", "strings", "features", "text", "empty")}
    np.savez(files["short"], x_train=x, y_train=y[:-10], x_test=x[:30], y_test=y[:30])
    np.savez(files["strings"], x_train=x, y_train=np.array(["a", "b", "c"] * 40), x_test=x[:30], y_test=y[:30])
    np.savez(files["features"], x_train=x, y_train=y, x_test=x[:30, :4], y_test=y[:30])
    files["text"].write_text("not an archive")
    files["empty"].write_bytes(b"")
    files["npy"] = directory / "array.npy"
    np.save(files["npy"], x)
    files["ok"] = directory / "ok.npz"
    np.savez(files["ok"], x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    return files


CASES = {
    # case: (overrides given the files, what the one line must say)
    "labels shorter than features": (lambda f: ["data=npz", f"data.path={f['short']}"],
                                     "`y_train` to be a 1-D label array with one label per row of x_train (120)"),
    "string labels": (lambda f: ["data=npz", f"data.path={f['strings']}"], "`y_train` to be integer class labels"),
    "feature counts differ": (lambda f: ["data=npz", f"data.path={f['features']}"],
                              "`x_test` to be 5 features per row, as x_train has, but got 4"),
    "not an npz": (lambda f: ["data=npz", f"data.path={f['text']}"], "`path` to be an .npz archive"),
    "empty file": (lambda f: ["data=npz", f"data.path={f['empty']}"], "`path` to be a non-empty .npz file"),
    "an npy file": (lambda f: ["data=npz", f"data.path={f['npy']}"], "not a single .npy array"),
    "zero classes": (lambda f: ["data=npz", f"data.path={f['ok']}", "data.num_classes=0"],
                     "`num_classes` to be a positive integer, but got 0"),
    "max_epochs not a number": (lambda f: ["trainer.max_epochs=abc"],
                                "`trainer.max_epochs` to be an integer (or null), but got 'abc'"),
    "negative gamma": (lambda f: ["loss=focal", "loss.gamma=-1"], "`gamma` to be a non-negative float, but got -1"),
    "plots folder not writable": (lambda f: [f"callbacks.plots.dirpath={f['ok']}/plots"],
                                  "`dirpath` to be a writable folder for the plots"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("files"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_training(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    overrides, expected = CASES[case]
    run_dir = tmp_path / "run"
    result = run_train_py(*FAST, *overrides(files), run_dir=run_dir)  # the case wins over FAST
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (run_dir / "checkpoints").exists()  # nothing trained


def test_full_traceback_stays_available(files: dict[str, Path], tmp_path: Path) -> None:
    result = run_train_py("data=npz", f"data.path={files['empty']}", *FAST, run_dir=tmp_path / "run",
                          env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
