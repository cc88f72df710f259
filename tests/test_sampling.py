"""Samplers: drawn class frequencies, uniqueness, coverage, DDP sharding, reproducibility, errors.

Statistical checks use a fixed seed, so they are deterministic; the bounds
are chosen so that a correct sampler would fail them with probability below
1e-6 on a fresh seed: a chi-square statistic below the chi2(df) quantile at
1 - 1e-6, or a count within 5 binomial standard deviations of its expectation.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy.stats import chi2
from torch.utils.data import Dataset, DistributedSampler, TensorDataset

from lit_imbalance.data import class_counts
from lit_imbalance.sampling import (
    ClassAwareSampler,
    EpochSampler,
    OverSampler,
    ProgressivelyBalancedSampler,
    UnderSampler,
    WeightedSampler,
    resampling_targets,
)
from lit_imbalance.sampling import base as sampling_base
from lit_imbalance.sampling import weighted as sampling_weighted
from lit_imbalance.sampling.weighted import _inclusion_probability, alias_table, successive_sampling_counts
from lit_imbalance.weights import class_weights
from tests.conftest import ROOT, compose_train, run_train_py

# A long tail: 2000, 600, 150, 40, 9 samples, shuffled so class order is not index order.
COUNTS = [2000, 600, 150, 40, 9]
LABELS = torch.repeat_interleave(torch.arange(5), torch.tensor(COUNTS))[
    torch.randperm(sum(COUNTS), generator=torch.Generator().manual_seed(0))
]
FAILURE_PROBABILITY = 1e-6

SAMPLERS = {
    "weighted": lambda labels, **kw: WeightedSampler(labels, **kw),
    "weighted_sqrt_no_replacement": lambda labels, **kw: WeightedSampler(
        labels, "sqrt", num_samples=1000, replacement=False, **kw
    ),
    "weighted_per_sample": lambda labels, **kw: WeightedSampler(labels, torch.linspace(0, 1, labels.numel()), **kw),
    "class_aware": lambda labels, **kw: ClassAwareSampler(labels, **kw),
    "under": lambda labels, **kw: UnderSampler(labels, **kw),
    "over": lambda labels, **kw: OverSampler(labels, **kw),
    "progressive": lambda labels, **kw: ProgressivelyBalancedSampler(labels, num_epochs=4, **kw),
}


def draw(sampler: EpochSampler, epoch: int = 0) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def assert_chi_square_fits(observed: np.ndarray, expected: np.ndarray) -> None:
    keep = expected > 0
    assert observed[~keep].sum() == 0, "drew from a category of probability 0"
    statistic = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    bound = chi2.ppf(1 - FAILURE_PROBABILITY, df=int(keep.sum()) - 1)
    assert statistic < bound, (statistic, bound, observed, expected)


# -- class frequencies ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["inverse", "sqrt", "effective"])
def test_weighted_class_frequencies_match_the_shared_class_weights(scheme: str) -> None:
    sampler = WeightedSampler(LABELS, scheme, num_samples=200_000, beta=0.99, seed=1)
    weights = class_weights(COUNTS, scheme, beta=0.99, normalize=None).double()
    share = weights * torch.tensor(COUNTS) / (weights * torch.tensor(COUNTS)).sum()
    torch.testing.assert_close(sampler.expected_class_counts, 200_000 * share)
    observed = np.bincount(LABELS[draw(sampler)].numpy(), minlength=5)
    assert_chi_square_fits(observed, sampler.expected_class_counts.numpy())


@pytest.mark.parametrize("mass", [
    np.array([5.0]),
    np.array([1.0, 1.0, 1.0]),
    np.array([3.0, 1.0, 0.0, 4.0]),
    np.logspace(4, 0, 1000) * (np.arange(1000) % 9 != 0),  # a long tail with empty classes
    np.r_[1e12, np.ones(50)],  # one class holds all but 5e-11 of the mass
    np.array([0.0, 1e-320, 0.0]),  # a subnormal total: C / total would overflow
], ids=["one class", "equal", "small", "1000 classes", "extreme", "subnormal"])
def test_alias_table_draws_each_class_by_its_mass(mass: np.ndarray) -> None:
    keep_own, alias = alias_table(mass)
    # P(j) = (keep_own[j] + sum over the columns aliased to j of 1 - keep_own[k]) / C
    probability = keep_own.copy()
    np.add.at(probability, alias, 1.0 - keep_own)
    np.testing.assert_allclose(probability / mass.size, mass / mass.sum(), rtol=1e-9, atol=1e-15)
    assert not np.any(np.isin(np.flatnonzero(mass == 0), alias[keep_own < 1]))  # never an alias either
    assert np.all(keep_own[mass == 0] == 0)


def test_weighted_inverse_with_many_classes_fits_its_expected_counts() -> None:
    labels = torch.from_numpy(np.random.default_rng(4).zipf(1.3, 60_000) % 300)
    sampler = WeightedSampler(labels, "sqrt", num_samples=300_000, seed=5)
    observed = np.bincount(labels[draw(sampler)].numpy(), minlength=int(labels.max()) + 1)
    assert_chi_square_fits(observed, sampler.expected_class_counts.numpy())


def test_weighted_inverse_is_uniform_within_a_class() -> None:
    sampler = WeightedSampler(LABELS, "inverse", num_samples=100_000, seed=2)
    drawn = torch.tensor(draw(sampler))
    rare = (LABELS == 4).nonzero().flatten()
    per_sample = torch.bincount(drawn, minlength=LABELS.numel())[rare].numpy()
    assert_chi_square_fits(per_sample, np.full(rare.numel(), 100_000 / 5 / rare.numel()))


def test_per_sample_weights_give_per_sample_frequencies_and_skip_zero_weights() -> None:
    labels = torch.arange(50) % 2
    weights = torch.arange(50, dtype=torch.float64) % 7  # zeros at 0, 7, 14, ...
    sampler = WeightedSampler(labels, weights, num_samples=300_000, seed=3)
    observed = np.bincount(draw(sampler), minlength=50)
    assert_chi_square_fits(observed, (300_000 * weights / weights.sum()).numpy())
    by_class = torch.zeros(2, dtype=torch.float64).index_add_(0, labels, weights)
    torch.testing.assert_close(sampler.expected_class_counts, 300_000 * by_class / by_class.sum())


def test_sampling_works_beyond_torch_multinomial_limit() -> None:
    # 2^24 + 16 samples: torch.multinomial refuses this many categories.
    labels = torch.zeros(2**24 + 16, dtype=torch.int64)
    labels[-16:] = 1
    sampler = WeightedSampler(labels, "inverse", num_samples=200_000, seed=4)
    drawn = sampler.epoch_indices()
    rare = int((drawn >= 2**24).sum())
    mean, std = 100_000, (200_000 * 0.25) ** 0.5
    assert abs(rare - mean) < 5 * std
    assert torch.equal(labels[drawn] == 1, drawn >= 2**24)


def test_class_aware_gives_every_class_the_same_count() -> None:
    sampler = ClassAwareSampler(LABELS, num_samples=1003, seed=5)
    for epoch in range(3):
        counts = np.bincount(LABELS[draw(sampler, epoch)].numpy(), minlength=5)
        assert counts.sum() == 1003 and counts.max() - counts.min() <= 1  # 1003 = 5 * 200 + 3
    torch.testing.assert_close(sampler.expected_class_counts, torch.full((5,), 1003 / 5, dtype=torch.float64))


def test_class_aware_repeats_rare_samples_evenly_and_covers_frequent_ones() -> None:
    sampler = ClassAwareSampler(LABELS, seed=6)  # 2799 draws: 559 or 560 per class
    copies = torch.bincount(torch.tensor(draw(sampler)), minlength=LABELS.numel())
    rare = copies[LABELS == 4]  # 9 samples, ~560 draws: 62 or 63 copies each
    assert rare.max() - rare.min() <= 1
    head = copies[LABELS == 0]  # 2000 samples, ~560 draws: distinct
    assert head.max() == 1
    seen = torch.zeros(LABELS.numel(), dtype=torch.bool)
    for epoch in range(4):  # ceil(2000 / 559) = 4 epochs cover the head class
        seen[torch.tensor(draw(sampler, epoch))] = True
    assert seen.all()


@pytest.mark.parametrize(
    ("strategy", "kind", "expected"),
    [
        ("auto", "under", [9, 9, 9, 9, 9]),
        ("majority", "under", [9, 600, 150, 40, 9]),
        ("not minority", "under", [9, 9, 9, 9, 9]),
        ("not majority", "under", [2000, 9, 9, 9, 9]),
        ("all", "under", [9, 9, 9, 9, 9]),
        ({0: 100, 3: 5}, "under", [100, 600, 150, 5, 9]),
        ("auto", "over", [2000] * 5),
        ("minority", "over", [2000, 600, 150, 40, 2000]),
        ("not minority", "over", [2000, 2000, 2000, 2000, 9]),
        ("not majority", "over", [2000] * 5),
        ("all", "over", [2000] * 5),
        ({4: 50}, "over", [2000, 600, 150, 40, 50]),
    ],
)
def test_resampling_targets_follow_imbalanced_learn(strategy, kind, expected) -> None:
    assert resampling_targets(torch.tensor(COUNTS), strategy, kind).tolist() == expected


def test_float_ratio_is_minority_over_majority_after_resampling() -> None:
    counts = torch.tensor([10, 100])
    assert resampling_targets(counts, 0.25, "under").tolist() == [10, 40]  # 10 / 40 = 0.25
    assert resampling_targets(counts, 0.5, "over").tolist() == [50, 100]  # 50 / 100 = 0.5


def test_ties_and_empty_classes() -> None:
    # Classes 0 and 2 tie for the minority: the smaller index is "the minority"; class 1 is absent.
    counts = torch.tensor([5, 0, 5, 20])
    assert resampling_targets(counts, "not minority", "under").tolist() == [5, 0, 5, 5]
    assert resampling_targets(counts, "minority", "over").tolist() == [20, 0, 5, 20]


@pytest.mark.parametrize("kind", ["under", "over"])
def test_resampled_epochs_have_exactly_the_target_counts(kind: str) -> None:
    strategy = {0: 300, 2: 100} if kind == "under" else {3: 100, 4: 95}
    sampler = (UnderSampler if kind == "under" else OverSampler)(LABELS, sampling_strategy=strategy, seed=7)
    target = resampling_targets(torch.tensor(COUNTS), strategy, kind)
    assert sampler.target_counts.tolist() == target.tolist() and len(sampler) == target.sum()
    torch.testing.assert_close(sampler.expected_class_counts, torch.from_numpy(target).double())
    drawn = torch.tensor(draw(sampler, epoch=3))
    assert class_counts(LABELS[drawn], 5).tolist() == target.tolist()
    copies = torch.bincount(drawn, minlength=LABELS.numel())
    if kind == "under":
        assert copies.max() == 1
    else:  # every original sample at least once; the 9 rare ones 10 or 11 times (95 = 9 * 10 + 5)
        assert copies.min() == 1
        assert sorted(set(copies[LABELS == 4].tolist())) == [10, 11]


# -- without replacement, coverage --------------------------------------------------------------


@pytest.mark.parametrize("weights", ["inverse_class_counts", "inverse_sample_keys", "per_sample"])
def test_draws_without_replacement_are_unique_and_follow_the_expected_counts(weights: str, monkeypatch) -> None:
    class_path = 1 if weights == "inverse_class_counts" else 10**9
    monkeypatch.setattr(sampling_weighted, "CLASS_PATH_MIN_SAMPLES_PER_CLASS", class_path)
    sample_weights = (torch.arange(LABELS.numel()) % 3).double()  # a third have weight 0
    chosen = sample_weights if weights == "per_sample" else "inverse"
    sampler = WeightedSampler(LABELS, chosen, num_samples=400, replacement=False, seed=8)
    totals = np.zeros(5)
    epochs = 200
    for epoch in range(epochs):
        drawn = draw(sampler, epoch)
        assert len(drawn) == len(set(drawn)) == 400
        if weights == "per_sample":
            assert (sample_weights[drawn] > 0).all()
        totals += np.bincount(LABELS[drawn].numpy(), minlength=5)
    # Rosén's approximation is not exact: 3% of a class's draws, or 5 sigma of the average.
    expected = sampler.expected_class_counts.numpy()
    tolerance = np.maximum(0.03 * expected, 5 * np.sqrt(expected / epochs))
    assert np.all(np.abs(totals / epochs - expected) < tolerance), (totals / epochs, expected)


def successive_sampling_distribution(counts: list[int], weights: list[float], size: int) -> dict[tuple, float]:
    """Exact law of the per-class counts of ``size`` successive draws, by walking the urn draw by draw."""
    law = {tuple(0 for _ in counts): 1.0}
    for _ in range(size):
        following: dict[tuple, float] = {}
        for drawn, probability in law.items():
            mass = [w * (n - d) for w, n, d in zip(weights, counts, drawn)]
            for cls, share in enumerate(mass):
                if share > 0:
                    state = drawn[:cls] + (drawn[cls] + 1,) + drawn[cls + 1 :]
                    following[state] = following.get(state, 0.0) + probability * share / sum(mass)
        law = following
    return law


@pytest.mark.parametrize(
    "direct_below", [2, 12, 10**9], ids=["binomial_splits", "splits_then_truncated_keys", "keys_only"]
)
def test_successive_sampling_counts_follow_the_exact_law_of_draws_without_replacement(direct_below: int) -> None:
    counts, weights, size = [6, 4, 3, 2, 5], [1.0, 2.0, 5.0, 0.0, 0.5], 7
    law = successive_sampling_distribution(counts, weights, size)
    trials = 20_000
    # States expected fewer than 5 times share one cell, so the chi-square law holds for the statistic.
    states = sorted(law, key=law.get, reverse=True)
    cells = sum(trials * law[state] >= 5 for state in states)
    cell = {state: min(index, cells) for index, state in enumerate(states)}
    expected = np.bincount([cell[s] for s in states], weights=[trials * law[s] for s in states], minlength=cells + 1)
    rng = np.random.default_rng(12)
    observed = np.zeros(cells + 1)
    for _ in range(trials):
        drawn = successive_sampling_counts(rng, np.array(counts), np.array(weights), size, direct_below=direct_below)
        observed[cell[tuple(drawn.tolist())]] += 1  # a state of probability 0 raises KeyError
    assert_chi_square_fits(observed, expected)


def test_successive_sampling_counts_at_a_billion_samples_match_rosen_without_a_key_per_sample() -> None:
    counts = np.array([600_000_000, 300_000_000, 90_000_000, 10_000_000])
    weights = 1.0 / counts  # inverse: every class the same total mass
    size = 500_000_000
    drawn = successive_sampling_counts(np.random.default_rng(13), counts, weights, size)
    assert drawn.sum() == size and (drawn <= counts).all()
    expected = counts * _inclusion_probability(weights, counts.astype(np.float64), size)
    # Rosen's law is exact to O(1/N) here; the draw's own spread is a few 1e4 samples.
    assert np.all(np.abs(drawn - expected) < 5 * np.sqrt(expected)), (drawn, expected)


def test_successive_sampling_counts_take_whole_classes_and_skip_weight_zero() -> None:
    counts, weights = np.array([5, 3, 4]), np.array([1.0, 0.0, 2.0])
    rng = np.random.default_rng(14)
    assert successive_sampling_counts(rng, counts, weights, size=9).tolist() == [5, 0, 4]
    for size in (1, 8):
        drawn = successive_sampling_counts(rng, counts, weights, size=size, direct_below=1)
        assert drawn.sum() == size and drawn[1] == 0 and (drawn <= counts).all()
    with pytest.raises(ValueError, match=r"`size` to be an integer in \[0, 9\] .*but got 10\."):
        successive_sampling_counts(rng, counts, weights, size=10)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_successive_sampling_counts_do_not_depend_on_the_weights_scale(scale: float) -> None:
    counts, weights = np.array([10**9, 10**8, 10**7]), np.array([1.0, 3.0, 10.0])
    size = 5 * 10**8
    drawn = successive_sampling_counts(np.random.default_rng(16), counts, weights * scale, size)
    assert drawn.sum() == size
    expected = counts * _inclusion_probability(weights, counts.astype(np.float64), size)
    assert np.all(np.abs(drawn - expected) < 5 * np.sqrt(expected) + 1), (drawn, expected)


@pytest.mark.parametrize("class_path", [True, False], ids=["class_counts", "sample_keys"])
def test_class_weighted_draws_without_replacement_are_uniform_within_a_class(class_path: bool, monkeypatch) -> None:
    monkeypatch.setattr(sampling_weighted, "CLASS_PATH_MIN_SAMPLES_PER_CLASS", 1 if class_path else 10**9)
    sampler = WeightedSampler(LABELS, "inverse", num_samples=400, replacement=False, seed=15)
    head = (LABELS == 0).nonzero().flatten()
    per_sample = np.zeros(head.numel())
    epochs = 300
    for epoch in range(epochs):
        drawn = torch.tensor(draw(sampler, epoch))
        per_sample += torch.bincount(drawn, minlength=LABELS.numel())[head].numpy()
    assert_chi_square_fits(per_sample, np.full(head.numel(), per_sample.sum() / head.numel()))


def test_no_replacement_of_every_positive_sample_is_a_permutation() -> None:
    sampler = WeightedSampler(LABELS, "sqrt", replacement=False, seed=9)
    assert sorted(draw(sampler)) == list(range(LABELS.numel()))
    torch.testing.assert_close(sampler.expected_class_counts, torch.tensor(COUNTS, dtype=torch.float64))


def test_under_sampling_covers_every_majority_sample_over_enough_epochs() -> None:
    sampler = UnderSampler(LABELS, sampling_strategy="auto", seed=10)
    seen = torch.zeros(LABELS.numel(), dtype=torch.bool)
    per_class = [set() for _ in COUNTS]
    epochs = -(-2000 // 9)  # ceil(n_majority / n_minority): 223 epochs for the class of 2000
    for epoch in range(epochs):
        drawn = torch.tensor(draw(sampler, epoch))
        assert drawn.unique().numel() == drawn.numel() == 45
        seen[drawn] = True
        for cls in range(5):
            per_class[cls].add(frozenset(drawn[LABELS[drawn] == cls].tolist()))
    assert seen.all()
    assert len(per_class[0]) == epochs  # a new subset every epoch


# -- DDP sharding, epochs, reproducibility ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_two_shards_are_disjoint_and_together_the_one_replica_epoch(name: str) -> None:
    first_rare = int((LABELS == 4).nonzero()[0])
    labels = torch.cat([LABELS[:first_rare], LABELS[first_rare + 1 :]])  # 2798 samples, 8 rare: even epochs
    single = SAMPLERS[name](labels, seed=12)
    assert single.epoch_size % 2 == 0
    full = draw(single, epoch=5)
    shards = [draw(SAMPLERS[name](labels, seed=12, num_replicas=2, rank=rank), epoch=5) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(full) // 2
    assert shards[0] == full[0::2] and shards[1] == full[1::2]  # disjoint positions, same order
    assert sorted(shards[0] + shards[1]) == sorted(full)
    if name in {"under", "weighted_sqrt_no_replacement"}:  # distinct indices: disjoint as sets too
        assert not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize(("drop_last", "per_rank"), [(False, 4), (True, 3)])
def test_uneven_epochs_pad_by_wrapping_or_drop_the_tail(drop_last: bool, per_rank: int) -> None:
    labels = torch.tensor([0] * 6 + [1] * 4)
    full = WeightedSampler(labels, seed=1).epoch_indices().tolist()  # 10 draws over 3 ranks
    shards = [
        draw(WeightedSampler(labels, seed=1, num_replicas=3, rank=rank, drop_last=drop_last)) for rank in range(3)
    ]
    assert [len(shard) for shard in shards] == [per_rank] * 3
    padded = (full + full)[: 3 * per_rank]
    assert [shard for shard in shards] == [padded[rank::3] for rank in range(3)]


def test_more_replicas_than_draws_still_gives_every_rank_one_index() -> None:
    labels = torch.tensor([0, 1])
    full = WeightedSampler(labels, num_samples=2, seed=0).epoch_indices().tolist()
    shards = [draw(WeightedSampler(labels, num_samples=2, num_replicas=4, rank=rank)) for rank in range(4)]
    assert shards == [[full[0]], [full[1]], [full[0]], [full[1]]]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_set_epoch_changes_the_draw_and_seed_epoch_reproduce_it(name: str) -> None:
    sampler = SAMPLERS[name](LABELS, seed=3)
    first, second = draw(sampler, 0), draw(sampler, 1)
    assert first != second
    assert draw(sampler, 0) == first  # no state carried between epochs
    resumed = SAMPLERS[name](LABELS, seed=3)  # a fresh process resuming at epoch 1
    assert draw(resumed, 1) == second
    assert draw(SAMPLERS[name](LABELS, seed=4), 0) != first


def test_replicas_default_to_the_process_group_when_iterated(monkeypatch) -> None:
    sampler = UnderSampler(LABELS, seed=2)  # built before any process group exists
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    monkeypatch.setattr(sampling_base.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sampling_base.dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(sampling_base.dist, "get_rank", lambda: 2)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (3, 2, 15)
    assert draw(sampler) == sampler.epoch_indices()[2::3].tolist()


def test_is_a_distributed_sampler_so_lightning_does_not_wrap_it() -> None:
    sampler = ClassAwareSampler(LABELS)
    assert isinstance(sampler, DistributedSampler)
    assert (sampler.num_samples, sampler.total_size, sampler.shuffle) == (len(sampler), len(sampler), True)


def test_labels_from_a_dataset_without_loading_inputs() -> None:
    class Inputs(Dataset):
        targets = LABELS.tolist()

        def __len__(self) -> int:
            return len(self.targets)

        def __getitem__(self, index: int):
            raise AssertionError("inputs must not be loaded")

    from_dataset = draw(ClassAwareSampler(Inputs(), seed=1))
    assert from_dataset == draw(ClassAwareSampler(LABELS.numpy().astype(np.int32), seed=1))
    assert draw(WeightedSampler(TensorDataset(torch.zeros(len(LABELS)), LABELS), seed=1)) == draw(
        WeightedSampler(LABELS, seed=1)
    )


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WeightedSampler(LABELS, torch.full((len(LABELS),), -1.0)), r"`weights` .*non-negative.*-1\.0"),
        (lambda: WeightedSampler(LABELS, torch.full((len(LABELS),), float("nan"))), r"`weights` .*finite.*NaN"),
        (lambda: WeightedSampler(LABELS, torch.zeros(len(LABELS))), r"`weights` .*non-zero.*all zeros"),
        (lambda: WeightedSampler(LABELS, torch.ones(3)), r"`weights` .*length 2799.*\(3,\)"),
        (lambda: WeightedSampler(LABELS, "balanced"), r"`weights` .*'inverse', 'sqrt', 'effective'.*'balanced'"),
        (lambda: WeightedSampler(LABELS, "effective", beta=1.0), r"`beta` .*\[0, 1\).*1\.0"),
        (lambda: WeightedSampler(LABELS, num_samples=0), r"`num_samples` to be a positive integer, but got 0\."),
        (lambda: ClassAwareSampler(LABELS, num_samples=-5), r"`num_samples` to be a positive integer, but got -5\."),
        (
            lambda: WeightedSampler(LABELS, num_samples=3000, replacement=False),
            r"`num_samples` to be at most 2799 .*replacement=False, but got 3000\.",
        ),
        (
            lambda: WeightedSampler(LABELS, torch.arange(2799) % 2, num_samples=1401, replacement=False),
            r"`num_samples` to be at most 1399 .*non-zero weight.*1401",
        ),
        (lambda: WeightedSampler(LABELS.float()), r"`labels` .*integer.*float32"),
        (lambda: WeightedSampler(LABELS.view(-1, 3)), r"`labels` .*1-D.*\(933, 3\)"),
        (lambda: WeightedSampler(torch.tensor([0, -1])), r"`labels` .*class indices.*-1"),
        (lambda: WeightedSampler(torch.tensor([], dtype=torch.int64)), r"`labels` .*non-empty"),
        (lambda: WeightedSampler(LABELS, seed=-1), r"`seed` to be a non-negative integer, but got -1\."),
        (lambda: WeightedSampler(LABELS, num_replicas=0), r"`num_replicas` to be a positive integer, but got 0\."),
        (lambda: WeightedSampler(LABELS, num_replicas=2, rank=2), r"`rank` .*\[0, 1\].*but got 2\."),
        (lambda: WeightedSampler(LABELS, replacement="no"), r"`replacement` to be a bool, but got 'no'\."),
        (lambda: UnderSampler(LABELS, sampling_strategy={0: 3000}), r"`sampling_strategy` .*class 0 has 2000.*3000"),
        (lambda: OverSampler(LABELS, sampling_strategy={4: 3}), r"`sampling_strategy` .*class 4 has 9 samples, 3"),
        (lambda: UnderSampler(LABELS, sampling_strategy={7: 3, 0: 1}), r"`sampling_strategy` .*present.*: \[7\]"),
        (lambda: UnderSampler(LABELS, sampling_strategy="minority"), r"`sampling_strategy` .*'majority'.*'minority'"),
        (lambda: OverSampler(LABELS, sampling_strategy="majority"), r"`sampling_strategy` .*'minority'.*'majority'"),
        (lambda: UnderSampler(LABELS, sampling_strategy=0.5), r"`sampling_strategy` .*exactly 2 classes.*5.*0\.5"),
        (lambda: UnderSampler(torch.tensor([0] * 10 + [1] * 2), sampling_strategy=1.5), r"\(0, 1\].*1\.5"),
        (lambda: UnderSampler(torch.tensor([0] * 10 + [1] * 2), sampling_strategy=0.1), r"at least 0\.2.*0\.1"),
        (lambda: OverSampler(torch.tensor([0] * 10 + [1] * 5), sampling_strategy=0.3), r"at least 0\.5.*0\.3"),
        (lambda: UnderSampler(torch.tensor([0] * 3 + [1]), sampling_strategy={0: 0, 1: 0}), r"at least one sample"),
        (lambda: UnderSampler(torch.zeros(5, dtype=torch.int64)), r"`labels` .*at least 2 classes"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_epoch_and_rank_at_iteration() -> None:
    sampler = ClassAwareSampler(LABELS, rank=3)
    with pytest.raises(ValueError, match=r"`epoch` to be a non-negative integer, but got -1\."):
        sampler.set_epoch(-1)
    with pytest.raises(ValueError, match=r"`rank` .*\[0, 0\].*but got 3\."):
        list(sampler)


# -- streamed epochs and the progressively-balanced schedule ---------------------------------

STREAMED = {
    "weighted": lambda labels, **kw: WeightedSampler(labels, num_samples=2 * 2500 + 7, **kw),
    "weighted_per_sample": lambda labels, **kw: WeightedSampler(
        labels, torch.linspace(0, 1, labels.numel()), num_samples=5007, **kw
    ),
    "progressive": lambda labels, **kw: ProgressivelyBalancedSampler(labels, 3, num_samples=5007, **kw),
}


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("name", list(STREAMED))
def test_streamed_epochs_equal_the_unchunked_definition(name: str, drop_last: bool, monkeypatch) -> None:
    """Blocks of 1000 (the last one partial) and iteration chunks of 64: still the epoch's positions r, r+R, ..."""
    monkeypatch.setattr(sampling_base, "BLOCK", 1000)
    monkeypatch.setattr(sampling_base, "CHUNK", 64)
    single = STREAMED[name](LABELS, seed=3)
    single.set_epoch(2)
    epoch = single.epoch_indices().numpy()
    assert single.streamed and list(single) == epoch.tolist()
    # The unchunked definition of a shard (EpochSampler._shard on the whole epoch), for 3 ranks.
    shards = []
    for rank in range(3):
        sampler = STREAMED[name](LABELS, seed=3, num_replicas=3, rank=rank, drop_last=drop_last)
        sampler.set_epoch(2)
        expected = np.concatenate(sampler._shard(epoch)).tolist()
        shards.append(list(sampler))
        assert shards[-1] == expected and len(shards[-1]) == len(sampler)
    if drop_last:  # disjoint positions of one epoch: the shards together are its first 3 * len draws
        assert sorted(sum(shards, [])) == sorted(epoch[: 3 * len(sampler)].tolist())
    # A block is drawn alone, without the blocks before it: resumable mid-epoch, bounded memory.
    assert np.array_equal(single._block(2, 3), epoch[3000:4000])


def test_streamed_epoch_memory_is_bounded_by_a_block(monkeypatch) -> None:
    import collections
    import tracemalloc

    monkeypatch.setattr(sampling_base, "BLOCK", 1 << 14)
    sampler = WeightedSampler(LABELS, num_samples=3_000_000)
    tracemalloc.start()
    collections.deque(iter(sampler), maxlen=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The whole epoch would be 12 MB of int32 (24 MB as int64); one block and its temporaries ~1 MB.
    assert peak < 4 * 2**20, peak


@pytest.mark.parametrize(("epoch", "balanced_share"), [(0, 0.0), (8, 1.0), (12, 1.0), (4, 0.5)])
def test_progressive_class_frequencies_follow_the_schedule(epoch: int, balanced_share: float) -> None:
    """chi-square of the drawn classes against p_j(t) = (1 - t/T) n_j / N + (t/T) / C, T = 8."""
    sampler = ProgressivelyBalancedSampler(LABELS, num_epochs=8, num_samples=40_000, seed=1)
    counts = np.array(COUNTS, dtype=np.float64)
    expected_p = (1 - balanced_share) * counts / counts.sum() + balanced_share / len(COUNTS)
    np.testing.assert_allclose(sampler.class_probabilities(epoch).numpy(), expected_p)
    observed = np.bincount(LABELS.numpy()[draw(sampler, epoch)], minlength=len(COUNTS))
    assert_chi_square_fits(observed, 40_000 * expected_p)
    np.testing.assert_allclose(sampler.expected_class_counts.numpy(), 40_000 * expected_p)
    if balanced_share == 0.0:  # the data's own frequencies are not the balanced ones: the test can tell
        with pytest.raises(AssertionError):
            assert_chi_square_fits(observed, np.full(len(COUNTS), 40_000 / len(COUNTS)))


def test_progressive_is_uniform_within_a_class_and_a_pure_function_of_seed_and_epoch() -> None:
    sampler = ProgressivelyBalancedSampler(LABELS, num_epochs=2, num_samples=30_000, seed=4)
    drawn = np.array(draw(sampler, 2))
    rare = np.flatnonzero(LABELS.numpy() == 4)  # 9 samples, 6000 draws expected
    assert_chi_square_fits(np.bincount(drawn, minlength=LABELS.numel())[rare], np.full(rare.size, 6000 / rare.size))
    again = ProgressivelyBalancedSampler(LABELS, num_epochs=2, num_samples=30_000, seed=4)
    assert draw(again, 2) == drawn.tolist() and draw(again, 1) != drawn.tolist()


# -- configs and real DDP ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "cls"),
    [("weighted", WeightedSampler), ("class_aware", ClassAwareSampler), ("undersample", UnderSampler),
     ("oversample", OverSampler), ("progressive", ProgressivelyBalancedSampler)],
)  # fmt: skip
def test_sampler_configs_build_a_factory_of_labels(choice: str, cls: type) -> None:
    cfg = compose_train([f"sampler={choice}", "seed=5", "logger=none"])
    sampler = instantiate(cfg.sampler)(LABELS)
    assert type(sampler) is cls and sampler.seed == 5 and len(sampler) > 0
    assert compose_train(["sampler=none", "logger=none"]).sampler is None


def test_under_sampler_dict_strategy_from_the_command_line() -> None:
    cfg = compose_train(["sampler=undersample", "sampler.sampling_strategy={0:100,1:50}", "logger=none"])
    assert instantiate(cfg.sampler)(LABELS).target_counts.tolist() == [100, 50, 150, 40, 9]


@pytest.mark.parametrize("kind", ["under", "progressive"])
def test_ddp_ranks_with_the_real_trainer_get_disjoint_shards_of_the_single_process_epoch(
    tmp_path: Path, kind: str
) -> None:
    from tests.ddp_sampler_probe import EPOCHS, make_sampler

    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_sampler_probe.py"), str(tmp_path), kind],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = []
    for epoch in range(EPOCHS):
        records = [json.loads((tmp_path / f"rank{rank}_epoch{epoch}.json").read_text()) for rank in (0, 1)]
        sampler_type = type(make_sampler(num_replicas=1, rank=0, kind=kind)).__name__
        assert all(r["world_size"] == 2 and r["sampler"] == sampler_type for r in records)  # not wrapped
        rank0, rank1 = (r["indices"] for r in records)
        single = draw(make_sampler(num_replicas=1, rank=0, kind=kind), epoch)
        assert len(rank0) == len(rank1) == len(single) // 2
        if kind == "under":  # without replacement; progressive draws i.i.d., so an index may recur across ranks
            assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == sorted(single)
        assert (rank0, rank1) == (single[0::2], single[1::2])
        epochs.append(single)
    assert epochs[0] != epochs[1]


def test_train_py_with_class_aware_sampler_on_two_ddp_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py(
        "sampler=class_aware", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1", "logger=none",
        run_dir=run_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "metrics.json").is_file()


def test_bucket_shuffle_makes_every_permutation_equally_likely(monkeypatch) -> None:
    """The large-epoch shuffle, run on 5 entries: all 120 orders, each about as often (chi-square)."""
    monkeypatch.setattr(sampling_base, "BUCKET_SHUFFLE_MIN", 0)
    monkeypatch.setattr(sampling_base, "SHUFFLE_BUCKETS", 3)
    rng = np.random.default_rng(11)
    orders = list(itertools.permutations(range(5)))
    position = {order: index for index, order in enumerate(orders)}
    observed = np.zeros(len(orders))
    for _ in range(36_000):
        observed[position[tuple(sampling_base.shuffle(rng, np.arange(5, dtype=np.int32)).tolist())]] += 1
    assert_chi_square_fits(observed, np.full(len(orders), 36_000 / len(orders)))
