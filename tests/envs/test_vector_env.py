"""BatchedTradingEnv, the vector env training samples from: step for step the same as single envs.

The reference is gymnasium's own ``SyncVectorEnv`` over ``TradingEnv`` copies (``gymnasium.make_vec(...,
vectorization_mode="sync")``) and, for one sub-env, a plain ``TradingEnv`` driven by hand: same
seeds and actions must give identical observations, rewards, terminated/truncated flags and infos,
through the next-step autoresets at episode ends.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import tradebot.envs as envs  # noqa: F401  (registers tradebot/Trading-v0 and its vector entry point)
from tradebot.core.errors import UserInputError
from tradebot.envs.backtest import run_backtest
from tradebot.envs.trading_env import ENV_ID, INFO_KEYS, BatchedTradingEnv, TradingEnv
from tradebot.features.bars import load_bars

SAMPLE_5M = "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"
SAMPLE_1M = "data/sample/NSE_NIFTY50-INDEX_1m.csv.gz"
SAMPLE_1D = "data/sample/NSE_SBIN-EQ_1d.csv.gz"


@pytest.fixture(scope="module")
def bars():
    return load_bars(SAMPLE_5M).slice(0, 2500)


def _actions(steps: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((steps, n)) < 0.6, 0, rng.integers(1, 5, (steps, n))).astype(np.int64)


def _assert_same_step(ref, got) -> None:
    for a, b in zip(ref[:4], got[:4]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    ref_info, info = ref[4], got[4]
    assert set(info) == set(ref_info) == set(INFO_KEYS) | {f"_{k}" for k in INFO_KEYS}
    for key in ref_info:
        assert info[key].dtype == ref_info[key].dtype, key
        np.testing.assert_array_equal(info[key], ref_info[key], err_msg=key)


def test_make_vec_builds_the_batched_env_with_next_step_autoreset(bars):
    vec = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", data=bars,
                       config={"episode": {"length": 50}})
    assert isinstance(vec, BatchedTradingEnv) and vec.num_envs == 4
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = vec.reset(seed=0)
    assert obs.shape == (4, *vec.single_observation_space.shape) and obs.dtype == np.float32
    assert vec.observation_space.contains(obs) and vec.action_space.shape == (4,)
    assert info["equity"].shape == (4,) and info["_equity"].all()


@pytest.mark.parametrize("config", [
    {"episode": {"mode": "window", "length": 40}},
    {"episode": {"mode": "session"}, "reward": {"name": "differential_sharpe", "eta": 0.05}},
    {"episode": {"mode": "window", "length": 25}, "engine": {"product": "index_futures", "lot_size": 25},
     "reward": {"name": "net_log_return", "drawdown_penalty": 1.0, "turnover_penalty": 0.001}},
], ids=["window", "session-differential-sharpe", "futures-penalties"])
def test_vector_env_equals_single_envs_step_for_step(bars, config):
    """The batched env against gymnasium's SyncVectorEnv of TradingEnvs: same seeds, same actions."""
    n = 6
    ref = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", data=bars, config=config)
    vec = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", data=bars, config=config)
    obs_ref, info_ref = ref.reset(seed=11)
    obs, info = vec.reset(seed=11)
    np.testing.assert_array_equal(obs, obs_ref)
    for key in info_ref:
        np.testing.assert_array_equal(info[key], info_ref[key])
    ends = 0
    for actions in _actions(400, n, 3):
        expected = ref.step(actions)
        got = vec.step(actions)
        _assert_same_step(expected, got)
        ends += int((expected[2] | expected[3]).sum())
    assert ends >= 2 * n  # several autoresets per sub-env were compared


def test_vector_sub_env_equals_a_single_env_driven_by_hand(bars):
    """Sub-env k of a vector seeded s is a TradingEnv seeded s + k; after an episode ends, the next step
    ignores its action and returns the new episode's first observation with reward 0."""
    config = {"episode": {"length": 30}}
    n, k, seed = 4, 2, 7
    vec = BatchedTradingEnv(bars, n, config=config)
    single = TradingEnv(bars, config=config)
    obs, _ = vec.reset(seed=seed)
    expected, _ = single.reset(seed=seed + k)
    np.testing.assert_array_equal(obs[k], expected)
    restart = False
    starts = [single.bar_index]
    for actions in _actions(200, n, 5):
        obs, reward, terminated, truncated, info = vec.step(actions)
        if restart:
            expected, _ = single.reset()
            starts.append(single.bar_index)
            r, te, tr = 0.0, False, False
        else:
            expected, r, te, tr, _ = single.step(int(actions[k]))
        np.testing.assert_array_equal(obs[k], expected)
        assert (reward[k], terminated[k], truncated[k], info["bar"][k]) == (r, te, tr, single.bar_index)
        restart = te or tr
    assert len(set(starts)) >= 5  # new random windows after every end


def test_vector_env_runs_several_instruments(bars):
    """Sub-envs split into blocks per instrument; each block equals TradingEnvs on its own bars."""
    minute = load_bars(SAMPLE_1M)
    config = {"episode": {"mode": "session"}}
    vec = BatchedTradingEnv([bars, minute], 5, config=config)
    assert vec.instrument_index.tolist() == [0, 0, 0, 1, 1]
    assert [len(b) for b in vec.bars] == [len(bars), len(minute)]
    singles = [TradingEnv(bars, config=config) for _ in range(3)] + [TradingEnv(minute, config=config)
                                                                     for _ in range(2)]
    ref = gym.vector.SyncVectorEnv([lambda e=e: e for e in singles])
    _, _ = ref.reset(seed=1)
    vec.reset(seed=1)
    ends = np.zeros(5, dtype=np.int64)
    for actions in _actions(500, 5, 2):
        expected = ref.step(actions)
        _assert_same_step(expected, vec.step(actions))
        ends += expected[2] | expected[3]
    assert ends[:3].min() > ends[3:].max() >= 1  # 75-bar sessions end more often than 375-bar ones
    assert len(set(vec.bar_index[:3].tolist())) > 1  # not copies of one window


def test_vector_env_matches_the_backtester(bars):
    """Three accounts over the whole data from the warm-up: equity bar by bar, trades, no-ops and costs
    are the backtester's for the same actions."""
    cfg = {"episode": {"length": None}, "engine": {"product": "index_futures", "lot_size": 25}}
    vec = BatchedTradingEnv(bars, 3, config=cfg)
    (w,) = vec.warmup
    n = len(bars)
    vec.reset(seed=0, options={"start": w})
    acts = _actions(n - 1 - w, 3, 1)
    equity = np.empty((len(acts), 3))
    for i, a in enumerate(acts):
        _, _, terminated, truncated, info = vec.step(a)
        equity[i] = info["equity"]
        assert truncated.all() == (i == len(acts) - 1) and not terminated.any()
    for j in range(3):
        full = np.zeros(n, dtype=np.int64)
        full[w:n - 1] = acts[:, j]
        bt = run_backtest(bars, full, vec.config.engine)
        np.testing.assert_array_equal(equity[:, j], bt.equity.to_numpy()[w + 1:])
        assert (info["trades"][j], info["invalid_actions"][j]) == (len(bt.trades), bt.invalid_actions)
        assert info["costs"][j] == pytest.approx(bt.costs_total)
        assert len(bt.trades) > 20


def test_vector_env_seeds_reset_mask_and_start_options(bars):
    config = {"episode": {"length": 20}}
    a, b = BatchedTradingEnv(bars, 8, config=config), BatchedTradingEnv(bars, 8, config=config)
    a.reset(seed=3)
    b.reset(seed=[3 + i for i in range(8)])
    np.testing.assert_array_equal(a.bar_index, b.bar_index)
    assert len(set(a.bar_index.tolist())) > 1  # every sub-env draws its own start
    for actions in _actions(50, 8, 9):
        _assert_same_step(a.step(actions), b.step(actions))
    before = b.bar_index
    mask = np.zeros(8, dtype=np.bool_)
    mask[[1, 4]] = True
    b.reset(options={"reset_mask": mask, "start": 900})
    after = b.bar_index
    assert after[1] == after[4] == 900 and (after[~mask] == before[~mask]).all()
    b.reset(options={"start": np.arange(800, 808)})
    assert b.bar_index.tolist() == list(range(800, 808))


def test_vector_env_errors_are_one_line_user_errors(bars):
    with pytest.raises(ResetNeeded):
        BatchedTradingEnv(bars, 2).step(np.zeros(2, dtype=np.int64))
    vec = BatchedTradingEnv(bars, 2, config={"episode": {"length": 20}})
    vec.reset(seed=0)
    with pytest.raises(UserInputError, match=r"expected \(2,\)"):
        vec.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(UserInputError, match="unknown reset option"):
        vec.reset(options={"starts": 5})
    with pytest.raises(UserInputError, match="2 sub-envs"):
        vec.reset(seed=[1, 2, 3])
    with pytest.raises(UserInputError, match="num_envs"):
        BatchedTradingEnv(bars, 0)
    with pytest.raises(UserInputError, match="below the 2 instruments"):
        BatchedTradingEnv([bars, bars], 1)
    with pytest.raises(UserInputError, match="other features"):  # an index next to a stock with volume
        BatchedTradingEnv([SAMPLE_5M, SAMPLE_1D], 2, config={"episode": {"length": 20}})
