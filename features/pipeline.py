"""The one feature pipeline: batch over history and incremental bar by bar, with the same numbers.

Usage::

    bars = load_bars("data/sample/NSE_NIFTY50-INDEX_5m.csv.gz")
    pipe = FeaturePipeline.for_bars(bars, config)   # layout fixed by config, bar size, volume or not
    X = pipe.transform(bars)          # DataFrame indexed like bars, float64, columns pipe.feature_names
    atr = pipe.atr(bars)              # raw ATR in price units, Series "atr": NOT an observation
    stream = pipe.stream(history=bars)            # live: carry on from the end of `bars`
    row = stream.update(ts, o, h, l, c, v)        # np.ndarray of len(pipe.feature_names)
    stream.atr                                    # raw ATR of the last bar (for sizing and stops)
    state = stream.state_dict()                   # JSON-ready; FeatureStream.from_state_dict(state)

Features (default ``FeatureConfig``; the names are ``pipe.feature_names``). Every feature is
scale-free: a ratio, a log return, an oscillator rescaled to about [-1, 1], or a percentile rank.
Indicators come from pandas-ta with ``talib=True`` (TA-Lib underneath); ``[z]`` marks the features
z-scored by the causal normaliser, the others are bounded or discrete by construction and pass
through unchanged.

* returns: ``ret_{h}`` log return over h bars, h = 1, 5, 20, 60 [z]
* trend: ``close_sma_{n}`` close/SMA(n) - 1, n = 10, 20, 50, 200 [z]; ``close_ema_{n}`` close/EMA(n) - 1,
  n = 10, 20, 50 [z]
* momentum: ``rsi`` (RSI(14) - 50)/50; ``macd``, ``macd_hist`` MACD(12, 26, 9) line and histogram / ATR
  [z]; ``stoch_k``, ``stoch_d`` (Stochastic(14, 3, 3) - 50)/50
* volatility: ``atr_pct`` ATR(14)/close [z]; ``bb_pctb`` Bollinger %b - 0.5 (= (close - mid)/(4 sd),
  already a z-score); ``bb_width`` (upper - lower)/mid [z]; ``rvol_{w}`` std of 1-bar log returns over
  w bars x sqrt(bars per year), w = 20, 75 [z]
* volume (only when ``Bars.has_volume``; index bars get no volume columns at all): ``obv_flow``
  20-bar change of OBV / 20-bar volume, in [-1, 1]; ``volume_ratio`` log(volume / SMA20(volume)) [z];
  ``cmf`` Chaikin money flow(20) in [-1, 1]; ``mfi`` (MFI(14) - 50)/50; ``vwap_dist`` close/VWAP - 1
  with VWAP anchored at each session (intraday bars only) [z]
* regime (for the gating network): ``adx`` ADX(14)/100 (trend strength); ``dmi_balance``
  (+DM - -DM)/(+DM + -DM) in [-1, 1] (trend direction); ``trend_slope`` least-squares slope of close
  over 20 bars x sqrt(20)/ATR (a t-like trend score); ``vol_pctile`` percentile rank of ATR/close
  among the last 500 bars; ``bbw_pctile`` and ``range_pctile`` the same for Bollinger width and for the
  20-bar high-low (Donchian) range / close: range compression. Ranks are mapped to 2*rank - 1.
* calendar: intraday bars get ``session_progress`` (fraction of the 375-minute NSE session elapsed
  when the bar closes, from 09:15 IST) and ``tod_sin``/``tod_cos`` of it; every bar gets
  ``dow_sin``/``dow_cos`` of the weekday (period 7). Daily bars get no time-of-day columns.
* candles: ``cdl_{name}`` TA-Lib candlestick patterns (the same C functions ``df.ta.cdl_pattern``
  wraps; ``doji`` and ``inside`` are pandas-ta's own), scaled to [-1, 1] (TA-Lib's +-100, and +-200
  for the hikkake confirmations). Default: dojistar, engulfing, harami, hammer, invertedhammer,
  hangingman, shootingstar, morningstar, eveningstar, 3whitesoldiers, 3blackcrows, piercing,
  darkcloudcover, marubozu. Any of pandas-ta's 62 names may be listed (all 62 work with TA-Lib).

Bars form one continuous series: returns, volatility and every indicator run across session
boundaries (the overnight gap is part of the first bar's return); only VWAP restarts each session.
No lookahead: the feature at bar t uses bars <= t only (``dpo``/``ichimoku`` and centred options
are not used; a test truncates the bars at many t and compares every feature). Normalisation (``normalisation`` in the config) is causal too: for the [z] columns,
z = (x - mean)/std (ddof 1) over the last ``window`` raw values up to and including bar t
(``rolling``) or over all of them (``expanding``), once ``min_periods`` values exist, clipped to
+-``clip``; ``none`` passes raw values through. A window whose std is below 1e-12 gives z = 0.
``warmup_bars`` is the number of leading rows in which some feature is still NaN (indicator
look-backs plus ``min_periods``); after it, a value that is undefined at a bar (e.g. a flat 20-bar
range, zero volume) is set to 0, the neutral value of every feature, so an agent never sees NaN.

Incremental contract: ``pipe.stream()`` keeps the last ``tail_bars`` bars and recomputes the raw
features of the newest bar from them with the very code ``transform`` runs on the whole history;
``tail_bars`` (auto) is long enough for every window plus the recursive indicators (EMA/Wilder
seeds) to converge below 1e-13 relative, so ``stream.update`` equals ``transform`` within rtol/atol
1e-9 on every row (tested), including candle patterns and percentile ranks. The stream's state
(tail, bar count, normaliser) saves to a JSON-ready dict and restores mid-stream exactly.
``pipe.stream(history=bars)`` primes it from a batch pass, as if every bar had been streamed.

Where pandas-ta's wrapper only forwards to TA-Lib, the stream calls that TA-Lib function directly,
because the wrapper's Series/DataFrame handling costs 0.2-0.5 ms per call on a short tail (most of
the latency budget): MACD, Stochastic (SMA smoothing), Bollinger Bands (%b and width as pandas-ta
derives them), the Donchian range (TA-Lib MAX/MIN), ADX/+DM/-DM (pandas-ta's ``adx`` also runs a
per-bar Python ``apply``, 1.6 ms) and the candle patterns (``cdl_pattern`` looks each one up through
``talib.abstract``, 0.2 ms per pattern). Each is the same computation as the pandas-ta call, and a
test checks it against that call. Percentile ranks use pandas' ``rolling().rank(pct=True)``.

Extending: add a field to the group's config class (or a new group and a field on
``FeatureConfig``), emit the feature in ``_compute`` with ``add(name, values, zscore)`` using a
pandas-ta indicator on the given Series, and extend ``_memory_bars`` with its look-back (plus
the convergence length of any recursive smoother), so the stream's tail stays long enough. The
truncation and stream-equals-batch tests then cover the new feature automatically.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, field_validator, model_validator

from tradebot.features.bars import Bars
from tradebot.core.nse_time import (
    IST,
    SESSION_MINUTES,
    SESSION_OPEN_MINUTE,
    bars_per_session,
    bars_per_year,
    is_intraday,
    timeframe_minutes,
)
from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.errors import UserInputError

ATR_COLUMN = "atr"  # name of the raw ATR output (price units; for sizing and stops, not an observation)
STATE_FORMAT = "tradebot.features.stream/1"

# pandas-ta's names for the 62 candlestick patterns; doji and inside are pandas-ta's own code.
CANDLE_PATTERNS = (
    "2crows", "3blackcrows", "3inside", "3linestrike", "3outside", "3starsinsouth", "3whitesoldiers",
    "abandonedbaby", "advanceblock", "belthold", "breakaway", "closingmarubozu", "concealbabyswall",
    "counterattack", "darkcloudcover", "doji", "dojistar", "dragonflydoji", "engulfing",
    "eveningdojistar", "eveningstar", "gapsidesidewhite", "gravestonedoji", "hammer", "hangingman",
    "harami", "haramicross", "highwave", "hikkake", "hikkakemod", "homingpigeon", "identical3crows",
    "inneck", "inside", "invertedhammer", "kicking", "kickingbylength", "ladderbottom",
    "longleggeddoji", "longline", "marubozu", "matchinglow", "mathold", "morningdojistar",
    "morningstar", "onneck", "piercing", "rickshawman", "risefall3methods", "separatinglines",
    "shootingstar", "shortline", "spinningtop", "stalledpattern", "sticksandwich", "takuri",
    "tasukigap", "thrusting", "tristar", "unique3river", "upsidegap2crows", "xsidegap3methods",
)
DEFAULT_PATTERNS = (
    "dojistar", "engulfing", "harami", "hammer", "invertedhammer", "hangingman", "shootingstar",
    "morningstar", "eveningstar", "3whitesoldiers", "3blackcrows", "piercing", "darkcloudcover",
    "marubozu",
)
_PATTERN_SCALE = {"hikkake": 200.0, "hikkakemod": 200.0}  # TA-Lib gives +-200 on confirmation
_CANDLE_MEMORY = 64  # bars: TA-Lib's candle look-backs (body averages over 10 bars, <= 5-bar patterns)
_CONVERGENCE_TOL = 1e-13  # a recursive smoother's seed must have decayed below this in the tail
_STD_FLOOR = 1e-12
_IST_OFFSET_NS = (5 * 60 + 30) * 60 * 1_000_000_000

Window = Annotated[int, Field(ge=2, le=1_000_000)]
Horizon = Annotated[int, Field(ge=1, le=1_000_000)]


def _unique(values: tuple) -> tuple:
    dupes = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dupes:
        raise ValueError(f"duplicate value(s) {', '.join(map(str, dupes))}")
    return values


# --------------------------------------------------------------------------------------- config
class ReturnsConfig(FrozenConfig):
    """Log returns over several horizons (bars)."""

    enabled: bool = True
    horizons: tuple[Horizon, ...] = (1, 5, 20, 60)
    _check = field_validator("horizons")(_unique)


class TrendConfig(FrozenConfig):
    """Close relative to simple and exponential moving averages."""

    enabled: bool = True
    sma: tuple[Window, ...] = (10, 20, 50, 200)
    ema: tuple[Window, ...] = (10, 20, 50)
    _check = field_validator("sma", "ema")(_unique)


class MomentumConfig(FrozenConfig):
    """RSI, MACD (scaled by ATR) and the Stochastic oscillator (%K smoothed over stoch_d bars)."""

    enabled: bool = True
    rsi: Window = 14
    macd_fast: Window = 12
    macd_slow: Window = 26
    macd_signal: Window = 9
    stoch_k: Window = 14
    stoch_d: Annotated[int, Field(ge=3, le=1000)] = 3

    @model_validator(mode="after")
    def _fast_below_slow(self) -> "MomentumConfig":
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be below macd_slow ({self.macd_slow})")
        return self


class VolatilityConfig(FrozenConfig):
    """ATR/close, Bollinger %b and width, realised volatility over several windows."""

    enabled: bool = True
    bbands_length: Window = 20
    bbands_std: Annotated[float, Field(gt=0, le=10)] = 2.0
    realised_vol: tuple[Window, ...] = (20, 75)
    _check = field_validator("realised_vol")(_unique)


class VolumeConfig(FrozenConfig):
    """Volume features; skipped (no columns) when the bars have no real volume, e.g. index bars."""

    enabled: bool = True
    obv_window: Window = 20
    volume_sma: Window = 20
    cmf: Window = 20
    mfi: Window = 14
    vwap: bool = True  # session-anchored VWAP; intraday bars only


class RegimeConfig(FrozenConfig):
    """Regime descriptors: trend strength and direction, volatility percentile, range compression."""

    enabled: bool = True
    adx: Window = 14
    slope: Window = 20
    range_length: Window = 20
    percentile_window: Annotated[int, Field(ge=10, le=1_000_000)] = 500


class CalendarConfig(FrozenConfig):
    """Time of day (intraday bars only) and day of week, as sin/cos."""

    enabled: bool = True
    time_of_day: bool = True
    day_of_week: bool = True


class CandlesConfig(FrozenConfig):
    """Candlestick patterns by pandas-ta name (see CANDLE_PATTERNS), each scaled to [-1, 1]."""

    enabled: bool = True
    patterns: tuple[str, ...] = DEFAULT_PATTERNS

    @field_validator("patterns")
    @classmethod
    def _known(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        import difflib

        for name in values:
            if name not in CANDLE_PATTERNS:
                close = difflib.get_close_matches(name, CANDLE_PATTERNS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "see tradebot.features.pipeline.CANDLE_PATTERNS"
                raise ValueError(f"unknown candlestick pattern '{name}' ({hint})")
        return _unique(values)


class NormalisationConfig(FrozenConfig):
    """Causal z-score of the unbounded features: rolling window, expanding, or none."""

    method: Literal["none", "rolling", "expanding"] = "rolling"
    window: Annotated[int, Field(ge=2, le=10_000_000)] = 1000
    min_periods: Annotated[int, Field(ge=2, le=10_000_000)] = 250
    clip: Annotated[float, Field(gt=0)] = 5.0

    @model_validator(mode="after")
    def _min_periods_fit(self) -> "NormalisationConfig":
        if self.method == "rolling" and self.min_periods > self.window:
            raise ValueError(f"min_periods ({self.min_periods}) must not exceed window ({self.window})")
        return self


class StreamConfig(FrozenConfig):
    """Incremental path: bars kept in the tail buffer (null = the length the features need; more is allowed)."""

    tail_bars: Annotated[int, Field(ge=16, le=1_000_000)] | None = None


class FeatureConfig(FrozenConfig):
    """The feature set. Load with ``load_feature_config(path)`` (the ``features:`` section of a YAML)."""

    atr_length: Window = 14
    returns: ReturnsConfig = ReturnsConfig()
    trend: TrendConfig = TrendConfig()
    momentum: MomentumConfig = MomentumConfig()
    volatility: VolatilityConfig = VolatilityConfig()
    volume: VolumeConfig = VolumeConfig()
    regime: RegimeConfig = RegimeConfig()
    calendar: CalendarConfig = CalendarConfig()
    candles: CandlesConfig = CandlesConfig()
    normalisation: NormalisationConfig = NormalisationConfig()
    stream: StreamConfig = StreamConfig()


def load_feature_config(path: str | Path | None) -> FeatureConfig:
    """The ``features:`` section of a YAML file (defaults when ``path`` is None); errors are one line."""
    if path is None:
        return FeatureConfig()
    config = load_config(FeatureConfig, path, "features")
    data = yaml.safe_load(Path(path).read_text())
    if data is not None and (not isinstance(data, dict) or "features" not in data):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise UserInputError(f"{path}: no 'features' section (found {keys}); put the feature settings "
                             "under 'features:' as in experiments/features.yaml")
    return config


# ------------------------------------------------------------------------------ raw computation
@dataclass(frozen=True)
class _Plan:
    """What the raw computation needs besides the bars: config, bar size, whether volume is real."""

    config: FeatureConfig
    timeframe: str
    has_volume: bool

    @property
    def intraday(self) -> bool:
        return is_intraday(self.timeframe)


def _np(result: Any, n: int) -> np.ndarray:
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


def _compute(plan: _Plan, ts_ns: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray,
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

    atr = _np(ta.atr(sh, sl, sc, length=cfg.atr_length, talib=True), n)

    if cfg.returns.enabled:
        for hz in cfg.returns.horizons:
            add(f"ret_{hz}", _np(ta.log_return(sc, length=hz), n), True)

    if cfg.trend.enabled:
        for length in cfg.trend.sma:
            add(f"close_sma_{length}", c / _np(ta.sma(sc, length=length, talib=True), n) - 1.0, True)
        for length in cfg.trend.ema:
            add(f"close_ema_{length}", c / _np(ta.ema(sc, length=length, talib=True), n) - 1.0, True)

    if cfg.momentum.enabled:
        m = cfg.momentum
        add("rsi", (_np(ta.rsi(sc, length=m.rsi, talib=True), n) - 50.0) / 50.0, False)
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
            add(f"rvol_{w}", _np(sd, n) * annual, True)

    if plan.has_volume and cfg.volume.enabled:
        vo = cfg.volume
        obv = _np(ta.obv(sc, sv, talib=True), n)
        flow = np.full(n, np.nan)
        flow[vo.obv_window:] = obv[vo.obv_window:] - obv[:-vo.obv_window]
        vol_sum = _np(ta.sma(sv, length=vo.obv_window, talib=True), n) * vo.obv_window
        add("obv_flow", flow / vol_sum, False)
        add("volume_ratio", np.log(v / _np(ta.sma(sv, length=vo.volume_sma, talib=True), n)), True)
        add("cmf", _np(ta.cmf(sh, sl, sc, sv, length=vo.cmf), n), False)
        add("mfi", (_np(ta.mfi(sh, sl, sc, sv, length=vo.mfi, talib=True), n) - 50.0) / 50.0, False)
        if vo.vwap and plan.intraday:
            # Anchored at each session (IST date): only the sessions of the returned rows are needed.
            # One bar of the session before is kept too (its own group), as pandas-ta's vwap refuses a
            # one-bar series; the very first bar of a series therefore has no VWAP, in every path.
            _, days, _ = _ist_clock(ts_ns)
            s0 = max(0, int(np.searchsorted(days, days[first], side="left")) - 1)
            vwap = np.full(n - s0, np.nan)
            if n - s0 >= 2:
                idx = pd.DatetimeIndex(ts_ns[s0:].view("M8[ns]")).tz_localize("UTC").tz_convert(IST)
                vwap = _np(ta.vwap(pd.Series(h[s0:], index=idx), pd.Series(lo[s0:], index=idx),
                                   pd.Series(c[s0:], index=idx), pd.Series(v[s0:], index=idx), anchor="D"), n - s0)
                if s0 == 0:
                    vwap[0] = np.nan
            add("vwap_dist", c[first:] / vwap[first - s0:] - 1.0, True, returned_rows_only=True)

    if cfg.regime.enabled:
        rg = cfg.regime
        adx, dmp, dmn = _adx(h, lo, c, rg.adx)
        add("adx", adx / 100.0, False)
        add("dmi_balance", (dmp - dmn) / (dmp + dmn), False)
        slope = _np(ta.linreg(sc, length=rg.slope, slope=True, talib=True), n)
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


def _memory_bars(plan: _Plan) -> int:
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


def _synthetic(timeframe: str, n: int, seed: int = 7) -> tuple[pd.DatetimeIndex, np.ndarray]:
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


# ---------------------------------------------------------------------------------- normaliser
def _to_json_array(a: np.ndarray) -> list:
    """Floats to a list (NaN -> None, so the state is strict JSON); float64 round-trips exactly."""
    return np.where(np.isnan(a), None, a).tolist()


def _from_json_array(values: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    a = np.array(values if values is not None else [], dtype=np.float64)
    return a.reshape((-1, *shape_tail)) if shape_tail else a


class CausalNormaliser:
    """Causal z-score of selected columns: rolling, expanding or none (see the module docstring).

    ``transform(raw)`` normalises a whole matrix at once (each row from rows <= itself);
    ``update(row)`` does the same for one new row and keeps the state; ``fit_state(raw)`` sets the
    state as if every row of ``raw`` had been passed to ``update``.
    """

    def __init__(self, config: NormalisationConfig, zscore: np.ndarray):
        self.config = config
        self.zscore = np.asarray(zscore, dtype=bool)
        self.cols = np.flatnonzero(self.zscore)
        self.reset()

    def reset(self) -> None:
        k, w = len(self.cols), self.config.window
        if self.config.method == "rolling":
            self._buf = np.full((2 * w, k), np.nan)
            self._end = 0  # rows self._buf[max(0, end - w):end] are the window
        else:
            self._count = np.zeros(k)
            self._mean = np.zeros(k)
            self._m2 = np.zeros(k)

    def _finish(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray, count: np.ndarray) -> np.ndarray:
        cfg = self.config
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(std > _STD_FLOOR, (x - mean) / std, 0.0)
        z = np.where((count >= cfg.min_periods) & ~np.isnan(x), z, np.nan)
        return np.clip(z, -cfg.clip, cfg.clip)

    def transform(self, raw: np.ndarray) -> np.ndarray:
        out = np.array(raw, dtype=np.float64, copy=True)
        if self.config.method == "none" or len(self.cols) == 0:
            return out
        cfg = self.config
        x = pd.DataFrame(out[:, self.cols])
        roll = x.rolling(cfg.window, min_periods=1) if cfg.method == "rolling" else x.expanding(min_periods=1)
        mean, std, count = roll.mean().to_numpy(), roll.std(ddof=1).to_numpy(), roll.count().to_numpy()
        out[:, self.cols] = self._finish(x.to_numpy(), mean, std, count)
        return out

    def update(self, row: np.ndarray) -> np.ndarray:
        out = np.array(row, dtype=np.float64, copy=True)
        if self.config.method == "none" or len(self.cols) == 0:
            return out
        x = out[self.cols]
        if self.config.method == "rolling":
            w = self.config.window
            if self._end == len(self._buf):
                self._buf[: w - 1] = self._buf[self._end - w + 1:self._end]
                self._end = w - 1
            self._buf[self._end] = x
            self._end += 1
            win = self._buf[max(0, self._end - w):self._end]
            if np.isnan(win).any():
                count = np.count_nonzero(~np.isnan(win), axis=0).astype(np.float64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(win, axis=0)
                    std = np.nanstd(win, axis=0, ddof=1)
            else:
                count = np.full(len(self.cols), float(len(win)))
                mean = win.mean(axis=0)
                std = win.std(axis=0, ddof=1) if len(win) > 1 else np.full(len(self.cols), np.nan)
        else:  # expanding, Welford per column, NaN skipped
            ok = ~np.isnan(x)
            self._count[ok] += 1
            delta = x[ok] - self._mean[ok]
            self._mean[ok] += delta / self._count[ok]
            self._m2[ok] += delta * (x[ok] - self._mean[ok])
            count, mean = self._count.copy(), self._mean.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                std = np.where(count > 1, np.sqrt(self._m2 / np.maximum(count - 1, 1)), np.nan)
        out[self.cols] = self._finish(x, mean, std, count)
        return out

    def fit_state(self, raw: np.ndarray) -> None:
        self.reset()
        if self.config.method == "none" or len(self.cols) == 0 or len(raw) == 0:
            return
        x = np.asarray(raw, dtype=np.float64)[:, self.cols]
        if self.config.method == "rolling":
            tail = x[-self.config.window:]
            self._buf[: len(tail)] = tail
            self._end = len(tail)
        else:
            ok = ~np.isnan(x)
            self._count = ok.sum(axis=0).astype(np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(x, axis=0)
            self._mean = np.where(self._count > 0, mean, 0.0)
            self._m2 = np.nansum((x - self._mean) ** 2, axis=0)

    def state_dict(self) -> dict[str, Any]:
        cfg = self.config
        state: dict[str, Any] = {"method": cfg.method, "window": cfg.window, "min_periods": cfg.min_periods,
                                 "clip": cfg.clip, "columns": self.cols.tolist()}
        if cfg.method == "rolling":
            state["values"] = _to_json_array(self._buf[max(0, self._end - cfg.window):self._end])
        elif cfg.method == "expanding":
            state.update(count=self._count.tolist(), mean=_to_json_array(self._mean), m2=_to_json_array(self._m2))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        cfg = self.config
        mine = {"method": cfg.method, "window": cfg.window, "min_periods": cfg.min_periods, "clip": cfg.clip,
                "columns": self.cols.tolist()}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(f"normaliser state has {key}={state.get(key)!r}, this normaliser {value!r}")
        self.reset()
        k = len(self.cols)
        if cfg.method == "rolling":
            values = _from_json_array(state["values"], (k,))
            self._buf[: len(values)] = values
            self._end = len(values)
        elif cfg.method == "expanding":
            self._count = _from_json_array(state["count"])
            self._mean = _from_json_array(state["mean"])
            self._m2 = _from_json_array(state["m2"])


# ------------------------------------------------------------------------------------ pipeline
class FeaturePipeline:
    """The feature pipeline for one kind of bars (bar size, volume or not); see the module docstring."""

    def __init__(self, config: FeatureConfig | None = None, *, timeframe: str, has_volume: bool):
        self.config = config or FeatureConfig()
        timeframe_minutes(timeframe)  # validates
        self.timeframe = timeframe
        self.has_volume = bool(has_volume)
        self._plan = _Plan(self.config, timeframe, self.has_volume)
        auto_tail = _memory_bars(self._plan)
        tail = self.config.stream.tail_bars
        if tail is not None and tail < auto_tail:
            raise UserInputError(f"stream.tail_bars {tail} is below the {auto_tail} bars these features need "
                                 "for the stream to match the batch values; raise it or leave it out (null)")
        self.tail_bars = tail or auto_tail
        self._measure_layout(auto_tail)

    @classmethod
    def for_bars(cls, bars: Bars, config: FeatureConfig | None = None) -> "FeaturePipeline":
        return cls(config, timeframe=bars.timeframe, has_volume=bars.has_volume)

    def _measure_layout(self, auto_tail: int) -> None:
        """Feature names, which are z-scored, and the warm-up, measured on a synthetic random walk."""
        n = max(auto_tail, self.tail_bars) + 64
        index, (o, h, lo, c, v) = _synthetic(self.timeframe, n)
        with _quiet():
            cols, _ = _compute(self._plan, _index_ns(index), o, h, lo, c, v, n)
        self.feature_names: tuple[str, ...] = tuple(name for name, _, _ in cols)
        self.zscored: tuple[str, ...] = tuple(name for name, z, _ in cols if z)
        norm = self.config.normalisation
        extra = norm.min_periods - 1 if norm.method != "none" else 0
        warm = 0
        for name, z, values in cols:
            valid = np.flatnonzero(~np.isnan(values))
            if len(valid) == 0 or np.isnan(values[valid[0]:]).any():
                raise AssertionError(f"feature {name} is not valid after its look-back on synthetic bars")
            warm = max(warm, int(valid[0]) + (extra if z else 0))
        self.warmup_bars: int = warm
        self.normaliser_config = norm
        self._zmask = np.array([z for _, z, _ in cols], dtype=bool)

    @property
    def skipped(self) -> tuple[str, ...]:
        """Feature groups left out for these bars, with the reason (for the CLI summary)."""
        cfg, out = self.config, []
        if cfg.volume.enabled and not self.has_volume:
            out.append("volume (bars have no volume)")
        elif cfg.volume.enabled and cfg.volume.vwap and not is_intraday(self.timeframe):
            out.append("vwap (daily bars)")
        if cfg.calendar.enabled and cfg.calendar.time_of_day and not is_intraday(self.timeframe):
            out.append("time of day (daily bars)")
        return tuple(out)

    def _check_bars(self, bars: Bars) -> None:
        if bars.timeframe != self.timeframe:
            raise UserInputError(f"bars are {bars.timeframe} but this feature pipeline was built for "
                                 f"{self.timeframe} bars; build it with FeaturePipeline.for_bars(bars)")
        if self.has_volume and not bars.has_volume:
            raise UserInputError("this feature pipeline uses volume but the bars have none (index bars?); "
                                 "build it with FeaturePipeline.for_bars(bars)")

    def _raw(self, bars: Bars) -> tuple[np.ndarray, np.ndarray]:
        f = bars.frame
        cols = [f[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume")]
        with _quiet():
            out, atr = _compute(self._plan, _index_ns(bars.index), *cols, len(bars))
        raw = np.column_stack([values for _, _, values in out]) if out else np.empty((len(bars), 0))
        return raw, atr

    def _finalise(self, normalised: np.ndarray, first_row: int) -> np.ndarray:
        """NaN -> 0 in rows at or after warm-up (row numbers counted from the first bar ever)."""
        rows = np.arange(first_row, first_row + len(normalised))
        late = rows >= self.warmup_bars
        normalised[late] = np.nan_to_num(normalised[late], nan=0.0)
        return normalised

    def transform(self, bars: Bars) -> pd.DataFrame:
        """Normalised features of every bar (NaN during warm-up), indexed like ``bars``, float64."""
        self._check_bars(bars)
        raw, _ = self._raw(bars)
        z = self._finalise(CausalNormaliser(self.normaliser_config, self._zmask).transform(raw), 0)
        return pd.DataFrame(z, index=bars.index, columns=list(self.feature_names), dtype=np.float64)

    def atr(self, bars: Bars) -> pd.Series:
        """Raw ATR(atr_length) in price units, indexed like ``bars`` (NaN in its look-back)."""
        import pandas_ta as ta

        f = bars.frame
        with _quiet():
            values = _np(ta.atr(f["high"], f["low"], f["close"], length=self.config.atr_length, talib=True),
                         len(bars))
        return pd.Series(values, index=bars.index, name=ATR_COLUMN, dtype=np.float64)

    def stream(self, history: Bars | None = None) -> "FeatureStream":
        """An incremental stream; with ``history`` it continues from the end of those bars."""
        stream = FeatureStream(self)
        if history is not None:
            stream._prime(history)
        return stream

    def describe(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json"), "timeframe": self.timeframe,
                "has_volume": self.has_volume, "feature_names": list(self.feature_names),
                "tail_bars": self.tail_bars}


class FeatureStream:
    """Incremental features, one bar at a time; equals ``FeaturePipeline.transform`` row by row."""

    def __init__(self, pipeline: FeaturePipeline):
        self.pipeline = pipeline
        cap = pipeline.tail_bars
        self._cap = cap
        self._px = np.empty((5, 2 * cap))  # open, high, low, close, volume; columns [start:end] = tail
        self._ts = np.empty(2 * cap, dtype=np.int64)  # ns since epoch (UTC)
        self._end = 0
        self.bars_seen = 0
        self.atr = math.nan
        self.normaliser = CausalNormaliser(pipeline.normaliser_config, pipeline._zmask)

    @property
    def ready(self) -> bool:
        """True once the rows returned are past warm-up (no NaN)."""
        return self.bars_seen > self.pipeline.warmup_bars

    def _append(self, ts: int, bar: np.ndarray) -> None:
        cap = self._cap
        if self._end == 2 * cap:
            self._px[:, : cap - 1] = self._px[:, self._end - cap + 1:self._end]
            self._ts[: cap - 1] = self._ts[self._end - cap + 1:self._end]
            self._end = cap - 1
        self._px[:, self._end] = bar
        self._ts[self._end] = ts
        self._end += 1

    def update(self, timestamp: Any, open: float, high: float, low: float, close: float,
               volume: float = 0.0) -> np.ndarray:
        """Add a closed bar (timestamp with a time zone, or int ns since epoch) and return its features."""
        ts = timestamp if isinstance(timestamp, (int, np.integer)) else _ns(timestamp)
        if self._end and ts <= self._ts[self._end - 1]:
            raise ValueError(f"bar at {pd.Timestamp(ts, tz=IST)} is not after the previous bar "
                             f"({pd.Timestamp(int(self._ts[self._end - 1]), tz=IST)})")
        bar = np.array([open, high, low, close, volume], dtype=np.float64)
        if not np.isfinite(bar).all() or (bar[:4] <= 0).any() or bar[4] < 0:
            raise ValueError(f"bad bar values {bar.tolist()} (prices must be positive, volume >= 0)")
        self._append(int(ts), bar)
        start = max(0, self._end - self._cap)
        px = self._px[:, start:self._end]
        with _quiet():
            cols, atr = _compute(self.pipeline._plan, self._ts[start:self._end], px[0], px[1], px[2], px[3], px[4], 1)
        raw = np.array([values[0] for _, _, values in cols], dtype=np.float64)
        self.atr = float(atr[0])
        row = self.normaliser.update(raw)
        self.bars_seen += 1
        return self.pipeline._finalise(row[None, :], self.bars_seen - 1)[0]

    def _prime(self, history: Bars) -> None:
        self.pipeline._check_bars(history)
        raw, atr = self.pipeline._raw(history)
        self.normaliser.fit_state(raw)
        tail = history.frame.iloc[-self._cap:]
        k = len(tail)
        self._px[:, :k] = tail[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64).T
        self._ts[:k] = _index_ns(tail.index)
        self._end = k
        self.bars_seen = len(history)
        self.atr = float(atr[-1]) if len(atr) else math.nan

    def state_dict(self) -> dict[str, Any]:
        """The whole stream state (pipeline identity, tail, bar count, normaliser) as JSON-ready data."""
        start = max(0, self._end - self._cap)
        state = {"format": STATE_FORMAT, **self.pipeline.describe(), "bars_seen": self.bars_seen,
                 "atr": None if math.isnan(self.atr) else self.atr,
                 "timestamps": self._ts[start:self._end].tolist(),
                 "normaliser": self.normaliser.state_dict()}
        for i, key in enumerate(("open", "high", "low", "close", "volume")):
            state[key] = self._px[i, start:self._end].tolist()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a feature stream state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        for key, value in self.pipeline.describe().items():
            if state.get(key) != value:
                raise ValueError(f"feature stream state was saved with a different {key}; "
                                 "build the pipeline from the same config and bars kind")
        stamps = np.asarray(state["timestamps"], dtype=np.int64)
        k = len(stamps)
        self._ts[:k] = stamps
        for i, key in enumerate(("open", "high", "low", "close", "volume")):
            self._px[i, :k] = np.asarray(state[key], dtype=np.float64)
        self._end = k
        self.bars_seen = int(state["bars_seen"])
        self.atr = math.nan if state["atr"] is None else float(state["atr"])
        self.normaliser.load_state_dict(state["normaliser"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "FeatureStream":
        """Rebuild pipeline and stream from a saved state (e.g. in serving, from a checkpoint)."""
        config = FeatureConfig.model_validate(state["config"])
        pipeline = FeaturePipeline(config, timeframe=state["timeframe"], has_volume=state["has_volume"])
        stream = cls(pipeline)
        stream.load_state_dict(state)
        return stream


def _index_ns(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC nanoseconds of a DatetimeIndex (pandas 3 may store seconds or microseconds)."""
    return index.as_unit("ns").asi8


def _ns(timestamp: Any) -> int:
    ts = pd.Timestamp(timestamp)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {timestamp!r} has no time zone (e.g. 2021-01-01T09:15:00+05:30)")
    return int(ts.value)


class _quiet:
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
