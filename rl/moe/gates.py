"""The supervised gate: regime probabilities from the bar's market features, learnt from the detector.

```python
labels = hindsight_regimes(detector, bars, start, end)        # the detector's smoothed regime per bar
gate = SupervisedGate.fit(X, labels, expert_names)           # X: market features on those bars
gate.weights(x)                                              # one bar: probabilities per expert, sum 1
```

Why smoothed labels: the detector's filtered probabilities are causal but lag a regime change by
construction; on the training dates the forward-backward (smoothed) probabilities say in hindsight
which regime each bar was in, and the gate learns to recognise that regime from features the bar
already has (no lookahead at inference: its input is the observation). The classifier is a
multinomial logistic regression (scikit-learn) on standardised features, so it is one matrix and a
softmax at inference and travels as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.features.regimes import REGIMES, RegimeDetector, ew_stats

FORMAT = "tradebot.rl.moe.gates/1"


@dataclass(frozen=True)
class SupervisedGate:
    """Standardise, one linear layer, softmax: ``weights(x)`` per expert (``expert_names`` order)."""

    expert_names: tuple[str, ...]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (K, F)
    intercept: np.ndarray  # (K,)
    accuracy: float  # on its fitting rows

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, expert_names: tuple[str, ...], *, c: float = 0.1,
            seed: int = 0) -> SupervisedGate:
        """Fit on rows of market features and each row's regime (an index into ``expert_names``)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64)
        keep = np.isfinite(x).all(axis=1) & (y >= 0)
        x, y = x[keep], y[keep]
        k = len(expert_names)
        present = np.unique(y)
        if len(x) < 100 or len(present) < 2:
            raise UserInputError(f"the supervised gate has {len(x)} labelled bars in {len(present)} regime(s); it "
                                 "needs at least 100 in two regimes: lengthen the training dates")
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model.fit((x - mean) / scale, y)
        coef = np.zeros((k, x.shape[1]))
        intercept = np.full(k, -30.0)  # a regime never seen in training gets (practically) no weight
        for row, cls_ in enumerate(model.classes_):
            if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: logit of the second
                coef[cls_] = model.coef_[0] * (1 if row == 1 else 0)
                intercept[cls_] = model.intercept_[0] * (1 if row == 1 else 0)
            else:
                coef[cls_], intercept[cls_] = model.coef_[row], model.intercept_[row]
        accuracy = float((model.predict((x - mean) / scale) == y).mean())
        return cls(tuple(expert_names), mean, scale, coef, intercept, accuracy)

    def weights(self, features: np.ndarray) -> np.ndarray:
        """Probabilities per expert for one row (or rows) of market features."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        z = np.where(np.isfinite(z), z, 0.0)
        logits = z @ self.coef.T + self.intercept
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "expert_names": list(self.expert_names), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupervisedGate:
        if data.get("format") != FORMAT:
            raise UserInputError(f"not a supervised gate (format {data.get('format')!r})")
        return cls(tuple(data["expert_names"]), np.asarray(data["mean"]), np.asarray(data["scale"]),
                   np.asarray(data["coef"]), np.asarray(data["intercept"]), float(data["accuracy"]))


def hindsight_regimes(detector: RegimeDetector, close: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The detector's smoothed (forward-backward) regime index (into ``REGIMES``) for bars ``lo..hi-1`` of
    ``close``; -1 where the EW statistics are still warming up. Training labels only: uses the future."""
    from hmmlearn.hmm import GaussianHMM

    stats = ew_stats(np.asarray(close, dtype=np.float64), detector.halflife)
    out = np.full(hi - lo, -1, dtype=np.int64)
    first = max(lo, detector.warmup_bars)
    rows = stats[first:hi]
    ok = np.isfinite(rows).all(axis=1)
    if not ok.any():
        return out
    hmm = GaussianHMM(n_components=3, covariance_type="full")
    hmm.startprob_, hmm.transmat_ = detector.startprob, detector.transmat
    hmm.means_, hmm.covars_ = detector.means, detector.covars
    z = (rows[ok] - detector.center) / detector.scale
    post = hmm.predict_proba(z)  # [n, state]
    named = np.array([detector.named(p) for p in post])
    idx = np.flatnonzero(ok) + (first - lo)
    out[idx] = np.argmax(named, axis=1)
    return out


def regime_label_frame(labels: np.ndarray, index: pd.Index) -> pd.Series:
    """Regime names per bar (``REGIMES``; None in the warm-up), for reports."""
    return pd.Series([REGIMES[i] if i >= 0 else None for i in labels], index=index, name="regime")
