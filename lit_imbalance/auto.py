"""``experiment=auto``: choose a recipe on repeated validation hold-outs, then refit it on every sample.

No single recipe wins on every data set. ``auto`` fits each candidate (a config
patch merged onto the run's config) on ``holdouts`` stratified hold-outs of the
training split, scores each fit's last-epoch ``optimized_metric`` on its held-out
part, and refits the candidate with the best mean on all the training data. Only
that refit is tested, and the sweep objective is the pick's mean hold-out score.
Candidates go round by round, so a ``time_budget_s`` that runs out after round
``r`` still compares every candidate on ``r`` hold-outs.

The run's ``metrics.json`` says what was picked and why: ``auto/picked``,
``auto/reason``, ``auto/holdouts``, and per candidate ``auto/val/<name>`` (the
mean) with ``auto/val/<name>/<r>`` for each hold-out. Each hold-out fit keeps its
own record under ``auto/<name>/holdout<r>/``.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lit_imbalance._checks import check_in_unit_interval, check_positive, check_positive_int, fail
from lit_imbalance.record import Key, read_record, write_record

log = logging.getLogger(__name__)

Fit = Callable[[DictConfig], Any]


@dataclass(frozen=True)
class Selection:
    """What ``auto`` measured and chose."""

    picked: str
    scores: dict[str, list[float]]
    elapsed_s: float
    reason: str

    def record(self) -> dict[str, Any]:
        """The ``auto/*`` entries of the run's metrics.json."""
        entries: dict[str, Any] = {"auto/picked": self.picked, "auto/reason": self.reason,
                                   "auto/holdouts": min(len(s) for s in self.scores.values()),
                                   "auto/selection_time_s": round(self.elapsed_s, 1)}
        for name, scores in self.scores.items():
            entries[f"auto/val/{name}"] = statistics.fmean(scores)
            entries.update({f"auto/val/{name}/{r}": score for r, score in enumerate(scores)})
        return entries


def choose(scores: Mapping[str, Sequence[float]]) -> tuple[str, str]:
    """The candidate with the best mean score, and why; an exact tie goes to the one listed first.

    Example:
        >>> choose({"recipe": [0.8, 0.9], "linear": [0.9, 0.8], "plain": [0.7, 0.7]})
        ('recipe', 'best mean validation score over 2 hold-outs: recipe 0.850, linear 0.850, plain 0.700 (ties go to the first listed)')
    """
    means = {name: statistics.fmean(values) for name, values in scores.items()}
    picked = max(means, key=lambda name: (means[name], -list(means).index(name)))
    rounds = min(len(values) for values in scores.values())
    ranked = ", ".join(f"{name} {mean:.3f}" for name, mean in sorted(means.items(), key=lambda kv: -kv[1]))
    return picked, f"best mean validation score over {rounds} hold-outs: {ranked} (ties go to the first listed)"


def check_auto(cfg: DictConfig) -> DictConfig:
    """The ``auto`` node, checked in one line per bad key before anything trains."""
    auto = cfg.auto
    candidates = auto.get("candidates")
    if not isinstance(candidates, Mapping) or not candidates:
        fail("auto.candidates", "a non-empty mapping of name -> config patch", candidates)
    for name, patch in candidates.items():
        if patch is not None and not isinstance(patch, Mapping):
            fail(f"auto.candidates.{name}", "a config patch (a mapping, {} for the run's config as it is)", patch)
    check_positive_int("auto.holdouts", auto.get("holdouts"))
    check_in_unit_interval("auto.holdout_fraction", auto.get("holdout_fraction"), open_right=True)
    if auto.holdout_fraction == 0:
        fail("auto.holdout_fraction", "a share in (0, 1) of each class held out", auto.holdout_fraction)
    check_positive("auto.time_budget_s", auto.get("time_budget_s"))
    devices, nodes = cfg.trainer.get("devices"), cfg.trainer.get("num_nodes", 1)
    if devices not in (1, "1", None) or nodes not in (1, None):
        fail("trainer.devices", "1 with auto (its hold-out fits run one after another in this process)", devices)
    return auto


def candidate_config(cfg: DictConfig, patch: Mapping[str, Any] | None) -> DictConfig:
    """``cfg`` with a candidate's patch merged on, and ``auto`` off (interpolations still resolve late)."""
    merged = OmegaConf.merge(cfg, OmegaConf.create(dict(patch or {})))
    merged.auto = None
    return merged


def holdout_config(cfg: DictConfig, patch: Mapping[str, Any] | None, repeat: int, fraction: float,
                   output_dir: Path) -> DictConfig:
    """A candidate's fit on hold-out ``repeat``: its own split and seed, no test, its last epoch scored."""
    holdout = candidate_config(cfg, patch)
    holdout.validation_holdout = fraction
    if "val_fraction" in holdout.data:
        holdout.data.val_fraction = fraction
        if "split_seed" in holdout.data:
            # Data that hold validation out of the training split draw a new hold-out per repeat; data
            # with a validation split of their own keep it (their split_seed may cut the whole set).
            holdout.data.split_seed = int(holdout.data.split_seed) + repeat
    holdout.seed = int(cfg.seed) + repeat
    holdout.run_test = False
    holdout.logger = None
    holdout.paths.output_dir = str(output_dir)
    if holdout.get("ckpt_path") is not None:
        holdout.ckpt_path = None  # a user's checkpoint resumes the refit; each hold-out fit starts fresh
    for name in ("plots", "last_checkpoint"):
        if name in holdout.callbacks:
            holdout.callbacks[name] = None
    if "model_checkpoint" in holdout.callbacks and holdout.callbacks.model_checkpoint is not None:
        holdout.callbacks.model_checkpoint.monitor = None  # the last epoch, as the refit tests it
    return holdout


def select(cfg: DictConfig, fit: Fit) -> Selection:
    """Fit every candidate on every hold-out (round by round, within the time budget) and choose."""
    auto = check_auto(cfg)
    for name, patch in auto.candidates.items():
        try:  # a patch naming a key the config does not have fails now, not after the others trained
            candidate_config(cfg, patch)
        except Exception as error:  # OmegaConf's ConfigKeyError / ValidationError
            fail(f"auto.candidates.{name}", f"a patch of keys the config has ({' '.join(str(error).split()[:12])})",
                 OmegaConf.to_container(patch) if patch is not None else None)
    metric = cfg.optimized_metric
    root = Path(cfg.paths.output_dir) / "auto"
    scores: dict[str, list[float]] = {name: [] for name in auto.candidates}
    started = time.perf_counter()
    for repeat in range(auto.holdouts):
        for name, patch in auto.candidates.items():
            output_dir = root / name / f"holdout{repeat}"
            fit(holdout_config(cfg, patch, repeat, auto.holdout_fraction, output_dir))
            value = read_record(output_dir / "metrics.json").get(metric)
            if value is None or not math.isfinite(value):
                fail(f"auto.candidates.{name}", f"a candidate whose hold-out fit logs a finite {metric}", value)
            scores[name].append(float(value))
            log.info("auto: %s on hold-out %d: %s %.4f", name, repeat, metric, value)
        elapsed = time.perf_counter() - started
        if repeat + 1 < auto.holdouts and elapsed > auto.time_budget_s:
            log.warning("auto: time budget of %s s spent after %d of %d hold-outs (%.0f s); choosing on those",
                        auto.time_budget_s, repeat + 1, auto.holdouts, elapsed)
            break
    picked, reason = choose(scores)
    return Selection(picked=picked, scores=scores, elapsed_s=time.perf_counter() - started, reason=reason)


def train_auto(cfg: DictConfig, fit: Fit) -> Any:
    """Choose on hold-outs (:func:`select`), refit the pick on every sample with ``cfg``'s own output, test it."""
    selection = select(cfg, fit)
    log.info("auto picked %s: %s", selection.picked, selection.reason)
    fit(candidate_config(cfg, cfg.auto.candidates[selection.picked]))
    # The refit holds nothing out, so its val/* scores training samples: the sweep objective is the
    # pick's mean hold-out score, the only validation evidence of the run.
    objective = statistics.fmean(selection.scores[selection.picked])
    path = Path(cfg.paths.output_dir) / "metrics.json"
    write_record(path, {**read_record(path), **selection.record(), Key.OBJECTIVE: objective})
    return objective
