"""What the model was trained and validated on, as the drift monitors compare against it.

A ``DriftReference`` travels with the model (``drift_reference.json`` in the exported policy folder,
so in the MLflow model too). It holds:

* the market features: per feature, the percentiles (0, 1, ..., 100) of its values over the training
  bars (the causal pipeline's output, warm-up rows excluded) -- the model's inputs as it learned them;
* the actions: the policy's action frequencies out of sample (its validation backtest);
* the trades: mean and standard deviation of the net return per closed trade (net P&L over entry
  notional) and the hit rate, from the same validation backtest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic

REFERENCE_FILE = "drift_reference.json"
FORMAT = "tradebot.drift.reference/1"
PERCENTILES = np.linspace(0.0, 1.0, 101)
N_ACTIONS = 5


@dataclass(frozen=True)
class DriftReference:
    feature_names: tuple[str, ...]
    quantiles: np.ndarray  # (features, 101): percentiles 0..100 of each feature over the training bars
    feature_rows: int  # training bars the percentiles come from
    action_probs: np.ndarray  # (5,) frequencies of HOLD, BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT
    decisions: int  # out-of-sample decisions the frequencies come from
    trade_mean: float  # mean net return per closed trade (fraction of entry notional)
    trade_std: float
    hit_rate: float  # share of closed trades with a positive net P&L
    trades: int
    source: dict[str, Any] = field(default_factory=dict)  # what it was built from (data, dates, model)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "feature_names": list(self.feature_names),
                "quantiles": self.quantiles.tolist(), "feature_rows": self.feature_rows,
                "action_probs": self.action_probs.tolist(), "decisions": self.decisions,
                "trade_mean": self.trade_mean, "trade_std": self.trade_std, "hit_rate": self.hit_rate,
                "trades": self.trades, "source": dict(self.source)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "drift reference") -> DriftReference:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserInputError(f"{where}: not a drift reference (expected format {FORMAT!r})")
        try:
            quantiles = np.asarray(data["quantiles"], dtype=np.float64)
            names = tuple(str(n) for n in data["feature_names"])
            if quantiles.shape != (len(names), len(PERCENTILES)):
                raise ValueError(f"quantiles have shape {quantiles.shape}")
            return cls(feature_names=names, quantiles=quantiles, feature_rows=int(data["feature_rows"]),
                       action_probs=np.asarray(data["action_probs"], dtype=np.float64),
                       decisions=int(data["decisions"]), trade_mean=float(data["trade_mean"]),
                       trade_std=float(data["trade_std"]), hit_rate=float(data["hit_rate"]),
                       trades=int(data["trades"]), source=dict(data.get("source") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise UserInputError(f"{where}: damaged drift reference ({err}); rebuild it with the model") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / REFERENCE_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> DriftReference:
        path = Path(path)
        if path.is_dir():
            path = path / REFERENCE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserInputError(f"{path}: no drift reference here") from None
        except (OSError, json.JSONDecodeError) as err:
            raise UserInputError(f"{path}: unreadable drift reference ({err})") from None
        return cls.from_dict(data, str(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DriftReference) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def trade_returns(trades) -> np.ndarray:
    """Net return of each closed trade: net P&L over the entry notional (a ``run_backtest`` trades frame)."""
    if trades is None or len(trades) == 0:
        return np.zeros(0)
    notional = (trades["entry_price"].to_numpy(dtype=np.float64) * trades["qty"].to_numpy(dtype=np.float64))
    pnl = trades["pnl"].to_numpy(dtype=np.float64)
    return np.where(notional > 0, pnl / np.where(notional > 0, notional, 1.0), 0.0)


def build_reference(features: np.ndarray, feature_names: tuple[str, ...] | list[str], actions: np.ndarray,
                    returns: np.ndarray, source: dict[str, Any] | None = None) -> DriftReference:
    """A reference from the training bars' features (rows x features; NaN rows are dropped), the
    policy's out-of-sample actions and its out-of-sample trades' net returns."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"features of shape {x.shape} do not match {len(feature_names)} names")
    x = x[np.all(np.isfinite(x), axis=1)]
    if len(x) < 100:
        raise UserInputError(f"only {len(x)} complete feature rows to build a drift reference from; "
                             "train on a longer period")
    acts = np.asarray(actions, dtype=np.int64)
    counts = np.bincount(acts[(acts >= 0) & (acts < N_ACTIONS)], minlength=N_ACTIONS).astype(np.float64)
    probs = counts / counts.sum() if counts.sum() > 0 else np.full(N_ACTIONS, 1.0 / N_ACTIONS)
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    return DriftReference(
        feature_names=tuple(feature_names), quantiles=np.quantile(x, PERCENTILES, axis=0).T.copy(),
        feature_rows=len(x), action_probs=probs, decisions=int(counts.sum()),
        trade_mean=float(r.mean()) if len(r) else 0.0, trade_std=float(r.std(ddof=1)) if len(r) > 1 else 0.0,
        hit_rate=float((r > 0).mean()) if len(r) else 0.0, trades=len(r), source=dict(source or {}))
