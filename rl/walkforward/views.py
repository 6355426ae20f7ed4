"""What a walk-forward reports per instrument, and pooled over several instruments.

An evaluation on one instrument has one view of its tests: that instrument. One trained on several
(``data.extra_paths``: episodes drawn from all of them, each with its own costs and lot) tests every
fold's policies on each instrument separately, and has one more view, ``pooled``: an equal-weight
portfolio of the instruments' test accounts (each with the initial cash; the pooled equity is their
mean, so it too starts at the initial cash). Each view gets the whole evaluation report (summary,
verdicts, deflated Sharpe ratio, PBO, stitched record).

Pooled record: equity = mean of the instruments' equity curves (on the union of their bar times,
each carried forward); trade P&L, traded notional and costs = the instruments' divided by their
number (the same portfolio); exposure = share of bars with a position in any instrument.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradebot.envs.performance import M, Metrics, compute_metrics
from tradebot.rl.walkforward.stitching import WindowRecord

POOLED = "pooled"
AGENT_ENSEMBLE = "agent_ensemble"  # per fold, the seeds' policies acting on their averaged probabilities
SELECTION_FILE = "selection.json"
VIEWS_DIR = "views"


def view_dir_name(view: str) -> str:
    """A folder name for a view (``NSE:SBIN-EQ`` -> ``NSE_SBIN-EQ``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", view)


def pool_records(records: Sequence[WindowRecord], initial_cash: float) -> WindowRecord:
    """The equal-weight portfolio of several instruments' records over the same test window."""
    k = len(records)
    frame = pd.concat([r.equity.rename(i) for i, r in enumerate(records)], axis=1).sort_index()
    frame = frame.ffill().fillna(initial_cash)
    held = pd.concat([pd.Series(r.positions != 0.0, index=r.equity.index).rename(i)
                      for i, r in enumerate(records)], axis=1).sort_index().ffill().fillna(False)
    return WindowRecord(
        equity=frame.mean(axis=1).rename("equity"),
        positions=held.any(axis=1).to_numpy(dtype=np.float64),
        trade_pnl=np.concatenate([r.trade_pnl for r in records]) / k,
        traded_notional=sum(r.traded_notional for r in records) / k,
        costs=sum(r.costs for r in records) / k,
        invalid_actions=sum(r.invalid_actions for r in records))


def record_metrics(record: WindowRecord, initial_cash: float, timeframe: str) -> dict[str, float]:
    m = compute_metrics(record.equity, timeframe=timeframe, initial_capital=initial_cash, trade_pnl=record.trade_pnl,
                        positions=record.positions, traded_notional=record.traded_notional, costs=record.costs,
                        invalid_actions=record.invalid_actions)
    return dict(m.values)


def record_as_metrics(record: WindowRecord, initial_cash: float, timeframe: str) -> Metrics:
    return Metrics(record_metrics(record, initial_cash, timeframe))


@dataclass
class ViewTests:
    """One view's test results, fold by fold: the seeds' runs, the baselines (``AGENT_ENSEMBLE`` among
    them when the evaluation has it) and their records."""

    runs: list[Any] = field(default_factory=list)  # SeedRun, this view's metrics and record
    baselines: dict[int, dict[str, Metrics]] = field(default_factory=dict)
    records: dict[int, dict[str, WindowRecord]] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationScores:
    """Validation-window Sharpe ratios (after costs) of one fold, for choosing between designs and variants."""

    fold: int
    seeds: dict[int, float]  # seed -> its policy's validation Sharpe (pooled over instruments)
    selected_seed: int
    ensemble: float | None

    @property
    def agent(self) -> float:
        return float(np.mean(list(self.seeds.values())))

    @property
    def selected(self) -> float:
        return self.seeds[self.selected_seed]


def selection(scores: Sequence[ValidationScores]) -> dict[str, Any]:
    """The validation summary a design is chosen on (never the test windows): the mean validation Sharpe
    over folds of ``agent_selected`` and of ``agent_ensemble``, and the variant the rule picks (the higher;
    the selected seed when there is no ensemble)."""
    sel = float(np.mean([s.selected for s in scores]))
    ens = [s.ensemble for s in scores if s.ensemble is not None]
    ensemble = float(np.mean(ens)) if len(ens) == len(scores) and ens else None
    pick = "agent_ensemble" if ensemble is not None and ensemble > sel else "agent_selected"
    return {"rule": "mean validation-window Sharpe over folds (after costs); the higher of agent_selected and "
                    "agent_ensemble is the design's deployable variant and its score",
            "agent_validation_sharpe": float(np.mean([s.agent for s in scores])),
            "agent_selected_validation_sharpe": sel, "agent_ensemble_validation_sharpe": ensemble,
            "variant": pick, "score": ensemble if pick == "agent_ensemble" else sel,
            "folds": [{"fold": s.fold, "seeds": {str(k): v for k, v in s.seeds.items()},
                       "selected_seed": s.selected_seed, "ensemble": s.ensemble} for s in scores]}


def pooled_sharpe(records: Sequence[WindowRecord], initial_cash: float, timeframe: str) -> float:
    """The Sharpe ratio of one window's records, pooled when several."""
    rec = records[0] if len(records) == 1 else pool_records(records, initial_cash)
    return record_metrics(rec, initial_cash, timeframe)[M.SHARPE]
