"""The one policy wrapper: a trained PPO-LSTM acting one bar at a time, outside the Algorithm.

The backtester, the paper broker, Ray Serve and the live loop all act through ``Policy``, so they
share one normalisation and one recurrent-state handling with training.

```python
policy = Policy.load("runs/demo/checkpoints/iter_000050")   # or "models:/tradebot-ppo-lstm/3"
action, probs = policy.act("NSE:SBIN-EQ", obs)              # obs: the env's flat float32 observation
policy.reset("NSE:SBIN-EQ")                                 # new episode / session for that stream
```

* **Normalisation travels with the checkpoint.** Training runs RLlib's ``MeanStdFilter`` connector
  on the env-to-module path; its running mean/std are part of the algorithm checkpoint
  (``env_runner/env_to_module_connector/MeanStdFilter``). ``Policy`` restores that connector from
  the checkpoint and applies its frozen statistics (no updates) exactly as the filter does:
  ``clip((obs - mean) / (std + SMALL_NUMBER), -clip, clip)``. Nothing is recomputed from live data.
* **Recurrent state per stream.** Each stream id (e.g. a symbol) has its own LSTM state, created
  from the module's initial state on first use and after ``reset``.
* **Deterministic by default:** argmax of the action logits, which is what RLlib does at inference
  (``explore=False``). ``deterministic=False`` samples from the probabilities with a seeded RNG.

Checkpoints are pickles: load only checkpoints and models you (or your own pipeline) produced.
"""

from __future__ import annotations

import re

import shutil
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.utils.numpy import SMALL_NUMBER  # the epsilon RLlib's MeanStdFilter divides with

from tradebot.core.errors import UserInputError

# Where the two parts of a policy live inside an RLlib (2.60, new API stack) algorithm checkpoint.
MODULE_SUBDIR = Path("learner_group/learner/rl_module/default_policy")
NORMALISER_SUBDIR = Path("env_runner/env_to_module_connector/MeanStdFilter")
_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "wasbs://", "http://", "https://")


@dataclass(frozen=True)
class ObsNormaliser:
    """Frozen observation statistics of RLlib's ``MeanStdFilter`` (same arithmetic, same dtypes)."""

    mean: np.ndarray  # float64, as the filter keeps it
    std: np.ndarray  # float32, as the filter computes it
    clip: float | None
    demean: bool = True
    destd: bool = True
    count: int = 0

    @classmethod
    def from_filter_state(cls, state: dict[Any, Any]) -> "ObsNormaliser":
        """From ``MeanStdFilter.get_state()`` (single agent: one entry keyed ``None``)."""
        from ray.rllib.utils.filter import RunningStat

        if len(state) != 1:
            raise UserInputError(f"observation normaliser has {len(state)} agents; a single-agent policy needs one")
        (agent_state,) = state.values()
        stats = agent_state["running_stats"]
        if len(stats) != 1:
            raise UserInputError("observation normaliser is for a nested observation space; expected one flat Box")
        rs = RunningStat.from_state(stats[0])
        return cls(mean=np.asarray(rs.mean, dtype=np.float64), std=np.asarray(rs.std, dtype=np.float32),
                   clip=agent_state["clip_by_value"], demean=bool(agent_state["de_mean_to_zero"]),
                   destd=bool(agent_state["de_std_to_one"]), count=int(rs.n))

    @classmethod
    def from_checkpoint(cls, path: str | Path, observation_space: Any) -> "ObsNormaliser":
        """Restore RLlib's ``MeanStdFilter`` connector from a checkpoint and freeze its statistics.

        ``observation_space``: the env's (flat Box) observation space; only its shape is used.
        """
        from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter

        filter_dir = Path(path) / NORMALISER_SUBDIR
        if not filter_dir.is_dir():
            raise UserInputError(f"{path}: no observation normaliser at {NORMALISER_SUBDIR}; "
                                 "pass a checkpoint written by `tradebot train`")
        connector = MeanStdFilter()
        connector.input_observation_space = observation_space  # (the constructor argument is read too early)
        connector.restore_from_path(str(filter_dir))
        return cls.from_filter_state(connector.get_state())

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs)
        dtype = x.dtype
        if self.demean:
            x = x - self.mean
        if self.destd:
            x = x / (self.std + SMALL_NUMBER)
        if self.clip:
            x = np.clip(x, -self.clip, self.clip)
        return x.astype(dtype)


class Policy:
    """A trained recurrent policy that acts one observation at a time, per stream.

    Not thread-safe (the per-stream states are plain dict entries): use one instance per worker.
    """

    def __init__(self, module: Any, normaliser: ObsNormaliser, *, deterministic: bool = True,
                 seed: int | None = None, source: str | None = None):
        from ray.rllib.core.columns import Columns

        self._cols = Columns
        self.module = module
        self.normaliser = normaliser
        self.deterministic = deterministic
        self.source = source
        self.version: str | None = None  # the registered model version (MLflow models), for journals and logs
        self._rng = np.random.default_rng(seed)
        self._states: dict[Hashable, Any] = {}
        shape = getattr(module.observation_space, "shape", None)
        if not shape or len(shape) != 1:
            raise UserInputError(f"policy expects a flat Box observation space, got {module.observation_space}")
        self.obs_dim = int(shape[0])
        self.num_actions = int(module.action_space.n)
        if normaliser.mean.shape != (self.obs_dim,):
            raise UserInputError(f"normaliser is for {normaliser.mean.shape} observations, the module for ({self.obs_dim},)")
        self.is_stateful = bool(module.is_stateful())
        module.eval()

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str | Path, *, deterministic: bool = True, seed: int | None = None) -> "Policy":
        """From a checkpoint directory, or an MLflow model URI (``models:/name/version``, ``runs:/id/policy``)."""
        text = str(source)
        if text.startswith(_MLFLOW_SCHEMES):
            return cls.from_mlflow(text, deterministic=deterministic, seed=seed)
        return cls.from_checkpoint(source, deterministic=deterministic, seed=seed)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, deterministic: bool = True, seed: int | None = None) -> "Policy":
        """From an algorithm checkpoint (or a policy export, which keeps the same two sub-folders)."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        path = Path(path).resolve()  # RLlib reads a relative path as a URI
        if not path.is_dir():
            raise UserInputError(f"{path}: checkpoint directory not found (check the path)")
        module_dir = path / MODULE_SUBDIR
        if not module_dir.is_dir():
            raise UserInputError(f"{path}: no RLModule at {MODULE_SUBDIR}; pass a checkpoint written by `tradebot train`")
        module = RLModule.from_checkpoint(str(module_dir))
        return cls(module, ObsNormaliser.from_checkpoint(path, module.observation_space),
                   deterministic=deterministic, seed=seed, source=str(path))

    @classmethod
    def from_mlflow(cls, uri: str, *, deterministic: bool = True, seed: int | None = None) -> "Policy":
        """From an MLflow pyfunc model logged by ``tradebot train`` (see ``tradebot.rl.mlflow_model``)."""
        import mlflow

        from tradebot.rl.mlflow_model import PolicyModel

        requested, uri = uri, resolve_model_alias(uri)
        try:
            model = mlflow.pyfunc.load_model(uri)
        except mlflow.exceptions.MlflowException as err:
            raise UserInputError(f"{uri}: cannot load the MLflow model ({str(err).splitlines()[0]})") from None
        wrapped = model.unwrap_python_model()
        if not isinstance(wrapped, PolicyModel) or wrapped.policy is None:
            raise UserInputError(f"{uri}: not a tradebot policy model (logged by `tradebot train`)")
        policy = wrapped.policy
        policy.deterministic = deterministic
        policy._rng = np.random.default_rng(seed)
        policy.source = uri  # a concrete version: an alias that moves later does not change this policy
        policy.version = uri if requested == uri else f"{uri} ({requested})"
        return policy

    # ---- acting ----------------------------------------------------------------------------
    def initial_state(self) -> Any:
        """A fresh recurrent state with a batch dimension of 1 (None for a stateless module)."""
        if not self.is_stateful:
            return None
        return _tree_map(lambda s: s.unsqueeze(0), self.module.get_initial_state())

    def act(self, stream_id: Hashable, obs: Any) -> tuple[int, np.ndarray]:
        """Decide on one new bar of ``stream_id``: ``(action, probabilities)`` (float64, sums to 1)."""
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        if x.shape[0] != self.obs_dim:
            raise UserInputError(f"observation for {stream_id!r} has {x.shape[0]} values; the policy expects {self.obs_dim}")
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise UserInputError(f"observation for {stream_id!r} has a NaN or infinite value at index {bad}; "
                                 "fix the features (the policy never acts on them)")
        logits, state_out = self._forward(self.normaliser(x)[None, None, :], self._states.get(stream_id))
        if state_out is not None:
            self._states[stream_id] = state_out
        probs = torch.softmax(logits[0, -1].double(), dim=-1).numpy()
        if self.deterministic:
            action = int(torch.argmax(logits[0, -1]))
        else:
            action = int(self._rng.choice(self.num_actions, p=probs / probs.sum()))
        return action, probs

    def reset(self, stream_id: Hashable | None = None) -> None:
        """Forget the recurrent state of one stream (a new episode or session), or of all when None."""
        if stream_id is None:
            self._states.clear()
        else:
            self._states.pop(stream_id, None)

    @property
    def streams(self) -> tuple[Hashable, ...]:
        return tuple(self._states)

    def _forward(self, normalised: np.ndarray, state: Any) -> tuple[torch.Tensor, Any]:
        """Logits [B, T, A] and the state after the last step, for normalised obs [B, T, D]."""
        cols = self._cols
        batch: dict[str, Any] = {cols.OBS: torch.from_numpy(np.ascontiguousarray(normalised))}
        if self.is_stateful:
            batch[cols.STATE_IN] = state if state is not None else self.initial_state()
        with torch.inference_mode():
            out = self.module.forward_inference(batch)
        return out[cols.ACTION_DIST_INPUTS], out.get(cols.STATE_OUT)


def export_policy(checkpoint: str | Path, dest: str | Path) -> Path:
    """Copy just what ``Policy`` needs (the RLModule and the normaliser) from an algorithm checkpoint."""
    checkpoint, dest = Path(checkpoint), Path(dest)
    for sub in (MODULE_SUBDIR, NORMALISER_SUBDIR):
        if not (checkpoint / sub).is_dir():
            raise UserInputError(f"{checkpoint}: missing {sub}; pass a checkpoint written by `tradebot train`")
        shutil.copytree(checkpoint / sub, dest / sub, dirs_exist_ok=True)
    return dest


def _tree_map(fn, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def resolve_model_alias(uri: str) -> str:
    """``models:/NAME@ALIAS`` as the version the alias names now (``models:/NAME/N``); other URIs unchanged.
    Resolved once, when a run or a server loads its model, so it never switches models mid-run."""
    import mlflow

    match = re.fullmatch(r"models:/([^/@]+)@([^/]+)", uri.rstrip("/"))
    if match is None:
        return uri
    name, alias = match.groups()
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
    except mlflow.exceptions.MlflowException as err:
        raise UserInputError(f"{uri}: no version of model {name} has alias @{alias} "
                             f"({str(err).splitlines()[0][:120]})") from None
    return f"models:/{name}/{version}"

