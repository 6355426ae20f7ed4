"""MLflow pyfunc flavour of ``tradebot.rl.policy.Policy`` (so ``models:/name/version`` loads and predicts).

``mlflow.pyfunc.load_model(uri).predict(frame)`` takes a DataFrame with one row per bar, in time
order: the observation as ``obs_0 .. obs_{n-1}`` columns, an optional ``stream_id`` column
(default ``"default"``) and an optional boolean ``reset`` column (forget that stream's recurrent
state before acting). It returns ``action`` and ``prob_0 .. prob_{k-1}`` (the model's signature
says so too). The recurrent state persists between ``predict`` calls, per stream, like ``Policy.act``.
``Policy.load(uri)`` gives the wrapper itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError

POLICY_ARTIFACT = "policy"  # artifact key (and folder under the model's artifacts/) of the policy export
DEFAULT_STREAM = "default"


class PolicyModel(mlflow.pyfunc.PythonModel):
    """Loads the exported policy from the model's artifacts; ``.policy`` is the ``tradebot.rl.policy.Policy``."""

    def __init__(self) -> None:
        self.policy = None

    def load_context(self, context) -> None:
        from tradebot.rl.policy import Policy

        self.policy = Policy.from_checkpoint(Path(context.artifacts[POLICY_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.policy is None:
            raise RuntimeError("PolicyModel.predict called before load_context")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        obs = _observations(frame, self.policy.obs_dim)
        streams = frame["stream_id"].tolist() if "stream_id" in frame else [DEFAULT_STREAM] * len(frame)
        resets = frame["reset"].astype(bool).tolist() if "reset" in frame else [False] * len(frame)
        actions = np.zeros(len(frame), dtype=np.int64)
        probs = np.zeros((len(frame), self.policy.num_actions))
        for i, (stream, reset) in enumerate(zip(streams, resets)):
            if reset:
                self.policy.reset(stream)
            actions[i], probs[i] = self.policy.act(stream, obs[i])
        out = pd.DataFrame({"action": actions}, index=frame.index)
        for k in range(probs.shape[1]):
            out[f"prob_{k}"] = probs[:, k]
        return out


def _observations(frame: pd.DataFrame, obs_dim: int) -> np.ndarray:
    cols = [f"obs_{i}" for i in range(obs_dim)]
    missing = [c for c in cols if c not in frame]
    if missing:
        raise UserInputError(f"model input needs columns obs_0..obs_{obs_dim - 1}; missing {missing[0]}")
    return frame[cols].to_numpy(dtype=np.float32)


def policy_signature(obs_dim: int, num_actions: int):
    """The pyfunc signature: optional stream_id / reset, obs_0..obs_{n-1} in; action, prob_k out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", "stream_id", required=False), ColSpec("boolean", "reset", required=False)]
    inputs += [ColSpec("double", f"obs_{i}") for i in range(obs_dim)]
    outputs = [ColSpec("long", "action")] + [ColSpec("double", f"prob_{k}") for k in range(num_actions)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def log_policy_model(policy_dir: str | Path, *, obs_dim: int, num_actions: int, registered_model: str | None,
                     pip_requirements: list[str] | None = None) -> Any:
    """Log ``policy_dir`` (an ``export_policy`` folder) as the pyfunc model ``policy`` of the active run.

    Registers it as a new version of ``registered_model`` when given. Returns MLflow's ``ModelInfo``.
    """
    return mlflow.pyfunc.log_model(
        name="policy",
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
        artifacts={POLICY_ARTIFACT: str(policy_dir)},
        registered_model_name=registered_model,
        signature=policy_signature(obs_dim, num_actions),
        pip_requirements=pip_requirements if pip_requirements is not None else _requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist, spec in (("ray", "ray[rllib]"), ("torch", "torch"), ("gymnasium", "gymnasium"),
                       ("numpy", "numpy"), ("pandas", "pandas"), ("mlflow", "mlflow")):
        try:
            reqs.append(f"{spec}=={version(dist)}")
        except PackageNotFoundError:
            reqs.append(spec)
    return reqs
