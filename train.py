"""Train an imbalance-aware classifier: ``python train.py loss=focal trainer.devices=2``."""

import hydra
from omegaconf import DictConfig

from lit_imbalance.app import train
from lit_imbalance.errors import report_user_errors
from lit_imbalance.job_failures import keep_sweeping
from lit_imbalance.resolvers import register_resolvers

# Before Hydra composes the config: its run and sweep directories use ${run_id:}.
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors  # a bad value: one line naming the key and the value, exit status 2
@keep_sweeping  # in a multirun, a failed job becomes a failed row instead of ending the sweep
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
