"""The feature pipeline's configuration: which feature groups, their windows, normalisation, stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.errors import UserInputError

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
