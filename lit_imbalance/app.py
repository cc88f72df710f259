"""The Hydra task: config -> (datamodule, model, trainer) -> fit -> test -> metrics.

``train.py`` is a thin ``@hydra.main`` over :func:`train`; tests call
:func:`train` directly with a composed config. This module is the app, not the
library: it only instantiates what the config names (``hydra.utils.instantiate``)
and runs it; the run's numbers land in its record (:mod:`lit_imbalance.record`).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lit_imbalance._checks import fail
from lit_imbalance.auto import train_auto
from lit_imbalance.callbacks.metrics_json import MetricsJsonWriter, logged_scalars
from lit_imbalance.ddp_multirun import ddp_job_scope
from lit_imbalance.mixin import POSTHOC_BUFFERS
from lit_imbalance.record import Key
from lit_imbalance.resolvers import register_resolvers

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers).

    An entry set to ``null`` is skipped, so ``callbacks.model_checkpoint=null``
    removes one callback from the command line.
    """
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


#: Trainer settings Lightning expects as integers (None or -1 where it allows them), checked up front:
#: Lightning reports `max_epochs=abc` with a bare AssertionError, after the data is built.
TRAINER_INTEGERS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "num_nodes", "check_val_every_n_epoch",
                    "log_every_n_steps", "accumulate_grad_batches", "num_sanity_val_steps")
TRAINER_BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


#: Config groups that add one callback (or none) choosing something on validation outputs after training.
POSTHOC_GROUPS = ("calibration", "threshold")


def check_trainer_config(trainer: DictConfig) -> None:
    """Fail in one line, naming ``trainer.<key>`` and the value, on a mistyped trainer setting."""
    for key in TRAINER_INTEGERS:
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
            fail(f"trainer.{key}", "an integer (or null)", value)
    for key in TRAINER_BATCH_LIMITS:
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            fail(f"trainer.{key}", "a number of batches (int) or a fraction of them (float in [0, 1])", value)


def posthoc_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callbacks of the post-hoc groups (``calibration``, ``threshold``): one each, or none for ``none``.

    Their keys read as ``threshold.min_precision``; each stage of a run gets its own.
    """
    return [instantiate(cfg[group], _convert_="all") for group in POSTHOC_GROUPS
            if cfg.get(group) and "_target_" in cfg[group]]


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Instantiate the datamodule, the model (with its loss) and the trainer from ``cfg``."""
    check_trainer_config(cfg.trainer)
    # _convert_="all": plain lists and dicts, not OmegaConf containers, reach the objects, so
    # what they save (hyper-parameters in checkpoints) loads with torch.load(weights_only=True).
    sampler = instantiate(cfg.sampler, _convert_="all") if cfg.get("sampler") else None
    datamodule = instantiate(cfg.data, sampler=sampler, _convert_="all")
    model = instantiate(
        cfg.model,
        _convert_="all",
        **datamodule.model_inputs(),  # what the model needs from the data: input_dim for feature arrays
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        loss=instantiate(cfg.loss, _convert_="all"),
    )
    callbacks: list[Callback] = [*instantiate_group(cfg.get("callbacks")), *posthoc_callbacks(cfg)]
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> float | None:
    """Fit on the training split, test the best checkpoint on the held-out split.

    With an ``auto`` node (``experiment=auto``), first choose among its candidates
    on validation hold-outs (:mod:`lit_imbalance.auto`), then fit and test the pick.

    Args:
        cfg: the composed ``conf/train.yaml``.

    Returns:
        The value of ``cfg.optimized_metric`` (the best one seen by the
        checkpoint callback when it monitors that metric), for Hydra sweepers.
    """
    register_resolvers()
    if cfg.get("auto"):
        return train_auto(cfg, fit=train)  # hold-out fits and the refit each come back here with auto=null
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    # The second stage is built and checked against the model now: a stage that cannot run fails before stage 1.
    stage = instantiate(cfg.decouple, _convert_="all") if cfg.get("decouple") else None
    if stage is not None:
        stage.check(model)
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)  # type: ignore[arg-type]
    writer = next((c for c in trainer.callbacks if isinstance(c, MetricsJsonWriter)), None)
    log.info("Training %s on %s with %s for %s epochs; outputs in %s", type(model).__name__,
             type(datamodule).__name__, cfg.loss.get("_target_", "the model's loss"), cfg.trainer.get("max_epochs"),
             cfg.paths.output_dir)
    try:
        # In a multirun, DDP children must re-run this job, not the whole sweep.
        with ddp_job_scope(trainer):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            recorded = writer.read() if writer is not None else {}
            objective = optimized_value(trainer, cfg.get("optimized_metric"), recorded)
            if writer is not None and objective is not None:
                writer.add(trainer, **{Key.OBJECTIVE: objective, Key.OPTIMIZED_METRIC: cfg.optimized_metric})
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            if cfg.get("run_test", True):
                trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
                save_posthoc_choices(trainer, model, cfg)
            if stage is not None:
                if best:
                    # Stage 2 starts from the tested (best) weights. trainer.test loads them into this process's
                    # model only without ddp_spawn (spawned workers hand back weights after fit, not after test).
                    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
                stage_objective = run_second_stage(cfg, stage, model, datamodule, trainer, writer)
                objective = stage_objective if stage_objective is not None else objective
    except SIGTERMException as stop:
        # Lightning ends its loops with SystemExit(None), which exits 0; a preempted run has not
        # succeeded. The record already says `interrupted`, and last.ckpt resumes it (ckpt_path=last).
        raise SystemExit(128 + signal.SIGTERM) from stop
    finally:
        # One process runs many jobs in a multirun: close this job's wandb run.
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                wandb.finish()
    if writer is not None and trainer.is_global_zero:
        log.info("Record of the run: %s (test/balanced_acc %s)", writer.path.resolve(),
                 writer.read().get("test/balanced_acc"))
    return objective


#: The entries of stage 1 that metrics.json keeps under ``stage1/`` beside stage 2's.
STAGE_ENTRY_PREFIXES = ("val/", "test/", "best/", "calibration/", "threshold/", "posthoc_tau", Key.OBJECTIVE)


def save_posthoc_choices(trainer: L.Trainer, model: L.LightningModule, cfg: DictConfig) -> None:
    """``checkpoints/tested.ckpt``: the tested weights with the post-hoc choices the test made (T, threshold, tau).

    Written only when a choice was made in this process: the best checkpoint predates them.
    """
    buffers = [getattr(model, name, None) for name in POSTHOC_BUFFERS]
    if any(b is not None and bool(torch.isfinite(b).any()) for b in buffers):
        trainer.save_checkpoint(f"{cfg.paths.output_dir}/checkpoints/tested.ckpt")


def run_second_stage(cfg: DictConfig, stage: Any, model: L.LightningModule, datamodule: L.LightningDataModule,
                     trainer: L.Trainer, writer: MetricsJsonWriter | None) -> float | None:
    """Decoupled stage 2 (``cfg.decouple``) on the fitted ``model``: its own trainer, validation and test.

    The record keeps stage 1's validation and test entries under ``stage1/``,
    stage 2's under ``stage2/`` and as the plain keys (the final model), and
    what the stage chose (``decouple/*``). ``stage`` is the instantiated ``cfg.decouple``. Returns stage 2's value of the
    optimized metric, the run's objective from now on.
    """
    if writer is not None:
        recorded = writer.read()
        writer.add(trainer, **{f"stage1/{key}": value for key, value in recorded.items()
                               if key.startswith(STAGE_ENTRY_PREFIXES)})
    log.info("Stage 2: %s (%s) on the stage-1 classifier", stage.method, type(stage).__name__)
    stage_trainer = instantiate(
        # The post-hoc choices (temperature, threshold) are made again, on the stage-2 classifier.
        cfg.trainer, max_epochs=max(stage.epochs, 1), min_epochs=None, callbacks=posthoc_callbacks(cfg),
        # Stage 2 is short and ends with the weights it tests: no checkpoint selection of its own.
        logger=trainer.loggers or False, enable_checkpointing=False,
    )
    chosen = stage.fit(model, datamodule, stage_trainer)
    stage_trainer.validate(model, datamodule=datamodule)
    entries = logged_scalars(stage_trainer)
    if cfg.get("run_test", True):
        stage_trainer.test(model, datamodule=datamodule)
        entries.update(logged_scalars(stage_trainer))
    objective = entries.get(cfg.get("optimized_metric") or "")
    if writer is not None:
        writer.add(stage_trainer, **entries, **{f"stage2/{key}": value for key, value in entries.items()},
                   **chosen, **{"decouple/method": stage.method},
                   **({Key.OBJECTIVE: objective} if objective is not None else {}))
    stage_trainer.save_checkpoint(f"{cfg.paths.output_dir}/checkpoints/stage2.ckpt")
    return objective


def optimized_value(trainer: L.Trainer, metric: str | None, recorded: dict[str, Any] | None = None) -> float | None:
    """The best value of ``metric`` if the checkpoint callback tracks it, else its last value.

    ``recorded`` (the metrics.json record) supplies ``best/<metric>`` when the fit
    ran in spawned workers, whose checkpoint callback kept the best score.
    """
    if not metric:
        return None
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "monitor", None) == metric and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if recorded and recorded.get(Key.best(metric)) is not None:
        return float(recorded[Key.best(metric)])
    value = trainer.callback_metrics.get(metric)
    if value is None:
        log.warning("optimized_metric %r was never logged; known metrics: %s", metric, sorted(trainer.callback_metrics))
        return None
    return float(value)
