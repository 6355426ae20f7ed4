"""The live loop acting through Serve: the same decisions as the in-process policy, by handle and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tradebot.features.bars import load_bars
from tradebot.live.runner import LiveConfig, build_replay_loop
from tradebot.rl.policy import Policy
from tradebot.serving.policy_client import HandlePolicy, HttpPolicy, check_obs_dim, model_features

SAMPLE_5M = Path(__file__).resolve().parents[2] / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"

pytestmark = [pytest.mark.integration]

START = "2021-06-01"
END = "2021-06-04"  # three sessions replayed; the bars before START prime the features


class _Recorder:
    def __init__(self, policy):
        self.policy, self.calls = policy, []
        self.version = getattr(policy, "version", None)

    def __call__(self, symbol, obs):
        action, probs = self.policy(symbol, obs)
        self.calls.append((symbol, obs.copy(), int(action), np.asarray(probs)))
        return action, probs


def _run(policy, trained, tmp_path, name):
    bars = load_bars(SAMPLE_5M).between(None, END)
    config = LiveConfig(features=model_features(str(trained["path"])))
    loop = build_replay_loop(bars, journal=tmp_path / f"{name}.db", config=config, start=START, policy=policy)
    try:
        if hasattr(policy.policy, "obs_dim"):  # the served policies: refused up front on a size mismatch
            check_obs_dim(policy.policy, loop, str(trained["path"]))
        return loop.run()
    finally:
        loop.journal.close()


def test_serving_live_loop_through_handle_and_http_decides_like_in_process_policy(served, trained, tmp_path):
    local = Policy.load(trained["path"])
    direct = _Recorder(lambda s, o: local.act(s, o))
    by_handle = _Recorder(HandlePolicy(served["handle"]))
    by_http = _Recorder(HttpPolicy(served["url"], token=served["token"]))
    s_direct = _run(direct, trained, tmp_path, "direct")
    s_handle = _run(by_handle, trained, tmp_path, "handle")
    s_http = _run(by_http, trained, tmp_path, "http")
    assert len(direct.calls) > 150
    for other in (by_handle, by_http):
        assert len(other.calls) == len(direct.calls)
        for (sd, od, ad, pd_), (so, oo, ao, po) in zip(direct.calls, other.calls):
            assert sd == so and ad == ao
            np.testing.assert_array_equal(od, oo)  # the same observations: the same positions all along
            np.testing.assert_allclose(po, pd_, rtol=1e-6, atol=1e-9)
    assert s_handle.decisions == s_http.decisions == s_direct.decisions
    assert s_handle.orders == s_http.orders == s_direct.orders
    assert s_handle.equity == pytest.approx(s_direct.equity)


def test_serving_live_cli_run_with_model_over_http(served, trained, tmp_path, monkeypatch):
    from tradebot.live.journal import journal_status
    from tradebot.cli import main

    monkeypatch.setenv("TRADEBOT_SERVE_TOKEN", served["token"])
    journal = tmp_path / "cli.db"
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["live", "--paper", "--replay", str(SAMPLE_5M), "--journal", str(journal), "--start",
                                       "2021-06-29", "--model", str(trained["path"]), "--serve-url", served["url"],
                                       "--out", str(out), "--no-log-json"])
    assert result.exit_code == 0, result.output
    assert "decision(s)" in result.output
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "equity.csv", "trades.csv", "report.html", "parity.json"}
    parity = json.loads((out / "parity.json").read_text())
    # the served policy's trades against an in-process policy backtest of the same bars
    assert parity["consistent"] and parity["unexplained"] == [], parity
    assert "model" in parity["reference"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["policy"] == f"model {trained['path']}"
    st = journal_status(journal)
    assert st["decisions"] > 100
    kinds = {e["kind"] for e in st["risk_events"]}
    assert "policy_error" not in kinds


def test_serving_live_cli_serve_url_without_model_is_usage_error(tmp_path):
    from tradebot.cli import main

    result = CliRunner().invoke(main, ["live", "--paper", "--replay", str(SAMPLE_5M), "--journal", str(tmp_path / "j.db"),
                                       "--serve-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--serve-url needs --model" in result.output
