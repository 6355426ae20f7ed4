"""A mixture of experts behind Ray Serve and in the live loop: the gate travels with every decision.

The session's tiny trained policy is used as three experts with a supervised gate of random
coefficients (``mixture_factory``), loaded by ``Policy.load`` in the replica as any model. Served, it
equals the in-process mixture over interleaved symbols (actions, probabilities and gate weights: each
expert's recurrent state is kept per (client, symbol) stream), and the live loop journals and
exports the gate of each decision, served or in-process alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from tradebot.features.bars import load_bars
from tradebot.live.policies import ModelPolicy
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.runner import LiveConfig, build_replay_loop
from tradebot.rl.policy import Policy
from tradebot.serving.policy_client import HandlePolicy, HttpPolicy, model_features

pytestmark = [pytest.mark.integration]

SAMPLE_5M = Path(__file__).resolve().parents[2] / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"
APP, ROUTE = "tradebot-moe-test", "/moe"
EXPERTS = ("trend", "mean_reversion", "high_vol")
STEPS = 30  # per symbol: past the LSTM's max_seq_len, so the carried states matter
START, END = "2021-06-01", "2021-06-03"  # two sessions replayed by the live loop


@pytest.fixture(scope="module")
def moe(tmp_path_factory, trained, mixture_factory):
    return mixture_factory(trained["path"], tmp_path_factory.mktemp("moe") / "mixture")


@pytest.fixture(scope="module")
def moe_served(moe, served):
    """The mixture as a second app on the session's Serve (route ``/moe``, the same token)."""
    from ray import serve

    from tradebot.serving.app import build_app

    handle = serve.run(build_app(str(moe), token=served["token"]), name=APP, route_prefix=ROUTE, blocking=False)
    try:
        yield {"handle": handle, "url": served["url"] + ROUTE, "token": served["token"]}
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def sequences(random_walk):
    return {"NSE:A": random_walk(600, 1, STEPS), "NSE:B": random_walk(2000, 2, STEPS)}


def _interleaved(act, sequences):
    """``act(symbol, obs) -> (action, probs, gate dict)`` over the symbols interleaved bar by bar."""
    got = {s: [] for s in sequences}
    for t in range(STEPS):
        for s, obs in sequences.items():
            got[s].append(act(s, obs[t]))
    return got


def _same(got, want):
    for s in want:
        for (a, p, g), (a0, p0, g0) in zip(got[s], want[s], strict=True):
            assert a == a0 and g["expert"] == g0["expert"] and list(g["weights"]) == list(EXPERTS)
            np.testing.assert_allclose(p, p0, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(list(g["weights"].values()), list(g0["weights"].values()), rtol=1e-6, atol=1e-9)


def test_serving_moe_equals_the_in_process_mixture_over_interleaved_symbols(moe, moe_served, sequences):
    local = Policy.load(moe)

    def in_process(s, obs):
        a, p = local.act(s, obs)
        return a, p, local.explain(s).as_dict()

    want = _interleaved(in_process, sequences)
    weights = np.array([list(g["weights"].values()) for s in want for _, _, g in want[s]])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert weights.std(axis=0).min() > 1e-3  # the gate moves: a mixed-up stream would show

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {moe_served['token']}"
    assert session.get(f"{moe_served['url']}/health").json()["experts"] == list(EXPERTS)
    session.post(f"{moe_served['url']}/reset", json={"client": "c1"}).raise_for_status()

    def over_http(s, obs):
        body = session.post(f"{moe_served['url']}/act", json={"symbol": s, "client": "c1", "obs": obs.tolist()})
        assert body.status_code == 200, body.text
        body = body.json()
        return body["action"], body["probs"], body["gate"]

    _same(_interleaved(over_http, sequences), want)

    for client in (HandlePolicy(moe_served["handle"]), HttpPolicy(moe_served["url"], token=moe_served["token"])):
        def through_client(s, obs, client=client):
            a, p = client(s, obs)
            return a, p, client.explain(s).as_dict()

        _same(_interleaved(through_client, sequences), want)


def _replay(policy, moe, tmp_path, name):
    bars = load_bars(SAMPLE_5M).between(None, END)
    metrics = LiveMetrics()
    loop = build_replay_loop(bars, journal=tmp_path / f"{name}.db", config=LiveConfig(features=model_features(str(moe))),
                             start=START, policy=policy, metrics=metrics)
    try:
        summary = loop.run()
        return summary, loop.journal.gates(), metrics
    finally:
        loop.journal.close()


def test_serving_moe_live_loop_journals_and_exports_the_gate_served_or_in_process(moe, moe_served, tmp_path):
    s_local, local, m_local = _replay(ModelPolicy(Policy.load(moe)), moe, tmp_path, "in-process")
    s_served, served, m_served = _replay(HandlePolicy(moe_served["handle"]), moe, tmp_path, "served")
    assert len(local) == len(served) == s_local.decisions == s_served.decisions > 100  # every decision has its gate
    symbol = local[0]["symbol"]
    for a, b in zip(local, served, strict=True):
        assert (a["bar_ts"], a["action"], a["expert"]) == (b["bar_ts"], b["action"], b["expert"])
        assert list(a["weights"]) == list(EXPERTS) and sum(a["weights"].values()) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(list(a["weights"].values()), list(b["weights"].values()), rtol=1e-6, atol=1e-9)
    for metrics in (m_local, m_served):
        text = metrics.exposition().decode()
        assert "tradebot_live_gate_weight{" in text and "tradebot_live_expert_chosen_total{" in text
        chosen = {e: metrics.value("tradebot_live_expert_chosen_total", {"symbol": symbol, "expert": e}) or 0.0
                  for e in EXPERTS}
        assert chosen == {e: float(sum(g["expert"] == e for g in local)) for e in EXPERTS}
        last = {e: metrics.value("tradebot_live_gate_weight", {"symbol": symbol, "expert": e}) for e in EXPERTS}
        np.testing.assert_allclose(list(last.values()), list(local[-1]["weights"].values()), rtol=1e-6, atol=1e-9)


def test_serving_moe_paper_run_equals_its_backtest_under_loose_limits(moe, moe_served, tmp_path, monkeypatch):
    """`tradebot live --paper --replay --model <mixture> --serve-url ...`: the served mixture's paper trades
    are an in-process backtest of the same mixture on the same bars (parity.json), and every decision's
    gate is journaled."""
    import json

    import yaml
    from click.testing import CliRunner

    from tradebot.cli import main
    from tradebot.live.journal import Journal

    monkeypatch.setenv("TRADEBOT_SERVE_TOKEN", moe_served["token"])
    loose = {"max_position": 10**9, "max_notional": 1e15, "max_daily_loss": 0.99, "max_drawdown": 0.99,
             "square_off": None, "entry_end": "15:30"}
    config = tmp_path / "live.yaml"
    config.write_text(yaml.safe_dump({"live": {"risk": loose}}))
    out, journal = tmp_path / "run", tmp_path / "moe.db"
    result = CliRunner().invoke(main, ["live", "--paper", "--replay", str(SAMPLE_5M), "--journal", str(journal),
                                       "--start", "2021-06-14", "--model", str(moe), "--serve-url", moe_served["url"],
                                       "--config", str(config), "--out", str(out), "--no-log-json"])
    assert result.exit_code == 0, result.output
    parity = json.loads((out / "parity.json").read_text())
    # Trade for trade, except where the risk engine vetoes an entry decided on a session's last bar (15:25):
    # the backtest fills it at the next session's open, the live path refuses an order after the close. No
    # other limit binds, and every difference is explained by those vetoes.
    assert parity["consistent"] and parity["unexplained"] == [] and parity["paper_trades"] > 10, parity
    for veto in parity["risk_interventions"]:
        assert veto["time"].endswith("T15:25:00+05:30") and "entry window" in veto["reasons"], veto
    j = Journal(journal, create=False)
    try:
        gates = j.gates()
    finally:
        j.close()
    assert len(gates) > 100 and all(abs(sum(g["weights"].values()) - 1.0) < 1e-9 for g in gates)
    import pandas as pd

    decisions = pd.read_csv(out / "decisions.csv")  # the run's files carry the gate as a backtest's do
    assert len(decisions) == len(gates) and list(decisions.columns) == ["timestamp", "action", *(
        f"w_{n}" for n in EXPERTS), "expert"]
    np.testing.assert_allclose(decisions[[f"w_{n}" for n in EXPERTS]].sum(axis=1), 1.0, atol=1e-9)
