"""A masked policy never emits an action the engine would ignore: through ``Policy`` (backtests),
Ray Serve (real Serve on loopback, over HTTP) and the live loop (paper replay through Serve), with
an engine whose rules differ from training (no shorts) so the mask, not the training, keeps it valid.
The module reads the mask raw: the normaliser leaves those columns untouched, the same in RLlib's
connector, the batched runner and ``Policy``."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from rl_helpers import SAMPLE_5M, tiny_config
from tradebot.core.config import parse_config
from tradebot.envs.engine import Action
from tradebot.envs.trading_env import MASK_FEATURES, TradingEnv
from tradebot.features.bars import load_bars
from tradebot.rl.policy import Policy
from tradebot.rl.train_config import TrainConfig

pytestmark = [pytest.mark.integration]

N_MASK = len(MASK_FEATURES)
NO_SHORTS = {"product": "equity_intraday", "allow_short": False}
TOKEN = "test-token-mask"
VETO_CODES_OF_INVALID_ACTIONS = {"no_position", "position_open", "no_shorts", "square_off"}


@pytest.fixture(scope="module")
def masked(tmp_path_factory, local_ray):
    from tradebot.rl.train import train_and_save

    tmp = tmp_path_factory.mktemp("masked")
    cfg = parse_config(TrainConfig, tiny_config(tmp / "out", iterations=1))
    assert cfg.model.action_masking  # the default
    return {"path": train_and_save(cfg, tmp / "checkpoint"), "cfg": cfg}


@pytest.fixture(scope="module")
def served(masked):
    from ray import serve

    from tradebot.serving.app import start_serve
    from tradebot.serving.policy_client import HttpPolicy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    start_serve(str(masked["path"]), host="127.0.0.1", port=port, token=TOKEN)
    try:
        yield HttpPolicy(f"http://127.0.0.1:{port}", token=TOKEN)
    finally:
        serve.shutdown()


def _check(action: int, probs: np.ndarray, obs: np.ndarray) -> None:
    mask = np.asarray(obs)[-N_MASK:] > 0.5
    assert mask[action], f"{Action(action).name} emitted with mask {mask.astype(int)}"
    assert np.all(np.asarray(probs)[~mask] == 0.0)


def test_normaliser_passes_the_mask_through_raw(masked):
    policy = Policy.load(masked["path"])
    assert policy.normaliser.raw_tail == N_MASK
    obs = np.random.default_rng(0).normal(size=policy.obs_dim).astype(np.float32)
    obs[-N_MASK:] = [1, 0, 1, 0, 0]
    out = policy.normaliser(obs)
    np.testing.assert_array_equal(out[-N_MASK:], obs[-N_MASK:])
    assert not np.allclose(out[:-N_MASK], obs[:-N_MASK])  # the rest is normalised


def test_masked_policy_through_serve_never_emits_an_invalid_action(masked, served):
    bars = load_bars(SAMPLE_5M).between("2021-01-01", "2021-03-01")
    env = TradingEnv(bars, config={"engine": NO_SHORTS, "episode": {"mode": "session"}})
    entered = 0
    for seed in range(4):
        served.reset("NSE:NIFTY50-INDEX")
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            action, probs = served("NSE:NIFTY50-INDEX", obs)
            _check(action, probs, obs)
            entered += action == Action.BUY_LONG
            obs, _, te, tr, info = env.step(action)
            done = te or tr
        assert info["invalid_actions"] == 0
    assert entered > 0  # it did trade: the check is not vacuous


def test_masked_policy_in_the_live_loop_never_emits_an_invalid_action(masked, served, tmp_path):
    from tradebot.envs.engine_config import EngineConfig
    from tradebot.live.runner import LiveConfig, build_replay_loop
    from tradebot.serving.policy_client import model_features

    calls = []

    def policy(symbol, obs):
        action, probs = served(symbol, obs)
        calls.append((obs.copy(), int(action), np.asarray(probs)))
        return action, probs

    bars = load_bars(SAMPLE_5M).between(None, "2021-06-05")
    config = LiveConfig(features=model_features(str(masked["path"])), engine=EngineConfig(**NO_SHORTS))
    loop = build_replay_loop(bars, journal=tmp_path / "journal.db", config=config, start="2021-06-01", policy=policy)
    try:
        summary = loop.run()
        events = loop.journal.risk_events()
    finally:
        loop.journal.close()
    assert summary.decisions > 200 and len(calls) == summary.decisions
    for obs, action, probs in calls:
        _check(action, probs, obs)
    masks = {tuple(obs[-N_MASK:]) for obs, _, _ in calls}
    assert (1.0, 0.0, 0.0, 0.0, 0.0) in masks  # flat near square-off: entries masked
    assert all(m[2] == 0.0 for m in masks)  # this engine never allows a short
    codes = {json.loads(e["details"] or "{}").get("code", "") for e in events}
    assert not codes & VETO_CODES_OF_INVALID_ACTIONS
    assert summary.orders > 0
