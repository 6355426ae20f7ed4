"""Backtest a trained policy through the one wrapper, on the observations it was trained on.

```python
policy = Policy.load("models:/tradebot-ppo-lstm-demo/1")       # or a checkpoint folder
saved = saved_train_config("models:/tradebot-ppo-lstm-demo/1")   # the TrainConfig it was trained with
env_config = policy_env_config(saved.config if saved else None)
run = backtest_policy(policy, load_bars(path), env_config, start="2021-06-01", end="2021-07-01")
run.result          # tradebot.envs.backtest.BacktestResult over the evaluated bars only
run.bars, run.actions
run.decisions       # a mixture of experts: its gate at every decision (None for other policies)
setup = load_policy_setup("models:/tradebot-ppo-lstm-demo/1")    # all of the above but the run, in one call
```

The evaluated period is a ``tradebot.envs.window.BacktestWindow``: every bar before ``end`` is the
history, trading starts at ``start``. How the actions are made. A ``TradingEnv`` is built on the history with the env
section of the training config (same features, same causal normalisation, same engine; episodes
forced to one window from ``start`` to the last bar; one step per bar, the policy holding between the
decisions of its decision interval itself), reset at the first bar at or after ``start``
and stepped with the policy's own deterministic action for each bar (``Policy.act``, one bar at a
time, recurrent state starting fresh at ``start`` as in validation). Bars before ``start`` only warm
the features up: the account starts flat with ``engine.initial_cash`` at ``start`` and the
reported equity, trades and metrics cover ``[start, end)`` only, so nothing the policy did (or
learned) before ``start`` shows in the result.

A policy that explains its decisions (a mixture of experts, ``tradebot.rl.moe.mixture``:
``explain(stream) -> GateDecision``) also gives ``decisions``: one row per bar it decided on (every
``decision_interval``-th bar) with the bar's ``timestamp``, the ``action`` name, the gate's weight
per expert (``w_<expert>``, summing to 1) and the chosen ``expert``; ``tradebot backtest`` writes it
as ``decisions.csv`` and charts it in ``report.html``.

How the result is computed. The collected actions go through the window's backtest
(``BacktestWindow.run``) with the env's engine config and the ATR the env used (the feature pipeline's
ATR over the full history), i.e. through the same numba fill engine the env steps: the equity curve
and the trades are exactly those of the env (tested).

Which config. A checkpoint written by ``tradebot train`` / ``tradebot tune`` holds ``config.yaml``
(older checkpoints: ``<output>/config.yaml`` two folders up); a model registered by them holds it
at ``artifacts/policy/config.yaml`` (older models: the ``config.yaml`` of the run that logged
them). ``saved_train_config`` finds it; without one the env's defaults are used, and a policy whose
observation size does not match the env is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError
from tradebot.rl.train_config import DEFAULT_ENV_ID, TrainConfig

if TYPE_CHECKING:
    from tradebot.envs.window import BacktestWindow, DateLike
    from tradebot.envs.backtest import BacktestResult
    from tradebot.envs.engine_config import EngineConfig
    from tradebot.envs.trading_env import EnvConfig, TradingEnv
    from tradebot.features.bars import Bars
    from tradebot.rl.policy import Policy

CONFIG_FILE = "config.yaml"  # as tradebot.rl.train writes it (into the output folder and every checkpoint)
MODEL_CONFIG_PATH = "artifacts/policy/config.yaml"  # inside a model registered by tradebot.rl.train.register_policy
BACKTEST_STREAM = "backtest"
_MLFLOW_SCHEMES = ("models:/", "runs:/")
_TRADING_ENV_IDS = (DEFAULT_ENV_ID, "tradebot/Trading-v0")


@dataclass(frozen=True)
class SavedConfig:
    """A policy's training config and where it was found (a file path or an MLflow URI)."""

    config: TrainConfig
    location: str


@dataclass(frozen=True)
class PolicyActions:
    """The policy's decisions over the evaluated bars of ``window``."""

    window: BacktestWindow  # history: every bar before ``end``; trading from the first evaluated bar
    actions: np.ndarray  # int8, one per evaluated bar; the last is HOLD (no later bar to fill it)
    atr: np.ndarray  # the env's ATR (price units) over the history
    env_config: EnvConfig
    decisions: pd.DataFrame | None = None  # a mixture's gate per decision (``decision_frame``); else None

    @property
    def history(self) -> Bars:
        """Every bar before ``end``: the features' warm-up plus the evaluated bars."""
        return self.window.history

    @property
    def first(self) -> int:
        """Index in ``history`` of the first evaluated bar."""
        return self.window.first

    @property
    def bars(self) -> Bars:
        """The evaluated bars."""
        return self.window.bars


@dataclass(frozen=True)
class PolicyBacktest:
    """A policy backtest: its actions and the fill engine's result over the evaluated bars."""

    run: PolicyActions
    result: BacktestResult

    @property
    def bars(self) -> Bars:
        return self.run.bars

    @property
    def actions(self) -> np.ndarray:
        return self.run.actions

    @property
    def window(self) -> BacktestWindow:
        return self.run.window

    @property
    def decisions(self) -> pd.DataFrame | None:
        """A mixture's gate per decision (``decisions.csv``); None for a policy without a gate."""
        return self.run.decisions

    @property
    def warmup_bars(self) -> int:
        """Bars before the evaluated period that were used for the features only."""
        return self.run.first


# ---- the training config a policy carries ----------------------------------------------------

def saved_train_config(source: str | Path) -> SavedConfig | None:
    """The ``TrainConfig`` a checkpoint folder or an MLflow model URI was trained with; None if not saved."""
    text = str(source)
    if text.startswith(_MLFLOW_SCHEMES):
        return _mlflow_config(text)
    path = Path(source)
    candidates = [path / CONFIG_FILE]  # inside the checkpoint (or policy export)
    if path.parent.name == "checkpoints":  # older checkpoints: <output>/checkpoints/iter_N -> <output>/config.yaml
        candidates.append(path.parent.parent / CONFIG_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return SavedConfig(_parse_train_config(candidate.read_text(), str(candidate)), str(candidate))
    return None


def _mlflow_config(uri: str) -> SavedConfig | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    base = uri.rstrip("/")
    try:  # the config inside the model (models registered by tradebot.rl.train.register_policy)
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{MODEL_CONFIG_PATH}")
        return SavedConfig(_parse_train_config(Path(local).read_text(), uri), f"{base}/{MODEL_CONFIG_PATH}")
    except (MlflowException, OSError):
        pass
    try:  # older models: the config.yaml of the run that logged the model
        run_id = mlflow.models.get_model_info(uri).run_id
        if not run_id:
            return None
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{CONFIG_FILE}")
    except (MlflowException, OSError):
        return None
    return SavedConfig(_parse_train_config(Path(local).read_text(), uri), f"runs:/{run_id}/{CONFIG_FILE}")


def _parse_train_config(text: str, where: str) -> TrainConfig:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserInputError(f"{where}: the saved training config is not valid YAML ({err.__class__.__name__})") from None
    return parse_config(TrainConfig, data, where)


def policy_env_config(train_config: TrainConfig | None = None, engine: EngineConfig | None = None) -> EnvConfig:
    """The env config to backtest a policy under: the training config's env section (features,
    engine, reward) with one episode over the whole period, and ``engine`` instead of its engine
    when given. Without a training config: the env's defaults."""
    from tradebot.envs.trading_env import EnvConfig

    raw: dict[str, Any] = dict(train_config.env) if train_config is not None else {}
    if train_config is not None and train_config.run.env_id not in _TRADING_ENV_IDS:
        raise UserInputError(f"the policy was trained on env {train_config.run.env_id!r}; policy backtests "
                             f"replay {DEFAULT_ENV_ID} (TradingEnv) only")
    raw["episode"] = {"mode": "window", "length": None}
    raw["decision_interval"] = 1  # one step per bar: the policy holds between its decisions itself (Policy)
    if engine is not None:
        raw["engine"] = engine.model_dump()
    where = "env section of the policy's training config" if train_config is not None else "env config"
    return parse_config(EnvConfig, raw, where)


@dataclass(frozen=True)
class PolicySetup:
    """A policy ready to backtest: the policy, where it came from, its training config and its env."""

    policy: Policy
    source: str
    env_config: EnvConfig
    saved: SavedConfig | None

    @property
    def train_config(self) -> TrainConfig | None:
        return self.saved.config if self.saved is not None else None

    @property
    def config_location(self) -> str | None:
        return self.saved.location if self.saved is not None else None

    def notes(self, window: BacktestWindow) -> list[str]:
        """What a reader of the policy's backtest over ``window`` should know (in-sample dates, defaults)."""
        notes = []
        if self.train_config is not None:
            note = overlaps_training(self.train_config, window.bars.index[0], window.bars.index[-1])
            if note:
                notes.append(note)
        if self.saved is None:
            notes.append("the model has no saved training config: the env's default features were used")
        return notes

    def info(self, window: BacktestWindow, notes: list[str]) -> dict[str, Any]:
        """The policy's part of a run record (``metrics.json`` / ``compare.json``)."""
        info: dict[str, Any] = {"model": self.source,
                                "train_config": self.config_location or "none saved (env defaults)",
                                "features": self.env_config.features.model_dump(mode="json"),
                                "warmup_bars": window.first}
        if self.train_config is not None:
            data = self.train_config.data
            info["trained_on"] = {"train": [str(data.train.start), str(data.train.end)],
                                  "validation": [str(data.validation.start), str(data.validation.end)]
                                  if data.validation is not None else None}
        if notes:
            info["notes"] = notes
        return info


def load_policy_setup(source: str, engine_file: Path | None = None) -> PolicySetup:
    """Load the policy of a checkpoint folder or an MLflow model URI (MLflow: ``MLFLOW_TRACKING_URI``, default
    ``sqlite:///mlflow.db``) with the env of its saved training config; ``engine_file``: a YAML file whose
    ``engine`` section overrides the keys it sets."""
    from tradebot.envs.engine_config import load_engine_config
    from tradebot.rl.policy import Policy

    if source.startswith(_MLFLOW_SCHEMES):
        import mlflow

        from tradebot.rl.tracking import default_tracking_uri

        mlflow.set_tracking_uri(default_tracking_uri())
    policy = Policy.load(source, deterministic=True)
    saved = saved_train_config(source)
    train_config = saved.config if saved is not None else None
    engine = load_engine_config(engine_file, base=policy_env_config(train_config).engine)
    return PolicySetup(policy, source, policy_env_config(train_config, engine), saved)


# ---- policy -> actions -> backtest -----------------------------------------------------------

def _trading_env(history: Bars, env_config: EnvConfig) -> tuple[TradingEnv, np.ndarray]:
    """The TradingEnv over ``history`` as training builds it (features and ATR from the one pipeline)."""
    from tradebot.envs.trading_env import TradingEnv
    from tradebot.features.pipeline import FeaturePipeline

    pipeline = FeaturePipeline.for_bars(history, env_config.features)
    atr = pipeline.atr(history).to_numpy()
    env = TradingEnv(history, features=pipeline.transform(history), atr=atr, config=env_config)
    return env, atr


def policy_actions(policy: Policy, bars: Bars, env_config: EnvConfig, start: DateLike = None,
                   end: DateLike = None) -> PolicyActions:
    """Feed ``policy`` the env's observations bar by bar over ``[start, end)`` and collect its actions.

    ``start`` None: the first session that opens after the features' warm-up. A ``start`` inside the
    warm-up is refused (the policy would see NaN features). The env is reset at the first evaluated
    bar, so the account is flat there and the policy's recurrent state starts fresh.
    """
    import torch

    from tradebot.envs.engine import Action
    from tradebot.envs.window import BacktestWindow

    window = BacktestWindow.from_dates(bars, start, end)
    # the instrument catalog's lot and margin on the first traded date, for the env and the backtest alike
    env_config = env_config.model_copy(update={"engine": window.resolve(env_config.engine)})
    env, atr = _trading_env(window.history, env_config)
    dim = int(env.observation_space.shape[0])
    if dim != policy.obs_dim:
        raise UserInputError(f"{policy.source or 'policy'}: takes {policy.obs_dim} observation values but the env "
                             f"gives {dim} with this feature config and data; backtest it on the kind of bars and "
                             "with the features it was trained with (its saved config.yaml)")
    if start is None:
        window = window.starting_at_session(env.warmup)
    elif window.first < env.warmup:
        first_usable = window.history.index[env.warmup].isoformat()
        raise UserInputError(f"--start {start} falls inside the features' warm-up (the first usable bar is "
                             f"{first_usable}); give a later --start or data from earlier")
    n, first = len(window.history), window.first
    actions = np.full(n - first, int(Action.HOLD), dtype=np.int8)
    explain = getattr(policy, "explain", None)  # a mixture of experts tells its gate
    every = max(1, int(getattr(policy, "decision_interval", 1)))
    gates: list[tuple[int, Any]] = []
    policy.reset(BACKTEST_STREAM)
    obs, _ = env.reset(options={"start": first})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one bar at a time: more threads only contend (16 ms/bar instead of 0.5 on a busy machine)
    try:
        for k in range(n - 1 - first):
            action, _ = policy.act(BACKTEST_STREAM, obs)
            actions[k] = action
            if explain is not None and k % every == 0:  # a decision (between them the policy holds)
                gate = explain(BACKTEST_STREAM)
                if gate is not None:
                    gates.append((k, gate))
            obs, _, terminated, _, _ = env.step(action)
            if terminated:  # equity at or below zero: the env ends the episode; the rest holds
                break
    finally:
        torch.set_num_threads(threads)
        policy.reset(BACKTEST_STREAM)
        env.close()
    decisions = (decision_frame(window.bars.index, actions, gates, tuple(getattr(policy, "expert_names", ())))
                 if explain is not None else None)
    return PolicyActions(window=window, actions=actions, atr=atr, env_config=env_config, decisions=decisions)


def decision_frame(index: pd.DatetimeIndex, actions: np.ndarray, gates: list[tuple[int, Any]],
                   expert_names: tuple[str, ...] = ()) -> pd.DataFrame:
    """``decisions.csv``: per decision ``(k, GateDecision)`` (``k`` a position in ``index``), the bar's
    ``timestamp``, the ``action`` name, ``w_<expert>`` per expert (summing to 1) and the chosen ``expert``."""
    from tradebot.envs.engine import Action

    names = tuple(gates[0][1].expert_names) if gates else tuple(expert_names)
    rows = [{"timestamp": index[k], "action": Action(int(actions[k])).name,
             **{f"w_{n}": float(w) for n, w in zip(g.expert_names, g.weights)}, "expert": g.expert}
            for k, g in gates]
    return pd.DataFrame(rows, columns=["timestamp", "action", *(f"w_{n}" for n in names), "expert"])


def backtest_actions(run: PolicyActions) -> BacktestResult:
    """Run collected actions through the fill engine over the evaluated bars (the env's engine and ATR)."""
    return run.window.run(run.actions, run.env_config.engine, atr=run.atr)


def backtest_policy(policy: Policy, bars: Bars, env_config: EnvConfig, start: DateLike = None,
                    end: DateLike = None) -> PolicyBacktest:
    """``policy_actions`` then ``run_backtest``: the policy's backtest over ``[start, end)``."""
    run = policy_actions(policy, bars, env_config, start, end)
    return PolicyBacktest(run=run, result=backtest_actions(run))


def overlaps_training(config: TrainConfig, period_start: pd.Timestamp, period_end: pd.Timestamp) -> str | None:
    """A note when ``[period_start, period_end]`` touches the policy's training or validation dates."""
    ranges = [("training", config.data.train)]
    if config.data.validation is not None:
        ranges.append(("validation", config.data.validation))
    lo, hi = period_start.date(), period_end.date()
    hits = [f"{name} {r.start}..{r.end}" for name, r in ranges if lo < r.end and hi >= r.start]
    if not hits:
        return None
    return (f"the period {lo}..{hi} overlaps the policy's {' and '.join(hits)} dates (in-sample); "
            "use dates after them for an honest test")
