"""imbalanced-learn's ``sampling_strategy``, turned into per-class target counts.

The semantics are those of ``imblearn.utils.check_sampling_strategy`` for
``RandomUnderSampler`` / ``RandomOverSampler`` (imbalanced-learn itself is not
a dependency). Only classes present in the labels take part: a class index
with zero samples is neither the minority nor a valid dict key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from lit_imbalance._checks import check_choice, fail

SamplingStrategy = str | float | Mapping[int, int]
Kind = Literal["under", "over"]

UNDER_STRATEGIES = ("auto", "majority", "not minority", "not majority", "all")
OVER_STRATEGIES = ("auto", "minority", "not minority", "not majority", "all")


def resampling_targets(
    class_counts: torch.Tensor | np.ndarray, sampling_strategy: SamplingStrategy, kind: Kind
) -> np.ndarray:
    r"""Number of samples each class has after resampling, imbalanced-learn style.

    Resampled classes are set to the minority count (under-sampling) or the
    majority count (over-sampling); the others keep their count. Ties go to the
    smallest class index, as in imbalanced-learn.

    Args:
        class_counts: samples per class, shape ``(C,)``; classes with 0 samples are ignored.
        sampling_strategy:

            * ``"auto"``: ``"not minority"`` for under-sampling, ``"not majority"`` for over-sampling;
            * ``"majority"`` (under only), ``"minority"`` (over only), ``"not minority"``,
              ``"not majority"``, ``"all"``: the classes that are resampled;
            * a float in ``(0, 1]``, binary problems only: the ratio
              :math:`N_{minority} / N_{majority}` after resampling. Under-sampling
              shrinks the majority to :math:`\lfloor N_m / r \rfloor`, over-sampling
              grows the minority to :math:`\lfloor N_M \cdot r \rfloor`;
            * a dict ``{class: target count}``: those classes only. Under-sampling
              targets may not exceed the class size, over-sampling targets may not
              be below it.
        kind: ``"under"`` or ``"over"``.

    Returns:
        int64 array of shape ``(C,)``: the target count of every class.

    Raises:
        ValueError: naming ``sampling_strategy`` for an unknown name, a float
            outside ``(0, 1]`` or with more than two classes, a ratio that would
            need the opposite kind of resampling, a dict naming classes absent
            from the labels or asking for counts the kind cannot reach; naming
            ``labels`` when fewer than two classes are present.

    Example:
        >>> resampling_targets(torch.tensor([50, 10, 30]), "auto", "under").tolist()
        [10, 10, 10]
        >>> resampling_targets(torch.tensor([50, 10, 30]), "not majority", "over").tolist()
        [50, 50, 50]
        >>> resampling_targets(torch.tensor([50, 10]), 0.5, "under").tolist()
        [20, 10]
        >>> resampling_targets(torch.tensor([50, 10, 30]), {0: 25}, "under").tolist()
        [25, 10, 30]
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    check_choice("kind", kind, ("under", "over"))
    present = np.flatnonzero(counts > 0)
    if present.size < 2:
        fail("labels", "at least 2 classes with samples for re-sampling", f"classes {present.tolist()}")
    # argmin/argmax return the first extreme: ties go to the smallest class index.
    minority = present[np.argmin(counts[present])]
    majority = present[np.argmax(counts[present])]
    targets = counts.copy()

    if isinstance(sampling_strategy, str):
        check_choice("sampling_strategy", sampling_strategy, UNDER_STRATEGIES if kind == "under" else OVER_STRATEGIES)
        strategy = sampling_strategy
        if strategy == "auto":
            strategy = "not minority" if kind == "under" else "not majority"
        resampled = {
            "majority": [majority],
            "minority": [minority],
            "not minority": present[present != minority],
            "not majority": present[present != majority],
            "all": present,
        }[strategy]
        targets[resampled] = counts[minority] if kind == "under" else counts[majority]
        return targets

    if isinstance(sampling_strategy, Mapping):
        return _dict_targets(counts, present, sampling_strategy, kind)

    if isinstance(sampling_strategy, bool) or not isinstance(sampling_strategy, (int, float)):
        fail("sampling_strategy", "a strategy name, a float ratio or a dict of target counts", sampling_strategy)
    ratio = float(sampling_strategy)
    if not 0.0 < ratio <= 1.0:
        fail("sampling_strategy", "a float ratio N_minority / N_majority in (0, 1]", sampling_strategy)
    if present.size != 2:
        fail(
            "sampling_strategy",
            f"a dict of target counts (a float ratio needs exactly 2 classes, the labels have {present.size})",
            sampling_strategy,
        )
    if kind == "under":
        target = int(counts[minority] / ratio)
        if target > counts[majority]:
            fail(
                "sampling_strategy",
                f"a ratio of at least {counts[minority] / counts[majority]:.6g}, the current N_minority / N_majority "
                "(under-sampling cannot add majority samples)",
                sampling_strategy,
            )
        targets[majority] = target
    else:
        target = int(counts[majority] * ratio)
        if target < counts[minority]:
            fail(
                "sampling_strategy",
                f"a ratio of at least {counts[minority] / counts[majority]:.6g}, the current N_minority / N_majority "
                "(over-sampling cannot remove minority samples)",
                sampling_strategy,
            )
        targets[minority] = target
    return targets


def _dict_targets(counts: np.ndarray, present: np.ndarray, strategy: Mapping, kind: Kind) -> np.ndarray:
    present_set = set(present.tolist())
    parsed: dict[int, int] = {}
    for key, value in strategy.items():
        cls = _as_int(key)
        if cls is None or cls not in present_set:
            unknown = [k for k in strategy if _as_int(k) is None or _as_int(k) not in present_set]
            fail(
                "sampling_strategy",
                f"a dict keyed by classes present in the labels ({_describe(present)}); unknown: {unknown}",
                dict(strategy),
            )
        target = _as_int(value)
        if target is None or target < 0:
            fail("sampling_strategy", "a dict of non-negative integer target counts", dict(strategy))
        parsed[cls] = target
    targets = counts.copy()
    for cls, target in parsed.items():
        if kind == "under" and target > counts[cls]:
            fail(
                "sampling_strategy",
                f"target counts at most the class size for under-sampling (class {cls} has {counts[cls]} "
                f"samples, {target} asked)",
                dict(strategy),
            )
        if kind == "over" and target < counts[cls]:
            fail(
                "sampling_strategy",
                f"target counts at least the class size for over-sampling (class {cls} has {counts[cls]} "
                f"samples, {target} asked)",
                dict(strategy),
            )
        targets[cls] = target
    return targets


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is one (Hydra may hand over dict keys as digit strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _describe(classes: np.ndarray) -> str:
    values = classes.tolist()
    return ", ".join(map(str, values)) if len(values) <= 12 else f"{values[0]}..{values[-1]}, {len(values)} classes"
