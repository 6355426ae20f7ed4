"""TradingEnv: Gymnasium contract, parity with the backtester, rewards, episodes (the vector env: test_vector_env.py)."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import tradebot.envs as envs  # noqa: F401  (registers tradebot/Trading-v0)
from tradebot.envs.backtest import run_backtest
from tradebot.envs.engine import Action, reward_reset, reward_step
from tradebot.envs.market_data import session_layout
from tradebot.envs.trading_env import (
    ENV_ID,
    POSITION_FEATURES,
    DifferentialSharpe,
    EnvConfig,
    NetLogReturn,
    TradingEnv,
    make_reward,
)
from tradebot.features.bars import load_bars
from tradebot.core.errors import UserInputError

SAMPLE_5M = "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"
SAMPLE_1D = "data/sample/NSE_SBIN-EQ_1d.csv.gz"


@pytest.fixture(scope="module")
def bars():
    return load_bars(SAMPLE_5M)


def _random_actions(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.6, 0, rng.integers(1, 5, n)).astype(np.int64)


def test_make_with_path_and_default_settings_passes_check_env():
    env = gym.make(ENV_ID, data=SAMPLE_5M)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert set(info) >= {"equity", "position", "trades", "invalid_actions"}


def test_make_with_bars_object(bars):
    env = gym.make(ENV_ID, data=bars.slice(0, 2000), config={"episode": {"length": 100}})
    env.reset(seed=1)
    obs, r, terminated, truncated, info = env.step(int(Action.BUY_LONG))
    assert np.isfinite(r) and not terminated and not truncated


def test_step_before_reset_raises(bars):
    env = TradingEnv(bars.slice(0, 1000), config={"episode": {"length": 10}})
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_same_seed_same_trajectory_different_seed_other_start():
    def run(seed: int):
        env = gym.make(ENV_ID, data=SAMPLE_5M, config={"episode": {"length": 200}})
        out = []
        obs, info = env.reset(seed=seed)
        out.append((obs, info["bar"]))
        for a in _random_actions(500, 11):
            obs, r, te, tr, info = env.step(int(a))
            out.append((obs, r, info["equity"], info["bar"]))
            if te or tr:
                obs, info = env.reset()
                out.append((obs, info["bar"]))
        return out

    a, b = run(5), run(5)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert run(6)[0][1] != a[0][1]


def test_env_matches_backtester_trades_and_equity(bars):
    env = TradingEnv(bars, config={"episode": {"length": None}})
    w = env.warmup
    n = len(bars)
    env.reset(options={"start": w})
    acts = _random_actions(n - 1 - w, 21)
    equity = []
    for i, a in enumerate(acts):
        obs, r, terminated, truncated, info = env.step(int(a))
        equity.append(info["equity"])
        assert truncated == (i == len(acts) - 1) and not terminated
    full = np.zeros(n, dtype=np.int64)
    full[w:n - 1] = acts
    bt = run_backtest(bars, full, env.config.engine)
    np.testing.assert_array_equal(np.array(equity), bt.equity.to_numpy()[w + 1:])
    assert len(bt.trades) > 100
    pd.testing.assert_frame_equal(env.trades, bt.trades)
    assert info["trades"] == len(bt.trades) and info["invalid_actions"] == bt.invalid_actions
    assert info["costs"] == pytest.approx(bt.costs_total)


def test_observation_layout_and_position_features(bars):
    from tradebot.features.pipeline import FeaturePipeline

    no_exits = {"take_profit_atr_mult": None, "stop_loss": False}
    env = TradingEnv(bars, config={"episode": {"length": 50}, "engine": no_exits})
    pipeline = FeaturePipeline.for_bars(bars)
    k = len(pipeline.feature_names)
    assert env.feature_names[-len(POSITION_FEATURES):] == POSITION_FEATURES
    assert env.feature_names[:k] == tuple(pipeline.feature_names)  # the default observation is the pipeline
    start = 30 + 75 * 8  # 11:45 on the ninth (full) session, past the pipeline's warm-up
    assert bars.index[start].strftime("%H:%M") == "11:45"
    obs, _ = env.reset(options={"start": start})
    np.testing.assert_array_equal(obs[:k], pipeline.transform(bars).iloc[start].to_numpy(dtype=np.float32))
    assert tuple(obs[k:k + 3]) == (0.0, 0.0, 0.0)
    assert tuple(obs[k + 4:]) == (1.0, 1.0, 1.0, 0.0, 0.0)  # flat: hold or enter
    c = bars.frame["close"].to_numpy()
    obs, *_ = env.step(int(Action.BUY_LONG))
    obs, *_ = env.step(int(Action.HOLD))
    entry = env._state[2]
    atr = env._p.data[start + 2, 4]
    assert obs[k] == 1.0 and obs[k + 2] == 1.0
    assert obs[k + 1] == pytest.approx((c[start + 2] - entry) / atr, rel=1e-5)
    # time left: bar start+2 is 11:55, ending 12:00; square-off 15:15 -> (915 - 720) / (915 - 555)
    assert obs[k + 3] == pytest.approx((915 - 720) / 360, rel=1e-6)
    assert tuple(obs[k + 4:]) == (1.0, 0.0, 0.0, 1.0, 0.0)  # long: hold or close it


def test_window_episode_has_configured_length(bars):
    env = TradingEnv(bars, config={"episode": {"mode": "window", "length": 37}})
    env.reset(seed=2)
    steps, done = 0, False
    while not done:
        _, _, te, tr, _ = env.step(0)
        steps += 1
        done = te or tr
    assert steps == 37 and tr and not te


def test_session_episode_is_one_whole_session_and_ends_flat(bars):
    env = TradingEnv(bars, config={"episode": {"mode": "session"}})
    day, _ = session_layout(bars.index)
    for seed in range(3):
        _, info = env.reset(seed=seed)
        first = info["bar"]
        te = tr = False
        rng = np.random.default_rng(seed)
        while not (te or tr):
            _, _, te, tr, info = env.step(int(rng.integers(0, 5)))
        last = info["bar"]
        assert te and not tr and info["position"] == 0
        assert day[first] == day[last] and (last == len(bars) - 1 or day[last + 1] != day[last])
        assert first == env.warmup or day[first - 1] != day[first]


def test_make_with_default_settings_on_short_daily_data():
    env = gym.make(ENV_ID, data=SAMPLE_1D)  # 1241 bars: the default episode length shrinks to fit
    obs, info = env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, te, tr, _ = env.step(0)
        steps += 1
        done = te or tr
    assert steps == len(env.unwrapped.bars) - 1 - env.unwrapped.warmup


def test_daily_delivery_env_runs(tmp_path):
    env = gym.make(ENV_ID, data=SAMPLE_1D, config={"engine": {"product": "equity_delivery"}, "episode": {"length": 100}})
    obs, _ = env.reset(seed=0)
    assert obs[-1] == 0.0  # no intraday clock on daily bars
    for a in _random_actions(100, 1):
        obs, r, te, tr, info = env.step(int(a))
    assert tr and info["position"] >= 0


def test_net_log_return_rewards_sum_to_log_growth(bars):
    env = TradingEnv(bars, config={"episode": {"length": 400}})
    _, info = env.reset(seed=4)
    e0, total = info["equity"], 0.0
    for a in _random_actions(400, 8):
        _, r, te, tr, info = env.step(int(a))
        total += r
    assert total == pytest.approx(math.log(info["equity"] / e0), rel=1e-9)


def test_differential_sharpe_hand_computed():
    # eta = 0.5. Step 1: R = 0.01, A = B = 0 -> variance 0 -> D = 0; then A = 0.005, B = 0.5e-4.
    # Step 2: R = -0.02: dA = -0.025, dB = 4e-4 - 5e-5 = 3.5e-4, var = 5e-5 - 2.5e-5 = 2.5e-5
    #   D = (5e-5 x -0.025 - 0.5 x 0.005 x 3.5e-4) / (2.5e-5)^1.5 = (-1.25e-6 - 8.75e-7) / 1.25e-7 = -17
    rp = DifferentialSharpe(eta=0.5).vector()
    rs = np.zeros(4)
    reward_reset(rs, 100.0)
    assert reward_step(rp, rs, 100.0, 101.0, 0.0, 100.0, 100.0) == 0.0
    assert rs[0] == pytest.approx(0.005) and rs[1] == pytest.approx(5e-5)
    assert reward_step(rp, rs, 101.0, 101.0 * 0.98, 0.0, 100.0, 100.0) == pytest.approx(-17.0, rel=1e-9)


def test_drawdown_and_turnover_penalties_hand_computed():
    rp = NetLogReturn(drawdown_penalty=2.0, turnover_penalty=0.01).vector()
    rs = np.zeros(4)
    reward_reset(rs, 100.0)
    # 100 -> 90: drawdown 0 -> 0.10, penalty 2 x 0.10; turnover 50 on 100 equity: 0.01 x 0.5
    assert reward_step(rp, rs, 100.0, 90.0, 50.0, 100.0, 100.0) == pytest.approx(math.log(0.9) - 0.2 - 0.005)
    # 90 -> 95: drawdown shrinks to 0.05: no drawdown penalty
    assert reward_step(rp, rs, 90.0, 95.0, 0.0, 100.0, 100.0) == pytest.approx(math.log(95 / 90))
    # 95 -> 80: drawdown 0.05 -> 0.20: penalty 2 x 0.15
    assert reward_step(rp, rs, 95.0, 80.0, 0.0, 100.0, 100.0) == pytest.approx(math.log(80 / 95) - 0.3)


def test_benchmark_reward_is_the_return_in_excess_of_holding_hand_computed():
    # weight 1: equity 100 -> 101 while the instrument goes 200 -> 204 (+2 %): log(1.01) - log(1.02)
    rp = NetLogReturn(benchmark=1.0).vector()
    rs = np.zeros(4)
    reward_reset(rs, 100.0)
    assert reward_step(rp, rs, 100.0, 101.0, 0.0, 200.0, 204.0) == pytest.approx(math.log(1.01) - math.log(1.02))
    # flat while it falls 2 %: the overlay earns log(1) - log(0.98)
    assert reward_step(rp, rs, 101.0, 101.0, 0.0, 204.0, 199.92) == pytest.approx(-math.log(0.98))
    # weight 0.5 on differential Sharpe: the excess simple return is 0.01 - 0.5 x 0.02 = 0 -> A stays 0
    rp = DifferentialSharpe(eta=0.5, benchmark=0.5).vector()
    reward_reset(rs, 100.0)
    reward_step(rp, rs, 100.0, 101.0, 0.0, 200.0, 204.0)
    assert rs[0] == pytest.approx(0.0, abs=1e-15)


def test_reward_registry_and_config():
    assert isinstance(make_reward("differential_sharpe", eta=0.1), DifferentialSharpe)
    with pytest.raises(UserInputError, match="unknown reward"):
        make_reward("sharpe")
    cfg = EnvConfig.model_validate({"reward": {"name": "differential_sharpe", "eta": 0.2, "drawdown_penalty": 1.0}})
    assert cfg.reward == DifferentialSharpe(eta=0.2, drawdown_penalty=1.0)
    with pytest.raises(Exception):
        EnvConfig.model_validate({"reward": {"name": "net_log_return", "eta": 0.2}})  # eta is not its parameter


def test_env_config_from_yaml(tmp_path, bars):
    path = tmp_path / "env.yaml"
    path.write_text("env:\n  episode: {mode: session}\n  engine: {product: index_futures, lot_size: 50}\n"
                    "  reward: {name: differential_sharpe, eta: 0.02}\n")
    env = TradingEnv(bars.slice(0, 1000), config=str(path))
    assert env.config.engine.lot_size == 50 and env.config.episode.mode == "session"
    path.write_text("env:\n  episode: {lenght: 5}\n")
    with pytest.raises(UserInputError, match="did you mean 'length'"):
        TradingEnv(bars.slice(0, 1000), config=str(path))


def test_features_argument_frame_array_and_transform(bars):
    data = bars.slice(0, 800)
    close = data.frame["close"]
    frame = pd.DataFrame({"r1": np.log(close).diff(), "r2": np.log(close).diff(2)}, index=data.index)

    class Pipeline:
        def transform(self, b):
            return frame

    for features in (frame, frame.to_numpy(), Pipeline()):
        env = TradingEnv(data, features=features, config={"episode": {"length": 100}})
        assert env.observation_space.shape == (2 + len(POSITION_FEATURES),)
        assert env.warmup == 14  # ATR(14) is the longest warm-up here
        obs, _ = env.reset(options={"start": 100})
        assert obs[1] == np.float32(frame["r2"].iloc[100])
    with pytest.raises(UserInputError, match="index does not match"):
        TradingEnv(data, features=frame.iloc[1:])
    holes = frame.copy()
    holes.iloc[300, 0] = np.nan
    with pytest.raises(UserInputError, match="after the warm-up"):
        TradingEnv(data, features=holes)


def test_episode_longer_than_data_is_a_user_error(bars):
    with pytest.raises(UserInputError, match="episode.length"):
        TradingEnv(bars.slice(0, 700), config={"episode": {"length": 1000}})


def test_render_ansi(bars):
    env = TradingEnv(bars.slice(0, 1000), config={"episode": {"length": 10}}, render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    assert "equity=" in env.render()
