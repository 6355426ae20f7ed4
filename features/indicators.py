"""Raw feature computation (pandas-ta / TA-Lib) shared by the batch pass and the stream, and look-back sizing."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tradebot.features.feature_config import FeatureConfig

from tradebot.core.nse_time import (
    IST,
    SESSION_MINUTES,
    SESSION_OPEN_MINUTE,
    bars_per_session,
    bars_per_year,
    is_intraday,
    timeframe_minutes,
)

_PATTERN_SCALE = {"hikkake": 200.0, "hikkakemod": 200.0}  # TA-Lib gives +-200 on confirmation
_CANDLE_MEMORY = 64  # bars: TA-Lib's candle look-backs (body averages over 10 bars, <= 5-bar patterns)
_CONVERGENCE_TOL = 1e-13  # a recursive smoother's seed must have decayed below this in the tail
_IST_OFFSET_NS = (5 * 60 + 30) * 60 * 1_000_000_000

# ------------------------------------------------------------------------------ raw computation
@dataclass(frozen=True)
class Plan:
    """What the raw computation needs besides the bars: config, bar size, whether volume is real."""

    config: FeatureConfig
    timeframe: str
    has_volume: bool

    @property
    def intraday(self) -> bool:
        return is_intraday(self.timeframe)


def as_column(result: Any, n: int) -> np.ndarray:
    """A pandas-ta result as float64 values; None (series shorter than the window) becomes NaN."""
    if result is None:
        return np.full(n, np.nan)
    return np.array(result, dtype=np.float64)  # a writable copy (pandas 3 hands out read-only views)


def _pctiles(columns: list[np.ndarray], window: int, n_out: int) -> np.ndarray:
    """2 * (percentile rank of x[t] among x[t-window+1..t]) - 1 of each column, last n_out rows only.

    pandas' rolling rank (ties averaged), over all columns in one call: [n_out, len(columns)].
    """
    seg = np.column_stack(columns)[max(0, len(columns[0]) - n_out - window + 1):]
    rank = pd.DataFrame(seg).rolling(window, min_periods=window).rank(pct=True).to_numpy()
    return 2.0 * rank[len(rank) - n_out:] - 1.0


def _ist_clock(ts_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(minute of day, IST calendar day number, weekday Mon=0) of UTC-nanosecond timestamps.

    IST is UTC+05:30 all year (no daylight saving), so integer arithmetic gives exactly what
    ``tradebot.core.nse_time.minute_of_day`` / ``session_day`` and ``DatetimeIndex.dayofweek`` give.
    """
    local_minute = (ts_ns + _IST_OFFSET_NS) // 60_000_000_000
    day = local_minute // 1440
    return local_minute % 1440, day, (day + 3) % 7  # 1970-01-01 was a Thursday


# TA-Lib fast paths. pandas-ta's wrappers below only forward to these TA-Lib functions (with
# talib=True) but cost 0.2-0.5 ms each in Series/DataFrame handling on a short tail, which is
# most of the stream's budget. Each returns what the pandas-ta call returns; the tests check it.
def _macd(c: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray]:
    """(MACD, histogram) == pandas_ta.macd(close, fast, slow, signal, talib=True) MACD_/MACDh_."""
    import talib

    line, _, hist = talib.MACD(c, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    return line, hist


def _stoch(h: np.ndarray, lo: np.ndarray, c: np.ndarray, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(%K, %D) == pandas_ta.stoch(h, l, c, k, d, smooth_k=d, talib=True) STOCHk_/STOCHd_ (SMA
    smoothing); pandas-ta returns None below k + 2d bars, TA-Lib NaN before its look-back."""
    import talib

    return talib.STOCH(h, lo, c, fastk_period=k, slowk_period=d, slowk_matype=0, slowd_period=d, slowd_matype=0)


def _bbands(c: np.ndarray, length: int, std: float) -> tuple[np.ndarray, np.ndarray]:
    """(%b, bandwidth %) == pandas_ta.bbands(close, length, std, std, talib=True) BBP_/BBB_
    (pandas-ta nudges a zero band width by 2e-16 over the whole series; here it is NaN)."""
    import talib

    upper, mid, lower = talib.BBANDS(c, timeperiod=length, nbdevup=std, nbdevdn=std, matype=0)
    width = upper - lower
    width = np.where(width == 0, np.nan, width)
    return (c - lower) / width, 100.0 * width / mid


def _donchian_range(h: np.ndarray, lo: np.ndarray, length: int) -> np.ndarray:
    """DCU - DCL of pandas_ta.donchian(h, l, length, length): highest high - lowest low, length bars."""
    import talib

    return talib.MAX(h, timeperiod=length) - talib.MIN(lo, timeperiod=length)


def _adx(h: np.ndarray, lo: np.ndarray, c: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ADX, +DM, -DM) == pandas_ta.adx(h, l, c, length, talib=True) ADX_/DMP_/DMN_ (with TA-Lib,
    pandas-ta's DMP/DMN are TA-Lib's smoothed +DM/-DM; their price units cancel in the balance)."""
    import talib

    return (talib.ADX(h, lo, c, timeperiod=length), talib.PLUS_DM(h, lo, timeperiod=length),
            talib.MINUS_DM(h, lo, timeperiod=length))


def _candle(name: str, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """One pattern scaled to [-1, 1]: ``pandas_ta.cdl_pattern(name=...)`` / 100 (/ 200 for hikkake)."""
    import pandas_ta as ta
    import talib

    n = len(c)
    if name in ("doji", "inside"):  # pandas-ta's own implementations, as cdl_pattern dispatches them
        fn = ta.cdl_doji if name == "doji" else ta.cdl_inside
        res = fn(*(pd.Series(a, copy=False) for a in (o, h, lo, c)))
        values = np.zeros(n) if res is None else np.array(res, dtype=np.float64)  # too short: none seen
    else:  # cdl_pattern calls talib.abstract.Function("CDL<NAME>"): the same C function
        values = getattr(talib, f"CDL{name.upper()}")(o, h, lo, c).astype(np.float64)
    return values / _PATTERN_SCALE.get(name, 100.0)


def compute(plan: Plan, ts_ns: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray,
             c: np.ndarray, v: np.ndarray, n_out: int) -> tuple[list[tuple[str, bool, np.ndarray]], np.ndarray]:
    """Raw (unnormalised) features of the last ``n_out`` of these bars, and their ATR.

    ``ts_ns``: bar timestamps as UTC nanoseconds. The same function serves ``transform`` (all
    bars, n_out = len) and the stream (its tail, n_out = 1); steps whose cost grows with the
    length (percentile ranks, VWAP, calendar) only compute the rows that are returned.
    Returns ``[(name, zscore, values[n_out]), ...]`` in output order, and the raw ATR[n_out].
    """
    import pandas_ta as ta

    cfg = plan.config
    n = len(c)
    first = n - n_out
    sh, sl, sc, sv = (pd.Series(a, copy=False) for a in (h, lo, c, v))
    out: list[tuple[str, bool, np.ndarray]] = []

    def add(name: str, values: np.ndarray, zscore: bool, *, returned_rows_only: bool = False) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not returned_rows_only:
            values = values[first:]
        out.append((name, zscore, np.where(np.isfinite(values), values, np.nan)))

    atr = as_column(ta.atr(sh, sl, sc, length=cfg.atr_length, talib=True), n)

    if cfg.returns.enabled:
        for hz in cfg.returns.horizons:
            add(f"ret_{hz}", as_column(ta.log_return(sc, length=hz), n), True)

    if cfg.trend.enabled:
        for length in cfg.trend.sma:
            add(f"close_sma_{length}", c / as_column(ta.sma(sc, length=length, talib=True), n) - 1.0, True)
        for length in cfg.trend.ema:
            add(f"close_ema_{length}", c / as_column(ta.ema(sc, length=length, talib=True), n) - 1.0, True)

    if cfg.momentum.enabled:
        m = cfg.momentum
        add("rsi", (as_column(ta.rsi(sc, length=m.rsi, talib=True), n) - 50.0) / 50.0, False)
        macd, hist = _macd(c, m.macd_fast, m.macd_slow, m.macd_signal)
        add("macd", macd / atr, True)
        add("macd_hist", hist / atr, True)
        k, d = _stoch(h, lo, c, m.stoch_k, m.stoch_d)
        add("stoch_k", (k - 50.0) / 50.0, False)
        add("stoch_d", (d - 50.0) / 50.0, False)

    if cfg.volatility.enabled or cfg.regime.enabled:
        pctb, bbw = _bbands(c, cfg.volatility.bbands_length, cfg.volatility.bbands_std)
    if cfg.volatility.enabled:
        add("atr_pct", atr / c, True)
        add("bb_pctb", pctb - 0.5, False)
        add("bb_width", bbw / 100.0, True)
        r1 = ta.log_return(sc, length=1)
        annual = math.sqrt(bars_per_year(plan.timeframe))
        for w in cfg.volatility.realised_vol:
            sd = None if r1 is None else ta.stdev(r1, length=w, talib=True)
            add(f"rvol_{w}", as_column(sd, n) * annual, True)

    if plan.has_volume and cfg.volume.enabled:
        vo = cfg.volume
        obv = as_column(ta.obv(sc, sv, talib=True), n)
        flow = np.full(n, np.nan)
        flow[vo.obv_window:] = obv[vo.obv_window:] - obv[:-vo.obv_window]
        vol_sum = as_column(ta.sma(sv, length=vo.obv_window, talib=True), n) * vo.obv_window
        add("obv_flow", flow / vol_sum, False)
        add("volume_ratio", np.log(v / as_column(ta.sma(sv, length=vo.volume_sma, talib=True), n)), True)
        add("cmf", as_column(ta.cmf(sh, sl, sc, sv, length=vo.cmf), n), False)
        add("mfi", (as_column(ta.mfi(sh, sl, sc, sv, length=vo.mfi, talib=True), n) - 50.0) / 50.0, False)
        if vo.vwap and plan.intraday:
            # Anchored at each session (IST date): only the sessions of the returned rows are needed.
            # One bar of the session before is kept too (its own group), as pandas-ta's vwap refuses a
            # one-bar series; the very first bar of a series therefore has no VWAP, in every path.
            _, days, _ = _ist_clock(ts_ns)
            s0 = max(0, int(np.searchsorted(days, days[first], side="left")) - 1)
            vwap = np.full(n - s0, np.nan)
            if n - s0 >= 2:
                idx = pd.DatetimeIndex(ts_ns[s0:].view("M8[ns]")).tz_localize("UTC").tz_convert(IST)
                vwap = as_column(ta.vwap(pd.Series(h[s0:], index=idx), pd.Series(lo[s0:], index=idx),
                                   pd.Series(c[s0:], index=idx), pd.Series(v[s0:], index=idx), anchor="D"), n - s0)
                if s0 == 0:
                    vwap[0] = np.nan
            add("vwap_dist", c[first:] / vwap[first - s0:] - 1.0, True, returned_rows_only=True)

    if cfg.regime.enabled:
        rg = cfg.regime
        adx, dmp, dmn = _adx(h, lo, c, rg.adx)
        add("adx", adx / 100.0, False)
        add("dmi_balance", (dmp - dmn) / (dmp + dmn), False)
        slope = as_column(ta.linreg(sc, length=rg.slope, slope=True, talib=True), n)
        add("trend_slope", slope * math.sqrt(rg.slope) / atr, False)
        ranks = _pctiles([atr / c, bbw, _donchian_range(h, lo, rg.range_length) / c], rg.percentile_window, n_out)
        for j, name in enumerate(("vol_pctile", "bbw_pctile", "range_pctile")):
            add(name, ranks[:, j], False, returned_rows_only=True)

    if cfg.calendar.enabled:
        minute, _, weekday = _ist_clock(ts_ns[first:])
        if cfg.calendar.time_of_day and plan.intraday:
            elapsed = minute - SESSION_OPEN_MINUTE + timeframe_minutes(plan.timeframe)
            progress = np.clip(elapsed / SESSION_MINUTES, 0.0, 1.0)
            add("session_progress", progress, False, returned_rows_only=True)
            add("tod_sin", np.sin(2 * np.pi * progress), False, returned_rows_only=True)
            add("tod_cos", np.cos(2 * np.pi * progress), False, returned_rows_only=True)
        if cfg.calendar.day_of_week:
            add("dow_sin", np.sin(2 * np.pi * weekday / 7.0), False, returned_rows_only=True)
            add("dow_cos", np.cos(2 * np.pi * weekday / 7.0), False, returned_rows_only=True)

    if cfg.candles.enabled:
        for name in cfg.candles.patterns:
            add(f"cdl_{name}", _candle(name, o, h, lo, c), False)

    return out, atr[first:]


def memory_bars(plan: Plan) -> int:
    """Bars the stream must keep so that the newest bar's raw features equal the batch values."""
    cfg = plan.config

    def conv(alpha: float) -> int:  # bars for a recursive seed to decay below _CONVERGENCE_TOL
        return math.ceil(math.log(_CONVERGENCE_TOL) / math.log1p(-alpha))

    ema = lambda length: conv(2.0 / (length + 1))  # noqa: E731
    wilder = lambda length: conv(1.0 / length)  # noqa: E731
    k_atr = wilder(cfg.atr_length) + 1
    mem = [k_atr]
    if cfg.returns.enabled:
        mem.append(max(cfg.returns.horizons) + 1)
    if cfg.trend.enabled:
        mem += [*cfg.trend.sma, *(ema(x) for x in cfg.trend.ema)]
    if cfg.momentum.enabled:
        m = cfg.momentum
        mem += [wilder(m.rsi) + 1, max(ema(m.macd_slow) + ema(m.macd_signal), k_atr), m.stoch_k + 2 * m.stoch_d]
    if cfg.volatility.enabled:
        mem += [cfg.volatility.bbands_length, *(w + 1 for w in cfg.volatility.realised_vol)]
    if plan.has_volume and cfg.volume.enabled:
        vo = cfg.volume
        mem += [vo.obv_window + 1, vo.volume_sma, vo.cmf, vo.mfi + 1]
        if vo.vwap and plan.intraday:
            mem.append(2 * bars_per_session(plan.timeframe))  # the whole current session
    if cfg.regime.enabled:
        rg = cfg.regime
        w = rg.percentile_window
        mem += [2 * wilder(rg.adx) + 1, max(rg.slope, k_atr), w + k_atr,
                w + cfg.volatility.bbands_length, w + rg.range_length]
    if cfg.candles.enabled:
        mem.append(_CANDLE_MEMORY)
    return max(mem) + 8


def synthetic_bars(timeframe: str, n: int, seed: int = 7) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """A random-walk bar series on the NSE session grid (to measure look-backs, never for features)."""
    rng = np.random.default_rng(seed)
    per_day = bars_per_session(timeframe)
    step = timeframe_minutes(timeframe) if is_intraday(timeframe) else 0
    days = pd.bdate_range("2020-01-06", periods=n // per_day + 2, tz=IST)
    start = 9 * 60 + 15 if is_intraday(timeframe) else 0
    minutes = start + step * np.arange(per_day)
    stamps = (days.as_unit("ns").asi8[:, None] + minutes[None, :].astype(np.int64) * 60_000_000_000).ravel()[:n]
    index = pd.DatetimeIndex(stamps.view("M8[ns]")).tz_localize("UTC").tz_convert(IST)
    close = 1000.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.001, (2, n))) * close
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    volume = rng.integers(1_000, 100_000, n).astype(np.float64)
    return index, np.vstack([open_, high, low, close, volume])


class quiet:  # noqa: N801  (a context manager, used like a function)
    """Silence pandas-ta's pandas-3 deprecation chatter and NumPy's divide warnings inside the pipeline."""

    def __enter__(self) -> None:
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._e = np.errstate(all="ignore")
        self._e.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._e.__exit__(*exc)
        self._w.__exit__(*exc)
