"""``TradingEnv`` (Gymnasium, id ``tradebot/Trading-v0``) and ``BatchedTradingEnv`` over the fill engine.

Both step ``tradebot.envs.engine.step_bar`` through the same numba kernel, ``env_step``: the single env calls
it once per ``step``; the batched env (a ``gymnasium.vector.VectorEnv``, what training samples from)
calls it for every sub-env inside one numba call and equals that many single envs step for step.

Time line: at bar t the agent sees the observation of bar t (features at t, computed from bars
<= t, plus its position) and picks an action; ``step`` fills it from bar t+1's open on, marks the
account at bar t+1's close, and returns the reward for t -> t+1 and the observation of t+1.

Observation (float32): the feature columns at t, then ``side`` (-1/0/+1), ``upnl_atr``
(side x (close_t - entry price) / ATR_t), ``bars_in_trade``, ``time_left`` (fraction of the
session left before square-off, or before the close when positions are carried; 0 for daily bars),
then the action mask (``MASK_FEATURES``: 1.0 for each action the engine would accept from a decision
at t, 0.0 otherwise; ``tradebot.envs.engine.action_mask``). The mask is exact (it comes from the
account's position, the product and the clock, never from normalised inputs): a masked policy
(``tradebot.rl.masked_module``) reads it raw and puts no probability on an invalid action.

Agent rules (``EnvConfig``): ``decision_interval`` k makes one step k bars (the action fills at the
next bar's open, then the account holds for k-1 bars; the reward is summed over them);
``min_hold_bars`` m masks the closes of a position until its fill bar is m bars after its entry
(stops, take-profits and square-off still close it).

Per instrument: the engine config may leave the lot, the margin and the futures product to the
instrument catalog (``tradebot.envs.instruments``); each instrument's account then runs with its own
costs, lot and margin (``EngineConfig.for_instrument`` on its first bar after the warm-up).

Features: by default the project's ``tradebot.features.pipeline.FeaturePipeline`` built from the ``features``
config section (the same object live trading uses), with its ATR driving sizing and stops. A
DataFrame/array aligned with the bars, or any object with ``transform(bars)`` (and ``atr(bars)``),
may be given instead.

Episodes start after the warm-up (the first bar from which every feature and the ATR are finite):
``window`` mode picks a random start and runs ``length`` steps (``truncated`` at the end; an open
position is marked, not closed, unless the data ends); ``session`` mode runs one whole random
session (``terminated`` at its end). Equity at or below zero terminates an episode.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from pydantic import Field

from tradebot.envs.backtest import trades_frame
from tradebot.envs.engine import (
    MODE_SESSION,
    MODE_WINDOW,
    N_ACCOUNT_COLUMNS,
    N_ACTIONS,
    N_OBS_TAIL,
    N_RPARAMS,
    N_RSTATE,
    N_STATE,
    N_TRADE,
    R_CODE,
    R_DRAWDOWN,
    R_BENCHMARK,
    R_ETA,
    R_INTERVAL,
    R_MIN_HOLD,
    R_TURNOVER,
    REWARD_DIFFERENTIAL_SHARPE,
    REWARD_NET_LOG_RETURN,
    S_COSTS_TOTAL,
    S_EQUITY,
    S_INVALID,
    S_N_TRADES,
    S_ENTRY_BAR,
    S_ENTRY_PRICE,
    S_QTY,
    S_TRADE,
    batched_reset,
    action_mask,
    batched_step,
    env_reset,
    env_step_info,
    new_state,
    write_obs,
)
from tradebot.envs.engine_config import N_PARAMS, P_ALLOW_SHORT, EngineConfig
from tradebot.envs.market_data import D_FLAGS, compute_atr, market_data, session_layout
from tradebot.features.bars import Bars, load_bars
from tradebot.features.pipeline import FeatureConfig, FeaturePipeline
from tradebot.core.config import FrozenConfig, load_config, parse_config
from tradebot.core.errors import UserInputError

ENV_ID = "tradebot/Trading-v0"
_OBS_BOUND = float(np.finfo(np.float32).max)  # finite bounds: features are unbounded in principle
ACCOUNT_FEATURES: tuple[str, ...] = ("side", "upnl_atr", "bars_in_trade", "time_left")
MASK_FEATURES: tuple[str, ...] = ("mask_hold", "mask_buy_long", "mask_sell_short", "mask_close_long",
                                  "mask_close_short")
POSITION_FEATURES: tuple[str, ...] = ACCOUNT_FEATURES + MASK_FEATURES  # the observation's tail after the features
N_POSITION_FEATURES = len(POSITION_FEATURES)
N_MASK_FEATURES = len(MASK_FEATURES)
BARS_IN_TRADE_FROM_END = N_POSITION_FEATURES - ACCOUNT_FEATURES.index("bars_in_trade")  # obs[-this]
assert N_POSITION_FEATURES == N_OBS_TAIL and N_MASK_FEATURES == N_ACTIONS and len(ACCOUNT_FEATURES) == N_ACCOUNT_COLUMNS


def observation_at(features: np.ndarray, data_row: np.ndarray, qty: float = 0.0, entry_price: float = 0.0,
                   bars_held: int = 0, allow_short: bool = True) -> np.ndarray:
    """The env's observation of one bar outside an env (the live loop): the bar's feature row, then
    ``POSITION_FEATURES`` for a position of ``qty`` (signed) bought at ``entry_price`` ``bars_held``
    bars ago, computed by the env's own kernel; ``data_row`` is the bar's row of ``market_data``
    (``market_row``), ``allow_short`` the engine's ``shorts_allowed`` (the mask of SELL_SHORT). The
    minimum holding time is the policy's rule (``tradebot.rl.policy.Policy`` applies it)."""
    nf = len(features)
    obs = np.zeros(nf + N_POSITION_FEATURES, dtype=np.float32)
    feats = np.ascontiguousarray(features, dtype=np.float32).reshape(1, nf)
    state = np.zeros(N_STATE)
    if qty != 0.0:
        state[S_QTY] = qty
        state[S_ENTRY_PRICE] = entry_price
        state[S_ENTRY_BAR] = -float(bars_held)
    params = np.zeros(N_PARAMS)
    params[P_ALLOW_SHORT] = 1.0 if allow_short else 0.0
    write_obs(obs, feats, np.asarray(data_row, dtype=np.float64).reshape(1, -1), state, 0, params, np.zeros(N_RPARAMS))
    return obs


def valid_actions(qty: float, bars_held: int, data_row: np.ndarray, allow_short: bool, min_hold_bars: int = 0) -> np.ndarray:
    """The action mask (``MASK_FEATURES`` order, bool) for a decision at the bar of ``data_row``."""
    out = np.zeros(N_ACTIONS)
    action_mask(out, float(qty), float(bars_held), int(np.asarray(data_row)[D_FLAGS]), bool(allow_short),
                float(min_hold_bars))
    return out > 0.5

# ---- rewards ----------------------------------------------------------------------------------

class RewardStrategy(FrozenConfig):
    """A named reward; both variants share the optional penalties and benchmark.

    ``drawdown_penalty`` x (increase of the drawdown from the episode's equity peak this bar, as a
    fraction) and ``turnover_penalty`` x (rupees traded this bar / equity before the bar) are
    subtracted from the base reward (a drawdown-penalised reward is either variant with a
    ``drawdown_penalty``). ``benchmark`` w > 0 measures the base reward against holding w x equity
    of the instrument (the "hold plus RL overlay" design: being out or short pays only when the
    market falls).
    """

    code: ClassVar[int]
    drawdown_penalty: float = Field(0.0, ge=0)
    turnover_penalty: float = Field(0.0, ge=0)
    benchmark: float = Field(0.0, ge=0, le=10, description="weight of the held instrument the reward is measured "
                             "against; 0: none")

    def vector(self) -> np.ndarray:
        v = np.zeros(N_RPARAMS)
        v[R_CODE] = self.code
        v[R_DRAWDOWN] = self.drawdown_penalty
        v[R_TURNOVER] = self.turnover_penalty
        v[R_BENCHMARK] = self.benchmark
        v[R_INTERVAL] = 1.0
        return v


class NetLogReturn(RewardStrategy):
    """log(equity_t+1 / equity_t): the step's return after all costs."""

    code: ClassVar[int] = REWARD_NET_LOG_RETURN
    name: Literal["net_log_return"] = "net_log_return"


class DifferentialSharpe(RewardStrategy):
    """Moody & Saffell (1998/2001) differential Sharpe ratio of the step's simple return.

    With exponential moving moments A (mean) and B (second moment) of rate ``eta``:
    D_t = (B_{t-1} dA_t - A_{t-1} dB_t / 2) / (B_{t-1} - A_{t-1}^2)^{3/2}, where dA_t = R_t - A_{t-1},
    dB_t = R_t^2 - B_{t-1}; D_t = 0 while the variance estimate is below 1e-12 (e.g. at the start).
    """

    code: ClassVar[int] = REWARD_DIFFERENTIAL_SHARPE
    name: Literal["differential_sharpe"] = "differential_sharpe"
    eta: float = Field(0.01, gt=0, lt=1)

    def vector(self) -> np.ndarray:
        v = super().vector()
        v[R_ETA] = self.eta
        return v


REWARDS: dict[str, type[RewardStrategy]] = {"net_log_return": NetLogReturn, "differential_sharpe": DifferentialSharpe}
RewardConfig = Annotated[NetLogReturn | DifferentialSharpe, Field(discriminator="name")]


def make_reward(name: str, **params: Any) -> RewardStrategy:
    """Build a registered reward strategy by name."""
    if name not in REWARDS:
        raise UserInputError(f"unknown reward {name!r}; use one of {', '.join(REWARDS)}")
    return parse_config(REWARDS[name], {"name": name, **params}, f"reward {name}")


# ---- configuration ---------------------------------------------------------------------------

class EpisodeConfig(FrozenConfig):
    mode: Literal["window", "session"] = Field("window", description="random windows of `length` steps, or whole sessions")
    length: int | None = Field(1000, ge=1, description="steps per window episode (the default shrinks to fit "
                               "shorter data); null: every bar after the warm-up")


class RegimeWeightConfig(FrozenConfig):
    """Regime-weighted rewards, for a mixture's expert: the reward of a decision at bar t is multiplied by
    ``floor + (1 - floor) * p_regime(t)``, the detector's filtered (causal) probability of ``regime`` at t
    (1 during the detector's warm-up). The expert still lives through every bar, so its positions and
    recurrent state carry across regime changes, but it is paid mostly where its regime rules."""

    regime: Literal["trend", "mean_reversion", "high_vol"] = Field(description="the regime this expert specialises in")
    detector: dict[str, Any] = Field(description="the fitted detector (tradebot.features.regimes.RegimeDetector.to_dict)")
    floor: float = Field(0.1, ge=0, le=1, description="weight of a bar where the regime has probability 0")

    def weights(self, bars: Bars) -> np.ndarray:
        from tradebot.features.regimes import RegimeDetector

        p = RegimeDetector.from_dict(self.detector).transform(bars)[f"p_{self.regime}"].to_numpy()
        return np.where(np.isfinite(p), self.floor + (1.0 - self.floor) * p, 1.0)


class EnvConfig(FrozenConfig):
    """TradingEnv settings (YAML section ``env``, with sub-sections engine/episode/reward)."""

    engine: EngineConfig = EngineConfig()
    episode: EpisodeConfig = EpisodeConfig()
    reward: RewardConfig = NetLogReturn()
    features: FeatureConfig = FeatureConfig()
    decision_interval: int = Field(1, ge=1, le=10_000, description="bars per decision: the agent acts every k bars "
                                   "and holds in between")
    min_hold_bars: int = Field(0, ge=0, le=100_000, description="closes are masked until the fill bar is this many "
                               "bars after the entry bar (stops, take-profit and square-off still close)")
    regime_weight: RegimeWeightConfig | None = Field(None, description="regime-weighted rewards (a mixture's "
                                                     "expert); null: every bar's reward counts fully")

    def agent_vector(self) -> np.ndarray:
        """The reward's parameter vector with the agent rules (decision interval, minimum hold)."""
        v = self.reward.vector()
        v[R_INTERVAL] = float(self.decision_interval)
        v[R_MIN_HOLD] = float(self.min_hold_bars)
        return v

    @classmethod
    def from_yaml(cls, path: str | Path, section: str = "env") -> "EnvConfig":
        return load_config(cls, path, section)


def _env_config(config: EnvConfig | dict | str | Path | None) -> EnvConfig:
    if config is None:
        return EnvConfig()
    if isinstance(config, EnvConfig):
        return config
    if isinstance(config, dict):
        return parse_config(EnvConfig, config, "env config")
    return EnvConfig.from_yaml(config)


# ---- shared preparation ----------------------------------------------------------------------

class _Prepared:
    """Arrays shared by TradingEnv and BatchedTradingEnv (built once per data set)."""

    def __init__(self, data: Bars | str | Path, features: Any, atr: np.ndarray | None, config: EnvConfig):
        bars = data if isinstance(data, Bars) else load_bars(data)
        if not isinstance(features, (pd.DataFrame, np.ndarray)) and hasattr(features, "transform"):
            if atr is None and hasattr(features, "atr"):  # the feature pipeline's ATR, in price units
                atr = features.atr(bars)
            features = features.transform(bars)  # the feature pipeline plugs in here
        n = len(bars)
        engine = config.engine
        if features is None:
            pipeline = FeaturePipeline.for_bars(bars, config.features)
            features = pipeline.transform(bars)
            if atr is None:
                atr = pipeline.atr(bars).to_numpy()
        if atr is None:
            atr = compute_atr(bars, engine.atr_period)
        atr = np.asarray(atr, dtype=np.float64)
        if isinstance(features, pd.DataFrame):
            if len(features) != n or not features.index.equals(bars.index):
                raise UserInputError("features index does not match the bars; build the features from the same bars")
            names = tuple(str(c) for c in features.columns)
            feats = features.to_numpy(dtype=np.float32)
        else:
            feats = np.asarray(features, dtype=np.float32)
            if feats.ndim == 1:
                feats = feats[:, None]
            if feats.ndim != 2 or feats.shape[0] != n:
                raise UserInputError(f"features have shape {feats.shape}; expected (bars, columns) = ({n}, k)")
            names = tuple(f"f{j}" for j in range(feats.shape[1]))
        self.bars = bars
        self.feature_names = names + POSITION_FEATURES
        self.feats = np.ascontiguousarray(feats)
        self.data = market_data(bars, engine, atr)
        self.rparams = config.agent_vector()
        self.reward_weight = None if config.regime_weight is None else config.regime_weight.weights(bars)
        finite = np.isfinite(self.feats).all(axis=1)
        if engine.needs_atr:
            finite &= np.isfinite(atr) & (atr > 0)
        if not finite.any():
            raise UserInputError("no bar has finite features and ATR; give more bars than the warm-up")
        warmup = int(np.argmax(finite))
        bad = np.flatnonzero(~finite[warmup:])
        if len(bad):
            pos = warmup + int(bad[0])
            raise UserInputError(f"features/ATR are NaN or infinite at bar {pos} ({bars.index[pos].isoformat()}) "
                                 "after the warm-up; fill or drop those bars")
        self.warmup = warmup
        self.engine = engine.for_instrument(bars.symbol, bars.index[warmup].date())
        self.params = self.engine.params()
        self.costs = self.engine.cost_vector()
        ep = config.episode
        self.mode = MODE_WINDOW if ep.mode == "window" else MODE_SESSION
        available = n - 1 - warmup  # steps from the warm-up to the last bar
        if available < 1:
            raise UserInputError(f"only {n} bars and a warm-up of {warmup}: no step left; give more bars")
        self.length = ep.length if ep.length is not None else available
        if "length" not in ep.model_fields_set:  # the default shrinks to fit short data; a set one must fit
            self.length = min(self.length, available)
        if self.mode == MODE_WINDOW and self.length > available:
            raise UserInputError(f"env.episode.length {self.length} exceeds the {available} steps available after "
                                 f"the warm-up ({warmup} bars); lower env.episode.length or set it to null")
        self.lo = warmup
        self.hi = n - 1 - self.length
        day, _ = session_layout(bars.index)
        cuts = np.flatnonzero(np.diff(day)) + 1
        bounds = np.concatenate([cuts, [n]])
        self.session_end = np.repeat(bounds, np.diff(np.concatenate([[0], bounds])))
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [n]])
        starts = np.maximum(starts, warmup)
        keep = ends - starts >= 2
        self.sessions = np.stack([starts[keep], ends[keep]], axis=1).astype(np.int64)
        if self.mode == MODE_SESSION and len(self.sessions) == 0:
            raise UserInputError("no session has two or more bars after the warm-up; use episode mode 'window'")
        if len(self.sessions) == 0:
            self.sessions = np.zeros((1, 2), dtype=np.int64)

    def episode_from(self, start: int) -> tuple[int, int]:
        """(start, end) of an episode forced to begin at bar ``start``."""
        n = len(self.bars)
        if not self.warmup <= start < n - 1:
            raise UserInputError(f"episode start {start} outside [{self.warmup}, {n - 2}] (after the warm-up)")
        if self.mode == MODE_SESSION:
            end = int(self.session_end[start])
            if end - start < 2:
                raise UserInputError(f"episode start {start} is the last bar of its session; pick an earlier bar")
            return start, end
        return start, min(start + self.length + 1, n)


# ---- the single env --------------------------------------------------------------------------

class TradingEnv(gym.Env):
    """One trading account over one instrument's bars; actions are ``tradebot.envs.engine.Action``.

    ``data``: a ``Bars`` or a bar file path. ``features``: DataFrame/array aligned with the bars, or
    an object with ``transform(bars)``; None: the built-in set. ``atr``: ATR in price units per bar
    (None: pandas_ta). ``config``: ``EnvConfig``, a dict, or a YAML path (section ``env``).
    ``reset(options={"start": i})`` starts the episode at bar i instead of a random one.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, data: Bars | str | Path, features: Any = None, atr: np.ndarray | None = None,
                 config: EnvConfig | dict | str | Path | None = None, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UserInputError(f"render_mode {render_mode!r} not supported; use 'ansi' or None")
        self.config = _env_config(config)
        self._p = _Prepared(data, features, atr, self.config)
        self.render_mode = render_mode
        dim = self._p.feats.shape[1] + N_POSITION_FEATURES
        self.observation_space = spaces.Box(-_OBS_BOUND, _OBS_BOUND, shape=(dim,), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._state = new_state(self._p.params)
        self._rstate = np.zeros(N_RSTATE)
        self._obs = np.zeros(dim, dtype=np.float32)
        self._t = -1
        self._end = -1
        self._session_mode = self._p.mode == MODE_SESSION
        self._trade_rows: list[np.ndarray] = []

    @property
    def bars(self) -> Bars:
        return self._p.bars

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the observation's columns."""
        return self._p.feature_names

    @property
    def warmup(self) -> int:
        return self._p.warmup

    @property
    def market_features(self) -> np.ndarray:
        """The market features per bar (bars x columns, float32): the head of every observation."""
        return self._p.feats

    @property
    def engine(self) -> EngineConfig:
        """The engine settings the account runs under (the config's, resolved for this instrument)."""
        return self._p.engine

    @property
    def bar_index(self) -> int:
        """The bar the current observation describes."""
        return self._t

    @property
    def trades(self) -> pd.DataFrame:
        """Trades closed in the current episode (``tradebot.envs.backtest.TRADE_COLUMNS``)."""
        log = np.array(self._trade_rows).reshape(-1, N_TRADE)
        return trades_frame(log, self._p.bars.index)

    def _info(self) -> dict[str, Any]:
        s = self._state
        return {"equity": float(s[S_EQUITY]), "position": float(s[S_QTY]), "trades": int(s[S_N_TRADES]),
                "invalid_actions": int(s[S_INVALID]), "costs": float(s[S_COSTS_TOTAL]), "bar": self._t}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        p = self._p
        start = options.get("start") if options else None
        if start is not None:
            start, end = p.episode_from(int(start))
        elif self._session_mode:
            k = int(self.np_random.integers(len(p.sessions)))
            start, end = int(p.sessions[k, 0]), int(p.sessions[k, 1])
        else:
            start = int(self.np_random.integers(p.lo, p.hi + 1))
            end = start + p.length + 1
        self._t = start
        self._end = end
        self._trade_rows = []
        env_reset(self._state, self._rstate, p.data, p.feats, start, p.params, p.rparams, self._obs)
        return self._obs.copy(), self._info()

    def step(self, action):
        t = self._t
        if t < 0 or t >= self._end - 1:
            raise ResetNeeded("call reset() before step() (the episode has ended or not started)")
        p = self._p
        r, t, equity, position, trades, invalid, costs, closed = env_step_info(
            self._state, self._rstate, p.data, p.feats, t, int(action), self._end, p.params, p.costs, p.rparams,
            self._obs)
        if p.reward_weight is not None:
            r *= float(p.reward_weight[self._t])
        self._t = t
        if closed:
            self._trade_rows.append(self._state[S_TRADE:S_TRADE + N_TRADE].copy())
        at_end = t >= self._end - 1
        terminated = not equity > 0.0 or (at_end and self._session_mode)
        truncated = at_end and not terminated
        if terminated:
            self._end = t + 1
        info = {"equity": equity, "position": position, "trades": trades, "invalid_actions": invalid,
                "costs": costs, "bar": t}
        return self._obs.copy(), r, terminated, truncated, info

    def render(self):
        if self.render_mode != "ansi":
            return None
        i = self._info()
        ts = self._p.bars.index[self._t].isoformat() if self._t >= 0 else "-"
        return (f"{ts} equity={i['equity']:.2f} position={i['position']:+.0f} trades={i['trades']} "
                f"invalid={i['invalid_actions']} costs={i['costs']:.2f}")


# ---- the vector env --------------------------------------------------------------------------

INFO_KEYS: tuple[str, ...] = ("equity", "position", "trades", "invalid_actions", "costs", "bar")


class BatchedTradingEnv(gym.vector.VectorEnv):
    """``num_envs`` trading accounts as one ``gymnasium.vector.VectorEnv``, stepped in one numba call.

    Sub-env ``i`` behaves exactly like a ``TradingEnv`` on its instrument: same observations,
    rewards, ``terminated`` / ``truncated``, ``infos`` (``INFO_KEYS``, batched the gymnasium way:
    an array per key plus its ``_key`` mask) and the same episode starts, drawn from its own
    generator seeded like ``gymnasium.vector.SyncVectorEnv`` seeds its sub-envs (``reset(seed=s)``:
    sub-env ``i`` gets ``s + i``; a list gives one seed each). Finished sub-envs restart on the
    next ``step`` (``AutoresetMode.NEXT_STEP``, gymnasium's default: that step ignores their action
    and returns the new episode's first observation with reward 0), so a vector env equals
    ``gymnasium.make_vec(ENV_ID, num_envs, vectorization_mode="sync")`` step for step.

    ``data``: one instrument (``Bars`` or a bar file path) or a sequence of them; the sub-envs are
    split between the instruments in contiguous blocks (``instrument_index``), and every episode
    starts at its own random bar. ``features`` / ``atr``: as for ``TradingEnv`` (a sequence with
    one entry per instrument when several are given). ``reset(options={"start": s})`` starts every
    sub-env at bar ``s`` (or ``s[i]``, one per sub-env). With ``copy=False`` the returned arrays are
    internal buffers overwritten by the next call (fastest).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, data: Bars | str | Path | Sequence[Bars | str | Path], num_envs: int, features: Any = None,
                 atr: Any = None, config: EnvConfig | dict | str | Path | None = None, copy: bool = True):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise UserInputError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.config = _env_config(config)
        several = isinstance(data, (list, tuple))
        sources = list(data) if several else [data]
        if not sources:
            raise UserInputError("no instrument given; pass one or more bar files")
        feats = list(features) if several and features is not None else [features] * len(sources)
        atrs = list(atr) if several and atr is not None else [atr] * len(sources)
        if len(feats) != len(sources) or len(atrs) != len(sources):
            raise UserInputError(f"{len(sources)} instruments need as many features / atr entries")
        if num_envs < len(sources):
            raise UserInputError(f"num_envs {num_envs} is below the {len(sources)} instruments; give each one a sub-env")
        self._ps = [_Prepared(d, f, a, self.config) for d, f, a in zip(sources, feats, atrs)]
        names = self._ps[0].feature_names
        for p in self._ps[1:]:
            if p.feature_names != names:
                raise UserInputError(f"instrument {p.bars.symbol or '?'} has other features than the first "
                                     f"({len(p.feature_names)} vs {len(names)} columns); train together only "
                                     "instruments with the same feature set")
        n = self.num_envs = int(num_envs)
        self.copy = copy
        self.single_observation_space = spaces.Box(-_OBS_BOUND, _OBS_BOUND, shape=(len(names),), dtype=np.float32)
        self.single_action_space = spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n)
        self.render_mode = None
        k = len(self._ps)
        self.instrument_index = (np.arange(n) * k) // n  # contiguous blocks of sub-envs per instrument
        cuts = np.searchsorted(self.instrument_index, np.arange(k + 1))
        self._blocks = [(int(cuts[j]), int(cuts[j + 1])) for j in range(k)]
        self._session_mode = self._ps[0].mode == MODE_SESSION
        self._states = np.zeros((n, N_STATE))
        self._rstates = np.zeros((n, N_RSTATE))
        self._t = np.full(n, -1, dtype=np.int64)
        self._ends = np.zeros(n, dtype=np.int64)
        self._obs = np.zeros((n, len(names)), dtype=np.float32)
        self._rewards = np.zeros(n)
        self._terminated = np.zeros(n, dtype=np.bool_)
        self._truncated = np.zeros(n, dtype=np.bool_)
        self._autoreset = np.zeros(n, dtype=np.bool_)
        self._rngs: list[np.random.Generator] | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the observation's columns."""
        return self._ps[0].feature_names

    @property
    def bars(self) -> tuple[Bars, ...]:
        """The instruments' bars, in ``instrument_index`` order."""
        return tuple(p.bars for p in self._ps)

    @property
    def warmup(self) -> tuple[int, ...]:
        """Each instrument's first bar with finite features and ATR."""
        return tuple(p.warmup for p in self._ps)

    @property
    def engines(self) -> tuple[EngineConfig, ...]:
        """Each instrument's engine settings (the config's, resolved for that instrument)."""
        return tuple(p.engine for p in self._ps)

    @property
    def bar_index(self) -> np.ndarray:
        """The bar each sub-env's current observation describes (in its instrument's bars)."""
        return self._t.copy()

    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:
        """Each sub-env's episode-start generator."""
        return tuple(self._sub_rngs())

    def _sub_rngs(self) -> list[np.random.Generator]:
        if self._rngs is None:
            self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
        return self._rngs

    def _infos(self) -> dict[str, np.ndarray]:
        s = self._states
        values = (s[:, S_EQUITY].copy(), s[:, S_QTY].copy(), s[:, S_N_TRADES].astype(np.int64),
                  s[:, S_INVALID].astype(np.int64), s[:, S_COSTS_TOTAL].copy(), self._t.copy())
        infos: dict[str, np.ndarray] = {}
        for key, value in zip(INFO_KEYS, values):
            infos[key] = value
            infos[f"_{key}"] = np.ones(self.num_envs, dtype=np.bool_)
        return infos

    def _start(self, rows: np.ndarray, starts: np.ndarray | None = None) -> None:
        """Start new episodes for sub-envs ``rows`` (at ``starts`` when given, else at random)."""
        rngs = self._sub_rngs()
        begin = np.empty(len(rows), dtype=np.int64)
        stop = np.empty(len(rows), dtype=np.int64)
        for k, i in enumerate(rows):
            p = self._ps[self.instrument_index[i]]
            if starts is not None:
                begin[k], stop[k] = p.episode_from(int(starts[k]))
            elif self._session_mode:
                j = int(rngs[i].integers(len(p.sessions)))
                begin[k], stop[k] = p.sessions[j, 0], p.sessions[j, 1]
            else:
                begin[k] = int(rngs[i].integers(p.lo, p.hi + 1))
                stop[k] = begin[k] + p.length + 1
        inst = self.instrument_index[rows]
        for j, (lo, hi) in enumerate(self._blocks):
            mine = inst == j
            if mine.any():
                p = self._ps[j]
                batched_reset(self._states[lo:hi], self._rstates[lo:hi], self._t[lo:hi], self._ends[lo:hi],
                              rows[mine] - lo, begin[mine], stop[mine], p.data, p.feats, p.params, p.rparams,
                              self._obs[lo:hi])

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        """Start every sub-env's episode (``options={"reset_mask": mask}``: only those; ``{"start": s}``:
        at bar ``s``, or ``s[i]`` per sub-env)."""
        n = self.num_envs
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        rows = np.arange(n) if mask is None else np.flatnonzero(np.asarray(mask, dtype=np.bool_).reshape(n))
        if seed is not None:
            seeds = [seed + i for i in range(n)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != n:
                raise UserInputError(f"{len(seeds)} seeds for {n} sub-envs; give one each, or one int")
            rngs = self._sub_rngs()
            for i in rows:
                if seeds[i] is not None:
                    rngs[i] = seeding.np_random(int(seeds[i]))[0]
        starts = options.pop("start", None)
        if options:
            raise UserInputError(f"unknown reset option(s) {', '.join(map(repr, options))}; use start or reset_mask")
        if starts is not None:
            starts = np.broadcast_to(np.asarray(starts, dtype=np.int64), (n,))[rows]
        self._start(rows, starts)
        self._terminated[rows] = False
        self._truncated[rows] = False
        self._autoreset[rows] = False
        return (self._obs.copy() if self.copy else self._obs), self._infos()

    def step(self, actions):
        if (self._t < 0).any():
            raise ResetNeeded("call reset() before step()")
        acts = np.asarray(actions, dtype=np.int64)
        if acts.shape != (self.num_envs,):
            raise UserInputError(f"actions has shape {acts.shape}; expected ({self.num_envs},)")
        restart = self._autoreset
        decided_at = self._t.copy()
        for j, (lo, hi) in enumerate(self._blocks):
            p = self._ps[j]
            batched_step(self._states[lo:hi], self._rstates[lo:hi], self._t[lo:hi], self._ends[lo:hi], restart[lo:hi],
                         acts[lo:hi], p.data, p.feats, p.params, p.costs, p.rparams, self._obs[lo:hi],
                         self._rewards[lo:hi], self._terminated[lo:hi], self._truncated[lo:hi], self._session_mode)
            if p.reward_weight is not None:
                stepped = ~restart[lo:hi]
                self._rewards[lo:hi][stepped] *= p.reward_weight[decided_at[lo:hi][stepped]]
        if restart.any():
            rows = np.flatnonzero(restart)
            self._start(rows)
            self._rewards[rows] = 0.0
            self._terminated[rows] = False
            self._truncated[rows] = False
        self._autoreset = self._terminated | self._truncated
        if self.copy:
            return (self._obs.copy(), self._rewards.copy(), self._terminated.copy(), self._truncated.copy(),
                    self._infos())
        return self._obs, self._rewards, self._terminated, self._truncated, self._infos()

    # current account figures, one per sub-env (outside the infos)
    @property
    def equity(self) -> np.ndarray:
        return self._states[:, S_EQUITY].copy()

    @property
    def positions(self) -> np.ndarray:
        return self._states[:, S_QTY].copy()
