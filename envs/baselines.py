"""Baseline strategies: bars → one action per bar, for comparing learned policies against.

Every baseline maps a ``Bars`` (and the ``EngineConfig`` it will be backtested under) to an
``int8`` array of ``tradebot.envs.engine.Action`` values, one per bar. Action ``i`` is decided at bar ``i``'s
close from bars ``<= i`` only (indicators are causal pandas-ta series; nothing looks ahead), and the
engine fills it at bar ``i + 1``'s open.

How the actions stay valid. A baseline computes four causal signals (long entry, long exit, short
entry, short exit) and optionally a trailing-stop distance; one shared loop (``signals_to_actions``)
turns them into actions. To know which position it holds, the loop replays the fill engine itself
(``tradebot.envs.engine.step_bar``, the one implementation of the trading rules) bar by bar alongside its own
decisions, so it sees the engine's stop-loss, take-profit and square-off exits as they happen and
never emits an entry while holding or a close it does not need. The replay is causal too: it
uses only clock knowledge of sessions (a bar is the last of its session when it ends at 15:30, or
always for daily bars) and never closes "at the end of data", so removing later bars cannot change
an earlier action. Consequences, documented rather than hidden:

* Backtested under the same ``EngineConfig`` the actions produce no invalid actions, except after a
  session that ends early (an exchange outage: the engine squares off at its last bar, which the
  causal replay learns only at the next session's square-off), where one close may be a no-op.
* Under a different config (other stops, sizing, square-off) the engine may close positions the
  baseline still believes open; its closes then become counted no-ops, never wrong trades.
* No entry is decided when its fill would land on or after the square-off bar (the engine would
  refuse it), before the ATR the engine sizes with is known, or short when shorts are not allowed.

The baselines (``BASELINES``, by name; except the two long-only ones, signals are levels, so after a
stop or a square-off a baseline re-enters when its condition still holds):

* ``buy_and_hold``: the passive benchmark: bought once, at the first bar, and held to the end as a
  delivery position (unlevered, fully invested, no stop or take-profit), whatever the run's own
  product: the market's own return after costs. For an index this stands for an index ETF.
* ``intraday_long``: long at the first bar of every session (it fills at the second bar's open;
  the first session waits for the ATR warm-up) until the engine's square-off closes it (or its
  stop / take-profit: then it waits for the next session). With a product that carries positions
  overnight it is bought once and held (after a stop-out, bought again at the next session).
* ``sma_crossover``: long while SMA(fast) > SMA(slow), short while below.
* ``donchian_atr``: breakout above the previous ``channel`` bars' high (long) or below their low
  (short); exit on the opposite ``exit_channel`` breakout or a chandelier stop ``atr_mult`` × ATR
  behind the best close since entry.
* ``rsi_reversion``: long when RSI < ``lower``, short when RSI > ``upper``, exit when RSI crosses
  ``exit_level``.
* ``random``: seeded coin flips: enter with probability ``p_entry`` per flat bar (long or short
  equally likely), exit with probability ``p_exit`` per bar in a position. Same seed, same actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import pandas_ta as ta
from numba import njit

from tradebot.envs.engine import S_ENTRY_BAR, S_EQUITY, S_QTY, Action, new_state, position_size, step_bar
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.market_data import D_ATR, D_FLAGS, FLAG_LAST_OF_SESSION, market_data
from tradebot.features.bars import Bars
from tradebot.core.nse_time import SESSION_CLOSE_MINUTE, is_intraday, minute_of_day, session_day, timeframe_minutes
from tradebot.core.errors import UserInputError

HOLD, BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT = (int(a) for a in (
    Action.HOLD, Action.BUY_LONG, Action.SELL_SHORT, Action.CLOSE_LONG, Action.CLOSE_SHORT))


def replay_data(bars: Bars, config: EngineConfig, atr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The engine's market data with session ends known by the clock only, and the no-entry mask.

    Returns ``(data, no_entry)``: ``data`` is ``tradebot.envs.engine.market_data`` with the last-of-session
    flag recomputed causally (intraday: the bar ends at or after 15:30; daily: every bar);
    ``no_entry[i]`` is True where an entry decided at bar ``i`` must not be sent (its fill would land
    on the square-off bar or later in the session, or the ATR the engine sizes with is unknown).
    """
    data = market_data(bars, config, atr)
    n = len(bars)
    flags = data[:, D_FLAGS].astype(np.int64) & ~FLAG_LAST_OF_SESSION
    intraday = is_intraday(bars.timeframe)
    if intraday:
        minute = minute_of_day(bars.index)
        step = timeframe_minutes(bars.timeframe)
        last = minute + step >= SESSION_CLOSE_MINUTE
        square_off = config.square_off_minute
        no_entry = minute + step >= (square_off if square_off is not None else SESSION_CLOSE_MINUTE)
    else:
        last = np.ones(n, dtype=bool)
        no_entry = np.zeros(n, dtype=bool)
    flags |= last.astype(np.int64) * FLAG_LAST_OF_SESSION
    data[:, D_FLAGS] = flags
    need_atr = config.fixed_qty is None or config.stop_loss or config.take_profit_atr_mult is not None
    if need_atr:
        atr_now = data[:, D_ATR]
        no_entry |= ~(np.isfinite(atr_now) & (atr_now > 0))
    return data, no_entry


def signals_to_actions(
    bars: Bars,
    long_entry: np.ndarray,
    long_exit: np.ndarray,
    short_entry: np.ndarray,
    short_exit: np.ndarray,
    config: EngineConfig | None = None,
    trail: np.ndarray | None = None,
    entries_per_session: int = 0,
) -> np.ndarray:
    """The shared loop: causal boolean signals → ``int8`` actions, valid under ``config``.

    ``trail``: a per-bar trailing-stop distance in price (NaN = none): a long is closed when the close
    falls more than that below the highest close since entry (a short mirrored).
    ``entries_per_session``: at most this many entries per session (0: no limit).
    """
    config = config or EngineConfig()
    n = len(bars)
    data, no_entry = replay_data(bars, config)
    if trail is None:
        trail = np.full(n, np.nan)
    short_entry = np.asarray(short_entry, dtype=np.bool_) & bool(config.shorts_allowed)
    return _replay(
        data, np.ascontiguousarray(long_entry, dtype=np.bool_), np.ascontiguousarray(long_exit, dtype=np.bool_),
        np.ascontiguousarray(short_entry, dtype=np.bool_), np.ascontiguousarray(short_exit, dtype=np.bool_),
        np.ascontiguousarray(no_entry, dtype=np.bool_), np.ascontiguousarray(trail, dtype=np.float64),
        bars.column("close"), session_day(bars.index), int(entries_per_session),
        config.params(), config.cost_vector(),
    )


@njit(nogil=True)  # no disk cache: it compiles in engine.step_bar, whose changes numba's cache would not notice
def _replay(data, long_entry, long_exit, short_entry, short_exit, no_entry, trail, close, session,
            entries_per_session, params, costs):
    n = data.shape[0]
    actions = np.zeros(n, dtype=np.int8)
    state = new_state(params)
    action = HOLD
    best = 0.0
    entry_bar = -1.0
    entries = 0
    for t in range(n):
        if t == 0 or session[t] != session[t - 1]:
            entries = 0
        # bar t as the engine plays it, with the action decided at t-1; never "end of data"
        step_bar(state, data, t, action, n + 1, params, costs)
        pos = state[S_QTY]
        if pos != 0.0 and state[S_ENTRY_BAR] != entry_bar:  # a new position: restart the trail
            entry_bar = state[S_ENTRY_BAR]
            best = close[t]
        action = HOLD
        if pos > 0.0:
            best = max(best, close[t])
            stopped = trail[t] == trail[t] and close[t] < best - trail[t]
            if long_exit[t] or stopped:
                action = CLOSE_LONG
        elif pos < 0.0:
            best = min(best, close[t])
            stopped = trail[t] == trail[t] and close[t] > best + trail[t]
            if short_exit[t] or stopped:
                action = CLOSE_SHORT
        elif (not no_entry[t] and (entries_per_session <= 0 or entries < entries_per_session)
              and position_size(state[S_EQUITY], data[t, D_ATR], close[t], params) > 0.0):
            # (the engine refuses an entry it cannot size, e.g. when the account is nearly empty)
            if long_entry[t]:
                action = BUY_LONG
            elif short_entry[t]:
                action = SELL_SHORT
            if action != HOLD:
                entries += 1
        actions[t] = action
    return actions


def _true(x: pd.Series | np.ndarray) -> np.ndarray:
    """Boolean array with NaN (indicator warm-up) read as False."""
    return np.nan_to_num(np.asarray(x, dtype="float64"), nan=0.0) > 0


def _frame(bars: Bars) -> pd.DataFrame:
    return bars.frame


def long_from_session_open(bars: Bars, config: EngineConfig) -> np.ndarray:
    """Long once per session, at its first bar where an entry can be sent, held until the engine closes it.

    Intraday products: the square-off (or the stop / take-profit) closes it and it waits for the next
    session. Products that carry positions overnight: bought once and held; only after the engine
    stopped it out does it buy again, at the next session.
    """
    n = len(bars)
    never = np.zeros(n, dtype=np.bool_)
    return signals_to_actions(bars, np.ones(n, dtype=np.bool_), never, never, never, config, entries_per_session=1)


def sma_crossover(bars: Bars, config: EngineConfig, fast: int = 20, slow: int = 50, allow_short: bool = True) -> np.ndarray:
    """Long while SMA(fast) > SMA(slow); short (if allowed) while below."""
    if not 0 < fast < slow:
        raise UserInputError(f"sma_crossover: need 0 < fast < slow (got fast={fast}, slow={slow})")
    close = _frame(bars)["close"]
    f = ta.sma(close, length=fast, talib=False)
    s = ta.sma(close, length=slow, talib=False)
    if f is None or s is None:  # fewer bars than the window
        f = s = pd.Series(np.nan, index=close.index)
    diff = (f - s).to_numpy(dtype="float64")
    up, down = _true(diff), _true(-diff)
    short = down if allow_short else np.zeros(len(bars), dtype=np.bool_)
    return signals_to_actions(bars, up, down, short, up, config)


def donchian_atr(bars: Bars, config: EngineConfig, channel: int = 20, exit_channel: int = 10,
                 atr_length: int = 14, atr_mult: float = 3.0, allow_short: bool = True) -> np.ndarray:
    """Donchian breakout with an exit channel and an ATR chandelier stop."""
    df = _frame(bars)
    high, low, close = df["high"], df["low"], df["close"]
    upper = high.rolling(channel, min_periods=channel).max().shift(1)
    lower = low.rolling(channel, min_periods=channel).min().shift(1)
    exit_upper = high.rolling(exit_channel, min_periods=exit_channel).max().shift(1)
    exit_lower = low.rolling(exit_channel, min_periods=exit_channel).min().shift(1)
    atr = ta.atr(high, low, close, length=atr_length, talib=False) if len(df) > atr_length else None
    trail = (atr * atr_mult).to_numpy(dtype="float64") if atr is not None else np.full(len(df), np.nan)
    long_entry = _true(close - upper)
    short_entry = _true(lower - close) if allow_short else np.zeros(len(df), dtype=np.bool_)
    long_exit = _true(exit_lower - close)
    short_exit = _true(close - exit_upper)
    return signals_to_actions(bars, long_entry, long_exit, short_entry, short_exit, config, trail=trail)


def rsi_reversion(bars: Bars, config: EngineConfig, length: int = 14, lower: float = 30.0, upper: float = 70.0,
                  exit_level: float = 50.0, allow_short: bool = True) -> np.ndarray:
    """Fade RSI extremes: long below ``lower``, short above ``upper``, out at ``exit_level``."""
    close = _frame(bars)["close"]
    rsi = ta.rsi(close, length=length, talib=False) if len(close) > length else None
    r = rsi.to_numpy(dtype="float64") if rsi is not None else np.full(len(close), np.nan)
    valid = ~np.isnan(r)
    rr = np.where(valid, r, exit_level)
    long_entry = valid & (rr < lower)
    short_entry = (valid & (rr > upper)) if allow_short else np.zeros(len(close), dtype=np.bool_)
    long_exit = valid & (rr > exit_level)
    short_exit = valid & (rr < exit_level)
    return signals_to_actions(bars, long_entry, long_exit, short_entry, short_exit, config)


def random_actions(bars: Bars, config: EngineConfig, seed: int = 0, p_entry: float = 0.02,
                   p_exit: float = 0.05) -> np.ndarray:
    """Seeded random entries and exits (a "no skill" baseline with realistic trading frequency).

    Draws are made per bar in bar order (``rng.random((n, 3))``), so the action at bar t depends only
    on the seed and bars ``<= t``: the same seed gives the same prefix on a shorter series.
    """
    n = len(bars)
    u = np.random.default_rng(seed).random((n, 3))
    enter = u[:, 0] < p_entry
    long_side = u[:, 1] < 0.5
    leave = u[:, 2] < p_exit
    return signals_to_actions(bars, enter & long_side, leave, enter & ~long_side, leave, config)


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: a function ``(bars, config, **params) -> actions`` and its defaults."""

    name: str
    summary: str
    fn: Callable[..., np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False
    engine_overrides: dict[str, Any] = field(default_factory=dict)

    def engine_config(self, config: EngineConfig | None = None) -> EngineConfig:
        """The engine settings this baseline runs under: ``config`` with its overrides applied
        (only the passive ``buy_and_hold`` has any: it must hold through sessions, unlevered)."""
        config = config or EngineConfig()
        if not self.engine_overrides:
            return config
        return EngineConfig.model_validate({**config.model_dump(), **self.engine_overrides})

    def __call__(self, bars: Bars, config: EngineConfig | None = None, seed: int = 0, **params: Any) -> np.ndarray:
        """Actions for ``bars`` (int8, one per bar), valid under ``config`` (default: ``EngineConfig()``).

        ``seed`` is used only by seeded baselines; ``params`` override the defaults in ``self.params``.
        """
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            raise UserInputError(f"baseline {self.name!r}: unknown parameter(s) {', '.join(unknown)} (valid: {valid})")
        config = self.engine_config(config)
        kwargs = {**self.params, **params}
        if self.seeded:
            kwargs["seed"] = seed
        actions = self.fn(bars, config, **kwargs)
        return np.asarray(actions, dtype=np.int8)


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("buy_and_hold", "passive benchmark: buy once, hold to the end (delivery, unlevered, no stops)",
                 long_from_session_open, engine_overrides={"product": "equity_delivery", "carry_overnight": True,
                                                           "risk_per_trade": 1.0, "stop_loss": False,
                                                           "take_profit_atr_mult": None, "allow_short": False}),
        Baseline("intraday_long", "long from each session's first bar until square-off", long_from_session_open),
        Baseline("sma_crossover", "long above / short below: SMA(20) vs SMA(50)", sma_crossover,
                 {"fast": 20, "slow": 50, "allow_short": True}),
        Baseline("donchian_atr", "20-bar breakout, 10-bar exit channel, 3×ATR(14) trailing stop", donchian_atr,
                 {"channel": 20, "exit_channel": 10, "atr_length": 14, "atr_mult": 3.0, "allow_short": True}),
        Baseline("rsi_reversion", "RSI(14) < 30 long, > 70 short, exit at 50", rsi_reversion,
                 {"length": 14, "lower": 30.0, "upper": 70.0, "exit_level": 50.0, "allow_short": True}),
        Baseline("random", "seeded random entries (2%/bar) and exits (5%/bar)", random_actions,
                 {"p_entry": 0.02, "p_exit": 0.05}, seeded=True),
    )
}


#: former names, refused with the name to use now
RENAMED_BASELINES: dict[str, str] = {"hold": "buy_and_hold"}


def get_baseline(name: str) -> Baseline:
    """The registered baseline ``name``; an unknown name is a ``UserInputError`` listing the valid ones."""
    if name in RENAMED_BASELINES:
        raise UserInputError(f"unknown strategy {name!r} (renamed: use {RENAMED_BASELINES[name]})")
    try:
        return BASELINES[name]
    except KeyError:
        raise UserInputError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(BASELINES)}"
        ) from None
