"""What a paper or live run leaves behind, and the check that it traded as a backtest would.

```python
result, bars = run_result(journal, symbol, engine)          # a tradebot.envs.backtest.BacktestResult from the journal
parity = compare_trades(result.trades, backtest.trades)     # every difference, listed
write_run_report(out_dir, journal, symbol, engine, info, backtest=backtest)
```

``run_result`` rebuilds the backtester's result from the journal alone (the bars the loop
processed, the equity it recorded after every bar, its fills), so ``write_run_report`` writes the
same ``metrics.json``, ``equity.csv``, ``trades.csv`` and ``report.html`` as ``tradebot backtest``
(through ``tradebot.envs.backtest_report.write_run_files``; ``decisions.csv`` too when the policy is a
mixture of experts, from the gates the loop journaled), plus ``parity.json``: the run's trades against a
backtest of the same bars with the same policy (``compare_trades``). Trades are matched by entry time
and side; quantities, times and exit reasons must be equal, prices equal to 1e-9 relative (the live
feature stream's ATR equals the batch ATR to rounding). A difference is listed with the risk
engine's interventions in the run (vetoes, resizes, overrides, halts), the usual cause: the
backtest has no risk engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebot.envs.backtest import TRADE_COLUMNS, BacktestResult
from tradebot.envs.engine import EngineConfig
from tradebot.features.bars import Bars
from tradebot.live.journal import Journal
from tradebot.live.ports import NO_OP_VETO_CODES, to_ist

PARITY_FILE = "parity.json"
_EXACT = ("exit_time", "qty", "exit_reason")
_PRICES = ("entry_price", "exit_price", "stop_price", "take_profit_price", "entry_costs", "exit_costs", "pnl")
_RTOL, _ATOL = 1e-9, 1e-6


def journal_bars(journal: Journal, symbol: str, timeframe: str | None = None) -> Bars:
    """The bars the loop finished for ``symbol``, as ``Bars``."""
    rows = journal.bars(symbol, done=True)
    if not rows:
        raise ValueError(f"the journal has no finished bars of {symbol}")
    frame = pd.DataFrame({"open": [b.open for b in rows], "high": [b.high for b in rows],
                          "low": [b.low for b in rows], "close": [b.close for b in rows],
                          "volume": [b.volume for b in rows]},
                         index=pd.to_datetime([b.ts for b in rows], utc=True).rename("timestamp"))
    return Bars.from_frame(frame, symbol=symbol, source="journal", timeframe=timeframe or rows[0].timeframe)


def run_result(journal: Journal, symbol: str, engine: EngineConfig) -> tuple[BacktestResult, Bars]:
    """The run's result in the backtester's shape (equity, cash, position after each bar; trades).

    Equity and cash are the account's: with several symbols in one run they cover all of them,
    while the positions and trades are ``symbol``'s."""
    bars = journal_bars(journal, symbol)
    index = bars.index
    ns = index.as_unit("ns").asi8
    eq = journal.equity()
    eq_ns = eq.index.as_unit("ns").asi8
    pos = np.searchsorted(eq_ns, ns)
    if (pos >= len(eq_ns)).any() or (eq_ns[np.minimum(pos, len(eq_ns) - 1)] != ns).any():
        raise ValueError("the journal's equity rows do not cover every finished bar")
    equity = pd.Series(eq["equity"].to_numpy()[pos], index=index, name="equity")
    cash = pd.Series(eq["cash"].to_numpy()[pos], index=index, name="cash")

    fills = [f for f in journal.fills() if f.symbol == symbol]
    signed = np.zeros(len(ns) + 1)
    for f in fills:  # a fill belongs to the bar in which it executed: the position after that bar includes it
        np.add.at(signed, np.searchsorted(ns, f.ts), f.side.sign * f.qty)
    positions = pd.Series(np.cumsum(signed)[:-1], index=index, name="position")
    costs = float(sum(f.costs for f in fills))
    return BacktestResult(equity=equity, cash=cash, positions=positions, trades=_trades(journal, symbol, index),
                          invalid_actions=0, costs_total=costs, config=engine), bars


def _trades(journal: Journal, symbol: str, index: pd.DatetimeIndex) -> pd.DataFrame:
    t = journal.trades()
    t = t[t["symbol"] == symbol].reset_index(drop=True)
    entry_bar = index.searchsorted(t["entry_time"]) if len(t) else np.zeros(0, dtype=np.int64)
    exit_bar = index.searchsorted(t["exit_time"]) if len(t) else np.zeros(0, dtype=np.int64)
    notional = t["qty"].to_numpy(dtype=float) * t["entry_price"].to_numpy(dtype=float)
    costs = t["entry_costs"].to_numpy(dtype=float) + t["exit_costs"].to_numpy(dtype=float)
    pnl = t["pnl"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(notional > 0, pnl / notional * 100.0, np.nan)
    out = pd.DataFrame({
        "entry_time": pd.DatetimeIndex(t["entry_time"]).tz_convert(index.tz) if len(t) else index[:0],
        "exit_time": pd.DatetimeIndex(t["exit_time"]).tz_convert(index.tz) if len(t) else index[:0],
        "entry_bar": np.asarray(entry_bar, dtype=np.int64), "exit_bar": np.asarray(exit_bar, dtype=np.int64),
        "side": pd.Categorical(t["side"], categories=["long", "short"]),
        "qty": t["qty"].to_numpy(dtype=float), "entry_price": t["entry_price"].to_numpy(dtype=float),
        "exit_price": t["exit_price"].to_numpy(dtype=float), "stop_price": t["stop_price"].to_numpy(dtype=float),
        "take_profit_price": t["take_profit_price"].to_numpy(dtype=float), "gross_pnl": pnl + costs,
        "entry_costs": t["entry_costs"].to_numpy(dtype=float), "exit_costs": t["exit_costs"].to_numpy(dtype=float),
        "costs": costs, "pnl": pnl, "return_pct": ret,
        "bars_held": np.asarray(exit_bar, dtype=np.int64) - np.asarray(entry_bar, dtype=np.int64),
        "exit_reason": t["exit_reason"].astype(str).to_numpy(),
    }, columns=list(TRADE_COLUMNS))
    return out


# ------------------------------------------------------------------------------------ parity

@dataclass(frozen=True)
class Parity:
    """The paper run's trades against a backtest's.

    ``agree``: no difference at all. ``consistent``: every difference comes after the risk engine first
    changed an outcome (the backtest has no risk engine; from there on the two legitimately part);
    a difference before that is a bug, and ``unexplained`` lists it.
    """

    paper_trades: int
    backtest_trades: int
    differences: list[dict[str, Any]]
    risk_interventions: list[dict[str, Any]] = field(default_factory=list)
    reference: str = ""  # what the backtest was (strategy or model, bars, engine)

    @property
    def agree(self) -> bool:
        return not self.differences

    @property
    def first_intervention(self) -> str | None:
        return self.risk_interventions[0]["time"] if self.risk_interventions else None

    @property
    def unexplained(self) -> list[dict[str, Any]]:
        first = self.first_intervention
        if first is None:
            return list(self.differences)
        cut = pd.Timestamp(first)
        return [d for d in self.differences if pd.Timestamp(_entry_time(d)) <= cut]

    @property
    def consistent(self) -> bool:
        return not self.unexplained

    def summary(self) -> str:
        if self.agree:
            return (f"parity: the paper run's {self.paper_trades} trade(s) equal the backtest's "
                    f"({self.backtest_trades})")
        head = (f"parity: {len(self.differences)} difference(s) between the paper run's {self.paper_trades} "
                f"trade(s) and the backtest's {self.backtest_trades}")
        if self.consistent:
            return (f"{head}, all after the risk engine first changed an outcome ({self.first_intervention}; "
                    f"{len(self.risk_interventions)} intervention(s) in all; the backtest has no risk engine): "
                    f"consistent; see {PARITY_FILE}")
        return (f"{head}; {len(self.unexplained)} of them before any risk intervention: the paper run and the "
                f"backtest disagree (a bug: please report it with {PARITY_FILE})")

    def to_dict(self) -> dict[str, Any]:
        return {"agree": self.agree, "consistent": self.consistent, "first_intervention": self.first_intervention,
                "unexplained": self.unexplained, **asdict(self)}


def _entry_time(diff: Mapping[str, Any]) -> str:
    return (diff.get("paper") or diff["backtest"])["entry_time"]


def _key(row: Mapping[str, Any]) -> tuple[int, str]:
    return int(pd.Timestamp(row["entry_time"]).value), str(row["side"])


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value if isinstance(value, (str, int, bool, type(None))) else str(value)


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    cols = ("entry_time", "side") + _EXACT + _PRICES
    return {c: _plain(row[c]) for c in cols if c in row}


def compare_trades(paper: pd.DataFrame, backtest: pd.DataFrame,
                   risk_interventions: list[dict[str, Any]] | None = None, reference: str = "") -> Parity:
    """Every trade in one and not the other, and every field that differs in a trade both made."""
    p = {_key(r): r for r in paper.to_dict("records")}
    b = {_key(r): r for r in backtest.to_dict("records")}
    diffs: list[dict[str, Any]] = []
    for key in sorted(set(p) | set(b)):
        if key not in p:
            diffs.append({"kind": "missing_in_paper", "backtest": _row(b[key])})
            continue
        if key not in b:
            diffs.append({"kind": "extra_in_paper", "paper": _row(p[key])})
            continue
        fields = [c for c in _EXACT if _plain(p[key][c]) != _plain(b[key][c])]
        for c in _PRICES:
            x, y = float(p[key][c]), float(b[key][c])
            if not (math.isnan(x) and math.isnan(y)) and not math.isclose(x, y, rel_tol=_RTOL, abs_tol=_ATOL):
                fields.append(c)
        if fields:
            diffs.append({"kind": "mismatch", "fields": fields, "paper": _row(p[key]), "backtest": _row(b[key])})
    return Parity(paper_trades=len(paper), backtest_trades=len(backtest), differences=diffs,
                  risk_interventions=list(risk_interventions or []), reference=reference)


def risk_interventions(journal: Journal, symbol: str | None = None) -> list[dict[str, Any]]:
    """Decisions in which the risk engine changed what the policy's action does (a veto, a smaller entry,
    a flatten), in time order: what a backtest, which has no risk engine, does not do. Vetoes of actions
    the fill engine ignores as well (``NO_OP_VETO_CODES``) change nothing and are left out."""
    return [{"symbol": d["symbol"], "time": to_ist(d["bar_ts"]).isoformat(), "proposed": d["action"],
             "final": d["final_action"], "verdict": d["verdict"], "reasons": d["reasons"]}
            for d in journal.intervening_decisions(symbol) if d["code"] not in NO_OP_VETO_CODES]


def journal_decisions(journal: Journal, symbol: str, tz: Any = None) -> pd.DataFrame | None:
    """A mixture of experts' gate per decision, journaled by the loop, in ``decisions.csv``'s shape
    (``timestamp``, ``action``, ``w_<expert>``, ``expert``); None when the run's policy has no gate."""
    from tradebot.envs.engine import Action

    gates = journal.gates(symbol)
    if not gates:
        return None
    names = list(gates[0]["weights"])
    stamps = pd.to_datetime([g["bar_ts"] for g in gates], utc=True)
    return pd.DataFrame({"timestamp": stamps.tz_convert(tz) if tz is not None else stamps,
                         "action": [Action(g["action"]).name for g in gates],
                         **{f"w_{n}": [float(g["weights"][n]) for g in gates] for n in names},
                         "expert": [g["expert"] for g in gates]})


def write_run_report(out_dir: str | Path, journal: Journal, symbol: str, engine: EngineConfig,
                     info: Mapping[str, Any], backtest: BacktestResult | None = None,
                     reference: str = "") -> tuple[BacktestResult, Parity | None]:
    """The backtester's four files for the run, and ``parity.json`` when a ``backtest`` is given."""
    from tradebot.envs.performance import metrics_from_result
    from tradebot.core.files import write_text_atomic
    from tradebot.core.serialize import json_text
    from tradebot.envs.backtest_report import write_run_files

    result, bars = run_result(journal, symbol, engine)
    metrics = metrics_from_result(result, bars.timeframe)
    write_run_files(out_dir, result, bars, metrics, info, f"Paper run · {symbol}",
                    decisions=journal_decisions(journal, symbol, bars.index.tz))
    parity = None
    if backtest is not None:
        parity = compare_trades(result.trades, backtest.trades, risk_interventions(journal, symbol), reference)
        write_text_atomic(Path(out_dir) / PARITY_FILE, json_text(parity.to_dict()))
    return result, parity


__all__ = ["Parity", "compare_trades", "journal_bars", "journal_decisions", "risk_interventions", "run_result",
           "write_run_report"]
