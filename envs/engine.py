"""The fill engine: the one place where fills, costs, slippage, sizing and stops are computed.

Everything is built around one numba function, ``step_bar(state, data, t, action, end, params,
costs)``, which advances an account by one bar given the action decided at the previous bar's
close. The backtester calls it in a loop (``run_actions`` / ``run_signals``), ``TradingEnv`` calls
it once per ``step`` (``env_step``), and the batched env calls it for many accounts inside one
numba call (``batched_step``), so there is exactly one implementation of the trading rules. The env
kernels (rewards, observations, episode resets) live at the end of this file, next to ``step_bar``.

Inputs are flat arrays so that numba can take them cheaply:

* ``data`` (n x ``N_DATA`` float64, from ``tradebot.envs.market_data.market_data``): open, high,
  low, close, ATR, flags and the fraction of the session left, per bar;
* ``params`` (``N_PARAMS`` float64, from ``tradebot.envs.engine_config.EngineConfig.params``);
* ``costs`` (``tradebot.envs.costs.N_COST`` float64, from ``EngineConfig.cost_vector``);
* ``state`` (``N_STATE`` float64, from ``new_state``): cash, position, open-trade details,
  counters, and the record of the trade closed in the last bar (``S_TRADE`` ... , ``T_*`` layout).

Order of events inside bar t (the decision was taken at bar t-1's close, using data <= t-1):

1. resting stop / take-profit orders meet the open: a gap through the stop fills at the open
   (with slippage), a gap through the take-profit fills at the open (a limit, no slippage);
2. the pending action fills at the open (market order, with slippage). Validity is judged against
   the position the agent saw when it decided: an entry needs a flat book, a close needs that side.
   A close whose position was already taken out by step 1 is satisfied and not counted as invalid;
3. on the first bar starting at/after the square-off time, an open intraday position is closed at
   the open (market, slippage); no entry fills on or after that bar;
4. the rest of the bar: stop hit if the low (long) / high (short) reaches it, take-profit if the
   high / low reaches it; when both are touched the stop is assumed first. A stop fills at
   min(stop, open) for a long (max for a short) with slippage; a take-profit at its price;
5. at the close: the last bar of the run/episode closes any position (``end_of_data``); for
   intraday products the last bar of a session closes it (``square_off``: the session ended before
   the square-off bar, e.g. a short session, or square-off is disabled);
6. equity is marked at the close: ``equity = cash + position x close``.

Costs are charged on every order (entry and exit) from the product's NSE cost vector. Python
callers read an account through ``tradebot.envs.account.EngineAccount``, not through the layouts.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numba import njit

# numba freezes the layout constants imported here into this file's cached kernels, and its cache
# only watches this file: after changing a layout in one of these modules, touch this file too.
from tradebot.envs.costs import (
    COST_BROKERAGE_FLAT,
    COST_BROKERAGE_RATE,
    COST_DP_SELL,
    COST_EXCHANGE,
    COST_GST,
    COST_IPFT,
    COST_SEBI,
    COST_STAMP_BUY,
    COST_STT_BUY,
    COST_STT_SELL,
)
from tradebot.envs.engine_config import (  # noqa: F401  (P_* and EngineConfig are imported from here too)
    P_ALLOW_SHORT,
    P_EXPOSURE,
    P_FIXED_QTY,
    P_FLAT_AT_SESSION_END,
    P_INITIAL_CASH,
    P_LEVERAGE,
    P_LOT,
    P_MAX_NOTIONAL,
    P_RISK,
    P_SLIP_ATR,
    P_SLIP_BPS,
    P_STOP_MULT,
    P_TP_MULT,
    P_USE_STOP,
    P_USE_TP,
    EngineConfig,
)
from tradebot.envs.market_data import (  # noqa: F401  (compute_atr is imported from here too)
    D_ATR,
    D_CLOSE,
    D_FLAGS,
    D_HIGH,
    D_LOW,
    D_OPEN,
    D_TIME_LEFT,
    FLAG_LAST_OF_SESSION,
    FLAG_NEXT_SQUARE_OFF,
    FLAG_SQUARE_OFF,
    compute_atr,
)


class Action(IntEnum):
    """The agent's / strategy's decision at a bar's close; it fills at the next bar's open."""

    HOLD = 0
    BUY_LONG = 1
    SELL_SHORT = 2
    CLOSE_LONG = 3
    CLOSE_SHORT = 4


ACTION_NAMES: tuple[str, ...] = tuple(a.name for a in Action)
N_ACTIONS = len(Action)


class ExitReason(IntEnum):
    SIGNAL = 0
    STOP = 1
    TAKE_PROFIT = 2
    SQUARE_OFF = 3
    END_OF_DATA = 4


EXIT_REASON_NAMES: tuple[str, ...] = ("signal", "stop", "take_profit", "square_off", "end_of_data")

# ---- array layouts (market data: tradebot.envs.market_data; params: tradebot.envs.engine_config) ----
# trade record (a row of the trade log, and the tail of the state vector)
(T_ENTRY_BAR, T_EXIT_BAR, T_SIDE, T_QTY, T_ENTRY_PRICE, T_EXIT_PRICE, T_STOP, T_TAKE_PROFIT,
 T_GROSS_PNL, T_ENTRY_COSTS, T_EXIT_COSTS, T_PNL, T_REASON) = range(13)
N_TRADE = 13

# state
(S_CASH, S_QTY, S_ENTRY_PRICE, S_STOP, S_TP, S_ENTRY_BAR, S_ENTRY_COSTS, S_EQUITY, S_COSTS_TOTAL,
 S_INVALID, S_N_TRADES, S_REALIZED, S_MARGIN, S_STEP_TURNOVER, S_STEP_COSTS, S_CLOSED, S_BAR) = range(17)
S_TRADE = 17  # state[S_TRADE:S_TRADE + N_TRADE] is the trade closed in the last step_bar call
N_STATE = S_TRADE + N_TRADE

_HOLD = 0
_BUY_LONG = 1
_SELL_SHORT = 2
_CLOSE_LONG = 3
_CLOSE_SHORT = 4
_R_SIGNAL = 0.0
_R_STOP = 1.0
_R_TAKE_PROFIT = 2.0
_R_SQUARE_OFF = 3.0
_R_END_OF_DATA = 4.0


# ---- costs -----------------------------------------------------------------------------------
# Kernels use numba's "numpy" error model (no Python ZeroDivisionError checks, ~1.5x faster
# loops); every division below is guarded, so the results are the same.

@njit(cache=True, error_model="numpy")
def _charge_parts(costs, price, qty, is_buy):
    turnover = price * qty
    if not turnover > 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    brokerage = min(costs[COST_BROKERAGE_FLAT], costs[COST_BROKERAGE_RATE] * turnover)
    if not brokerage < np.inf:
        brokerage = 0.0
    stt = turnover * (costs[COST_STT_BUY] if is_buy else costs[COST_STT_SELL])
    exchange = turnover * costs[COST_EXCHANGE]
    ipft = turnover * costs[COST_IPFT]
    sebi = turnover * costs[COST_SEBI]
    stamp = turnover * costs[COST_STAMP_BUY] if is_buy else 0.0
    dp = 0.0 if is_buy else costs[COST_DP_SELL]
    gst = costs[COST_GST] * (brokerage + exchange + ipft + sebi + dp)
    return (max(brokerage, 0.0), max(stt, 0.0), max(exchange, 0.0), max(ipft, 0.0), max(sebi, 0.0),
            max(stamp, 0.0), max(dp, 0.0), max(gst, 0.0))


@njit(cache=True, error_model="numpy")
def order_cost(costs, price, qty, is_buy):
    """Total charges (rupees, >= 0) on one executed order of ``qty`` at ``price``."""
    b, s, e, i, f, st, d, g = _charge_parts(costs, price, qty, is_buy)
    return b + s + e + i + f + st + d + g


@njit(cache=True, error_model="numpy")
def cost_breakdown(costs, price, qty, is_buy):
    """Charges on one order: brokerage, STT, exchange, IPFT, SEBI, stamp, DP, GST, total."""
    out = np.empty(9)
    b, s, e, i, f, st, d, g = _charge_parts(costs, price, qty, is_buy)
    out[0] = b
    out[1] = s
    out[2] = e
    out[3] = i
    out[4] = f
    out[5] = st
    out[6] = d
    out[7] = g
    out[8] = b + s + e + i + f + st + d + g
    return out


# ---- the engine ------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def new_state(params):
    """A fresh account: cash = initial cash, flat."""
    state = np.zeros(N_STATE)
    reset_state(state, params)
    return state


@njit(cache=True, error_model="numpy")
def reset_state(state, params):
    state[:] = 0.0
    state[S_CASH] = params[P_INITIAL_CASH]
    state[S_EQUITY] = params[P_INITIAL_CASH]
    state[S_STOP] = np.nan
    state[S_TP] = np.nan
    state[S_ENTRY_PRICE] = np.nan
    state[S_BAR] = -1.0


@njit(cache=True, error_model="numpy")
def slipped(raw, order_side, atr, params):
    """Fill price of a market order: buys (order_side +1) pay up, sells (-1) receive less."""
    a = atr if (atr > 0.0 and atr < np.inf) else 0.0
    px = raw + order_side * (raw * params[P_SLIP_BPS] + params[P_SLIP_ATR] * a)
    return px if px > 0.0 else 0.0


@njit(cache=True, error_model="numpy")
def position_size(equity, atr, fill, params):
    """Units for an entry at ``fill``: risk sizing (or fixed, or a notional exposure), capped by notional
    and leverage, whole lots."""
    if not (equity > 0.0 and fill > 0.0):
        return 0.0
    if params[P_FIXED_QTY] > 0.0:
        q = params[P_FIXED_QTY]
    elif params[P_EXPOSURE] > 0.0:
        q = params[P_EXPOSURE] * equity / fill
    else:
        q = params[P_RISK] * equity / (params[P_STOP_MULT] * atr)
    q = min(q, params[P_MAX_NOTIONAL] / fill, params[P_LEVERAGE] * equity / fill)
    if not q > 0.0:
        return 0.0
    lot = params[P_LOT]
    return math.floor(q / lot) * lot


@njit(cache=True, error_model="numpy")
def _close(state, t, fill, reason, costs):
    qty = state[S_QTY]
    side = 1.0 if qty > 0.0 else -1.0
    q = abs(qty)
    cost = order_cost(costs, fill, q, side < 0.0)
    state[S_CASH] += side * q * fill - cost
    gross = side * q * (fill - state[S_ENTRY_PRICE])
    pnl = gross - state[S_ENTRY_COSTS] - cost
    r = S_TRADE
    state[r + T_ENTRY_BAR] = state[S_ENTRY_BAR]
    state[r + T_EXIT_BAR] = t
    state[r + T_SIDE] = side
    state[r + T_QTY] = q
    state[r + T_ENTRY_PRICE] = state[S_ENTRY_PRICE]
    state[r + T_EXIT_PRICE] = fill
    state[r + T_STOP] = state[S_STOP]
    state[r + T_TAKE_PROFIT] = state[S_TP]
    state[r + T_GROSS_PNL] = gross
    state[r + T_ENTRY_COSTS] = state[S_ENTRY_COSTS]
    state[r + T_EXIT_COSTS] = cost
    state[r + T_PNL] = pnl
    state[r + T_REASON] = reason
    state[S_QTY] = 0.0
    state[S_MARGIN] = 0.0
    state[S_STOP] = np.nan
    state[S_TP] = np.nan
    state[S_COSTS_TOTAL] += cost
    state[S_STEP_COSTS] += cost
    state[S_STEP_TURNOVER] += q * fill
    state[S_REALIZED] += pnl
    state[S_N_TRADES] += 1.0
    state[S_CLOSED] = 1.0


@njit(cache=True, error_model="numpy")
def _open(state, t, side, raw, atr, params, costs):
    atr_ok = atr > 0.0 and atr < np.inf
    need_atr = ((params[P_FIXED_QTY] <= 0.0 and params[P_EXPOSURE] <= 0.0) or params[P_USE_STOP] > 0.0
                or params[P_USE_TP] > 0.0)
    if need_atr and not atr_ok:
        return False
    fill = slipped(raw, side, atr, params)
    q = position_size(state[S_EQUITY], atr, fill, params)
    if not q > 0.0:
        return False
    cost = order_cost(costs, fill, q, side > 0.0)
    state[S_CASH] -= side * q * fill + cost
    state[S_QTY] = side * q
    state[S_ENTRY_PRICE] = fill
    state[S_STOP] = fill - side * params[P_STOP_MULT] * atr if params[P_USE_STOP] > 0.0 else np.nan
    state[S_TP] = fill + side * params[P_TP_MULT] * atr if params[P_USE_TP] > 0.0 else np.nan
    state[S_ENTRY_BAR] = t
    state[S_ENTRY_COSTS] = cost
    state[S_MARGIN] = q * fill / params[P_LEVERAGE]
    state[S_COSTS_TOTAL] += cost
    state[S_STEP_COSTS] += cost
    state[S_STEP_TURNOVER] += q * fill
    return True


@njit(cache=True, error_model="numpy", inline="always")
def step_bar(state, data, t, action, end, params, costs):
    """Advance the account through bar ``t``, filling ``action`` (decided at bar t-1's close).

    ``end`` is one past the last bar of the run or episode: at bar ``end - 1`` any position is
    closed at the close. Returns the equity marked at bar t's close.
    """
    o = data[t, D_OPEN]
    h = data[t, D_HIGH]
    lo = data[t, D_LOW]
    c = data[t, D_CLOSE]
    atr = data[t - 1, D_ATR] if t > 0 else np.nan  # the latest ATR known before this bar
    flags = int(data[t, D_FLAGS])
    use_stop = params[P_USE_STOP] > 0.0
    use_tp = params[P_USE_TP] > 0.0
    state[S_CLOSED] = 0.0
    state[S_STEP_TURNOVER] = 0.0
    state[S_STEP_COSTS] = 0.0
    state[S_BAR] = t
    held = state[S_QTY]  # the position the decision was taken against

    # 1. resting stop / take-profit meet the open
    if held > 0.0:
        if use_stop and o <= state[S_STOP]:
            _close(state, t, slipped(o, -1.0, atr, params), _R_STOP, costs)
        elif use_tp and o >= state[S_TP]:
            _close(state, t, o, _R_TAKE_PROFIT, costs)
    elif held < 0.0:
        if use_stop and o >= state[S_STOP]:
            _close(state, t, slipped(o, 1.0, atr, params), _R_STOP, costs)
        elif use_tp and o <= state[S_TP]:
            _close(state, t, o, _R_TAKE_PROFIT, costs)

    # 2. the pending action, at the open
    if action == _HOLD:
        pass
    elif action == _BUY_LONG or action == _SELL_SHORT:
        side = 1.0 if action == _BUY_LONG else -1.0
        if held != 0.0 or (flags & FLAG_SQUARE_OFF) != 0 or (side < 0.0 and params[P_ALLOW_SHORT] <= 0.0):
            state[S_INVALID] += 1.0
        elif not _open(state, t, side, o, atr, params, costs):
            state[S_INVALID] += 1.0
    elif action == _CLOSE_LONG:
        if held > 0.0:
            if state[S_QTY] > 0.0:
                _close(state, t, slipped(o, -1.0, atr, params), _R_SIGNAL, costs)
        else:
            state[S_INVALID] += 1.0
    elif action == _CLOSE_SHORT:
        if held < 0.0:
            if state[S_QTY] < 0.0:
                _close(state, t, slipped(o, 1.0, atr, params), _R_SIGNAL, costs)
        else:
            state[S_INVALID] += 1.0
    else:
        state[S_INVALID] += 1.0

    # 3. square-off bar: close at the open
    q = state[S_QTY]
    if q != 0.0 and (flags & FLAG_SQUARE_OFF) != 0:
        _close(state, t, slipped(o, -1.0 if q > 0.0 else 1.0, atr, params), _R_SQUARE_OFF, costs)

    # 4. the rest of the bar: stop first when both are touched
    q = state[S_QTY]
    if q > 0.0:
        if use_stop and lo <= state[S_STOP]:
            _close(state, t, slipped(min(state[S_STOP], o), -1.0, atr, params), _R_STOP, costs)
        elif use_tp and h >= state[S_TP]:
            _close(state, t, max(state[S_TP], o), _R_TAKE_PROFIT, costs)
    elif q < 0.0:
        if use_stop and h >= state[S_STOP]:
            _close(state, t, slipped(max(state[S_STOP], o), 1.0, atr, params), _R_STOP, costs)
        elif use_tp and lo <= state[S_TP]:
            _close(state, t, min(state[S_TP], o), _R_TAKE_PROFIT, costs)

    # 5. end of data / end of an intraday session: close at the close
    q = state[S_QTY]
    if q != 0.0:
        if t >= end - 1:
            _close(state, t, slipped(c, -1.0 if q > 0.0 else 1.0, atr, params), _R_END_OF_DATA, costs)
        elif (flags & FLAG_LAST_OF_SESSION) != 0 and params[P_FLAT_AT_SESSION_END] > 0.0:
            _close(state, t, slipped(c, -1.0 if q > 0.0 else 1.0, atr, params), _R_SQUARE_OFF, costs)

    # 6. mark to market
    equity = state[S_CASH] + state[S_QTY] * c
    state[S_EQUITY] = equity
    return equity


@njit(cache=True, error_model="numpy")
def _record_bar(state, t, log, k, equity, cash, position):
    """Store bar t's account in the curves and a trade closed at t in the log (``k`` trades so far;
    trades beyond the log's capacity are counted but not stored). Returns the new trade count."""
    if state[S_CLOSED] > 0.0:
        if k < log.shape[0]:
            for j in range(N_TRADE):
                log[k, j] = state[S_TRADE + j]
        k += 1
    equity[t] = state[S_EQUITY]
    cash[t] = state[S_CASH]
    position[t] = state[S_QTY]
    return k


@njit(cache=True, error_model="numpy")
def run_actions(data, actions, params, costs, log):
    """Backtest: ``actions[t]`` is decided at bar t's close and fills from bar t+1 on.

    Closed trades are written to ``log`` (cap x N_TRADE) while it has room. Returns (equity, cash,
    position, number of trades, final state); when the number exceeds ``log``'s rows, run again
    with a log that large (``tradebot.envs.backtest`` does). The action at the last bar has no bar left to
    fill in and is ignored.
    """
    n = data.shape[0]
    state = new_state(params)
    equity = np.empty(n)
    cash = np.empty(n)
    position = np.empty(n)
    k = 0
    for t in range(n):
        a = actions[t - 1] if t > 0 else _HOLD
        step_bar(state, data, t, a, n, params, costs)
        k = _record_bar(state, t, log, k, equity, cash, position)
    return equity, cash, position, k, state


@njit(cache=True, error_model="numpy")
def signal_action(position, long_entry, long_exit, short_entry, short_exit):
    """Turn signals at a bar into an action given the current position (no counted no-ops)."""
    if position == 0.0:
        if long_entry and not long_exit:
            return _BUY_LONG
        if short_entry and not short_exit:
            return _SELL_SHORT
    elif position > 0.0:
        if long_exit:
            return _CLOSE_LONG
    elif short_exit:
        return _CLOSE_SHORT
    return _HOLD


@njit(cache=True, error_model="numpy")
def run_signals(data, long_entries, long_exits, short_entries, short_exits, params, costs, log):
    """Signal-driven backtest over the same ``step_bar``: signals at bar t act at bar t+1's open.

    Entries are taken only when flat and exits only when holding that side, so repeated signals
    are not counted as invalid actions. Returns what ``run_actions`` returns.
    """
    n = data.shape[0]
    state = new_state(params)
    equity = np.empty(n)
    cash = np.empty(n)
    position = np.empty(n)
    k = 0
    a = _HOLD
    for t in range(n):
        step_bar(state, data, t, a, n, params, costs)
        k = _record_bar(state, t, log, k, equity, cash, position)
        a = signal_action(state[S_QTY], long_entries[t], long_exits[t], short_entries[t], short_exits[t])
    return equity, cash, position, k, state


# ---- env kernels: rewards, observations, action masks, single and batched steps -----------------
# They live here, next to step_bar, because numba's on-disk cache only notices changes to a
# function's own source file: a cached kernel in another module that compiles step_bar in would
# keep a stale copy of it after this file changes.

# reward and agent-rule parameters (tradebot.envs.trading_env: RewardStrategy.vector, EnvConfig)
R_CODE, R_DRAWDOWN, R_TURNOVER, R_ETA, R_BENCHMARK, R_INTERVAL, R_MIN_HOLD = range(7)
N_RPARAMS = 7
REWARD_NET_LOG_RETURN = 0
REWARD_DIFFERENTIAL_SHARPE = 1
# reward state: Moody-Saffell moving moments A, B; the episode's equity peak; the last drawdown
RS_A, RS_B, RS_PEAK, RS_DD = range(4)
N_RSTATE = 4
# episode modes
MODE_WINDOW = 0
MODE_SESSION = 1
# the observation's tail: side, upnl_atr, bars_in_trade, time_left, then one mask value per action
N_ACCOUNT_COLUMNS = 4
N_OBS_TAIL = N_ACCOUNT_COLUMNS + N_ACTIONS


@njit(cache=True, error_model="numpy")
def reward_reset(rstate, equity):
    rstate[RS_A] = 0.0
    rstate[RS_B] = 0.0
    rstate[RS_PEAK] = equity
    rstate[RS_DD] = 0.0


@njit(cache=True, error_model="numpy", inline="always")
def reward_step(rparams, rstate, eq_prev, eq_now, turnover, close_prev, close_now):
    """The reward for one bar (dispatch on ``rparams[R_CODE]``), penalties included.

    With a benchmark weight w = ``rparams[R_BENCHMARK]`` > 0 the base reward is measured against
    holding w x equity of the instrument from close to close (the "hold plus overlay" design): the
    log return in excess of log(1 + w r_bar), or the simple return in excess of w r_bar.
    """
    if not eq_prev > 0.0:
        return 0.0
    ratio = eq_now / eq_prev
    bench = rparams[R_BENCHMARK]
    r_bar = close_now / close_prev - 1.0 if (bench > 0.0 and close_prev > 0.0) else 0.0
    code = int(rparams[R_CODE])
    if code == REWARD_NET_LOG_RETURN:
        base = np.log(ratio) if ratio > 1e-12 else np.log(1e-12)
        if bench > 0.0:
            held = 1.0 + bench * r_bar
            base -= np.log(held) if held > 1e-12 else np.log(1e-12)
    else:
        ret = ratio - 1.0 - bench * r_bar
        a = rstate[RS_A]
        b = rstate[RS_B]
        da = ret - a
        db = ret * ret - b
        var = b - a * a
        base = (b * da - 0.5 * a * db) / var ** 1.5 if var > 1e-12 else 0.0
        eta = rparams[R_ETA]
        rstate[RS_A] = a + eta * da
        rstate[RS_B] = b + eta * db
    peak = max(rstate[RS_PEAK], eq_now)
    dd = 1.0 - eq_now / peak if peak > 0.0 else 0.0
    dd_up = dd - rstate[RS_DD]
    rstate[RS_PEAK] = peak
    rstate[RS_DD] = dd
    return base - rparams[R_DRAWDOWN] * max(dd_up, 0.0) - rparams[R_TURNOVER] * turnover / eq_prev


@njit(cache=True, error_model="numpy", inline="always")
def action_mask(out, qty, bars_held, flags, allow_short, min_hold):
    """The actions ``step_bar`` accepts from a decision taken now, as 1.0 (valid) / 0.0 in ``out[0:5]``.

    HOLD always; an entry only when flat and the next bar is not at/after square-off (a short only when
    shorts are allowed); a close only when holding that side and, with a minimum holding time, once the
    fill bar is ``min_hold`` bars after the entry bar (``bars_held`` + 1 >= ``min_hold``). These are
    ``step_bar``'s validity rules for a decision at this bar; the one check they leave out is sizing
    (an entry the engine sizes to zero lots still counts as a no-op)."""
    entry_ok = (flags & FLAG_NEXT_SQUARE_OFF) == 0
    out[0] = 1.0
    out[1] = 1.0 if (qty == 0.0 and entry_ok) else 0.0
    out[2] = 1.0 if (qty == 0.0 and entry_ok and allow_short) else 0.0
    can_close = bars_held + 1.0 >= min_hold
    out[3] = 1.0 if (qty > 0.0 and can_close) else 0.0
    out[4] = 1.0 if (qty < 0.0 and can_close) else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def write_obs(obs, feats, data, state, t, params, rparams):
    nf = feats.shape[1]
    for j in range(nf):
        obs[j] = feats[t, j]
    q = state[S_QTY]
    held = t - state[S_ENTRY_BAR] if q != 0.0 else 0.0
    if q != 0.0:
        side = 1.0 if q > 0.0 else -1.0
        atr = data[t, D_ATR]
        upnl = side * (data[t, D_CLOSE] - state[S_ENTRY_PRICE]) / atr if atr > 0.0 else 0.0
        obs[nf] = side
        obs[nf + 1] = upnl
        obs[nf + 2] = held
    else:
        obs[nf] = 0.0
        obs[nf + 1] = 0.0
        obs[nf + 2] = 0.0
    obs[nf + 3] = data[t, D_TIME_LEFT]
    action_mask(obs[nf + N_ACCOUNT_COLUMNS:], q, held, int(data[t, D_FLAGS]), params[P_ALLOW_SHORT] > 0.0,
                rparams[R_MIN_HOLD])


@njit(cache=True, error_model="numpy")
def env_reset(state, rstate, data, feats, t, params, rparams, obs):
    reset_state(state, params)
    reward_reset(rstate, state[S_EQUITY])
    write_obs(obs, feats, data, state, t, params, rparams)


@njit(cache=True, error_model="numpy", inline="always")
def env_step(state, rstate, data, feats, t, action, end, params, costs, rparams, obs):
    """One env step from decision bar t: ``action`` fills through ``step_bar`` at t+1, then HOLD for the
    rest of the decision interval (``rparams[R_INTERVAL]`` bars; fewer at the episode's end or when the
    equity is gone). Returns (reward summed over those bars, the bar of the new observation). A trade
    closed during the step is left in the state's trade record with ``S_CLOSED`` set (one at most: the
    step's only entry is its first bar's action)."""
    k = max(1, int(rparams[R_INTERVAL]))
    n = data.shape[0]
    r = 0.0
    a = action
    closed = False
    for _ in range(k):
        eq_prev = state[S_EQUITY]
        eq_now = step_bar(state, data, t + 1, a, n, params, costs)
        r += reward_step(rparams, rstate, eq_prev, eq_now, state[S_STEP_TURNOVER], data[t, D_CLOSE], data[t + 1, D_CLOSE])
        closed = closed or state[S_CLOSED] > 0.0
        t += 1
        a = _HOLD
        if t >= end - 1 or not eq_now > 0.0:
            break
    state[S_CLOSED] = 1.0 if closed else 0.0
    write_obs(obs, feats, data, state, t, params, rparams)
    return r, t


@njit(cache=True, error_model="numpy")
def env_step_info(state, rstate, data, feats, t, action, end, params, costs, rparams, obs):
    """``env_step`` plus what ``TradingEnv.step`` reports, returned as one tuple (cheap to box)."""
    r, t = env_step(state, rstate, data, feats, t, action, end, params, costs, rparams, obs)
    return (r, t, state[S_EQUITY], state[S_QTY], np.int64(state[S_N_TRADES]), np.int64(state[S_INVALID]),
            state[S_COSTS_TOTAL], state[S_CLOSED] > 0.0)


@njit(cache=True, error_model="numpy")
def batched_reset(states, rstates, tt, ends, rows, starts, stops, data, feats, params, rparams, obs):
    """Start the episodes of accounts ``rows``: account ``rows[k]`` runs from bar ``starts[k]`` to ``stops[k]``."""
    for k in range(rows.shape[0]):
        i = rows[k]
        tt[i] = starts[k]
        ends[i] = stops[k]
        env_reset(states[i], rstates[i], data, feats, starts[k], params, rparams, obs[i])


@njit(cache=True, error_model="numpy")
def batched_step(states, rstates, tt, ends, skip, actions, data, feats, params, costs, rparams, obs, rewards,
                 terminated, truncated, session_mode):
    """``env_step`` for every account not in ``skip``, with ``TradingEnv.step``'s end-of-episode rules
    (the core of ``BatchedTradingEnv.step``; accounts that finish are restarted by the caller)."""
    for i in range(states.shape[0]):
        if skip[i]:
            continue
        rewards[i], t = env_step(states[i], rstates[i], data, feats, tt[i], actions[i], ends[i], params, costs,
                                 rparams, obs[i])
        tt[i] = t
        at_end = t >= ends[i] - 1
        term = not states[i, S_EQUITY] > 0.0 or (at_end and session_mode)
        terminated[i] = term
        truncated[i] = at_end and not term
