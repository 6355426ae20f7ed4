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
* ``vol_target_hold``: buy-and-hold sized to a target volatility (delivery, unlevered at most, no
  stops): an entry holds ``target_vol`` / (annualised volatility estimated as ATR / close x
  sqrt(bars a year)) of equity, at most all of it; the position is resized (sold, then bought again at
  the next bar) when, at the close of every ``check_sessions``-th session, that target has moved more
  than ``band`` from the one it was bought at.
* ``tsmom``: time-series momentum (Moskowitz, Ooi & Pedersen 2012), 12-1 months: long while the
  close of ``skip`` sessions ago is above the close of ``lookback`` sessions ago, short (flat when
  shorts are not allowed) while below; session closes before the bar's own session only, so any bar
  size works; no stops (a trend position is held through noise).
* ``intraday_trend``: intraday momentum on intraday bars (Gao, Han, Li & Zhou 2018: the first part of
  the session predicts the rest): at the bar that ends ``minutes`` after the open, long when the
  session is up from its open by more than ``threshold`` (a fraction), short when down by more;
  closed by the square-off (intraday products) or at the session's last bar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import pandas_ta as ta
from numba import njit

from tradebot.envs.backtest import resolved_for
from tradebot.envs.engine import S_ENTRY_BAR, S_EQUITY, S_QTY, Action, new_state, position_size, step_bar
from tradebot.envs.engine_config import P_LEVERAGE, EngineConfig
from tradebot.envs.market_data import D_ATR, D_CLOSE, D_FLAGS, FLAG_LAST_OF_SESSION, market_data
from tradebot.features.bars import Bars
from tradebot.core.nse_time import (
    SESSION_CLOSE_MINUTE,
    SESSION_OPEN_MINUTE as SESSION_OPEN,
    bars_per_year,
    is_intraday,
    minute_of_day,
    session_day,
    timeframe_minutes,
)
from tradebot.core.errors import UserInputError

Signals = dict[str, Any]  # signals_to_actions' keyword arguments: long_entry ... short_exit [, trail, entries_per_session]
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
    need_atr = ((config.fixed_qty is None and config.exposure is None) or config.stop_loss
                or config.take_profit_atr_mult is not None)
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
    atr: np.ndarray | None = None,
) -> np.ndarray:
    """The shared loop: causal boolean signals → ``int8`` actions, valid under ``config``.

    ``trail``: a per-bar trailing-stop distance in price (NaN = none): a long is closed when the close
    falls more than that below the highest close since entry (a short mirrored).
    ``entries_per_session``: at most this many entries per session (0: no limit).
    ``atr``: the ATR per bar the engine will size and stop with (None: computed over ``bars``, so the
    first bars wait for its warm-up; a window passes the one computed over its history).
    """
    config = resolved_for(config or EngineConfig(), bars)
    n = len(bars)
    data, no_entry = replay_data(bars, config, atr)
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


def long_from_session_open(bars: Bars, config: EngineConfig, atr: np.ndarray | None = None) -> np.ndarray:
    """Long once per session, at its first bar where an entry can be sent, held until the engine closes it.

    Intraday products: the square-off (or the stop / take-profit) closes it and it waits for the next
    session. Products that carry positions overnight: bought once and held; only after the engine
    stopped it out does it buy again, at the next session.
    """
    n = len(bars)
    never = np.zeros(n, dtype=np.bool_)
    return signals_to_actions(bars, np.ones(n, dtype=np.bool_), never, never, never, config, entries_per_session=1,
                              atr=atr)


def sma_signals(bars: Bars, config: EngineConfig, fast: int = 20, slow: int = 50, allow_short: bool = True) -> Signals:
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
    return {"long_entry": up, "long_exit": down, "short_entry": short, "short_exit": up}


def donchian_signals(bars: Bars, config: EngineConfig, channel: int = 20, exit_channel: int = 10,
                     atr_length: int = 14, atr_mult: float = 3.0, allow_short: bool = True) -> Signals:
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
    return {"long_entry": long_entry, "long_exit": long_exit, "short_entry": short_entry, "short_exit": short_exit,
            "trail": trail}


def rsi_signals(bars: Bars, config: EngineConfig, length: int = 14, lower: float = 30.0, upper: float = 70.0,
                exit_level: float = 50.0, allow_short: bool = True) -> Signals:
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
    return {"long_entry": long_entry, "long_exit": long_exit, "short_entry": short_entry, "short_exit": short_exit}


def random_actions(bars: Bars, config: EngineConfig, seed: int = 0, p_entry: float = 0.02,
                   p_exit: float = 0.05, atr: np.ndarray | None = None) -> np.ndarray:
    """Seeded random entries and exits (a "no skill" baseline with realistic trading frequency).

    Draws are made per bar in bar order (``rng.random((n, 3))``), so the action at bar t depends only
    on the seed and bars ``<= t``: the same seed gives the same prefix on a shorter series.
    """
    n = len(bars)
    u = np.random.default_rng(seed).random((n, 3))
    enter = u[:, 0] < p_entry
    long_side = u[:, 1] < 0.5
    leave = u[:, 2] < p_exit
    return signals_to_actions(bars, enter & long_side, leave, enter & ~long_side, leave, config, atr=atr)


def _session_closes(bars: Bars) -> tuple[np.ndarray, np.ndarray]:
    """(session index of every bar, close of every session)."""
    day = np.asarray(session_day(bars.index))
    first = np.r_[True, day[1:] != day[:-1]]
    sid = np.cumsum(first) - 1
    last = np.r_[day[1:] != day[:-1], True]
    return sid, bars.column("close")[last]


def tsmom_signals(bars: Bars, config: EngineConfig, lookback: int = 252, skip: int = 21,
                  allow_short: bool = True) -> Signals:
    """12-1 time-series momentum: the sign of close(session - skip) / close(session - lookback) - 1,
    both sessions before the bar's own."""
    if not 0 < skip < lookback:
        raise UserInputError(f"tsmom: need 0 < skip < lookback (got skip={skip}, lookback={lookback})")
    sid, closes = _session_closes(bars)
    recent = sid - skip
    old = sid - lookback
    ok = old >= 0
    mom = np.zeros(len(bars))
    mom[ok] = closes[recent[ok]] / closes[old[ok]] - 1.0
    up, down = ok & (mom > 0), ok & (mom < 0)
    short = down if allow_short else np.zeros(len(bars), dtype=np.bool_)
    return {"long_entry": up, "long_exit": ~up, "short_entry": short, "short_exit": ~down}


def intraday_trend_signals(bars: Bars, config: EngineConfig, minutes: int = 60, threshold: float = 0.0,
                           allow_short: bool = True) -> Signals:
    """Intraday momentum: one entry per session, at the bar ending ``minutes`` after the open, in the
    direction of the session's move so far (beyond ``threshold``); out at the session's end."""
    n = len(bars)
    never = np.zeros(n, dtype=np.bool_)
    if not is_intraday(bars.timeframe):
        return {"long_entry": never, "long_exit": never, "short_entry": never, "short_exit": never}
    minute = minute_of_day(bars.index)
    step = timeframe_minutes(bars.timeframe)
    at = minute + step == SESSION_OPEN + minutes
    sid, _ = _session_closes(bars)
    opens = bars.column("open")[np.r_[True, sid[1:] != sid[:-1]]]
    move = bars.column("close") / opens[sid] - 1.0
    last = minute + 2 * step >= SESSION_CLOSE_MINUTE  # out at the open of the session's last bar
    long_entry = at & (move > threshold)
    short_entry = (at & (move < -threshold)) if allow_short else never
    return {"long_entry": long_entry, "long_exit": last, "short_entry": short_entry, "short_exit": last,
            "entries_per_session": 1}


def vol_target_hold(bars: Bars, config: EngineConfig, target_vol: float = 0.15, band: float = 0.25,
                    check_sessions: int = 5, atr: np.ndarray | None = None) -> np.ndarray:
    """Buy-and-hold at a target volatility, resized when the target has drifted more than ``band``
    (checked at the close of every ``check_sessions``-th session). The engine sizes the entries:
    ``vol_target_sizing`` sets its risk sizing to the target."""
    if not (target_vol > 0 and band > 0 and check_sessions >= 1):
        raise UserInputError(f"vol_target_hold: target_vol and band must be > 0 and check_sessions >= 1 "
                             f"(got {target_vol}, {band}, {check_sessions})")
    data, no_entry = replay_data(bars, config, atr)
    sid, _ = _session_closes(bars)
    last = (data[:, D_FLAGS].astype(np.int64) & FLAG_LAST_OF_SESSION) != 0  # by the clock (replay_data)
    check = last & (sid % int(check_sessions) == int(check_sessions) - 1)
    per_bar = float(target_vol / np.sqrt(bars_per_year(bars.timeframe)))
    return _vol_target_replay(data, no_entry, check, per_bar, float(band), config.params(), config.cost_vector())


def vol_target_sizing(bars: Bars, config: EngineConfig, target_vol: float = 0.15, **_: object) -> EngineConfig:
    """The engine's risk sizing as volatility targeting: risk sizing buys risk x equity / (stop_mult x
    ATR) units, an exposure of risk / stop_mult x close / ATR; with risk = stop_mult x target_vol /
    sqrt(bars a year) that is target_vol / (ATR / close x sqrt(bars a year)), capped by the leverage."""
    risk = config.stop_atr_mult * target_vol / float(np.sqrt(bars_per_year(bars.timeframe)))
    return config.model_copy(update={"risk_per_trade": min(1.0, risk)})


@njit(nogil=True)  # no disk cache: it compiles in engine.step_bar (see _replay)
def _vol_target_replay(data, no_entry, check, per_bar_target, band, params, costs):
    n = data.shape[0]
    actions = np.zeros(n, dtype=np.int8)
    state = new_state(params)
    action = HOLD
    bought_at = 0.0  # the target exposure the position was sized to
    cap = params[P_LEVERAGE]
    for t in range(n):
        step_bar(state, data, t, action, n + 1, params, costs)
        action = HOLD
        atr = data[t, D_ATR]
        close = data[t, D_CLOSE]
        if not (atr > 0.0 and close > 0.0):
            actions[t] = action
            continue
        target = min(per_bar_target * close / atr, cap)  # the exposure the engine would buy now
        if state[S_QTY] > 0.0:
            if check[t] and abs(target / bought_at - 1.0) > band:
                action = CLOSE_LONG  # resize: out now, back in at the next bar at the new target
        elif state[S_QTY] == 0.0 and not no_entry[t] and position_size(state[S_EQUITY], atr, close, params) > 0.0:
            action = BUY_LONG
            bought_at = target
        actions[t] = action
    return actions


def acting(signals: Callable[..., Signals]) -> Callable[..., np.ndarray]:
    """The baseline of a signal function: its signals turned into actions by ``signals_to_actions``."""
    def act(bars: Bars, config: EngineConfig, atr: np.ndarray | None = None, **params: Any) -> np.ndarray:
        return signals_to_actions(bars, config=config, atr=atr, **signals(bars, config, **params))

    act.__doc__ = signals.__doc__
    return act


sma_crossover = acting(sma_signals)
donchian_atr = acting(donchian_signals)
rsi_reversion = acting(rsi_signals)
tsmom = acting(tsmom_signals)
intraday_trend = acting(intraday_trend_signals)


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: a function ``(bars, config, **params) -> actions`` and its defaults."""

    name: str
    summary: str
    fn: Callable[..., np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False
    engine_overrides: dict[str, Any] = field(default_factory=dict)
    sizing: Callable[..., EngineConfig] | None = None  # (bars, config, **params) -> its engine config
    # (bars, config, **params) -> its causal signals: under a product that carries positions a signal
    # baseline decides on the whole history (indicators warmed up) and trades the window from flat
    signals: Callable[..., Signals] | None = None

    def engine_config(self, config: EngineConfig | None = None, bars: Bars | None = None,
                      **params: Any) -> EngineConfig:
        """The engine settings this baseline runs under on ``bars``: ``config`` with its overrides applied
        (the passive ones hold through sessions, unlevered; the trend ones run without stops) and its
        own sizing for these bars (``vol_target_hold``: risk sizing at the target volatility)."""
        config = config or EngineConfig()
        if self.engine_overrides:
            config = EngineConfig.model_validate({**config.model_dump(), **self.engine_overrides})
        if self.sizing is not None and bars is not None:
            config = self.sizing(bars, config, **{**self.params, **params})
        return config

    def __call__(self, bars: Bars, config: EngineConfig | None = None, seed: int = 0,
                 atr: np.ndarray | None = None, **params: Any) -> np.ndarray:
        """Actions for ``bars`` (int8, one per bar), valid under ``config`` (default: ``EngineConfig()``).

        ``seed`` is used only by seeded baselines; ``atr``: the engine's ATR per bar when it is known
        from earlier bars (``signals_to_actions``); ``params`` override the defaults in ``self.params``.
        """
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            raise UserInputError(f"baseline {self.name!r}: unknown parameter(s) {', '.join(unknown)} (valid: {valid})")
        config = self.engine_config(config, bars, **params)
        kwargs = {**self.params, **params}
        if self.seeded:
            kwargs["seed"] = seed
        if atr is not None:
            kwargs["atr"] = atr
        actions = self.fn(bars, config, **kwargs)
        return np.asarray(actions, dtype=np.int8)


# a passive position: delivery (an index stands for its ETF), unlevered, no stops, whole shares
_PASSIVE = {"product": "equity_delivery", "carry_overnight": True, "stop_loss": False, "take_profit_atr_mult": None,
            "allow_short": False, "lot_size": 1, "leverage": 1.0, "exposure": None, "fixed_qty": None}
_NO_STOPS = {"stop_loss": False, "take_profit_atr_mult": None}

BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("buy_and_hold", "passive benchmark: buy once, hold to the end (delivery, unlevered, no stops)",
                 long_from_session_open, engine_overrides={**_PASSIVE, "risk_per_trade": 1.0}),
        Baseline("intraday_long", "long from each session's first bar until square-off", long_from_session_open),
        Baseline("sma_crossover", "long above / short below: SMA(20) vs SMA(50)", sma_crossover,
                 {"fast": 20, "slow": 50, "allow_short": True}, signals=sma_signals),
        Baseline("donchian_atr", "20-bar breakout, 10-bar exit channel, 3×ATR(14) trailing stop", donchian_atr,
                 {"channel": 20, "exit_channel": 10, "atr_length": 14, "atr_mult": 3.0, "allow_short": True},
                 signals=donchian_signals),
        Baseline("rsi_reversion", "RSI(14) < 30 long, > 70 short, exit at 50", rsi_reversion,
                 {"length": 14, "lower": 30.0, "upper": 70.0, "exit_level": 50.0, "allow_short": True},
                 signals=rsi_signals),
        Baseline("random", "seeded random entries (2%/bar) and exits (5%/bar)", random_actions,
                 {"p_entry": 0.02, "p_exit": 0.05}, seeded=True),
        Baseline("vol_target_hold", "buy-and-hold at 15 % target volatility (delivery, at most fully invested), "
                 "resized on a 25 % drift (checked weekly)", vol_target_hold,
                 {"target_vol": 0.15, "band": 0.25, "check_sessions": 5},
                 engine_overrides=_PASSIVE, sizing=vol_target_sizing),
        Baseline("tsmom", "time-series momentum 12-1 months (session closes), long / short, no stops", tsmom,
                 {"lookback": 252, "skip": 21, "allow_short": True}, engine_overrides=_NO_STOPS,
                 signals=tsmom_signals),
        Baseline("intraday_trend", "intraday momentum: at 10:15 in the direction of the session's first hour, "
                 "out at the session's end", intraday_trend, {"minutes": 60, "threshold": 0.0, "allow_short": True},
                 signals=intraday_trend_signals),
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
