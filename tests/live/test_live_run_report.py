"""``tradebot live --paper --replay ... --out DIR``: the backtester's files from the journal, and the parity
check of the session's trades against a backtest of the same bars with the same policy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from tradebot.envs.backtest import TRADE_COLUMNS
from tradebot.envs.performance import M
from tradebot.live.run_report import compare_trades
from live_helpers import LOOSE_RISK, MINIMAL_FEATURES, sample_csv
from tradebot.cli.cmd_live import live

OUT_FILES = {"metrics.json", "equity.csv", "trades.csv", "report.html", "parity.json", "journal.db"}


def _data(tmp_path):
    return sample_csv(tmp_path, "2021-02-15", "2021-03-13")


def _config(tmp_path, risk: dict) -> str:
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump({"live": {"features": MINIMAL_FEATURES.model_dump(mode="json"),
                                             "loop": {"run": "report-test"}, "risk": risk}}))
    return str(path)


def _run(tmp_path, risk: dict, strategy: str = "random", out: str = "out"):
    args = ["--paper", "--replay", str(_data(tmp_path)), "--config", _config(tmp_path, risk), "--strategy", strategy,
            "--seed", "3", "--start", "2021-03-01", "--out", str(tmp_path / out), "--no-log-json"]
    return CliRunner().invoke(live, args)


def test_paper_run_with_limits_that_never_bind_equals_the_backtest_file_for_file(tmp_path):
    loose = LOOSE_RISK.model_dump(mode="json")
    res = _run(tmp_path, loose)
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= OUT_FILES
    parity = json.loads((out / "parity.json").read_text())
    assert parity["agree"] and parity["differences"] == [] and parity["paper_trades"] > 5
    assert "equal the backtest's" in res.output

    # the same bars through `tradebot backtest --actions`: the same trades, equity and metrics
    from tradebot.live.journal import Journal
    from tradebot.live.runner import LiveConfig, reference_backtest
    from tradebot.features.bars import load_bars

    config = LiveConfig.model_validate({"features": MINIMAL_FEATURES.model_dump(mode="json"), "risk": loose})
    backtest, _ = reference_backtest(load_bars(_data(tmp_path)), config=config, start="2021-03-01",
                                     strategy="random", seed=3)
    trades = pd.read_csv(out / "trades.csv")
    assert list(trades.columns) == list(TRADE_COLUMNS)
    np.testing.assert_allclose(trades["pnl"], backtest.trades["pnl"], rtol=1e-9)
    assert (trades["exit_reason"] == backtest.trades["exit_reason"].astype(str)).all()
    equity = pd.read_csv(out / "equity.csv", index_col=0)
    np.testing.assert_allclose(equity["equity"], backtest.equity.to_numpy(), rtol=1e-9)  # CSV keeps 10 digits
    np.testing.assert_allclose(equity["position"], backtest.positions.to_numpy())
    from tradebot.envs.performance import metrics_from_result

    want = metrics_from_result(backtest, "5m")
    got = json.loads((out / "metrics.json").read_text())
    for key in (M.TOTAL_RETURN, M.SHARPE, M.MAX_DRAWDOWN, M.TRADES, M.WIN_RATE):
        assert got["metrics"][key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert got["run"]["mode"] == "paper" and got["run"]["policy"] == "strategy random"
    assert "<html" in (out / "report.html").read_text()[:200].lower()
    j = Journal(out / "journal.db", create=False)
    try:
        assert len(j.trades()) == len(trades)
    finally:
        j.close()


def test_paper_run_where_the_risk_engine_binds_is_consistent_and_lists_every_difference(tmp_path):
    res = _run(tmp_path, {"max_daily_loss": 0.004, "max_drawdown": 0.02})
    assert res.exit_code == 0, res.output
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert not parity["agree"] and parity["consistent"] and parity["unexplained"] == []
    assert parity["risk_interventions"] and parity["first_intervention"]
    first = pd.Timestamp(parity["first_intervention"])
    for d in parity["differences"]:
        assert pd.Timestamp((d.get("paper") or d["backtest"])["entry_time"]) > first
    assert "consistent" in res.output


def test_a_run_that_trades_unlike_its_backtest_fails_the_parity_check(tmp_path, monkeypatch):
    import tradebot.live.runner as runner

    real = runner.reference_backtest

    def wrong_reference(bars, **kwargs):  # as if the paper broker filled differently from the engine
        return real(bars, **{**kwargs, "seed": kwargs["seed"] + 1})

    monkeypatch.setattr(runner, "reference_backtest", wrong_reference)
    res = _run(tmp_path, LOOSE_RISK.model_dump(mode="json"))
    assert res.exit_code == 1, res.output
    assert "disagree" in res.output
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["unexplained"] and not parity["consistent"]
    assert (tmp_path / "out" / "report.html").is_file()  # the session's files are written all the same


def _trades(rows):
    base = {"exit_reason": "signal", "stop_price": 90.0, "take_profit_price": 120.0, "entry_costs": 1.0,
            "exit_costs": 1.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_compare_trades_names_missing_extra_and_changed_trades():
    t0, t1, t2 = (pd.Timestamp(f"2021-03-01 09:{m}", tz="Asia/Kolkata") for m in ("20", "40", "55"))
    paper = _trades([
        {"entry_time": t0, "exit_time": t1, "side": "long", "qty": 10.0, "entry_price": 100.0, "exit_price": 101.0,
         "pnl": 8.0},
        {"entry_time": t2, "exit_time": t2, "side": "short", "qty": 5.0, "entry_price": 100.0, "exit_price": 99.0,
         "pnl": 3.0}])
    same = compare_trades(paper, paper.copy())
    assert same.agree and same.consistent and "equal" in same.summary()
    nearly = paper.copy()
    nearly["exit_price"] *= 1 + 1e-12
    assert compare_trades(paper, nearly).agree  # rounding of the stream's ATR is not a difference

    backtest = _trades([
        {"entry_time": t0, "exit_time": t1, "side": "long", "qty": 12.0, "entry_price": 100.0, "exit_price": 101.0,
         "pnl": 10.0},
        {"entry_time": t1, "exit_time": t2, "side": "long", "qty": 5.0, "entry_price": 100.0, "exit_price": 99.0,
         "pnl": -5.0}])
    p = compare_trades(paper, backtest)
    kinds = [d["kind"] for d in p.differences]
    assert kinds == ["mismatch", "missing_in_paper", "extra_in_paper"]
    assert p.differences[0]["fields"] == ["qty", "pnl"]
    assert not p.consistent and len(p.unexplained) == 3

    # a risk intervention at 09:30 explains what comes after it, not the trade entered before it
    p = compare_trades(paper, backtest, [{"time": pd.Timestamp("2021-03-01 09:30", tz="Asia/Kolkata").isoformat()}])
    assert [d["kind"] for d in p.unexplained] == ["mismatch"]
    json.dumps(p.to_dict())  # the file is plain JSON
