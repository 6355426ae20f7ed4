"""``tradebot backtest`` end to end on the sample: files, metrics keys, report, --actions, --compare."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tradebot.envs.baselines import BASELINES
from tradebot.envs.performance import M
from tradebot.features.bars import load_bars

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
SAMPLE_5M = SAMPLE / "NSE_NIFTY50-INDEX_5m.csv.gz"


@pytest.fixture
def cli():
    """Run ``tradebot ARGS`` in-process; any exception but SystemExit would be a user-visible traceback."""
    from tradebot.cli import main

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """The first 10 sessions of the 5m sample (750 bars), as a plain CSV."""
    with gzip.open(SAMPLE_5M, "rt") as fh:
        lines = fh.read().splitlines()[:751]
    path = tmp_path_factory.mktemp("data") / "NSE_NIFTY50-INDEX_5m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_backtest_strategy_on_sample_writes_all_outputs(cli, tmp_path):
    out = tmp_path / "run" / "sma"
    result = cli("backtest", "--data", SAMPLE_5M, "--strategy", "sma_crossover", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["equity.csv", "metrics.json", "report.html", "trades.csv"]
    assert "Sharpe" in result.stdout and "report.html" in result.stdout

    payload = json.loads((out / "metrics.json").read_text())
    assert tuple(payload["metrics"]) == M.ALL
    assert all(isinstance(v, (int, float)) for v in payload["metrics"].values())
    assert payload["run"]["strategy"] == "sma_crossover" and payload["run"]["timeframe"] == "5m"
    assert payload["run"]["engine"]["initial_cash"] == 1_000_000.0

    bars = load_bars(SAMPLE_5M)
    equity = pd.read_csv(out / "equity.csv")
    assert list(equity.columns[:2]) == ["timestamp", "equity"] and len(equity) == len(bars)
    assert equity["equity"].iloc[-1] == pytest.approx(payload["metrics"][M.FINAL_EQUITY])
    trades = pd.read_csv(out / "trades.csv")
    assert len(trades) == payload["metrics"][M.TRADES] > 0
    assert {"entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "costs", "pnl",
            "exit_reason"} <= set(trades.columns)
    assert trades["pnl"].sum() == pytest.approx(payload["metrics"][M.FINAL_EQUITY] - 1_000_000.0, rel=1e-6)

    html = (out / "report.html").read_text()
    assert 0 < (out / "report.html").stat().st_size < 10_000_000
    assert not re.search(r"<script[^>]+src\s*=\s*[\"']?(https?:)?//", html, re.I), "report loads a remote script"
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?(https?:)?//", html, re.I), "report loads a remote stylesheet"
    assert "Plotly.newPlot" in html and html.count("Plotly.newPlot") >= 2  # main chart + monthly heatmap
    for needle in ("Equity", "Drawdown (underwater)", "and trades", "Monthly returns", "long entry",
                   "Configuration", "sma_crossover", "Worst 30-day drawdown"):
        assert needle in html, needle
    assert not list(out.glob(".*.tmp")), "temp files left behind"


def test_backtest_actions_csv_fills_at_next_open(cli, tmp_path, small_data):
    bars = load_bars(small_data)
    idx = bars.index
    rows = [(idx[100], "BUY_LONG"), (idx[110], "close_long"), (idx[200], "SELL_SHORT"), (idx[205], "CLOSE_SHORT"),
            (idx[300], "HOLD")]
    actions = tmp_path / "actions.csv"
    actions.write_text("timestamp,action\n" + "".join(f"{t.isoformat()},{a}\n" for t, a in rows))
    out = tmp_path / "mine"
    config = tmp_path / "engine.yaml"
    config.write_text("engine:\n  stop_loss: false\n  take_profit_atr_mult: null\n  initial_cash: 500000\n")
    result = cli("backtest", "--data", small_data, "--actions", actions, "--out", out, "--config", config)
    assert result.exit_code == 0, result.output
    trades = pd.read_csv(out / "trades.csv")
    assert list(trades["side"]) == ["long", "short"]
    assert list(trades["entry_time"]) == [idx[101].isoformat(), idx[201].isoformat()]
    assert list(trades["exit_time"]) == [idx[111].isoformat(), idx[206].isoformat()]
    assert trades["entry_price"].iloc[0] >= bars.frame["open"].iloc[101]  # bought at the open, plus slippage
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["run"]["engine"]["initial_cash"] == 500000.0
    assert payload["metrics"][M.INVALID_ACTIONS] == 0


@pytest.mark.parametrize("content, needles", [
    ("timestamp,action\n{t0},BUY_LONG\n{t1},BUY\n", ("line 3", "unknown action 'BUY'", "BUY_LONG", "CLOSE_SHORT")),
    ("timestamp,action\n{t0},BUY_LONG\n2021-01-01T09:17:00+05:30,CLOSE_LONG\n", ("line 3", "not a bar of the data")),
    ("timestamp,action\n{t0},HOLD\n2035-01-01T09:15:00+05:30,HOLD\n", ("line 3", "not a bar")),
    ("timestamp,action\n{t0},HOLD\nyesterday,HOLD\n", ("line 3", "cannot parse timestamp")),
    ("timestamp,action\n2021-01-01T09:15:00,HOLD\n", ("line 2", "no time zone")),
    ("timestamp,action\n{t0},HOLD\n{t0},BUY_LONG\n", ("line 3", "appears twice")),
    ("time,act\n{t0},HOLD\n", ("missing column", "timestamp,action")),
    ("", ("empty",)),
])
def test_backtest_actions_csv_errors_exit_2_one_line_nothing_written(cli, tmp_path, small_data, content, needles):
    bars = load_bars(small_data)
    actions = tmp_path / "bad.csv"
    actions.write_text(content.format(t0=bars.index[0].isoformat(), t1=bars.index[1].isoformat()))
    out = tmp_path / "out"
    result = cli("backtest", "--data", small_data, "--actions", actions, "--out", out)
    line = _one_error_line(result, *needles)
    assert "bad.csv" in line or "empty" in line
    assert not out.exists(), "nothing may be written on bad input"


def test_backtest_compare_prints_one_table_and_writes_files(cli, tmp_path, small_data):
    out = tmp_path / "cmp"
    result = cli("backtest", "--data", small_data, "--compare", "--out", out)
    assert result.exit_code == 0, result.output
    for name in BASELINES:
        assert name in result.stdout
    for label in ("Sharpe", "Sortino", "Max drawdown", "Win rate", "Costs paid"):
        assert label in result.stdout
    table = pd.read_csv(out / "compare.csv", index_col="strategy")
    assert list(table.index) == list(BASELINES) and list(table.columns) == list(M.ALL)
    payload = json.loads((out / "compare.json").read_text())
    assert set(payload["strategies"]) == set(BASELINES)
    assert tuple(payload["strategies"]["random"]["metrics"]) == M.ALL
    assert payload["run"]["engine"]["product"] == "equity_intraday"


def test_backtest_compare_without_out_only_prints(cli, tmp_path, small_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("backtest", "--data", small_data, "--compare")
    assert result.exit_code == 0, result.output
    assert "buy_and_hold" in result.stdout and list(tmp_path.iterdir()) == []


def test_backtest_random_seed_is_reproducible(cli, tmp_path, small_data):
    runs = []
    for i, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"r{i}"
        assert cli("backtest", "--data", small_data, "--strategy", "random", "--seed", seed, "--out", out).exit_code == 0
        runs.append((out / "trades.csv").read_text())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_backtest_unknown_strategy_exit_2_lists_names(cli, tmp_path, small_data):
    out = tmp_path / "x"
    result = cli("backtest", "--data", small_data, "--strategy", "sma", "--out", out)
    _one_error_line(result, "unknown strategy 'sma'", *BASELINES)
    assert not out.exists()


def test_backtest_former_strategy_name_exit_2_names_the_new_one(cli, tmp_path, small_data):
    out = tmp_path / "x"
    result = cli("backtest", "--data", small_data, "--strategy", "hold", "--out", out)
    _one_error_line(result, "unknown strategy 'hold' (renamed: use buy_and_hold)")
    assert not out.exists()


def test_backtest_start_end_trade_only_the_period_after_a_warm_up(cli, tmp_path):
    out = tmp_path / "feb"
    result = cli("backtest", "--data", SAMPLE_5M, "--strategy", "sma_crossover", "--start", "2021-02-01",
                 "--end", "2021-03-01", "--out", out)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "metrics.json").read_text())
    run = payload["run"]
    assert run["start"] == "2021-02-01T09:15:00+05:30" and run["end"] < "2021-03-01" and run["warmup_bars"] > 1000
    equity = pd.read_csv(out / "equity.csv")
    assert equity["equity"].iloc[0] == 1_000_000.0 and equity["position"].iloc[0] == 0  # flat at the first bar
    assert len(equity) == run["bars"] == payload["metrics"][M.BARS]
    trades = pd.read_csv(out / "trades.csv")
    assert len(trades) > 0 and trades["entry_time"].min() > run["start"]


def test_compare_files_write_an_infinite_profit_factor_as_inf_and_null(tmp_path):
    from tradebot.envs.backtest_report import write_compare_files
    from tradebot.envs.performance import Metrics, compute_metrics

    index = pd.date_range("2021-01-01 09:15", periods=3, freq="5min", tz="Asia/Kolkata")
    winner = compute_metrics(pd.Series([100.0, 101.0, 102.0], index=index), timeframe="5m", initial_capital=100.0,
                             trade_pnl=[1.0, 1.0])
    mixed = compute_metrics(pd.Series([100.0, 101.0, 100.5], index=index), timeframe="5m", initial_capital=100.0,
                            trade_pnl=[1.0, -0.5])
    write_compare_files(tmp_path, {"winner": winner, "mixed": mixed}, {"winner": {}, "mixed": {"k": 1}}, {"seed": 0})
    table = pd.read_csv(tmp_path / "compare.csv", index_col="strategy")
    assert table.loc["winner", M.PROFIT_FACTOR] == float("inf") and table.loc["mixed", M.PROFIT_FACTOR] == 2.0
    payload = json.loads((tmp_path / "compare.json").read_text())
    assert payload["strategies"]["winner"]["metrics"][M.PROFIT_FACTOR] is None
    assert any("null in JSON" in n for n in payload["strategies"]["winner"]["notes"])
    assert Metrics.from_dict(payload["strategies"]["winner"])[M.PROFIT_FACTOR] == float("inf")
    assert payload["strategies"]["mixed"]["params"] == {"k": 1} and payload["run"] == {"seed": 0}


@pytest.mark.parametrize("yaml_text, needles", [
    ("engine:\n  initial_cassh: 5\n", ("unknown config key 'initial_cassh'", "initial_cash")),
    ("engine:\n  leverage: -1\n", ("leverage",)),
    ("engin:\n  leverage: 2\n", ("unknown config section 'engin'", "engine")),
    ("engine: [1, 2\n", ("not valid YAML",)),
    ("- 1\n- 2\n", ("expected a mapping",)),
])
def test_backtest_bad_config_exit_2_one_line(cli, tmp_path, small_data, yaml_text, needles):
    config = tmp_path / "engine.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "x"
    result = cli("backtest", "--data", small_data, "--strategy", "buy_and_hold", "--out", out, "--config", config)
    _one_error_line(result, "engine.yaml", *needles)
    assert not out.exists()


@pytest.mark.parametrize("args, needles", [
    (["--out", "{out}"], ("exactly one of",)),
    (["--strategy", "random", "--compare", "--out", "{out}"], ("exactly one of", "--strategy and --compare")),
    (["--strategy", "random"], ("needs --out",)),
])
def test_backtest_mode_errors(cli, tmp_path, small_data, args, needles):
    out = tmp_path / "x"
    result = cli("backtest", "--data", small_data, *[a.format(out=out) for a in args])
    _one_error_line(result, *needles)
    assert not out.exists()


def test_backtest_missing_data_file_exit_2(cli, tmp_path):
    result = cli("backtest", "--data", tmp_path / "nope.csv", "--strategy", "random", "--out", tmp_path / "x")
    _one_error_line(result, "nope.csv", "not found")


@pytest.mark.parametrize("name", ["CRYPTO_BTC-USD_5m.csv", "FX_EURUSD_5m.csv", "MCX_CRUDEOIL_5m.csv"])
def test_backtest_of_a_market_the_engine_does_not_model_exit_2_nothing_written(cli, tmp_path, small_data, name):
    """24x7 crypto, 24x5 FX or MCX bars would be squared off, charged and annualised as NSE equity: refused."""
    data = tmp_path / name
    data.write_text(small_data.read_text())
    out = tmp_path / "run"
    line = _one_error_line(cli("backtest", "--data", data, "--compare", "--out", out), name.split("_")[0],
                           "NSE/BSE sessions", "tradebot data check")
    assert "Traceback" not in line
    assert not out.exists()
    ok = tmp_path / "NFO_NIFTY-FUT_5m.csv"  # NSE's derivatives segment keeps NSE's sessions: accepted
    ok.write_text(small_data.read_text())
    assert cli("backtest", "--data", ok, "--strategy", "random", "--out", out).exit_code == 0


def test_backtest_help_lists_options_and_strategies(cli):
    result = cli("backtest", "--help")
    assert result.exit_code == 0
    for needle in ("--data", "--strategy", "--actions", "--compare", "--out", "--config", "--seed", "report.html",
                   *BASELINES):
        assert needle in result.output, needle


def test_report_thinning_keeps_extremes_and_candles_stay_in_session():
    import numpy as np

    from tradebot.envs.backtest_report import aggregate_candles, monthly_returns, thin_line

    bars = load_bars(SAMPLE_5M)
    close = bars.frame["close"]
    thin = thin_line(close, max_points=400)
    assert len(thin) <= 400 and thin.max() == close.max() and thin.min() == close.min()
    assert thin.index[0] == close.index[0] and thin.index[-1] == close.index[-1]
    candles, k = aggregate_candles(bars.frame, max_candles=1000)
    assert k == 10 and len(candles) <= 1300
    assert candles["high"].max() == bars.frame["high"].max() and candles["low"].min() == bars.frame["low"].min()
    assert set(candles.index.date) == set(bars.index.date)  # no candle spans two sessions
    table = monthly_returns(close / close.iloc[0] * 100.0, initial_capital=100.0)
    assert list(table.index) == [2021]
    assert np.isclose(table.loc[2021, "Year"], close.iloc[-1] / close.iloc[0] - 1.0)
    assert np.isclose(table.loc[2021, "Jan"], close[close.index.month == 1].iloc[-1] / close.iloc[0] - 1.0)
