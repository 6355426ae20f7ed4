"""Backtest a trained policy through the one wrapper, on the observations it was trained on.

```python
policy = Policy.load("models:/tradebot-ppo-lstm-demo/1")       # or a checkpoint folder
saved = saved_train_config("models:/tradebot-ppo-lstm-demo/1")   # the TrainConfig it was trained with
env_config = policy_env_config(saved.config if saved else None)
run = backtest_policy(policy, load_bars(path), env_config, start="2021-06-01", end="2021-07-01")
run.result          # tradebot.envs.backtest.BacktestResult over the evaluated bars only
run.bars, run.actions
```

How the actions are made. A ``TradingEnv`` is built on every bar before ``end`` with the env
section of the training config (same features, same causal normalisation, same engine; episodes
forced to one window from ``start`` to the last bar), reset at the first bar at or after ``start``
and stepped with the policy's own deterministic action for each bar (``Policy.act``, one bar at a
time, recurrent state starting fresh at ``start`` as in validation). Bars before ``start`` only warm
the features up: the account starts flat with ``engine.initial_cash`` at ``start`` and the
reported equity, trades and metrics cover ``[start, end)`` only, so nothing the policy did (or
learned) before ``start`` shows in the result.

How the result is computed. The collected actions go through ``tradebot.envs.backtest.run_backtest`` on the
evaluated bars with the env's engine config and the ATR the env used (the feature pipeline's ATR
over the full history), i.e. through the same numba fill engine the env steps: the equity curve and
the trades are exactly those of the env (tested).

Which config. A checkpoint written by ``tradebot train`` / ``tradebot tune`` holds ``config.yaml``
(older checkpoints: ``<output>/config.yaml`` two folders up); a model registered by them holds it
at ``artifacts/policy/config.yaml`` (older models: the ``config.yaml`` of the run that logged
them). ``saved_train_config`` finds it; without one the env's defaults are used, and a policy whose
observation size does not match the env is refused with one line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradebot.rl.config import DEFAULT_ENV_ID, TrainConfig
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError

if TYPE_CHECKING:
    from tradebot.envs.backtest import BacktestResult
    from tradebot.envs.engine import EngineConfig
    from tradebot.envs.trading_env import EnvConfig, TradingEnv
    from tradebot.features.bars import Bars
    from tradebot.rl.policy import Policy

CONFIG_FILE = "config.yaml"  # as tradebot.rl.train writes it (into the output folder and every checkpoint)
MODEL_CONFIG_PATH = "artifacts/policy/config.yaml"  # inside a model registered by tradebot.rl.train.register_policy
BACKTEST_STREAM = "backtest"
_MLFLOW_SCHEMES = ("models:/", "runs:/")
_TRADING_ENV_IDS = (DEFAULT_ENV_ID, "tradebot/Trading-v0")

DateLike = str | dt.date | pd.Timestamp | None


@dataclass(frozen=True)
class SavedConfig:
    """A policy's training config and where it was found (a file path or an MLflow URI)."""

    config: TrainConfig
    location: str


@dataclass(frozen=True)
class PolicyActions:
    """The policy's decisions over the evaluated bars (``history[first:]``)."""

    history: Bars  # every bar before ``end`` (the features' warm-up plus the evaluated bars)
    first: int  # index in ``history`` of the first evaluated bar
    actions: np.ndarray  # int8, one per evaluated bar; the last is HOLD (no later bar to fill it)
    atr: np.ndarray  # the env's ATR (price units) over the evaluated bars
    env_config: EnvConfig

    @property
    def bars(self) -> Bars:
        """The evaluated bars."""
        return self.history.slice(self.first, len(self.history))


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
    if engine is not None:
        raw["engine"] = engine.model_dump()
    where = "env section of the policy's training config" if train_config is not None else "env config"
    return parse_config(EnvConfig, raw, where)


# ---- the evaluated period --------------------------------------------------------------------

def _timestamp(value: DateLike, tz) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize(tz) if ts.tzinfo is None else ts.tz_convert(tz)


def evaluation_history(bars: Bars, start: DateLike = None, end: DateLike = None) -> tuple[Bars, int | None]:
    """``(every bar before end, index of the first bar at or after start or None)``.

    Dates are read in IST, as ``Bars.between`` reads them (``start <= bar < end``).
    """
    history = bars.between(None, _timestamp(end, bars.index.tz)) if end is not None else bars
    if len(history) == 0:
        raise UserInputError(f"no bars before --end {end}; the data starts {bars.index[0].isoformat()}")
    first = None
    if start is not None:
        first = int(history.index.searchsorted(_timestamp(start, history.index.tz)))
        if first >= len(history) - 1:
            raise UserInputError(f"fewer than 2 bars between --start {start} and --end {end or 'the end of the data'} "
                                 f"(data: {bars.index[0].date()} .. {bars.index[-1].date()})")
    return history, first


def first_session_bar_at_or_after(index: pd.DatetimeIndex, position: int) -> int:
    """The first bar at or after ``position`` that opens a session (``position`` itself if none does)."""
    from tradebot.core.nse_time import session_day

    day = np.asarray(session_day(index))
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    later = starts[starts >= position]
    return int(later[0]) if len(later) and later[0] < len(index) - 1 else position


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

    history, first = evaluation_history(bars, start, end)
    env, atr = _trading_env(history, env_config)
    dim = int(env.observation_space.shape[0])
    if dim != policy.obs_dim:
        raise UserInputError(f"{policy.source or 'policy'}: takes {policy.obs_dim} observation values but the env "
                             f"gives {dim} with this feature config and data; backtest it on the kind of bars and "
                             "with the features it was trained with (its saved config.yaml)")
    if first is None:
        first = first_session_bar_at_or_after(history.index, env.warmup)
    elif first < env.warmup:
        raise UserInputError(f"--start {start} falls inside the features' warm-up (the first usable bar is "
                             f"{history.index[env.warmup].isoformat()}); give a later --start or data from earlier")
    n = len(history)
    actions = np.full(n - first, int(Action.HOLD), dtype=np.int8)
    policy.reset(BACKTEST_STREAM)
    obs, _ = env.reset(options={"start": first})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one bar at a time: more threads only contend (16 ms/bar instead of 0.5 on a busy machine)
    try:
        for k in range(n - 1 - first):
            action, _ = policy.act(BACKTEST_STREAM, obs)
            actions[k] = action
            obs, _, terminated, _, _ = env.step(action)
            if terminated:  # equity at or below zero: the env ends the episode; the rest holds
                break
    finally:
        torch.set_num_threads(threads)
        policy.reset(BACKTEST_STREAM)
        env.close()
    return PolicyActions(history=history, first=first, actions=actions, atr=atr[first:], env_config=env_config)


def backtest_actions(run: PolicyActions) -> BacktestResult:
    """Run collected actions through the fill engine over the evaluated bars (the env's engine and ATR)."""
    from tradebot.envs.backtest import run_backtest

    return run_backtest(run.bars, run.actions, run.env_config.engine, atr=run.atr)


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
