"""Performance metrics of a backtest: one definition, shared by the CLI, training, MLflow and dashboards.

Metric keys are the constants of ``M`` (``M.SHARPE == "sharpe"``); never spell them as strings
elsewhere. ``compute_metrics`` works on plain inputs (an equity curve, per-trade net P&L, positions);
``metrics_from_result`` adapts an ``tradebot.envs.backtest.BacktestResult``.

Definitions (``r_t`` = per-bar simple return of the equity curve, ``P`` = bars per year from
``tradebot.core.nse_time.bars_per_year``: 375-minute sessions, 252 sessions a year, so 5-minute bars give
75 × 252 = 18,900 and daily bars 252; risk-free rate 0):

* **returns**: ``r_t = E_t / E_{t-1} - 1`` with ``E_{-1}`` = the initial capital when known (so a loss
  on the first bar counts), every bar included (a flat bar is a return of 0: time out of the market
  dilutes the ratios, as it should).
* **sharpe** = ``mean(r) / std(r, ddof=1) * sqrt(P)``. Same as ``quantstats.stats.sharpe(r, rf=0,
  periods=P)`` and ``empyrical.sharpe_ratio(r, annualization=P)``.
* **sortino** = ``mean(r) / DD * sqrt(P)`` with the target downside deviation
  ``DD = sqrt(mean(min(r_t, 0)^2))`` averaged over **all** bars (Sortino & Price; target 0). This is
  the definition of ``quantstats.stats.sortino(r, rf=0, periods=P)`` and
  ``empyrical.sortino_ratio(r, required_return=0, annualization=P)``; it is *not* the "standard
  deviation of the negative returns only" variant some tools use (that one divides by the number of
  losing bars and subtracts their mean, and gives a different, usually larger, number).
* **volatility** = ``std(r, ddof=1) * sqrt(P)``.
* **max_drawdown** = ``min_t(E_t / max_{s<=t} E_s - 1)``, the initial capital included as the first
  peak; a negative fraction (-0.12 is a 12 % fall), 0.0 when equity never fell.
* **worst_30d_drawdown**: the largest peak-to-trough fall whose peak and trough both lie within 30
  calendar days of each other, i.e. ``min_t(E_t / max{E_s : t - 30 days <= s <= t} - 1)``. A
  negative fraction, never worse than max_drawdown. It answers "how much can this lose in a month".
* **total_return** = ``E_last / E_0 - 1`` (``E_0`` = initial capital when known, else the first
  equity value).
* **cagr** = ``(1 + total_return) ** (P / N) - 1`` with ``N`` the number of returns (bars), i.e.
  years are counted in trading time, consistently with the annualisation of Sharpe (same as
  quantstats' ``cagr(periods=P)`` and empyrical's ``cagr(annualization=P)``).
* **calmar** = ``cagr / |max_drawdown|``.
* Trade statistics use each closed trade's **net** P&L (after costs): **trades** (count),
  **win_rate** = winners / trades (a winner has P&L > 0), **profit_factor** = gross profit / gross
  loss (``inf`` when there are winners and no loser; 0 when there is neither, as
  ``quantstats.stats.profit_factor`` of the P&L series), **expectancy** = mean P&L per trade
  (currency), **avg_win** = mean P&L of winners, **avg_loss** = mean P&L of losers (a negative number).
* **exposure** = share of bars that end holding a position (long or short).
* **turnover** = traded notional (entries and exits, both sides counted) / mean equity over the run.
* **costs** = total charges paid (brokerage, STT, exchange, stamp, GST …, in currency; slippage is in
  the fill prices, not here); **costs_pct** = costs / initial capital.
* **final_equity**, **bars**, **invalid_actions** (counted no-op actions) for context.

Undefined values are never NaN, and only the profit factor can be infinite: the other metrics are
finite floats. A ratio whose denominator is zero (flat equity → Sharpe; no losing bar → Sortino; no
drawdown → Calmar; no trades → trade statistics; fewer than two bars → Sharpe/Sortino/volatility; a
CAGR that overflows because a handful of bars is annualised) is reported as **0.0**, and
``Metrics.notes`` says which ones and why. A profit factor with winners and no losing trade is
``inf``: tables show ``inf``, ``compare.csv`` writes ``inf``, and JSON, which has no infinity, records
it as ``null`` (``metrics.json``, ``compare.json``: ``Metrics.to_dict``), with a note saying so;
``Metrics.from_dict`` reads it back as ``inf``. MLflow is given finite values only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from tradebot.core.nse_time import bars_per_year

DRAWDOWN_WINDOW_DAYS = 30


class M:
    """Metric keys: the one vocabulary for metrics across backtests, training, MLflow and dashboards."""

    TOTAL_RETURN = "total_return"
    CAGR = "cagr"
    SHARPE = "sharpe"
    SORTINO = "sortino"
    VOLATILITY = "volatility"
    MAX_DRAWDOWN = "max_drawdown"
    WORST_30D_DRAWDOWN = "worst_30d_drawdown"
    CALMAR = "calmar"
    TRADES = "trades"
    WIN_RATE = "win_rate"
    PROFIT_FACTOR = "profit_factor"
    EXPECTANCY = "expectancy"
    AVG_WIN = "avg_win"
    AVG_LOSS = "avg_loss"
    EXPOSURE = "exposure"
    TURNOVER = "turnover"
    COSTS = "costs"
    COSTS_PCT = "costs_pct"
    FINAL_EQUITY = "final_equity"
    BARS = "bars"
    INVALID_ACTIONS = "invalid_actions"

    #: every key, in display order
    ALL: tuple[str, ...] = (
        TOTAL_RETURN, CAGR, SHARPE, SORTINO, VOLATILITY, MAX_DRAWDOWN, WORST_30D_DRAWDOWN, CALMAR,
        TRADES, WIN_RATE, PROFIT_FACTOR, EXPECTANCY, AVG_WIN, AVG_LOSS, EXPOSURE, TURNOVER,
        COSTS, COSTS_PCT, FINAL_EQUITY, BARS, INVALID_ACTIONS,
    )
    #: the columns of a strategy comparison (all after costs)
    KEY: tuple[str, ...] = (
        TOTAL_RETURN, CAGR, SHARPE, SORTINO, MAX_DRAWDOWN, WORST_30D_DRAWDOWN, CALMAR,
        TRADES, WIN_RATE, PROFIT_FACTOR, EXPOSURE, COSTS,
    )


#: how each metric is displayed: "pct" (fraction shown as a percentage), "ratio", "int", "money"
METRIC_FORMATS: dict[str, str] = {
    M.TOTAL_RETURN: "pct", M.CAGR: "pct", M.SHARPE: "ratio", M.SORTINO: "ratio",
    M.VOLATILITY: "pct", M.MAX_DRAWDOWN: "pct", M.WORST_30D_DRAWDOWN: "pct", M.CALMAR: "ratio",
    M.TRADES: "int", M.WIN_RATE: "pct", M.PROFIT_FACTOR: "ratio", M.EXPECTANCY: "money",
    M.AVG_WIN: "money", M.AVG_LOSS: "money", M.EXPOSURE: "pct", M.TURNOVER: "ratio",
    M.COSTS: "money", M.COSTS_PCT: "pct", M.FINAL_EQUITY: "money", M.BARS: "int",
    M.INVALID_ACTIONS: "int",
}

#: human-readable labels for tables and reports
METRIC_LABELS: dict[str, str] = {
    M.TOTAL_RETURN: "Total return", M.CAGR: "CAGR", M.SHARPE: "Sharpe", M.SORTINO: "Sortino",
    M.VOLATILITY: "Volatility (ann.)", M.MAX_DRAWDOWN: "Max drawdown",
    M.WORST_30D_DRAWDOWN: "Worst 30-day drawdown", M.CALMAR: "Calmar", M.TRADES: "Trades",
    M.WIN_RATE: "Win rate", M.PROFIT_FACTOR: "Profit factor", M.EXPECTANCY: "Expectancy / trade",
    M.AVG_WIN: "Average win", M.AVG_LOSS: "Average loss", M.EXPOSURE: "Exposure",
    M.TURNOVER: "Turnover (× equity)", M.COSTS: "Costs paid", M.COSTS_PCT: "Costs (% of capital)",
    M.FINAL_EQUITY: "Final equity", M.BARS: "Bars", M.INVALID_ACTIONS: "Invalid actions (no-ops)",
}


def format_metric(key: str, value: float | None) -> str:
    """A metric value as a person reads it (percentages, 2-decimal ratios, whole counts, ₹ amounts);
    ``inf`` for an infinite one (a profit factor without losing trades), ``n/a`` for a missing one."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    kind = METRIC_FORMATS.get(key, "ratio")
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return f"{int(round(value)):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class Metrics(Mapping[str, float]):
    """Metric values keyed by ``M`` constants (floats, finite but for an ``inf`` profit factor), plus
    notes on undefined ones."""

    values: dict[str, float]
    notes: tuple[str, ...] = field(default=())

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        """``{"metrics": {...}, "notes": [...]}``, ready for JSON (an infinite value is None: null)."""
        return {"metrics": {k: (v if math.isfinite(v) else None) for k, v in self.values.items()},
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Metrics":
        """The ``Metrics`` a ``to_dict`` (e.g. a ``metrics.json``) holds; null reads back as the
        profit factor's ``inf`` (the one metric JSON cannot hold), NaN for any other key."""
        values = {str(k): (float(v) if v is not None else (math.inf if k == M.PROFIT_FACTOR else math.nan))
                  for k, v in dict(data["metrics"]).items()}
        return cls(values=values, notes=tuple(data.get("notes", ())))


def periods_per_year(timeframe: str) -> float:
    """Bars per year for annualising returns at this bar size (5m → 18,900; 1d → 252)."""
    return float(bars_per_year(timeframe))


def returns_from_equity(equity: pd.Series, initial_capital: float | None = None) -> pd.Series:
    """Per-bar simple returns, indexed like ``equity``.

    With ``initial_capital`` the first bar's return is measured against it; without, the first bar
    has no return and is dropped. A bar whose previous equity is not positive has return 0 (the
    account is wiped out; a ratio against zero means nothing).
    """
    values = np.asarray(equity, dtype="float64")
    if initial_capital is not None:
        prev = np.concatenate([[float(initial_capital)], values[:-1]])
        index = equity.index
    else:
        prev = values[:-1]
        values = values[1:]
        index = equity.index[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, values / prev - 1.0, 0.0)
    return pd.Series(r, index=index, name="returns")


def drawdown_series(equity: pd.Series, initial_capital: float | None = None) -> pd.Series:
    """Underwater curve: ``E_t / running peak - 1`` (≤ 0); the initial capital is the first peak."""
    values = np.asarray(equity, dtype="float64")
    peak = np.maximum.accumulate(values) if len(values) else values
    if initial_capital is not None and len(values):
        peak = np.maximum(peak, float(initial_capital))
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, values / peak - 1.0, 0.0)
    return pd.Series(dd, index=equity.index, name="drawdown")


@dataclass(frozen=True)
class WindowDrawdown:
    """The worst fall within a calendar window: depth (≤ 0) and the timestamps of peak and trough."""

    depth: float
    peak: pd.Timestamp | None
    trough: pd.Timestamp | None


def worst_window_drawdown(equity: pd.Series, days: int = DRAWDOWN_WINDOW_DAYS,
                          initial_capital: float | None = None) -> WindowDrawdown:
    """Worst peak-to-trough fall with the peak at most ``days`` calendar days before the trough.

    For each bar t the peak is the highest equity in ``[t - days, t]`` (the initial capital counts as
    equity just before the first bar); the result is the minimum of ``E_t / peak - 1``.
    """
    if len(equity) == 0:
        return WindowDrawdown(0.0, None, None)
    times = np.asarray(pd.DatetimeIndex(equity.index).as_unit("ns").asi8, dtype=np.int64)
    values = np.asarray(equity, dtype="float64")
    if initial_capital is not None:
        times = np.concatenate([[times[0] - 1], times])
        values = np.concatenate([[float(initial_capital)], values])
    depth, peak_i, trough_i = _window_drawdown(times, values, np.int64(days * 86_400 * 10**9))
    if depth >= 0.0 or trough_i < 0:
        return WindowDrawdown(0.0, None, None)
    offset = 1 if initial_capital is not None else 0
    ts = equity.index
    peak_ts = ts[max(peak_i - offset, 0)]
    return WindowDrawdown(float(depth), peak_ts, ts[trough_i - offset])


def _window_drawdown(times: np.ndarray, values: np.ndarray, window_ns: np.int64) -> tuple[float, int, int]:
    """Sliding-window maximum with a monotone deque: O(n). Returns (depth, peak index, trough index)."""
    n = len(values)
    dq = np.empty(n, dtype=np.int64)  # indices with decreasing values
    head, tail = 0, 0
    best, best_peak, best_trough = 0.0, -1, -1
    for t in range(n):
        while tail > head and values[dq[tail - 1]] <= values[t]:
            tail -= 1
        dq[tail] = t
        tail += 1
        while times[dq[head]] < times[t] - window_ns:
            head += 1
        peak = values[dq[head]]
        if peak > 0:
            d = values[t] / peak - 1.0
            if d < best:
                best, best_peak, best_trough = d, int(dq[head]), t
    return best, best_peak, best_trough


try:  # the loop is plain Python-compatible; numba makes it ~100x faster on long minute series
    from numba import njit as _njit

    _window_drawdown = _njit(cache=True, nogil=True)(_window_drawdown)
except ImportError:  # pragma: no cover - numba is a hard dependency, this only keeps the module importable
    pass


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def compute_metrics(
    equity: pd.Series,
    *,
    timeframe: str,
    initial_capital: float | None = None,
    trade_pnl: np.ndarray | pd.Series | None = None,
    positions: np.ndarray | pd.Series | None = None,
    traded_notional: float = 0.0,
    costs: float = 0.0,
    invalid_actions: int = 0,
) -> Metrics:
    """Every metric of ``M`` from an equity curve (indexed by bar timestamp) and the closed trades.

    ``timeframe`` fixes the annualisation (``periods_per_year``); ``trade_pnl`` is each closed trade's
    net P&L; ``positions`` the position held at each bar (any sign convention: non-zero = in the
    market); ``traded_notional`` the summed value of all fills; ``costs`` the charges paid.
    Never raises on degenerate input (no bars, one bar, flat equity, no trades): see module notes.
    """
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise TypeError("equity must be a pd.Series indexed by bar timestamps (DatetimeIndex)")
    notes: list[str] = []
    ppy = periods_per_year(timeframe)
    eq = np.asarray(equity, dtype="float64")
    n_bars = len(eq)
    start = float(initial_capital) if initial_capital is not None else (float(eq[0]) if n_bars else 0.0)
    final = float(eq[-1]) if n_bars else start

    r = returns_from_equity(equity, initial_capital).to_numpy()
    n = len(r)
    v: dict[str, float] = {}

    total_return = final / start - 1.0 if start > 0 else 0.0
    v[M.TOTAL_RETURN] = _finite(total_return)
    if n > 0 and start > 0 and final > 0:
        with np.errstate(over="ignore"):
            cagr = float(np.power(np.float64(final / start), ppy / n) - 1.0)
        v[M.CAGR] = _finite(cagr)
        if not math.isfinite(cagr):
            notes.append(f"{M.CAGR}: overflows when {n} bars are annualised, reported as 0")
    else:
        v[M.CAGR] = -1.0 if (n > 0 and start > 0 and final <= 0) else 0.0
        if n == 0:
            notes.append(f"{M.CAGR}: no returns (need at least one bar after the start), reported as 0")

    if n >= 2:
        mean = float(np.mean(r))
        std = float(np.std(r, ddof=1))
        downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        if std > 1e-15:
            v[M.SHARPE] = _finite(mean / std * math.sqrt(ppy))
        else:
            v[M.SHARPE] = 0.0
            notes.append(f"{M.SHARPE}: equity is flat (zero volatility), reported as 0")
        if downside > 1e-15:
            v[M.SORTINO] = _finite(mean / downside * math.sqrt(ppy))
        else:
            v[M.SORTINO] = 0.0
            notes.append(f"{M.SORTINO}: no losing bar (zero downside deviation), reported as 0")
        v[M.VOLATILITY] = _finite(std * math.sqrt(ppy))
    else:
        v[M.SHARPE] = v[M.SORTINO] = v[M.VOLATILITY] = 0.0
        notes.append(f"{M.SHARPE}, {M.SORTINO}, {M.VOLATILITY}: fewer than two returns, reported as 0")

    dd = drawdown_series(equity, initial_capital)
    max_dd = float(dd.min()) if n_bars else 0.0
    v[M.MAX_DRAWDOWN] = _finite(min(max_dd, 0.0))
    v[M.WORST_30D_DRAWDOWN] = _finite(worst_window_drawdown(equity, DRAWDOWN_WINDOW_DAYS, initial_capital).depth)
    if v[M.MAX_DRAWDOWN] < 0:
        v[M.CALMAR] = _finite(v[M.CAGR] / abs(v[M.MAX_DRAWDOWN]))
    else:
        v[M.CALMAR] = 0.0
        notes.append(f"{M.CALMAR}: no drawdown, reported as 0")

    pnl = np.asarray(trade_pnl if trade_pnl is not None else [], dtype="float64")
    pnl = pnl[np.isfinite(pnl)]
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    v[M.TRADES] = float(len(pnl))
    if len(pnl):
        v[M.WIN_RATE] = len(wins) / len(pnl)
        v[M.EXPECTANCY] = float(pnl.mean())
    else:
        v[M.WIN_RATE] = v[M.EXPECTANCY] = 0.0
        notes.append("trade statistics: no closed trades, reported as 0")
    v[M.AVG_WIN] = float(wins.mean()) if len(wins) else 0.0
    v[M.AVG_LOSS] = float(losses.mean()) if len(losses) else 0.0
    gross_loss = float(-losses.sum())
    gross_profit = float(wins.sum())
    if gross_loss > 0:
        v[M.PROFIT_FACTOR] = _finite(gross_profit / gross_loss)
    elif gross_profit > 0:
        v[M.PROFIT_FACTOR] = math.inf
        notes.append(f"{M.PROFIT_FACTOR}: no losing trade (gross loss 0): infinite, shown as inf (null in JSON)")
    else:
        v[M.PROFIT_FACTOR] = 0.0
        if len(pnl):
            notes.append(f"{M.PROFIT_FACTOR}: no winning or losing trade (every trade broke even), reported as 0")

    if positions is not None and len(positions):
        pos = np.asarray(positions, dtype="float64")
        v[M.EXPOSURE] = float(np.mean(np.nan_to_num(pos) != 0))
    else:
        v[M.EXPOSURE] = 0.0
    mean_equity = float(np.mean(eq)) if n_bars else start
    v[M.TURNOVER] = _finite(float(traded_notional) / mean_equity) if mean_equity > 0 else 0.0
    v[M.COSTS] = _finite(float(costs))
    v[M.COSTS_PCT] = _finite(float(costs) / start) if start > 0 else 0.0
    v[M.FINAL_EQUITY] = _finite(final)
    v[M.BARS] = float(n_bars)
    v[M.INVALID_ACTIONS] = float(invalid_actions)
    return Metrics(values={k: float(v[k]) for k in M.ALL}, notes=tuple(notes))


def metrics_from_result(result: Any, timeframe: str) -> Metrics:
    """``compute_metrics`` for an ``tradebot.envs.backtest.BacktestResult`` (equity, trades, positions, costs).

    The initial capital is the run's ``config.initial_cash``; traded notional sums entry and exit
    value (qty × price) of every closed trade.
    """
    config = getattr(result, "config", None)
    capital = getattr(config, "initial_cash", None)
    trades = getattr(result, "trades", None)
    pnl = None
    notional = 0.0
    if trades is not None and len(trades):
        pnl = trades["pnl"].to_numpy(dtype="float64")
        qty = trades["qty"].to_numpy(dtype="float64")
        notional = float(np.nansum(qty * trades["entry_price"].to_numpy(dtype="float64"))
                         + np.nansum(qty * trades["exit_price"].to_numpy(dtype="float64")))
    return compute_metrics(
        result.equity,
        timeframe=timeframe,
        initial_capital=float(capital) if capital is not None else None,
        trade_pnl=pnl,
        positions=getattr(result, "positions", None),
        traded_notional=notional,
        costs=float(getattr(result, "costs_total", 0.0)),
        invalid_actions=int(getattr(result, "invalid_actions", 0)),
    )
