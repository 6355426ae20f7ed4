"""A mixture of experts' gate in the journal, the metrics and the dashboard: a journal written before
decisions had a gate still opens (and takes gated decisions), and the gate metrics are exported and
charted. The live loop journaling a real mixture's gate, served and in-process, is in
``tests/serving/test_serving_moe.py``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tradebot.live.journal import Journal
from tradebot.live.ports import RiskDecision, RiskState, Verdict
from tradebot.live.prometheus import EXPERT_CHOSEN, GATE_WEIGHT, LiveMetrics
from tradebot.rl.moe.mixture import GateDecision

SYM = "NSE:SBIN-EQ"
EXPERTS = ("trend", "mean_reversion", "high_vol")

# the decisions table as journals were written before the gate column (schema 1)
_OLD_DECISIONS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE decisions (
    symbol TEXT NOT NULL, bar_ts INTEGER NOT NULL, decided_ns INTEGER NOT NULL, model_version TEXT,
    features_hash TEXT, action INTEGER NOT NULL, final_action INTEGER NOT NULL, verdict TEXT NOT NULL,
    reasons TEXT NOT NULL, risk_state TEXT NOT NULL, client_order_id TEXT, loss_budget REAL,
    PRIMARY KEY (symbol, bar_ts));
INSERT INTO meta VALUES ('schema', '1'), ('run', 'paper');
INSERT INTO decisions VALUES ('NSE:SBIN-EQ', 100, 1, 'v1', 'h', 0, 0, 'accept', '[]', 'ACTIVE', NULL, NULL);
"""


def _decision(bar_ts: int) -> RiskDecision:
    return RiskDecision(symbol=SYM, bar_ts=bar_ts, proposed=0, final=0, verdict=Verdict.ACCEPT, reasons=(),
                        state=RiskState.ACTIVE)


def test_a_journal_from_before_the_gate_opens_and_journals_gated_decisions(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_DECISIONS)
    db.close()
    j = Journal(path, run="paper")
    try:
        assert j.decision(SYM, 100)["gate"] is None  # the old row: no gate
        gate = GateDecision(EXPERTS, np.array([0.2, 0.5, 0.3]), "mean_reversion")
        assert j.record_decision(_decision(200), decided_ns=2, model_version="moe", features_hash="h",
                                 gate=gate.as_dict())
        assert j.record_decision(_decision(300), decided_ns=3, model_version="v1", features_hash="h")
        assert json.loads(j.decision(SYM, 200)["gate"]) == gate.as_dict()
        assert j.gates() == [{"symbol": SYM, "bar_ts": 200, "action": 0, "expert": "mean_reversion",
                              "weights": {"trend": 0.2, "mean_reversion": 0.5, "high_vol": 0.3}}]
        assert j.status()["decisions"] == 3
    finally:
        j.close()
    again = Journal(path, run="paper")  # reopened: the migration is done once
    assert [g["bar_ts"] for g in again.gates(SYM)] == [200]
    again.close()


def test_the_gate_metrics_are_exported_and_on_the_dashboard():
    m = LiveMetrics()
    for expert in ("trend", "trend", "high_vol"):
        weights = {e: (0.6 if e == expert else 0.2) for e in EXPERTS}
        m.observe_gate(SYM, {"expert": expert, "weights": weights})
    text = m.exposition().decode()
    assert f'{GATE_WEIGHT}{{expert="high_vol",symbol="{SYM}"}} 0.6' in text
    assert m.value(f"{EXPERT_CHOSEN}_total", {"symbol": SYM, "expert": "trend"}) == 2.0
    assert m.value(f"{EXPERT_CHOSEN}_total", {"symbol": SYM, "expert": "high_vol"}) == 1.0
    assert m.value(GATE_WEIGHT, {"symbol": SYM, "expert": "trend"}) == pytest.approx(0.2)

    dashboard = json.loads((Path(__file__).parents[2] / "deploy" / "grafana" / "tradebot-live.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = {p["id"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    assert any(GATE_WEIGHT in e for e in exprs.values())
    assert any(f"{EXPERT_CHOSEN}_total" in e and "expert" in e for e in exprs.values())
