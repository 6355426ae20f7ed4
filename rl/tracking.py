"""MLflow helpers shared by training, tuning and walk-forward evaluation.

* ``open_experiment(name, tracking_uri)``: point MLflow at the store (``MLFLOW_TRACKING_URI``, else a
  sqlite file ``mlflow.db`` in the working directory) and get or create the experiment.
* ``flatten_params`` / ``log_params``: a nested config as ``section.key -> text`` params, logged in
  batches within MLflow's size limits.
* ``finite_metrics``: metric entities for ``MlflowClient.log_batch`` (missing and non-finite values left out).
* ``register_policy``: log a checkpoint to the active run and register its policy in the model registry.

MLflow itself is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradebot.rl.train_config import CONFIG_FILE

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs (mlflow.utils.mlflow_tags)
MAX_PARAM_KEY = 250  # MLflow's limits on a param's key and value
MAX_PARAM_VALUE = 6000
PARAMS_PER_BATCH = 100


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a sqlite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@dataclass(frozen=True)
class TrackedExperiment:
    """Where runs go: the tracking store and the experiment in it."""

    tracking_uri: str
    experiment_id: str

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)


def open_experiment(name: str, tracking_uri: str | None = None) -> TrackedExperiment:
    """Set MLflow's tracking URI (default ``default_tracking_uri()``) and get or create experiment ``name``.

    A new experiment on a sqlite store keeps its artifacts next to the database file
    (``<db folder>/mlruns/<name>``), not in the working directory.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return TrackedExperiment(uri, exp.experiment_id)
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        location = (db.parent / "mlruns" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)).resolve().as_uri()
    return TrackedExperiment(uri, mlflow.create_experiment(name, artifact_location=location))


def flatten_params(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping (a config's ``model_dump(mode="json")``) as ``a.b.c -> text`` MLflow params.

    Leaves are ``str(value)``; lists (and empty mappings) are JSON text.
    """
    out: dict[str, str] = {}
    if isinstance(data, Mapping) and data:
        for key, value in data.items():
            out.update(flatten_params(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = json.dumps(data) if isinstance(data, (list, tuple, Mapping)) else str(data)
    return out


def log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    """Log ``params`` to run ``run_id``, keys and values cut to MLflow's limits, in batches."""
    from mlflow.entities import Param

    items = [Param(k[:MAX_PARAM_KEY], str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + PARAMS_PER_BATCH])


def is_finite_number(value: Any) -> bool:
    """A real, finite number (booleans and None are not)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def finite_metrics(values: Mapping[str, Any], step: int = 0) -> list:
    """MLflow ``Metric`` entities of ``values`` at ``step``, stamped now; non-numbers and NaN/inf left out."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if is_finite_number(v)]


def register_policy(checkpoint: Path, registered_model: str, *, config_file: Path | None = None) -> tuple[str, int]:
    """Log ``checkpoint`` to the active MLflow run and register its policy: ``(models:/name/N, N)``.

    The run gets the checkpoint as artifacts (``checkpoint/``) and the policy export as the pyfunc
    model ``policy``, registered as a new version of ``registered_model`` (linked to the run). The
    training config (``config_file``, else the checkpoint's own ``config.yaml``) travels inside the
    export, so the registered model says which observation layout and engine it was trained with.
    """
    import mlflow

    from tradebot.rl.mlflow_model import log_policy_model
    from tradebot.rl.policy import Policy, export_policy

    mlflow.log_artifacts(str(checkpoint), artifact_path="checkpoint")
    with tempfile.TemporaryDirectory(prefix="tradebot-policy-") as tmp:
        policy_dir = export_policy(checkpoint, Path(tmp) / "policy")
        source = config_file if config_file is not None and config_file.is_file() else checkpoint / CONFIG_FILE
        if source.is_file():
            shutil.copyfile(source, policy_dir / CONFIG_FILE)
        policy = Policy.from_checkpoint(policy_dir)  # also proves the export loads on its own
        save_drift_reference(policy, policy_dir)
        info = log_policy_model(policy_dir, obs_dim=policy.obs_dim, num_actions=policy.num_actions,
                                registered_model=registered_model)
    version = int(info.registered_model_version)
    return f"models:/{registered_model}/{version}", version


def save_drift_reference(policy, policy_dir: Path) -> Path | None:
    """Build the model's drift reference (``tradebot.rl.drift``) from the training config in the policy
    export and save it there, so that it travels with the model; None (and a warning) when it cannot."""
    import logging

    from tradebot.core.errors import UserInputError
    from tradebot.rl.backtest_policy import policy_env_config, saved_train_config
    from tradebot.rl.drift.offline import reference_from_training

    saved = saved_train_config(policy_dir)
    if saved is None:
        return None
    try:
        reference = reference_from_training(policy, saved.config, policy_env_config(saved.config))
    except UserInputError as err:
        logging.getLogger(__name__).warning("no drift reference saved with the model: %s", err)
        return None
    return reference.save(policy_dir)

