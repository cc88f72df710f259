"""Weighted random sampling by class weights or per-sample weights, at any dataset size."""

from __future__ import annotations

import math

import numpy as np
import torch

from lit_imbalance._checks import check_bool, check_choice, check_positive_int, fail
from lit_imbalance.sampling.base import EpochSampler, Labels, class_sorted_index, index_dtype, resolve_labels, shuffle
from lit_imbalance.weights import WEIGHT_SCHEMES, WeightScheme, class_weights



class WeightedSampler(EpochSampler):
    r"""Draw indices with probability proportional to a weight, per class or per sample.

    A sample ``i`` of class ``c`` is drawn with probability proportional to
    ``class_weights(class_counts, weights, beta)[c]`` when ``weights`` names a
    scheme (the same :func:`~lit_imbalance.weights.class_weights` the losses
    use: ``"inverse"`` makes every class equally likely, ``"sqrt"`` softens it,
    ``"effective"`` uses the effective number of samples with ``beta``), or to
    ``weights[i]`` when it is a per-sample weight tensor.

    Unlike :class:`torch.utils.data.WeightedRandomSampler` it has no 2^24 limit
    and no float32 skew, is DDP-sharded (see
    :class:`~lit_imbalance.sampling.base.EpochSampler`) and draws 10M indices
    several times faster:

    * class weights, with replacement: each draw is a class (inverse CDF over
      the ``C`` class masses) and a uniform sample of it. Exactly
      ``num_samples`` i.i.d. draws, streamed: the epoch is drawn in blocks of
      ``BLOCK`` (see :class:`~lit_imbalance.sampling.base.EpochSampler`), so
      iterating it holds one block, at any dataset size.
    * per-sample weights, with replacement: inverse CDF on a float64 cumulative
      sum, searched with a block's uniform draws sorted (sorted targets walk
      the CDF's cache lines in order, unsorted ones miss ~20 times each), then
      the block is shuffled. Streamed the same way.
    * without replacement (either kind): Efraimidis–Spirakis sampling, i.e. the
      ``num_samples`` smallest keys ``E_i / w_i`` with ``E_i ~ Exp(1)``, served in
      a random order. Samples of weight 0 are never drawn. When ``num_samples``
      equals the number of samples with a non-zero weight (the default when all
      weights are positive) this is a random permutation and the weights do not
      matter. With class weights and large classes (``CLASS_PATH_MIN_SAMPLES_PER_CLASS``
      on average), the samples of a class are interchangeable, so only how many
      of each class are drawn is random: those counts come exactly from
      :func:`successive_sampling_counts` in ``O(C log N)`` work, and each class
      contributes a uniform subset of that size, so no key is drawn per sample.

    Args:
        labels: training labels (1-D integer tensor/array/sequence) or a Dataset
            whose labels are read without loading its inputs.
        weights: ``"inverse"``, ``"sqrt"`` or ``"effective"``, or a non-negative
            per-sample weight tensor of shape ``(N,)``.
        num_samples: indices per global epoch (all ranks together); defaults to ``N``.
        replacement: draw with replacement (i.i.d.) or without.
        seed: epoch ``e`` is drawn from ``(seed, e)``.
        num_replicas: number of DDP shards; defaults to the process group's world size, else 1.
        rank: this process's shard; defaults to its rank in the process group, else 0.
        beta: the ``"effective"`` scheme's hyper-parameter in ``[0, 1)``.
        drop_last: how an epoch not divisible by ``num_replicas`` is split (see
            :class:`~lit_imbalance.sampling.base.EpochSampler`).

    Raises:
        ValueError: naming the argument for an unknown scheme, weights that are
            not 1-D of length ``N``, negative, NaN or all zero, ``num_samples <= 0``,
            or ``num_samples`` above the number of non-zero-weight samples without
            replacement.

    Example:
        >>> labels = torch.tensor([0] * 90 + [1] * 10)
        >>> sampler = WeightedSampler(labels, weights="inverse", seed=0)
        >>> sampler.expected_class_counts.round(decimals=3)
        tensor([50., 50.], dtype=torch.float64)
        >>> indices = list(sampler)
        >>> len(indices), labels[indices].bincount().tolist()
        (100, [49, 51])
    """

    def __init__(
        self,
        labels: Labels,
        weights: WeightScheme | torch.Tensor | np.ndarray = "inverse",
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        beta: float = 0.9999,
        drop_last: bool = False,
    ) -> None:
        labels = resolve_labels(labels)
        super().__init__(labels, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.replacement = check_bool("replacement", replacement)
        size = labels.numel()
        self._dtype = index_dtype(size)
        counts = self.class_counts.numpy()

        if isinstance(weights, str):
            self.scheme: str | None = check_choice("weights", weights, WEIGHT_SCHEMES)
            # The weight of one sample of each class; a class's share is weight * count.
            self.sample_class_weights = class_weights(counts, weights, beta=beta, normalize="sum_to_1").double().numpy()
            self._class_mass = self.sample_class_weights * counts
            self._sorted = class_sorted_index(labels, self.num_classes)
            self._offsets = np.cumsum(counts) - counts
            self._class_sampler = ClassThenSample(self._class_mass, counts, self._sorted)
            num_positive = int(counts[self.sample_class_weights > 0].sum())
        else:
            self.scheme = None
            sample_weights = _sample_weights(weights, size)
            self._class_mass = np.bincount(labels.numpy(), weights=sample_weights, minlength=self.num_classes)
            positive = sample_weights > 0
            num_positive = int(np.count_nonzero(positive))
            if replacement:
                self._cdf = np.cumsum(sample_weights)
                self._last_positive = int(np.flatnonzero(positive)[-1])
            else:
                self._sample_weights = sample_weights
                self._class_positive = np.bincount(labels.numpy()[positive], minlength=self.num_classes)
        self._num_positive = num_positive
        self._epoch_size = size if num_samples is None else check_positive_int("num_samples", num_samples)
        if not replacement and self._epoch_size > num_positive:
            fail(
                "num_samples",
                f"at most {num_positive} (the samples with a non-zero weight) when replacement=False",
                num_samples,
            )

    @property
    def epoch_size(self) -> int:
        return self._epoch_size

    @property
    def streamed(self) -> bool:  # type: ignore[override]
        return self.replacement

    def draw_block(self, rng: np.random.Generator, epoch: int, size: int) -> np.ndarray:
        if self.scheme is not None:
            return self._class_sampler(rng, size)
        return self._draw_by_cdf(rng, size)

    def draw(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        if self.scheme is None:
            return self._draw_without_replacement(rng, self._sample_weights)
        # Both paths draw the same law; the class path costs a Python call per class, so it pays
        # only when classes are large (measured: even at 10k samples a class, about 2x faster at 100k).
        if self.labels.numel() >= CLASS_PATH_MIN_SAMPLES_PER_CLASS * self.num_classes:
            return self._draw_classes_without_replacement(rng)
        weights = np.repeat(self.sample_class_weights, self.class_counts.numpy())
        return self._draw_without_replacement(rng, weights, positions=self._sorted)

    def compute_expected_class_counts(self) -> torch.Tensor:
        size = self._epoch_size
        if self.replacement:
            expected = size * self._class_mass / self._class_mass.sum()
        elif size == self._num_positive and self.scheme is not None:
            expected = self.class_counts.numpy() * (self.sample_class_weights > 0)
        elif size == self._num_positive:
            expected = self._class_positive
        elif self.scheme is not None:
            counts = self.class_counts.numpy().astype(np.float64)
            expected = counts * _inclusion_probability(self.sample_class_weights, counts, size)
        else:
            inclusion = _inclusion_probability(self._sample_weights, np.ones(1), size)
            expected = np.bincount(self.labels.numpy(), weights=inclusion, minlength=self.num_classes)
        return torch.from_numpy(np.asarray(expected, dtype=np.float64))

    # -- draws -------------------------------------------------------------------------------

    def _draw_by_cdf(self, rng: np.random.Generator, size: int) -> np.ndarray:
        targets = rng.random(size)
        targets.sort()
        targets *= self._cdf[-1]
        found = np.searchsorted(self._cdf, targets, side="right")
        # Rounding can put a target on the CDF's last value: never past the last drawable sample.
        indices = np.minimum(found, self._last_positive).astype(self._dtype, copy=False)
        return shuffle(rng, indices)  # the draws came out sorted by index

    def _draw_without_replacement(
        self, rng: np.random.Generator, weights: np.ndarray, positions: np.ndarray | None = None
    ) -> np.ndarray:
        """Efraimidis–Spirakis: the ``epoch_size`` smallest of ``Exp(1) / w``; ``positions`` maps to indices."""
        if self._epoch_size == self._num_positive:
            chosen = np.flatnonzero(weights > 0)
        else:
            keys = rng.standard_exponential(weights.size)
            with np.errstate(divide="ignore", invalid="ignore"):
                keys /= weights  # weight 0 -> inf (or nan): never among the smallest
            chosen = np.argpartition(keys, self._epoch_size - 1)[: self._epoch_size]
        indices = (positions[chosen] if positions is not None else chosen).astype(self._dtype, copy=False)
        return shuffle(rng, indices)

    def _draw_classes_without_replacement(self, rng: np.random.Generator) -> np.ndarray:
        """Efraimidis–Spirakis with class weights: how many of each class, then which ones, in a random order."""
        counts = self.class_counts.numpy()
        drawn = successive_sampling_counts(rng, counts, self.sample_class_weights, self._epoch_size)
        # A mask over the class-sorted samples: whole classes at once, then a uniform subset of the rest.
        chosen = np.repeat(drawn == counts, counts)
        for cls in np.flatnonzero((drawn > 0) & (drawn < counts)).tolist():
            subset = rng.choice(int(counts[cls]), int(drawn[cls]), replace=False, shuffle=False)
            chosen[self._offsets[cls] + subset] = True
        return shuffle(rng, self._sorted[chosen])


class ClassThenSample:
    """I.i.d. draws of a class by its mass, then of a uniform sample of that class.

    Shared by the weighted (fixed masses) and progressively-balanced (masses
    per epoch) samplers. ``sorted_index`` lists the samples grouped by class
    (:func:`~lit_imbalance.sampling.base.class_sorted_index`). The class comes
    from Walker's alias table (:func:`alias_table`): one uniform, a gather and a
    comparison per draw, where a binary search of the classes' CDF measured 43 of
    the 59 ms per million draws at 100 classes.
    """

    def __init__(self, class_mass: np.ndarray, counts: np.ndarray, sorted_index: np.ndarray) -> None:
        mass = np.where(counts > 0, np.asarray(class_mass, dtype=np.float64), 0.0)
        self.keep_own, self.alias = alias_table(mass)
        self.counts = counts.astype(np.float64)
        self.offsets = (np.cumsum(counts) - counts).astype(np.int64)
        self.sorted_index = sorted_index

    def __call__(self, rng: np.random.Generator, size: int) -> np.ndarray:
        num_classes = self.alias.size
        # One uniform per draw gives both the column (its integer part) and the coin (its fraction).
        scaled = rng.random(size)
        scaled *= num_classes
        column = scaled.astype(np.int64)
        np.minimum(column, num_classes - 1, out=column)  # u * C may round up to C
        scaled -= column
        classes = np.where(scaled < self.keep_own[column], column, self.alias[column])
        # offset + floor(u * n_c): a uniform position within the class (u < 1, so never past its end).
        within = rng.random(size)
        within *= self.counts[classes]
        positions = self.offsets[classes] + within.astype(np.int64)
        return self.sorted_index[positions]


# Class weights without replacement draw per-class counts, then a subset of each class, from
# this many samples per class on average; below it, a key per sample (see WeightedSampler.draw).
CLASS_PATH_MIN_SAMPLES_PER_CLASS = 8192
# Below this many samples in the undecided key range, successive_sampling_counts draws their keys.
DIRECT_KEYS_BELOW = 4096
# A split leaves about the square root of its range's count (random cases up to 5e9 samples took
# at most 16 splits): past this many, float rounding has stalled the narrowing.
MAX_SPLITS = 64


def successive_sampling_counts(
    rng: np.random.Generator,
    counts: np.ndarray,
    weights: np.ndarray,
    size: int,
    direct_below: int = DIRECT_KEYS_BELOW,
) -> np.ndarray:
    r"""How many samples of each class ``size`` draws without replacement take, drawn exactly.

    Efraimidis–Spirakis (successive) sampling with a weight per class: sample
    ``i`` of class ``c`` gets the key :math:`E_i / w_c`, :math:`E_i \sim \mathrm{Exp}(1)`,
    and the ``size`` smallest keys are drawn, i.e. each draw takes a remaining
    sample with probability proportional to its class weight. Only the number of
    keys of each class below a threshold matters, and given that the keys of
    ``m_c`` samples of class ``c`` lie in ``(lo, hi]``, the number below ``t`` is
    :math:`\mathrm{Binomial}(m_c, q_c)` with
    :math:`q_c = (1 - e^{-w_c (t - lo)}) / (1 - e^{-w_c (hi - lo)})`, independently
    per class (the keys are independent, and memoryless past ``lo``). So the
    range holding the ``size``-th key is narrowed with ``C`` binomial draws at a
    time, each split where ``size`` keys are expected, and once it holds fewer
    than ``direct_below`` samples their keys are drawn, truncated to the range,
    and the smallest taken. The counts have exactly the distribution of the
    per-sample draw, in ``O(C log N)`` work instead of ``O(N)``.

    Args:
        rng: the generator to draw from.
        counts: samples per class, non-negative integers of shape ``(C,)``.
        weights: each sample's weight by class, non-negative, shape ``(C,)``;
            a class of weight 0 is never drawn.
        size: number of draws, at most the samples of classes with a non-zero weight.
        direct_below: the range size from which keys are drawn one by one.

    Returns:
        The drawn samples per class, int64 of shape ``(C,)``, summing to ``size``.

    Raises:
        ValueError: naming ``size`` when it exceeds the samples of non-zero weight.

    Example:
        >>> drawn = successive_sampling_counts(
        ...     np.random.default_rng(0), np.array([900, 90, 10]), np.array([1.0, 10.0, 0.0]), size=500)
        >>> int(drawn.sum()), int(drawn[1]), int(drawn[2])
        (500, 90, 0)
    """
    counts = np.asarray(counts, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    undecided = np.where(weights > 0, counts, 0)  # samples whose keys lie in (lo, hi]
    if not 0 <= size <= undecided.sum():
        fail("size", f"an integer in [0, {int(undecided.sum())}] (the samples of non-zero weight)", size)
    if size == 0:
        return np.zeros_like(counts)
    # Scaling every weight alike leaves the law unchanged; a largest weight of 1 keeps t w in range.
    weights = weights / weights.max()
    drawn = np.zeros_like(counts)
    needed, lo, hi, splits = int(size), 0.0, math.inf, 0
    while True:
        if needed == 0:
            return drawn
        remaining = int(undecided.sum())
        if remaining == needed:
            return drawn + undecided
        # A range whose splits stall is drawn directly too: exact at any size, in O(remaining) memory.
        if remaining < direct_below or splits == MAX_SPLITS:
            classes = np.repeat(np.arange(counts.size), undecided)
            return drawn + np.bincount(
                classes[_smallest_truncated_keys(rng, weights[classes], hi - lo, needed)], minlength=counts.size
            )
        live = undecided > 0
        # Split where `needed` keys are expected: the draw is exact wherever the split is, this keeps it short.
        split = _successive_sampling_time(weights[live], undecided[live], needed, span=hi - lo)
        below = np.zeros_like(counts)
        # q_c = P(key - lo <= split | key - lo <= hi - lo); expm1 keeps small w t exact.
        below[live] = rng.binomial(
            undecided[live], np.minimum(np.expm1(-weights[live] * split) / np.expm1(-weights[live] * (hi - lo)), 1.0)
        )
        if below.sum() >= needed:  # the size-th key is at most lo + split
            undecided, hi = below, lo + split
        else:  # all of those are drawn; the size-th key lies past lo + split
            drawn += below
            needed -= int(below.sum())
            undecided -= below
            lo += split
        splits += 1


def _smallest_truncated_keys(rng: np.random.Generator, rates: np.ndarray, span: float, needed: int) -> np.ndarray:
    """Positions of the ``needed`` smallest of independent Exp(``rates``) keys conditioned to be at most ``span``."""
    # Inverse CDF of the truncated exponential: -log(1 - u (1 - e^{-r span})) / r.
    keys = -np.log1p(rng.random(rates.size) * np.expm1(-rates * span)) / rates
    return np.argpartition(keys, needed - 1)[:needed]


def alias_table(mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of non-negative ``mass`` (Vose's construction): ``(keep_own, alias)``.

    Column ``k`` of ``C`` is chosen uniformly, then class ``k`` with probability
    ``keep_own[k]`` and class ``alias[k]`` otherwise, so class ``j`` is drawn with
    probability ``(keep_own[j] + sum(1 - keep_own[k] for alias[k] == j)) / C``,
    which is ``mass[j] / mass.sum()``. A class of mass 0 is never drawn: its own
    share is 0 even when rounding leaves it over at the end.

    Example:
        >>> keep_own, alias = alias_table(np.array([3.0, 1.0, 0.0, 4.0]))
        >>> keep_own.tolist(), alias.tolist()
        ([1.0, 0.5, 0.0, 0.5], [0, 3, 3, 0])
    """
    num_classes = mass.size
    share = mass / mass.sum() * num_classes  # mean 1; C / sum would overflow for a subnormal total
    keep_own = np.zeros(num_classes)
    alias = np.arange(num_classes)
    small = [int(k) for k in np.flatnonzero(share < 1.0)]
    large = [int(k) for k in np.flatnonzero(share >= 1.0)]
    residual = share.tolist()
    while small and large:
        lacking, surplus = small.pop(), large[-1]
        keep_own[lacking], alias[lacking] = residual[lacking], surplus
        residual[surplus] -= 1.0 - residual[lacking]  # the surplus class fills the rest of that column
        if residual[surplus] < 1.0:
            small.append(large.pop())
    # What is left is 1 up to rounding: those columns keep their own class, unless it has no mass.
    positive = int(np.flatnonzero(mass > 0)[-1])
    for column in small + large:
        keep_own[column] = 1.0 if mass[column] > 0 else 0.0
        alias[column] = column if mass[column] > 0 else positive
    return keep_own, alias


def _sample_weights(weights: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    """Validate per-sample weights and return them as a float64 array."""
    array = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if array.ndim != 1 or array.shape[0] != size:
        fail("weights", f"a scheme name or a 1-D per-sample weight tensor of length {size}", f"shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        fail("weights", "real per-sample weights", f"dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        fail("weights", "finite per-sample weights", f"{np.count_nonzero(~np.isfinite(array))} NaN or infinite entries")
    if (array < 0).any():
        fail("weights", "non-negative per-sample weights", float(array[array < 0][0]))
    if not array.any():
        fail("weights", "per-sample weights with at least one non-zero entry", "all zeros")
    return array


def _inclusion_probability(weights: np.ndarray, multiplicity: np.ndarray, size: int) -> np.ndarray:
    r"""Probability that each item is among ``size`` draws without replacement with these weights.

    Rosén's approximation for Efraimidis–Spirakis (successive) sampling:
    :math:`\pi_i = 1 - e^{-w_i t}` with ``t`` solving
    :math:`\sum_i m_i (1 - e^{-w_i t}) = size`. The ``size``-th smallest key
    concentrates at ``t``, so the relative error vanishes as the number of
    samples grows. ``multiplicity`` counts identical items (broadcasts).
    """
    return -np.expm1(-weights * _successive_sampling_time(weights, multiplicity, size))


def _successive_sampling_time(
    weights: np.ndarray, multiplicity: np.ndarray, size: int, span: float = math.inf
) -> float:
    r"""The ``t`` below which ``size`` keys ``Exp(w_i)`` truncated to ``(0, span]`` are expected.

    Solves :math:`\sum_i m_i (1 - e^{-w_i t}) / (1 - e^{-w_i span}) = size` by
    Newton's method from 0: the sum is concave in ``t``, so each tangent
    reaches ``size`` before the curve does and the iterates climb to the root
    from below, inside ``(0, span)`` when ``size`` is below the total. A weight of
    0 adds nothing to an unbounded span (Rosén's per-sample weights have zeros);
    a finite span takes positive weights only (its truncation mass would be 0).
    """
    scale = 1.0 if math.isinf(span) else -np.expm1(-weights * span)  # the truncation's mass
    mass = multiplicity * weights / scale
    t = size / mass.sum()  # the tangent at 0
    for _ in range(200):
        excess = (multiplicity * -np.expm1(-weights * t) / scale).sum() - size
        slope = (mass * np.exp(-weights * t)).sum()
        if slope <= 0:
            break
        step = -excess / slope
        t += step
        if abs(step) <= 1e-13 * t:
            break
    return float(t)
