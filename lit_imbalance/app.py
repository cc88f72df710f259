"""The Hydra task: config -> (datamodule, model, trainer) -> fit -> test -> metrics.

``train.py`` is a thin ``@hydra.main`` over :func:`train`; tests call
:func:`train` directly with a composed config.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from lit_imbalance.callbacks.metrics_json import MetricsJsonWriter
from lit_imbalance.sweep import ddp_job_scope

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers).

    An entry set to ``null`` is skipped, so ``callbacks.model_checkpoint=null``
    removes one callback from the command line.
    """
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Instantiate the datamodule, the model (with its loss) and the trainer from ``cfg``."""
    sampler = instantiate(cfg.sampler) if cfg.get("sampler") else None
    datamodule = instantiate(cfg.data, sampler=sampler)
    model = instantiate(
        cfg.model,
        **datamodule.model_inputs(),  # what the model needs from the data: input_dim for feature arrays
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        loss=instantiate(cfg.loss),
    )
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> float | None:
    """Fit on the training split, test the best checkpoint on the held-out split.

    Args:
        cfg: the composed ``conf/train.yaml``.

    Returns:
        The value of ``cfg.optimized_metric`` (the best one seen by the
        checkpoint callback when it monitors that metric), for Hydra sweepers.
    """
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)  # type: ignore[arg-type]
    try:
        # In a multirun, DDP children must re-run this job, not the whole sweep.
        with ddp_job_scope(trainer):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            writer = next((c for c in trainer.callbacks if isinstance(c, MetricsJsonWriter)), None)
            recorded = writer.read() if writer is not None else {}
            objective = optimized_value(trainer, cfg.get("optimized_metric"), recorded)
            if writer is not None and objective is not None:
                writer.add(trainer, objective=objective, optimized_metric=cfg.optimized_metric)
            if cfg.get("run_test", True):
                best = getattr(trainer.checkpoint_callback, "best_model_path", "")
                trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
    finally:
        # One process runs many jobs in a multirun: close this job's wandb run.
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                wandb.finish()
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
    if recorded and recorded.get(f"best/{metric}") is not None:
        return float(recorded[f"best/{metric}"])
    value = trainer.callback_metrics.get(metric)
    if value is None:
        log.warning("optimized_metric %r was never logged; known metrics: %s", metric, sorted(trainer.callback_metrics))
        return None
    return float(value)
