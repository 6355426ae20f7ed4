"""A synthetic NSE market with a known, exploitable pattern: for proving that training learns.

It says nothing about real markets. Its one use is a control: an agent trained on it must beat
the no-skill and passive baselines (``tests/rl/test_rl_learning.py``,
``experiments/learning_regression.yaml``); one that cannot has a broken pipeline, not a hard market.

```python
from tradebot.rl.synthetic import SyntheticMarketConfig, synthetic_bars, write_synthetic_bars
bars = synthetic_bars(SyntheticMarketConfig(seed=3))          # a validated tradebot.features.bars.Bars
write_synthetic_bars(SyntheticMarketConfig(), "out/NSE_SYNTH-EQ_5m.csv.gz")   # a bar file
```

The market (every number is a ``SyntheticMarketConfig`` field):

* **Calendar.** ``sessions`` consecutive weekdays from ``start`` (no holiday calendar), each a full
  NSE session of ``bar_minutes`` bars labelled by their start in IST: 09:15, 09:20, ... 15:25 for
  5-minute bars (75 a session).
* **Regime.** Each session is an up session (+1) or a down session (-1). The first is a fair coin;
  after that a session keeps the previous session's regime with probability ``persistence`` and
  flips otherwise (a two-state Markov chain; ``persistence`` 0.5 makes sessions independent).
* **Prices.** Within a session every bar's log return is ``regime * drift_bps + vol_bps * z``
  (basis points, ``z`` standard normal); a bar opens at the previous bar's close, the first bar of a
  session at the previous close times ``exp(gap_bps * z)`` (overnight gap, no drift). The close is
  the open times ``exp(return)``; high and low extend ``max(open, close)`` / ``min(open, close)`` by
  ``wick * vol_bps * |z|`` each, so every bar is valid OHLC.
* **Volume.** ``volume`` times a lognormal factor (sigma 0.5, mean 1) per bar, in whole shares, like
  a stock; ``volume: 0`` gives index-like bars (volume 0, so no volume features). Volume carries no
  signal.

Why it is exploitable, and how visibly: the regime is constant for a whole session, so the
session's return so far reveals it, with a signal-to-noise ratio of ``drift_bps / vol_bps *
sqrt(bars)`` (0.25 x sqrt(bars) by default: about 1 after 16 bars); the features of
``tradebot.features.pipeline`` that show it are the session-anchored ``vwap_dist``, the returns ``ret_5`` to
``ret_60``, the trend, slope and MACD features. With ``persistence`` above 0.5 the previous
session's direction also predicts the next session's before its first bar. An agent that trades in
the session's direction and holds until the square-off earns about ``drift_bps`` per bar held
(times its leverage) minus costs; a passive holder earns nothing on average (up and down sessions
are equally likely), and random trading pays costs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from tradebot.features.bars import Bars, validate_symbol
from tradebot.core.nse_time import IST, SESSION_MINUTES, SESSION_OPEN_MINUTE
from tradebot.core.config import FrozenConfig
from tradebot.core.errors import UserInputError

__all__ = ["SyntheticMarketConfig", "session_regimes", "synthetic_bars", "write_synthetic_bars"]


class SyntheticMarketConfig(FrozenConfig):
    """The synthetic market's parameters (YAML section ``market`` of experiments/learning_regression.yaml)."""

    symbol: str = Field("NSE:SYNTH-EQ", description="Fyers-form symbol of the synthetic instrument")
    start: dt.date = Field(dt.date(2030, 1, 1), description="first session (moved to the next weekday if needed)")
    sessions: int = Field(120, ge=2, description="number of sessions (weekdays) generated")
    bar_minutes: int = Field(5, ge=1, description="bar size in minutes; must divide the 375-minute session")
    price: float = Field(10_000.0, gt=0, description="open of the first bar")
    drift_bps: float = Field(2.0, ge=0, description="per-bar log-return drift in basis points, signed by the regime")
    vol_bps: float = Field(8.0, gt=0, description="per-bar log-return noise (standard deviation) in basis points")
    gap_bps: float = Field(10.0, ge=0, description="overnight gap noise (standard deviation) in basis points")
    wick: float = Field(0.5, ge=0, description="high/low extend beyond the body by wick x vol_bps x |z|")
    volume: float = Field(100_000.0, ge=0, description="mean volume per bar (shares); 0: index-like bars")
    persistence: float = Field(0.7, ge=0, le=1, description="probability that a session keeps the previous regime")
    seed: int = Field(0, description="random seed: the same config gives the same bars")

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        try:
            return validate_symbol(v)
        except UserInputError as err:
            raise ValueError(str(err)) from None

    @field_validator("bar_minutes")
    @classmethod
    def _divides_session(cls, v: int) -> int:
        if SESSION_MINUTES % v:
            raise ValueError(f"must divide the {SESSION_MINUTES}-minute session (e.g. 1, 3, 5, 15, 25, 75)")
        return v

    @property
    def bars_per_session(self) -> int:
        return SESSION_MINUTES // self.bar_minutes

    @property
    def timeframe(self) -> str:
        return f"{self.bar_minutes}m"

    def session_dates(self) -> pd.DatetimeIndex:
        """The IST calendar dates of the sessions (weekdays)."""
        return pd.bdate_range(self.start, periods=self.sessions)

    def file_name(self) -> str:
        """A bar-file name that implies the symbol, e.g. ``NSE_SYNTH-EQ_5m.csv.gz``."""
        return f"{self.symbol.replace(':', '_')}_{self.timeframe}.csv.gz"


def _draws(config: SyntheticMarketConfig) -> tuple[np.ndarray, ...]:
    """Regimes [sessions], bar noise [sessions, bars], gap noise [sessions], wick noise [sessions, bars, 2],
    volume noise [sessions, bars]."""
    rng = np.random.default_rng(config.seed)
    n, k = config.sessions, config.bars_per_session
    regimes = np.empty(n, dtype=np.int64)
    regimes[0] = 1 if rng.random() < 0.5 else -1
    keep = rng.random(n) < config.persistence
    for d in range(1, n):
        regimes[d] = regimes[d - 1] if keep[d] else -regimes[d - 1]
    return (regimes, rng.standard_normal((n, k)), rng.standard_normal(n), np.abs(rng.standard_normal((n, k, 2))),
            rng.standard_normal((n, k)))


def session_regimes(config: SyntheticMarketConfig) -> pd.Series:
    """+1 (up) / -1 (down) per session, indexed by session date: the ground truth behind the bars."""
    regimes, *_ = _draws(config)
    return pd.Series(regimes, index=config.session_dates().rename("session"), name="regime")


def synthetic_bars(config: SyntheticMarketConfig | None = None) -> Bars:
    """The synthetic market's bars, validated like any bar file (``Bars.from_frame``)."""
    config = config or SyntheticMarketConfig()
    regimes, noise, gaps, wicks, volume_noise = _draws(config)
    n, k = config.sessions, config.bars_per_session
    bp = 1e-4
    returns = regimes[:, None] * config.drift_bps * bp + config.vol_bps * bp * noise  # [n, k] log returns
    # log open of each bar: the previous close, plus an overnight gap at each session's first bar
    steps = returns.copy()
    gap = np.zeros((n, k))
    gap[1:, 0] = config.gap_bps * bp * gaps[1:]
    log_close = np.log(config.price) + np.cumsum((steps + gap).reshape(-1))
    log_open = log_close - steps.reshape(-1)
    o, c = np.exp(log_open), np.exp(log_close)
    extend = config.wick * config.vol_bps * bp * wicks.reshape(-1, 2)
    high = np.maximum(o, c) * np.exp(extend[:, 0])
    low = np.minimum(o, c) * np.exp(-extend[:, 1])
    minutes = SESSION_OPEN_MINUTE + config.bar_minutes * np.arange(k)
    days = config.session_dates()
    stamps = (np.asarray(days.values, dtype="datetime64[ns]")[:, None]
              + (minutes * 60_000_000_000).astype("timedelta64[ns]")[None, :]).reshape(-1)
    index = pd.DatetimeIndex(stamps).tz_localize(IST).rename("timestamp")
    sigma = 0.5
    volume = np.round(config.volume * np.exp(sigma * volume_noise.reshape(-1) - sigma**2 / 2))
    frame = pd.DataFrame({"open": o, "high": high, "low": low, "close": c, "volume": volume}, index=index)
    return Bars.from_frame(frame, symbol=config.symbol, source=f"synthetic market (seed {config.seed})",
                           timeframe=config.timeframe)


def write_synthetic_bars(config: SyntheticMarketConfig, path: str | Path) -> Path:
    """Write the bars as a bar file (``.csv``, ``.csv.gz`` or ``.parquet``), atomically; returns the path."""
    import gzip
    import io

    from tradebot.core.files import write_bytes_atomic

    path = Path(path)
    name = path.name.lower()
    frame = synthetic_bars(config).frame.reset_index()
    if name.endswith((".parquet", ".pq")):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        payload = buffer.getvalue()
    elif name.endswith((".csv", ".csv.gz")):
        frame["timestamp"] = frame["timestamp"].map(lambda ts: ts.isoformat())
        payload = frame.to_csv(index=False, float_format="%.4f").encode("utf-8")
        if name.endswith(".gz"):
            payload = gzip.compress(payload, mtime=0)
    else:
        raise UserInputError(f"{path}: unknown bar-file type; use .csv, .csv.gz or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, payload)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m tradebot.rl.synthetic EXPERIMENT.yaml``: write the experiment's bar file and its training config.

    Reads the ``market`` and ``train`` sections (experiments/learning_regression.yaml), writes the
    bars to ``train.data.path`` and the ``train`` section to ``train.yaml`` beside them, ready for
    ``tradebot train --config <that folder>/train.yaml``.
    """
    import argparse
    import sys

    from tradebot.rl.train_config import TrainConfig
    from tradebot.core.config import load_config

    ap = argparse.ArgumentParser(prog="python -m tradebot.rl.synthetic", description=main.__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path, help="YAML with `market` and `train` sections")
    args = ap.parse_args(argv)
    try:
        market = load_config(SyntheticMarketConfig, args.experiment, "market")
        train = load_config(TrainConfig, args.experiment, "train")
        data = write_synthetic_bars(market, train.data.path)
        target = data.parent / "train.yaml"
        from tradebot.core.files import write_text_atomic

        write_text_atomic(target, train.to_yaml())
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {data} ({market.sessions} sessions) and {target}")
    print(f"next: tradebot train --config {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
