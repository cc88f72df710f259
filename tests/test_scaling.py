"""Feature standardisation in row blocks: the same values as whole-array numpy, in bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lit_imbalance.data import NpzDataModule, scaling
from lit_imbalance.data.scaling import Standardizer, column_statistics


def features_with_gaps(rows: int = 11) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 4)) * [1.0, 1e3, 1e-3, 1.0] + [0.0, 1e6, 5.0, 0.0]
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 3] = np.nan  # all missing
    x[0, 0] = np.nan
    return x


def test_statistics_over_blocks_of_two_rows_equal_numpy_over_the_whole_array(monkeypatch: pytest.MonkeyPatch) -> None:
    x = features_with_gaps()
    monkeypatch.setattr(scaling, "CHUNK_VALUES", 8)  # 4 features: blocks of 2 rows, 6 blocks
    mean, std = column_statistics(x)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # numpy warns of the all-missing column
        expected_mean, expected_std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    np.testing.assert_allclose(mean[:3], expected_mean[:3], rtol=1e-13)
    np.testing.assert_allclose(std[:3], expected_std[:3], rtol=1e-12)
    assert (mean[3], std[3]) == (0.0, 1.0)  # all missing: centred at 0, never divided by 0
    scaled = Standardizer.fit(x).transform(x).numpy()
    np.testing.assert_array_equal(scaled, ((x - mean) / std).astype(np.float32))  # NaN stays NaN, exactly


def test_a_value_past_float32_in_a_later_block_is_reported_at_its_own_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaling, "CHUNK_VALUES", 8)
    scaler = Standardizer.fit(np.random.default_rng(0).normal(size=(20, 4)))
    far = np.zeros((11, 4))
    far[7, 2] = 1e60
    with pytest.raises(ValueError, match=r"`x_val` to be features within float32's range.*'1e\+60 at row 7, column c'"):
        scaler.transform(far, "x_val", ["a", "b", "c", "d"])


def test_npz_standardising_peaks_below_four_times_the_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-array float64 copies peaked at 6.9x the file's features; blocks need the result and one block.

    (The file, its two splits and the scaled features are about 3x; blocks of 2 MB keep a
    test-sized file's block small beside them, as the 32 MB default is beside a large file.)
    """
    monkeypatch.setattr(scaling, "CHUNK_VALUES", 1 << 18)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 200)).astype(np.float32)  # 24 MB
    y = rng.integers(0, 5, size=len(x))
    np.savez(tmp_path / "d.npz", x_train=x[:25_000], y_train=y[:25_000], x_test=x[25_000:], y_test=y[25_000:])
    tracemalloc.start()
    try:
        module = NpzDataModule(path=str(tmp_path / "d.npz"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert module.feature_scaler is not None
    assert peak < 4 * x.nbytes, f"peak {peak / x.nbytes:.2f}x the features"
