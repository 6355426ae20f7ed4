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
``FeatureConfig``, in ``feature_config.py``), emit the feature in ``indicators.compute`` with ``add(name, values, zscore)`` using a
pandas-ta indicator on the given Series, and extend ``indicators.memory_bars`` with its look-back (plus
the convergence length of any recursive smoother), so the stream's tail stays long enough. The
truncation and stream-equals-batch tests then cover the new feature automatically.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from tradebot.features.bars import Bars
from tradebot.features.feature_config import FeatureConfig, load_feature_config  # noqa: F401  (part of the pipeline's API)
from tradebot.features.indicators import (
    Plan,
    as_column,
    compute,
    memory_bars,
    quiet,
    synthetic_bars,
)
from tradebot.features.normaliser import CausalNormaliser

from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import (
    IST,
    is_intraday,
    timeframe_minutes,
)

ATR_COLUMN = "atr"  # name of the raw ATR output (price units; for sizing and stops, not an observation)
STATE_FORMAT = "tradebot.features.stream/1"

# ------------------------------------------------------------------------------------ pipeline
class FeaturePipeline:
    """The feature pipeline for one kind of bars (bar size, volume or not); see the module docstring."""

    def __init__(self, config: FeatureConfig | None = None, *, timeframe: str, has_volume: bool):
        self.config = config or FeatureConfig()
        timeframe_minutes(timeframe)  # validates
        self.timeframe = timeframe
        self.has_volume = bool(has_volume)
        self._plan = Plan(self.config, timeframe, self.has_volume)
        auto_tail = memory_bars(self._plan)
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
        index, (o, h, lo, c, v) = synthetic_bars(self.timeframe, n)
        with quiet():
            cols, _ = compute(self._plan, _index_ns(index), o, h, lo, c, v, n)
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
        with quiet():
            out, atr = compute(self._plan, _index_ns(bars.index), *cols, len(bars))
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
        with quiet():
            values = as_column(ta.atr(f["high"], f["low"], f["close"], length=self.config.atr_length, talib=True),
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
        with quiet():
            cols, atr = compute(self.pipeline._plan, self._ts[start:self._end], px[0], px[1], px[2], px[3], px[4], 1)
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
