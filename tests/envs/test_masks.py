"""Action masks are exactly the fill engine's validity rules, in every position state (flat, long,
short; shorts allowed or not; before, at and after square-off; intraday and carried products), the
same in the env and outside it (the live loop's ``observation_at``); the decision interval and the
minimum holding time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tradebot.envs.engine import N_ACTIONS, S_INVALID, Action, new_state, step_bar
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.market_data import market_data
from tradebot.envs.trading_env import MASK_FEATURES, TradingEnv, observation_at, valid_actions
from tradebot.features.bars import load_bars

H, BUY, SHORT, CLOSE_L, CLOSE_S = (int(a) for a in Action)
SAMPLE_5M = "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"
BARS = load_bars(SAMPLE_5M).slice(3000, 3300)  # four sessions of February 2021
ATR = np.full(len(BARS), 20.0)


def _config(product: str, allow_short: bool, stops: bool) -> EngineConfig:
    extra = {} if product == "equity_intraday" else {"carry_overnight": True}
    return EngineConfig(product=product, allow_short=allow_short, stop_loss=stops,
                        take_profit_atr_mult=3.0 if stops else None, **extra)


def _account_at(cfg: EngineConfig, data, t: int, side: int, opened: int):
    """The engine state after bar ``t`` holding ``side`` (opened at bar ``opened`` <= t), or None when the
    engine did not keep such a position (a stop, a take-profit or the square-off closed it)."""
    params, costs = cfg.params(), cfg.cost_vector()
    state = new_state(params)
    entry = {1: BUY, -1: SHORT}.get(side, H)
    for b in range(t + 1):
        step_bar(state, data, b, entry if b == opened and side else H, len(data), params, costs)
    held = np.sign(state[1])
    return state if held == side else None


@settings(max_examples=300, deadline=None)
@given(product=st.sampled_from(["equity_intraday", "index_futures", "equity_delivery"]), allow_short=st.booleans(),
       stops=st.booleans(), side=st.sampled_from([0, 1, -1]), t=st.integers(5, 298), back=st.integers(1, 40))
def test_mask_equals_the_engines_validity_in_every_state(product, allow_short, stops, side, t, back):
    cfg = _config(product, allow_short, stops)
    if side < 0 and not cfg.shorts_allowed:
        side = 0  # no short position can exist
    data = market_data(BARS, cfg, ATR)
    opened = max(1, t - back)
    state = _account_at(cfg, data, t, side, opened)
    if state is None:
        return  # the engine closed the position before t: that state does not exist
    params, costs = cfg.params(), cfg.cost_vector()
    held = t - state[5] if side else 0
    mask = valid_actions(state[1], held, data[t], cfg.shorts_allowed)
    for a in range(N_ACTIONS):
        trial = state.copy()
        step_bar(trial, data, t + 1, a, len(data), params, costs)
        accepted = trial[S_INVALID] == state[S_INVALID]
        assert mask[a] == accepted, (Action(a).name, side, t, product, allow_short)
    # the live loop's observation carries the same mask
    obs = observation_at(np.zeros(3), data[t], state[1], state[2], int(held), allow_short=cfg.shorts_allowed)
    np.testing.assert_array_equal(obs[-len(MASK_FEATURES):] > 0.5, mask)


def test_env_observations_carry_the_engines_mask_through_whole_episodes():
    cfg = {"engine": {"product": "equity_intraday", "allow_short": False}, "episode": {"mode": "session"}}
    env = TradingEnv(BARS, features=np.zeros((len(BARS), 2), dtype=np.float32), atr=ATR, config=cfg)
    rng = np.random.default_rng(0)
    full = [int(a) for a, b in env._p.sessions if b - a == 75]  # whole sessions of 75 five-minute bars
    assert len(full) >= 2
    for start in full:
        obs, info = env.reset(options={"start": start})
        done, seen = False, set()
        while not done:
            mask = obs[-len(MASK_FEATURES):] > 0.5
            assert mask[H] and not mask[SHORT]  # hold always; no shorts for this account
            seen.add(tuple(mask))
            action = int(rng.choice(np.flatnonzero(mask)))  # a policy that respects the mask ...
            obs, _, te, tr, info = env.step(action)
            done = te or tr
        assert info["invalid_actions"] == 0  # ... never has an action ignored
        assert (True, False, False, False, False) in seen  # the bars before square-off block entries
        assert (True, True, False, False, False) in seen and (True, False, False, True, False) in seen


def test_minimum_holding_time_masks_closes_only():
    data = market_data(BARS, EngineConfig(), ATR)
    t = 100
    assert list(valid_actions(10.0, 2, data[t], True, min_hold_bars=4)) == [True, False, False, False, False]
    assert list(valid_actions(10.0, 3, data[t], True, min_hold_bars=4)) == [True, False, False, True, False]
    assert list(valid_actions(-10.0, 3, data[t], True, min_hold_bars=4)) == [True, False, False, False, True]
    assert list(valid_actions(0.0, 0, data[t], True, min_hold_bars=4)) == [True, True, True, False, False]


@pytest.mark.parametrize("k", [2, 3, 7])
def test_decision_interval_is_the_action_then_holds_with_rewards_summed(k):
    base = {"engine": {"product": "index_futures", "carry_overnight": True}, "episode": {"length": 120},
            "reward": {"name": "net_log_return", "turnover_penalty": 0.001}}
    every = TradingEnv(BARS, atr=ATR, features=np.zeros((len(BARS), 1), dtype=np.float32), config=base)
    sparse = TradingEnv(BARS, atr=ATR, features=np.zeros((len(BARS), 1), dtype=np.float32),
                        config={**base, "decision_interval": k})
    o1, _ = every.reset(options={"start": 40})
    o2, _ = sparse.reset(options={"start": 40})
    rng = np.random.default_rng(k)
    done = False
    while not done:
        np.testing.assert_array_equal(o1, o2)
        action = int(rng.choice(np.flatnonzero(o2[-len(MASK_FEATURES):] > 0.5)))
        o2, r2, te2, tr2, i2 = sparse.step(action)
        total, a = 0.0, action
        for _ in range(k):
            o1, r1, te1, tr1, i1 = every.step(a)
            total += r1
            a = H
            if te1 or tr1 or i1["bar"] == i2["bar"]:
                break
        assert i1["bar"] == i2["bar"] and r2 == pytest.approx(total, abs=1e-12)
        assert (i1["equity"], i1["trades"], te1, tr1) == (i2["equity"], i2["trades"], te2, tr2)
        done = te2 or tr2
    assert len(sparse.trades) == len(every.trades) and sparse.trades.equals(every.trades)
