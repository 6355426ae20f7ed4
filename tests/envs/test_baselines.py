"""tradebot.envs.baselines: no lookahead, seeded reproducibility, and action sequences the engine accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tradebot.envs.backtest import run_backtest
from tradebot.envs.baselines import BASELINES, get_baseline, replay_data
from tradebot.envs.engine import Action
from tradebot.envs.engine_config import EngineConfig
from tradebot.features.bars import load_bars
from tradebot.core.nse_time import session_day
from tradebot.core.errors import UserInputError

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
NAMES = list(BASELINES)
NO_STOPS = EngineConfig(stop_loss=False, take_profit_atr_mult=None)


@pytest.fixture(scope="module")
def bars_5m():
    return load_bars(SAMPLE / "NSE_NIFTY50-INDEX_5m.csv.gz")


@pytest.fixture(scope="module")
def bars_1d():
    return load_bars(SAMPLE / "NSE_SBIN-EQ_1d.csv.gz")


def _cut_points(bars, k: int, seed: int = 7) -> list[int]:
    """Random cuts plus the awkward ones: first bars, session ends and starts, the 2021-02-24 outage."""
    n = len(bars)
    rng = np.random.default_rng(seed)
    cuts = set(rng.integers(1, n - 1, size=k).tolist()) | {0, 1, 2, 30, n - 2}
    day = session_day(bars.index)
    ends = np.flatnonzero(day[1:] != day[:-1])
    cuts |= set(ends[:: max(1, len(ends) // 6)].tolist()) | set((ends[:: max(1, len(ends) // 6)] + 1).tolist())
    outage = np.flatnonzero(bars.index.strftime("%Y-%m-%d") == "2021-02-24")
    if len(outage):
        cuts |= {int(outage[-1]), int(outage[-1]) + 1, int(outage[-1]) + 2}
    return sorted(c for c in cuts if 0 <= c < n)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("config", [EngineConfig(), NO_STOPS, EngineConfig(product="equity_delivery")],
                         ids=["default", "no_stops", "delivery"])
def test_baseline_action_at_t_unchanged_when_later_bars_removed(bars_5m, name, config):
    baseline = BASELINES[name]
    bars = bars_5m.slice(0, 4000)  # covers the 2021-02-24 outage session
    full = baseline(bars, config, seed=3)
    for t in _cut_points(bars, 25):
        prefix = baseline(bars.slice(0, t + 1), config, seed=3)
        assert np.array_equal(prefix, full[: t + 1]), f"{name}: action {t} depends on bars after {t}"


@pytest.mark.parametrize("name", NAMES)
def test_baseline_daily_no_lookahead(bars_1d, name):
    baseline = BASELINES[name]
    full = baseline(bars_1d, seed=1)
    for t in _cut_points(bars_1d, 15):
        assert np.array_equal(baseline(bars_1d.slice(0, t + 1), seed=1), full[: t + 1])


@pytest.mark.parametrize("name", NAMES)
def test_baseline_output_is_one_int8_action_per_bar(bars_5m, name):
    actions = BASELINES[name](bars_5m)
    assert actions.dtype == np.int8 and actions.shape == (len(bars_5m),)
    assert set(np.unique(actions)) <= {int(a) for a in Action}
    if name != "tsmom":  # 12-1 month momentum needs a year of sessions: six months of 5m bars never trade
        assert (actions != Action.HOLD).any(), f"{name} never trades on the sample"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("config", [EngineConfig(), NO_STOPS], ids=["default", "no_stops"])
def test_baseline_actions_are_valid_under_their_config(bars_5m, name, config):
    bars = bars_5m.slice(0, 2500)  # January to mid-February: full sessions only
    actions = BASELINES[name](bars, config, seed=5)
    run_config = BASELINES[name].engine_config(config, bars)  # what it runs under (its overrides, its sizing)
    assert run_backtest(bars, actions, run_config).invalid_actions == 0
    # over the whole sample, only the early-ended 2021-02-24 session may cost one no-op close
    full = BASELINES[name](bars_5m, config, seed=5)
    assert run_backtest(bars_5m, full, BASELINES[name].engine_config(config, bars_5m)).invalid_actions <= 1


def test_baselines_under_a_different_config_only_waste_closes(bars_5m):
    # generated for a stop-less engine, replayed with stops: the engine closes positions the
    # baseline still holds, so some closes become counted no-ops, never wrong entries
    actions = BASELINES["sma_crossover"](bars_5m, NO_STOPS)
    result = run_backtest(bars_5m, actions, EngineConfig())
    closes = int(np.isin(actions, [Action.CLOSE_LONG, Action.CLOSE_SHORT]).sum())
    assert 0 < result.invalid_actions <= closes + 2


def test_random_baseline_reproducible_by_seed(bars_5m):
    random = BASELINES["random"]
    a = random(bars_5m, seed=42)
    assert np.array_equal(a, random(bars_5m, seed=42))
    assert not np.array_equal(a, random(bars_5m, seed=43))


def test_intraday_long_enters_once_per_session_long_only(bars_5m):
    actions = BASELINES["intraday_long"](bars_5m, NO_STOPS)
    day = session_day(bars_5m.index)
    buys = day[actions == Action.BUY_LONG]
    assert len(buys) == len(np.unique(buys)) >= len(np.unique(day)) - 2
    assert not np.isin(actions, [Action.SELL_SHORT, Action.CLOSE_SHORT]).any()
    result = run_backtest(bars_5m, actions, NO_STOPS)
    assert set(result.trades["exit_reason"].astype(str)) == {"square_off"}  # the engine closes it


def test_intraday_long_first_fill_at_second_bar_of_a_session(bars_5m):
    actions = BASELINES["intraday_long"](bars_5m, NO_STOPS)
    day = session_day(bars_5m.index)
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    later = starts[starts > 100][:5]  # after the ATR warm-up
    assert (actions[later] == Action.BUY_LONG).all()


def test_no_entry_that_would_fill_on_or_after_square_off(bars_5m):
    config = EngineConfig(square_off="15:00")
    _, no_entry = replay_data(bars_5m, config)
    minute = bars_5m.index.hour * 60 + bars_5m.index.minute
    assert no_entry[minute >= 14 * 60 + 55].all()
    for name in NAMES:
        actions = BASELINES[name](bars_5m, config, seed=0)
        entries = np.isin(actions, [Action.BUY_LONG, Action.SELL_SHORT])
        assert not (entries & (minute >= 14 * 60 + 55)).any(), name


def test_delivery_product_never_shorts(bars_1d):
    config = EngineConfig(product="equity_delivery")
    for name in NAMES:
        actions = BASELINES[name](bars_1d, config, seed=0)
        assert not np.isin(actions, [Action.SELL_SHORT, Action.CLOSE_SHORT]).any(), name


def test_unknown_strategy_lists_the_valid_names():
    with pytest.raises(UserInputError) as err:
        get_baseline("sma")
    for name in NAMES:
        assert name in str(err.value)


def test_the_former_name_hold_is_refused_with_the_new_one():
    with pytest.raises(UserInputError) as err:
        get_baseline("hold")
    assert str(err.value) == "unknown strategy 'hold' (renamed: use buy_and_hold)"


def test_baseline_parameters_override_and_unknown_ones_are_refused(bars_5m):
    sma = BASELINES["sma_crossover"]
    fast = sma(bars_5m, fast=5, slow=10)
    assert not np.array_equal(fast, sma(bars_5m))
    with pytest.raises(UserInputError, match="unknown parameter"):
        sma(bars_5m, window=3)
    with pytest.raises(UserInputError, match="fast < slow"):
        sma(bars_5m, fast=10, slow=5)


@pytest.mark.parametrize("name", NAMES)
def test_baselines_survive_tiny_inputs(bars_5m, name):
    for n in (1, 2, 5):
        actions = BASELINES[name](bars_5m.slice(0, n))
        assert actions.shape == (n,)


def test_buy_and_hold_is_the_passive_benchmark_whatever_the_run_config(bars_5m):
    """`buy_and_hold` buys once and holds to the end, unlevered, even when the run's product is intraday."""
    hold = BASELINES["buy_and_hold"]
    config = hold.engine_config(EngineConfig())  # intraday defaults in, delivery out
    assert config.product == "equity_delivery" and not config.flat_at_session_end
    result = run_backtest(bars_5m, hold(bars_5m, EngineConfig()), config)
    trades = result.trades
    assert len(trades) == 1 and trades["exit_reason"].iloc[0] == "end_of_data"
    entry = trades["entry_price"].iloc[0]
    assert entry >= bars_5m.frame["open"].iloc[1]  # filled at a bar's open (plus slippage), never earlier
    # Fully invested at leverage 1: equity tracks the index's own move, less costs and slippage.
    qty = trades["qty"].iloc[0]
    assert qty * entry <= EngineConfig().initial_cash
    assert qty * entry > 0.95 * EngineConfig().initial_cash
    last_close = bars_5m.frame["close"].iloc[-1]
    exit_price = trades["exit_price"].iloc[0]  # closed at the last close, less sell slippage
    assert 0.999 * last_close < exit_price < last_close
    expected = EngineConfig().initial_cash + qty * (exit_price - entry) - trades["costs"].iloc[0]
    assert result.equity.iloc[-1] == pytest.approx(expected, rel=1e-9)


def test_tsmom_is_the_sign_of_the_12_1_month_return_on_session_closes(bars_1d):
    actions = BASELINES["tsmom"](bars_1d, EngineConfig(product="index_futures", carry_overnight=True,
                                                       stop_loss=False, take_profit_atr_mult=None))
    close = bars_1d.column("close")
    res = run_backtest(bars_1d, actions, EngineConfig(product="index_futures", carry_overnight=True, stop_loss=False,
                                                     take_profit_atr_mult=None))
    assert res.invalid_actions == 0 and (actions[:252] == Action.HOLD).all()  # nothing before a year of closes
    pos = res.positions.to_numpy()
    for t in range(260, len(close) - 1, 37):  # the position held after bar t+1 follows the signal at bar t
        mom = close[t - 21] / close[t - 252] - 1.0  # sessions before bar t's own (daily: the bars before)
        if pos[t + 1] != 0 and pos[t] == pos[t + 1]:
            assert np.sign(pos[t + 1]) == np.sign(mom)


def test_vol_target_hold_holds_about_its_target_volatility_after_costs(bars_1d):
    from tradebot.envs.performance import metrics_from_result
    from tradebot.envs.window import BacktestWindow

    window = BacktestWindow.from_dates(bars_1d, "2021-06-01")
    for target in (0.10, 0.20):
        res, cfg = window.run_baseline(BASELINES["vol_target_hold"], EngineConfig(), target_vol=target)
        m = metrics_from_result(res, "1d")
        assert res.invalid_actions == 0 and cfg.product == "equity_delivery" and not cfg.stop_loss
        # the ATR estimate of volatility is rough: realised volatility within a factor of two of the target
        assert target / 2 < m["volatility"] < target * 2, (target, m["volatility"])
        assert m["trades"] < 60  # resized on drift only, checked weekly: not a daily rebalance
