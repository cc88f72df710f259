"""The OmegaConf resolvers of the app's configs, registered explicitly by the app.

``conf/logger/wandb.yaml`` groups a sweep's wandb runs with ``${sweep_group:}``
and names each after its overrides with ``${sweep_job_name:}``;
``conf/train.yaml`` makes run and sweep directories unique with ``${run_id:}``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lit_imbalance.runtime import in_multirun


def sweep_group() -> str | None:
    """The sweep directory's name in a multirun (groups the sweep's wandb runs), else ``None``."""
    return Path(HydraConfig.get().sweep.dir).name if in_multirun() else None


def sweep_job_name() -> str | None:
    """The job's overrides (``loss.alpha=0.25,loss.gamma=2``) in a multirun, else ``None``."""
    return (HydraConfig.get().job.override_dirname or None) if in_multirun() else None


#: Drawn once per process: two runs started in the same second still get their own directories.
_RUN_ID = uuid.uuid4().hex[:6]


def run_id() -> str:
    """Six hex digits, the same for every call in this process, different between processes."""
    return _RUN_ID


RESOLVERS = {"sweep_group": sweep_group, "sweep_job_name": sweep_job_name, "run_id": run_id}
#: Resolvers whose value the launching process fixes for the whole sweep. A launcher that runs
#: jobs in other processes (joblib's workers, submitit's jobs) re-composes each job's config
#: there, re-resolving ``hydra.sweep.dir``; OmegaConf's resolver cache, which Hydra copies from
#: the sweep's config into every job's (``OmegaConf.copy_cache``, as for ``${now:}``), gives the
#: workers the launcher's run id instead of their own, so all jobs land in one sweep directory.
CACHED = frozenset({"run_id"})


def register_resolvers() -> None:
    """Register the resolvers of :data:`RESOLVERS` (idempotent: a second call changes nothing)."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=name in CACHED)
