"""Market regimes, causal by construction: a Gaussian HMM's filtered state probabilities per bar, and the
rule-based descriptors of the feature pipeline as a second, model-free detector.

```python
detector = RegimeDetector.fit(bars, start="2021-01-01", end="2021-05-01")   # fitted on those bars only
probs = detector.transform(bars)            # DataFrame: p_trend, p_mean_reversion, p_high_vol (sum 1)
stream = detector.stream(history=bars)      # live: one bar at a time, equal to transform
p = stream.update(close)                    # np.ndarray of the three probabilities
RegimeDetector.from_dict(detector.to_dict())   # travels with a model as JSON
```

What it looks at: the 1-bar log return r_t of the close, through two exponentially weighted
statistics (halflife ``halflife`` bars): its mean (direction and strength of the drift) and its
standard deviation (volatility), both standardised with the fitting window's mean and spread. A
three-state Gaussian HMM (hmmlearn, full covariances) is fitted on the fitting window's rows; its
states are named from their means: the state with the highest volatility is ``high_vol``, of the
other two the one with the larger absolute drift is ``trend``, the last ``mean_reversion``.

Why it is causal: the probabilities at bar t are the HMM's *filtered* probabilities
P(state_t | r_1..r_t) (the forward recursion, never hmmlearn's forward-backward smoothing), and the
EW statistics only use returns up to t. ``transform`` and ``stream`` run the same step function, so
bar-by-bar equals batch exactly (tested, along with a truncation test for lookahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.features.bars import Bars

REGIMES: tuple[str, ...] = ("trend", "mean_reversion", "high_vol")
COLUMNS: tuple[str, ...] = tuple(f"p_{r}" for r in REGIMES)
FORMAT = "tradebot.features.regimes/1"
_FLOOR = 1e-300


@dataclass(frozen=True)
class RegimeDetector:
    """A fitted detector: the EW statistics' settings and scaling, and the HMM's parameters, with each
    HMM state's regime name (``labels[k]`` names state k)."""

    halflife: float
    center: np.ndarray  # (2,) mean of (ew mean, ew std) over the fitting rows
    scale: np.ndarray  # (2,) their standard deviations
    startprob: np.ndarray  # (3,)
    transmat: np.ndarray  # (3, 3)
    means: np.ndarray  # (3, 2)
    covars: np.ndarray  # (3, 2, 2)
    labels: tuple[str, ...]
    warmup_bars: int
    fitted_on: tuple[str, str]

    # ---- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, bars: Bars, start: Any = None, end: Any = None, halflife: float = 20.0, seed: int = 0) -> RegimeDetector:
        """Fit on the bars with ``start <= timestamp < end`` (the EW statistics warm up on earlier bars)."""
        from hmmlearn.hmm import GaussianHMM

        stats = ew_stats(bars.column("close"), halflife)
        index = bars.index
        lo = 0 if start is None else int(index.searchsorted(pd.Timestamp(str(start), tz=index.tz)))
        hi = len(bars) if end is None else int(index.searchsorted(pd.Timestamp(str(end), tz=index.tz)))
        warmup = int(math.ceil(4 * halflife))
        rows = stats[max(lo, warmup):hi]
        rows = rows[np.all(np.isfinite(rows), axis=1)]
        if len(rows) < 200:
            raise UserInputError(f"only {len(rows)} bars to fit the regime detector on (after a {warmup}-bar "
                                 "warm-up); fit on a longer window")
        center, scale = rows.mean(axis=0), rows.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        z = (rows - center) / scale
        hmm = GaussianHMM(n_components=3, covariance_type="full", n_iter=200, tol=1e-6, random_state=seed)
        hmm.fit(z)
        means = np.asarray(hmm.means_)
        vol_state = int(np.argmax(means[:, 1]))
        others = [k for k in range(3) if k != vol_state]
        trend_state = max(others, key=lambda k: abs(means[k, 0]))
        labels = ["mean_reversion"] * 3
        labels[vol_state], labels[trend_state] = "high_vol", "trend"
        return cls(halflife=float(halflife), center=center, scale=scale, startprob=np.asarray(hmm.startprob_),
                   transmat=np.asarray(hmm.transmat_), means=means, covars=np.asarray(hmm.covars_),
                   labels=tuple(labels), warmup_bars=warmup,
                   fitted_on=(index[max(lo, warmup)].isoformat(), index[hi - 1].isoformat()))

    # ---- inference ---------------------------------------------------------------------------
    def transform(self, bars: Bars) -> pd.DataFrame:
        """Filtered regime probabilities per bar (NaN during the EW warm-up), columns ``COLUMNS``."""
        stream = self.stream()
        out = np.array([stream.update(c) for c in bars.column("close")])
        return pd.DataFrame(out, index=bars.index, columns=list(COLUMNS))

    def stream(self, history: Bars | None = None) -> RegimeStream:
        """A bar-by-bar detector (primed with ``history`` when given, as if it had seen every bar)."""
        s = RegimeStream(self)
        if history is not None:
            for c in history.column("close"):
                s.update(c)
        return s

    def _emission(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.center) / self.scale
        out = np.empty(3)
        for k in range(3):
            d = z - self.means[k]
            cov = self.covars[k]
            inv = np.linalg.inv(cov)
            out[k] = math.exp(-0.5 * float(d @ inv @ d)) / (2 * math.pi * math.sqrt(max(np.linalg.det(cov), _FLOOR)))
        return out

    def named(self, state_probs: np.ndarray) -> np.ndarray:
        """State probabilities reordered as ``REGIMES``."""
        out = np.zeros(len(REGIMES))
        for k, name in enumerate(self.labels):
            out[REGIMES.index(name)] += state_probs[k]
        return out

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "halflife": self.halflife, "center": self.center.tolist(), "scale": self.scale.tolist(),
                "startprob": self.startprob.tolist(), "transmat": self.transmat.tolist(), "means": self.means.tolist(),
                "covars": self.covars.tolist(), "labels": list(self.labels), "warmup_bars": self.warmup_bars,
                "fitted_on": list(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegimeDetector:
        if data.get("format") != FORMAT:
            raise UserInputError(f"not a regime detector (format {data.get('format')!r})")
        return cls(halflife=float(data["halflife"]), center=np.asarray(data["center"]), scale=np.asarray(data["scale"]),
                   startprob=np.asarray(data["startprob"]), transmat=np.asarray(data["transmat"]),
                   means=np.asarray(data["means"]), covars=np.asarray(data["covars"]), labels=tuple(data["labels"]),
                   warmup_bars=int(data["warmup_bars"]), fitted_on=tuple(data["fitted_on"]))


class RegimeStream:
    """One bar at a time: the EW statistics of the close's log return and the HMM's forward recursion."""

    def __init__(self, detector: RegimeDetector):
        self.detector = detector
        self._alpha = 1.0 - 0.5 ** (1.0 / detector.halflife)
        self._prev_close = math.nan
        self._mean = 0.0
        self._var = 0.0
        self._seen = 0
        self._filtered: np.ndarray | None = None  # P(state_t | r_1..t), HMM state order

    def update(self, close: float) -> np.ndarray:
        """The regime probabilities after the bar that closed at ``close`` (NaN in the warm-up)."""
        d = self.detector
        close = float(close)
        if math.isnan(self._prev_close):
            self._prev_close = close
            return np.full(len(REGIMES), np.nan)
        r = math.log(close / self._prev_close)
        self._prev_close = close
        a = self._alpha
        if self._seen == 0:
            self._mean, self._var = r, 0.0
        else:  # the exponentially weighted mean and variance, updated in one pass
            diff = r - self._mean
            incr = a * diff
            self._mean += incr
            self._var = (1.0 - a) * (self._var + diff * incr)
        self._seen += 1
        if self._seen < d.warmup_bars:
            return np.full(len(REGIMES), np.nan)
        x = np.array([self._mean, math.sqrt(max(self._var, 0.0))])
        prior = d.startprob if self._filtered is None else self._filtered @ d.transmat
        post = prior * d._emission(x)
        total = post.sum()
        post = post / total if total > 0 and np.isfinite(total) else prior
        self._filtered = post
        return d.named(post)

    def state_dict(self) -> dict[str, Any]:
        return {"prev_close": self._prev_close, "mean": self._mean, "var": self._var, "seen": self._seen,
                "filtered": None if self._filtered is None else self._filtered.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._prev_close, self._mean, self._var = float(state["prev_close"]), float(state["mean"]), float(state["var"])
        self._seen = int(state["seen"])
        self._filtered = None if state["filtered"] is None else np.asarray(state["filtered"])


def ew_stats(close: np.ndarray, halflife: float) -> np.ndarray:
    """(ew mean, ew std) of the 1-bar log return per bar, exactly as ``RegimeStream`` computes them."""
    alpha = 1.0 - 0.5 ** (1.0 / halflife)
    out = np.full((len(close), 2), np.nan)
    mean = var = 0.0
    seen = 0
    for t in range(1, len(close)):
        r = math.log(close[t] / close[t - 1])
        if seen == 0:
            mean, var = r, 0.0
        else:
            diff = r - mean
            incr = alpha * diff
            mean += incr
            var = (1.0 - alpha) * (var + diff * incr)
        seen += 1
        out[t] = mean, math.sqrt(max(var, 0.0))
    return out


def rule_regimes(features: pd.DataFrame) -> pd.DataFrame:
    """The feature pipeline's regime descriptors as hard regime labels (one-hot, ``COLUMNS``): high_vol
    when ``vol_pctile`` is in its top fifth, else trend when ``adx`` >= 0.25 and |``trend_slope``| >= 1,
    else mean_reversion. Causal because the features are; NaN where they are."""
    need = ("vol_pctile", "adx", "trend_slope")
    missing = [c for c in need if c not in features.columns]
    if missing:
        raise UserInputError(f"rule-based regimes need the regime features {', '.join(missing)} "
                             "(features: regime: enabled: true)")
    vol = features["vol_pctile"].to_numpy() >= 0.6  # ranks are mapped to 2*rank - 1: top fifth is >= 0.6
    trend = (features["adx"].to_numpy() >= 0.25) & (np.abs(features["trend_slope"].to_numpy()) >= 1.0)
    out = np.zeros((len(features), 3))
    out[:, 2] = vol
    out[:, 0] = ~vol & trend
    out[:, 1] = ~vol & ~trend
    out[features[list(need)].isna().any(axis=1).to_numpy()] = np.nan
    return pd.DataFrame(out, index=features.index, columns=list(COLUMNS))
