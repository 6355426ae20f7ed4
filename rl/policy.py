"""The one policy wrapper: a trained PPO-LSTM acting one bar at a time, outside the Algorithm.

The backtester, the paper broker, Ray Serve and the live loop all act through ``Policy``, so they
share one normalisation and one recurrent-state handling with training.

```python
policy = Policy.load("runs/demo/checkpoints/iter_000050")   # or "models:/tradebot-ppo-lstm/3"
action, probs = policy.act("NSE:SBIN-EQ", obs)              # obs: the env's flat float32 observation
policy.reset("NSE:SBIN-EQ")                                 # new episode / session for that stream
```

* **Normalisation travels with the checkpoint.** Training runs RLlib's ``MeanStdFilter`` connector
  (``tradebot.rl.masking.MaskKeepingMeanStdFilter``, which passes the action-mask columns through raw)
  on the env-to-module path; its running mean/std are part of the algorithm checkpoint
  (``env_runner/env_to_module_connector/<filter>``). ``Policy`` restores that connector from
  the checkpoint and applies its frozen statistics (no updates) exactly as the filter does:
  ``clip((obs - mean) / (std + SMALL_NUMBER), -clip, clip)``. Nothing is recomputed from live data.
* **Action masks.** A masked module (``tradebot.rl.masking``) reads the mask at the end of the raw
  observation; ``act`` returns probability 0 for every action the engine would ignore, and never
  picks one. With ``min_hold_bars`` (from the training config) ``act`` also masks the closes of a
  position held fewer bars, from the observation's raw ``bars_in_trade``, as the env did in training.
* **Decision interval.** A policy trained with ``env.decision_interval`` k (saved ``config.yaml``)
  decides on the first bar of a stream and every k-th bar after it, and holds in between (HOLD with
  probability 1, its recurrent state untouched), as the env stepped it in training.
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
from tradebot.envs.engine import Action
from tradebot.envs.trading_env import BARS_IN_TRADE_FROM_END

HOLD = int(Action.HOLD)
HOLD_PROBS = np.eye(len(Action))[HOLD]

# Where the two parts of a policy live inside an RLlib (2.60, new API stack) algorithm checkpoint.
MODULE_SUBDIR = Path("learner_group/learner/rl_module/default_policy")
CONNECTOR_SUBDIR = Path("env_runner/env_to_module_connector")
NORMALISER_NAMES = ("MaskKeepingMeanStdFilter", "MeanStdFilter")  # the masking filter's, or RLlib's own
NORMALISER_SUBDIR = CONNECTOR_SUBDIR / NORMALISER_NAMES[0]
CONFIG_FILE = "config.yaml"  # the training config, in every checkpoint and policy export
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
    raw_tail: int = 0  # trailing columns (the action mask) handed on unnormalised

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
                   destd=bool(agent_state["de_std_to_one"]), count=int(rs.n),
                   raw_tail=int(agent_state.get("raw_tail", 0)))

    @classmethod
    def from_checkpoint(cls, path: str | Path, observation_space: Any) -> "ObsNormaliser":
        """Restore RLlib's ``MeanStdFilter`` connector from a checkpoint and freeze its statistics.

        ``observation_space``: the env's (flat Box) observation space; only its shape is used.
        """
        from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter

        from tradebot.rl.masking import MaskKeepingMeanStdFilter

        found = [n for n in NORMALISER_NAMES if (Path(path) / CONNECTOR_SUBDIR / n).is_dir()]
        if not found:
            raise UserInputError(f"{path}: no observation normaliser in {CONNECTOR_SUBDIR}; "
                                 "pass a checkpoint written by `tradebot train`")
        filter_dir = Path(path) / CONNECTOR_SUBDIR / found[0]
        connector = MaskKeepingMeanStdFilter() if found[0] == NORMALISER_NAMES[0] else MeanStdFilter()
        connector.input_observation_space = observation_space  # (the constructor argument is read too early)
        connector.restore_from_path(str(filter_dir))
        return cls.from_filter_state(connector.get_state())

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        raw = np.asarray(obs)
        x, dtype = raw, raw.dtype
        if self.demean:
            x = x - self.mean
        if self.destd:
            x = x / (self.std + SMALL_NUMBER)
        if self.clip:
            x = np.clip(x, -self.clip, self.clip)
        x = x.astype(dtype)
        if self.raw_tail:
            x[..., -self.raw_tail:] = raw[..., -self.raw_tail:]
        return x


class Policy:
    """A trained recurrent policy that acts one observation at a time, per stream.

    Not thread-safe (the per-stream states are plain dict entries): use one instance per worker.
    """

    def __init__(self, module: Any, normaliser: ObsNormaliser, *, deterministic: bool = True,
                 seed: int | None = None, source: str | None = None, decision_interval: int = 1,
                 min_hold_bars: int = 0):
        from ray.rllib.core.columns import Columns

        self._cols = Columns
        self.module = module
        self.normaliser = normaliser
        self.deterministic = deterministic
        self.source = source
        self.version: str | None = None  # the registered model version (MLflow models), for journals and logs
        self.decision_interval = int(decision_interval)
        self.min_hold_bars = int(min_hold_bars)
        self._rng = np.random.default_rng(seed)
        self._states: dict[Hashable, Any] = {}
        self._bars: dict[Hashable, int] = {}  # bars seen per stream (the decision interval counts them)
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
        """From an algorithm checkpoint (or a policy export, which keeps the same two sub-folders); a
        mixture folder (``mixture.json``) gives a ``tradebot.rl.moe.mixture.MixturePolicy``."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        path = Path(path).resolve()  # RLlib reads a relative path as a URI
        if not path.is_dir():
            raise UserInputError(f"{path}: checkpoint directory not found (check the path)")
        from tradebot.rl.moe.mixture import MixturePolicy, is_mixture

        if is_mixture(path):  # a mixture of experts acts like a policy (tradebot.rl.moe.mixture)
            return MixturePolicy.load(path, deterministic=deterministic, seed=seed)
        module_dir = path / MODULE_SUBDIR
        if not module_dir.is_dir():
            raise UserInputError(f"{path}: no RLModule at {MODULE_SUBDIR}; pass a checkpoint written by `tradebot train`")
        module = RLModule.from_checkpoint(str(module_dir))
        interval, min_hold = agent_rules(path / CONFIG_FILE)
        return cls(module, ObsNormaliser.from_checkpoint(path, module.observation_space),
                   deterministic=deterministic, seed=seed, source=str(path), decision_interval=interval,
                   min_hold_bars=min_hold)

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
        seen = self._bars.get(stream_id, 0)
        self._bars[stream_id] = seen + 1
        if seen % self.decision_interval:
            return HOLD, HOLD_PROBS.copy()  # between decisions: hold; the recurrent state waits
        if self.min_hold_bars and self.normaliser.raw_tail:
            held = float(x[-BARS_IN_TRADE_FROM_END])
            if held + 1.0 < self.min_hold_bars:
                x = x.copy()
                x[-2:] = 0.0  # CLOSE_LONG and CLOSE_SHORT: not before the minimum holding time
        logits, state_out = self.forward(self.normaliser(x)[None, None, :], self._states.get(stream_id))
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
            self._bars.clear()
        else:
            self._states.pop(stream_id, None)
            self._bars.pop(stream_id, None)

    @property
    def streams(self) -> tuple[Hashable, ...]:
        return tuple(self._states)

    def forward(self, normalised: np.ndarray, state: Any) -> tuple[torch.Tensor, Any]:
        """Logits [B, T, A] and the state after the last step, for normalised obs [B, T, D]."""
        cols = self._cols
        batch: dict[str, Any] = {cols.OBS: torch.from_numpy(np.ascontiguousarray(normalised))}
        if self.is_stateful:
            batch[cols.STATE_IN] = state if state is not None else self.initial_state()
        with torch.inference_mode():
            out = self.module.forward_inference(batch)
        return out[cols.ACTION_DIST_INPUTS], out.get(cols.STATE_OUT)


def export_policy(checkpoint: str | Path, dest: str | Path) -> Path:
    """Copy just what ``Policy`` needs (the RLModule, the normaliser and the training config with its
    agent rules) from an algorithm checkpoint."""
    checkpoint, dest = Path(checkpoint), Path(dest)
    normaliser = next((CONNECTOR_SUBDIR / n for n in NORMALISER_NAMES if (checkpoint / CONNECTOR_SUBDIR / n).is_dir()),
                      NORMALISER_SUBDIR)
    for sub in (MODULE_SUBDIR, normaliser):
        if not (checkpoint / sub).is_dir():
            raise UserInputError(f"{checkpoint}: missing {sub}; pass a checkpoint written by `tradebot train`")
        shutil.copytree(checkpoint / sub, dest / sub, dirs_exist_ok=True)
    if (checkpoint / CONFIG_FILE).is_file():
        shutil.copyfile(checkpoint / CONFIG_FILE, dest / CONFIG_FILE)
    return dest


def agent_rules(config_file: Path) -> tuple[int, int]:
    """``(decision_interval, min_hold_bars)`` of the env section of a saved training config ((1, 0)
    without one)."""
    import yaml

    if not config_file.is_file():
        return 1, 0
    try:
        env = (yaml.safe_load(config_file.read_text()) or {}).get("env") or {}
        return max(1, int(env.get("decision_interval") or 1)), max(0, int(env.get("min_hold_bars") or 0))
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        raise UserInputError(f"{config_file}: unreadable training config (env.decision_interval / "
                             "env.min_hold_bars)") from None


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

