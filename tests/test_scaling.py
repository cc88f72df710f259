"""Feature standardisation in row blocks: the same values as whole-array numpy, in bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_imbalance.data import NpzDataModule, scaling
from lit_imbalance.data.scaling import Standardizer, column_statistics, same_state


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


@pytest.mark.parametrize("order", ["C", "F"])
def test_statistics_in_one_block_are_numpys_bit_for_bit(order: str) -> None:
    x = np.asarray(features_with_gaps(rows=500)[:, :3], order=order)  # pandas hands out F-order arrays
    mean, std = column_statistics(x)
    np.testing.assert_array_equal(mean, np.nanmean(x, axis=0))
    np.testing.assert_array_equal(std, np.nanstd(x, axis=0))


def test_infinite_inputs_pass_through_the_scaling_for_the_caller_to_judge() -> None:
    scaler = Standardizer.fit(np.array([[0.0, 1.0], [2.0, 3.0]]))
    assert scaler.transform(np.array([[np.inf, np.nan]])).tolist()[0][0] == np.inf  # refused by make_split, by key


def test_same_state_allows_the_rounding_of_another_summation_order_only() -> None:
    mean = torch.tensor([1e6 + 0.1, -3.0], dtype=torch.float64)
    assert same_state({"mean": mean, "names": ["a"]}, {"mean": mean * (1 + 1e-14), "names": ["a"]})
    assert not same_state({"mean": mean}, {"mean": mean * (1 + 1e-6)})  # a changed file
    assert not same_state({"mean": mean}, {"mean": mean.float()})
    assert not same_state({"names": ["a"]}, {"names": ["b"]})
    assert not same_state({"mean": mean}, {"mean": mean, "std": mean})


def test_npz_accepts_the_first_checkpoint_format_summed_in_one_piece(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(300, 8)) * 1e3 + 1e5).astype(np.float32)
    y = np.repeat([0, 1, 2], [200, 80, 20])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    monkeypatch.setattr(scaling, "CHUNK_VALUES", 64)  # blocks of 8 rows
    module = NpzDataModule(path=str(tmp_path / "d.npz"), val_fraction=0.0)
    whole = x.astype(np.float64)
    first_format = {"feature_scaler": {"mean": torch.from_numpy(np.nanmean(whole, axis=0)),
                                       "std": torch.from_numpy(np.nanstd(whole, axis=0))}}  # no `standardize` key
    assert not torch.equal(first_format["feature_scaler"]["std"], module.feature_scaler.std)  # other last bits
    module.load_state_dict(first_format)  # the same file: accepted
    with pytest.raises(ValueError, match=r"`path` to be the data"):
        module.load_state_dict({"feature_scaler": {"mean": first_format["feature_scaler"]["mean"] + 1e-3,
                                                   "std": first_format["feature_scaler"]["std"]}})
