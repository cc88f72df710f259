"""Long-tail construction, the bundled digits split and the npz loader's errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from lit_imbalance.data import DigitsLTDataModule, NpzDataModule, class_counts, dataset_labels, long_tail, long_tail_counts
from tests.conftest import compose_train


@pytest.mark.parametrize(("n_max", "classes", "rho"), [(500, 10, 100), (104, 10, 50), (1000, 100, 10), (7, 2, 7)])
def test_long_tail_counts_follow_the_exponential_profile(n_max: int, classes: int, rho: float) -> None:
    counts = long_tail_counts(n_max, classes, rho)
    expected = [max(1, math.floor(n_max * rho ** (-i / (classes - 1)) + 1e-9)) for i in range(classes)]
    assert counts == expected
    assert counts[0] == n_max
    assert counts[-1] == max(1, math.floor(n_max / rho + 1e-9))
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_long_tail_subset_has_the_quotas_and_is_reproducible() -> None:
    labels = torch.arange(5).repeat_interleave(40)[torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    picked = long_tail(labels, imbalance_ratio=20, seed=3)
    assert class_counts(labels[picked]).tolist() == long_tail_counts(40, 5, 20)
    assert torch.equal(picked, long_tail(labels, imbalance_ratio=20, seed=3))
    assert not torch.equal(picked, long_tail(labels, imbalance_ratio=20, seed=4))
    assert picked.unique().numel() == picked.numel()


def test_long_tail_rejects_bad_ratio_and_oversized_head() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"`imbalance_ratio`.*0\.5"):
        long_tail(labels, imbalance_ratio=0.5)
    with pytest.raises(ValueError, match=r"`n_max`.*5"):
        long_tail(labels, imbalance_ratio=2, n_max=5)


@pytest.mark.parametrize("rho", [1, 10, 50, 100])
def test_digits_lt_splits(rho: float) -> None:
    dm = DigitsLTDataModule(imbalance_ratio=rho, test_per_class=50, val_per_class=20)
    counts = dm.train_class_counts.tolist()
    assert counts == long_tail_counts(counts[0], 10, rho)
    assert class_counts(dm.splits["test"].y, 10).tolist() == [50] * 10
    assert class_counts(dm.splits["val"].y, 10).tolist() == [20] * 10
    assert dm.num_features == 64 and dm.class_names == [str(i) for i in range(10)]
    assert 0.0 <= float(dm.splits["train"].x.min()) and float(dm.splits["train"].x.max()) <= 1.0
    # The held-out splits don't depend on the imbalance ratio: results across rho are comparable.
    assert torch.equal(dm.splits["test"].x, DigitsLTDataModule(imbalance_ratio=1).splits["test"].x)


def test_dataset_labels_reads_labels_without_inputs() -> None:
    dm = DigitsLTDataModule()
    assert torch.equal(dataset_labels(dm.dataset("train")), dm.train_labels)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y_train = np.repeat([0, 1, 2], [60, 20, 5])
    y_test = np.repeat([0, 1, 2], 10)
    return {
        "x_train": rng.normal(size=(y_train.size, 4)).astype(np.float32),
        "y_train": y_train,
        "x_test": rng.normal(size=(y_test.size, 4)).astype(np.float32),
        "y_test": y_test,
    }


def test_npz_without_val_holds_out_a_stratified_slice(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    dm = NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), val_fraction=0.2)
    assert dm.num_classes == 3
    assert class_counts(dm.splits["val"].y).tolist() == [12, 4, 1]
    assert class_counts(dm.splits["train"].y).tolist() == [48, 16, 4]
    assert dm.splits["test"].y.numel() == 30


def test_npz_with_val_fraction_zero_trains_on_every_sample_and_validates_on_them(
    tmp_path: Path, arrays: dict[str, np.ndarray]
) -> None:
    dm = NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), val_fraction=0.0)
    # The 5 samples of the rarest class all train: no hold-out takes one of them.
    assert dm.train_class_counts.tolist() == [60, 20, 5]
    assert torch.equal(dm.splits["val"].x, dm.splits["train"].x)
    assert torch.equal(dm.splits["val"].y, torch.as_tensor(arrays["y_train"]))


def test_npz_uses_given_validation_arrays(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = write_npz(tmp_path / "d.npz", **arrays, x_val=arrays["x_test"][:6], y_val=arrays["y_test"][:6])
    dm = NpzDataModule(path=str(path))
    assert dm.splits["val"].y.tolist() == [0] * 6
    assert dm.train_class_counts.tolist() == [60, 20, 5]


def test_npz_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"`path`.*nope\.npz"):
        NpzDataModule(path=str(tmp_path / "nope.npz"))


def test_npz_missing_array_is_named(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    del arrays["y_test"]
    with pytest.raises(ValueError, match=r"`path`.*missing: y_test"):
        NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)))


def test_npz_label_out_of_range_names_split_and_value(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    arrays["y_test"][3] = 7
    with pytest.raises(ValueError, match=r"`y_test`.*0\.\.2, but got 7"):
        NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), num_classes=3)
    arrays["y_test"][3] = -1
    with pytest.raises(ValueError, match=r"`y_test`.*got -1"):
        NpzDataModule(path=str(write_npz(tmp_path / "e.npz", **arrays)))


def test_npz_empty_split_is_named(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    arrays["x_test"], arrays["y_test"] = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    with pytest.raises(ValueError, match=r"`y_test`.*non-empty.*\(0,\)"):
        NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)))


def test_npz_error_through_hydra_names_the_config_key(tmp_path: Path) -> None:
    cfg = compose_train(["data=npz", f"data.path={tmp_path}/absent.npz"])
    with pytest.raises(InstantiationException) as error:
        instantiate(cfg.data)
    assert "full_key: data" in str(error.value) and "absent.npz" in str(error.value)
    assert "`path`" in str(error.value)


def test_npz_standardizes_every_split_with_the_training_rows_statistics(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    from lit_imbalance.data.datamodule import stratified_holdout

    scales = np.array([1.0, 1000.0, 0.01, 1.0])
    arrays["x_train"] = arrays["x_train"] * scales + 50.0
    arrays["x_train"][:, 3] = 7.0  # a constant feature: centred, never divided by its zero std
    arrays["x_test"] = arrays["x_test"] * scales + 50.0
    dm = NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), val_fraction=0.2)
    kept, held = stratified_holdout(arrays["y_train"], 0.2, 0)
    fit_rows = arrays["x_train"][kept].astype(np.float64)
    mean, std = fit_rows.mean(axis=0), fit_rows.std(axis=0)
    std[3] = 1.0
    for split, x in (("train", arrays["x_train"][kept]), ("val", arrays["x_train"][held]), ("test", arrays["x_test"])):
        np.testing.assert_allclose(dm.splits[split].x.numpy(), (x - mean) / std, rtol=1e-5, atol=1e-5)
    assert dm.splits["train"].x.dtype == torch.float32
    torch.testing.assert_close(dm.feature_scaler.mean, torch.from_numpy(mean))
    # Not the statistics of every training row: the held-out ones never enter the fit.
    assert not np.allclose(dm.feature_scaler.mean.numpy()[:3], arrays["x_train"].mean(axis=0)[:3], rtol=0, atol=1e-6)


def test_npz_without_standardize_keeps_the_stored_features(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    arrays["x_train"] = arrays["x_train"] * 1000.0
    dm = NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), val_fraction=0.0, standardize=False)
    assert torch.equal(dm.splits["train"].x, torch.as_tensor(arrays["x_train"]))
    assert dm.feature_scaler is None


def test_npz_refuses_a_standardize_that_is_not_a_bool(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match=r"`standardize` to be a bool, but got 'yes'"):
        NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), standardize="yes")  # type: ignore[arg-type]


def test_npz_standardize_is_a_config_key(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = write_npz(tmp_path / "d.npz", **{**arrays, "x_train": arrays["x_train"] * 1000.0})
    raw = instantiate(compose_train(["data=npz", f"data.path={path}", "data.standardize=false"]).data)
    scaled = instantiate(compose_train(["data=npz", f"data.path={path}"]).data)
    assert float(raw.splits["train"].x.std()) > 100.0
    assert float(scaled.splits["train"].x.std()) == pytest.approx(1.0, abs=0.05)


def test_npz_standardizes_given_validation_arrays_with_the_training_statistics(
    tmp_path: Path, arrays: dict[str, np.ndarray]
) -> None:
    x_val = arrays["x_test"][:6] * 10.0 + 3.0
    path = write_npz(tmp_path / "d.npz", **arrays, x_val=x_val, y_val=arrays["y_test"][:6])
    dm = NpzDataModule(path=str(path))
    train = arrays["x_train"].astype(np.float64)
    np.testing.assert_allclose(dm.splits["val"].x.numpy(), (x_val - train.mean(axis=0)) / train.std(axis=0),
                               rtol=1e-5, atol=1e-5)


def test_npz_refuses_features_whose_statistics_or_scaled_values_overflow(
    tmp_path: Path, arrays: dict[str, np.ndarray]
) -> None:
    huge = {**arrays, "x_train": arrays["x_train"].astype(np.float64)}
    huge["x_train"][:, 1] *= 1e300
    with pytest.raises(ValueError, match=r"`x_train` to be features whose training mean and std can be computed.*column 1"):
        NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **huge)))
    far = {**arrays, "x_test": arrays["x_test"].astype(np.float64)}
    far["x_test"][0, 2] = 1e60  # finite in float64, past float32's range once scaled
    with pytest.raises(ValueError, match=r"`x_test` to be features within float32's range once standardised, "
                                         r"but got '1e\+60 at row 0, column 2'"):
        NpzDataModule(path=str(write_npz(tmp_path / "e.npz", **far)))


def test_npz_checkpoint_state_holds_the_scaling_and_refuses_other_data(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    dm = NpzDataModule(path=str(write_npz(tmp_path / "d.npz", **arrays)), val_fraction=0.0)
    state = dm.state_dict()
    buffer = tmp_path / "state.pt"
    torch.save(state, buffer)
    loaded = torch.load(buffer, weights_only=True)  # plain tensors only
    torch.testing.assert_close(loaded["feature_scaler"]["std"],
                               torch.from_numpy(arrays["x_train"].astype(np.float64).std(axis=0)))
    dm.load_state_dict(loaded)  # the same data: accepted
    other = NpzDataModule(path=str(write_npz(tmp_path / "e.npz", **{**arrays, "x_train": arrays["x_train"] + 1})),
                          val_fraction=0.0)
    with pytest.raises(ValueError, match=r"`path` to be the data \(and standardize setting\).*e\.npz"):
        other.load_state_dict(loaded)
    raw = NpzDataModule(path=str(buffer.with_name("d.npz")), val_fraction=0.0, standardize=False)
    assert raw.state_dict() == {"standardize": False}  # never empty, so Lightning saves and restores it
    with pytest.raises(ValueError, match=r"`path` to be the data"):
        raw.load_state_dict(loaded)
    with pytest.raises(ValueError, match=r"`path` to be the data"):
        dm.load_state_dict(raw.state_dict())
