"""The policy wrapper acts exactly like RLlib's own deterministic inference, bar by bar.

Reference: a separately loaded copy of the checkpoint's RLModule runs ``forward_inference`` over a
whole episode at once (one [1, T, D] sequence from the initial state), on observations normalised
by RLlib's own ``MeanStdFilter`` connector restored from the same checkpoint (the action-mask columns
handed on raw, as ``MaskKeepingMeanStdFilter`` does). The wrapper instead sees one bar at a time, for
two interleaved streams, carrying each stream's LSTM state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradebot.rl.train_config import TrainConfig
from tradebot.rl.policy import MODULE_SUBDIR, NORMALISER_SUBDIR, Policy
from tradebot.rl.train import make_env, train_and_save
from rl_helpers import tiny_config
from tradebot.core.config import parse_config
from tradebot.envs.trading_env import N_MASK_FEATURES

pytestmark = [pytest.mark.integration]

BARS = 220  # steps per stream, so the recurrent state is carried well past max_seq_len


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, local_ray):
    """One PPO-LSTM iteration (weights moved, normaliser statistics collected), saved to disk."""

    tmp = tmp_path_factory.mktemp("policy")
    cfg = parse_config(TrainConfig, tiny_config(tmp / "out", iterations=1))
    return {"path": train_and_save(cfg, tmp / "checkpoint"), "cfg": cfg}


def _episode_env(cfg: TrainConfig):
    return make_env({"env_id": cfg.run.env_id, "path": cfg.data.path, "start": "2021-01-01", "end": "2021-03-01",
                     "config": {"episode": {"length": BARS}}})


def _rllib_reference(path, raw_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RLlib's deterministic actions and probabilities for one whole episode in a single forward pass."""
    from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(str(path / MODULE_SUBDIR))
    connector = MeanStdFilter()
    connector.input_observation_space = module.observation_space
    connector.restore_from_path(str(path / NORMALISER_SUBDIR))
    rllib_filter = connector._filters[None]  # the connector's own filter arithmetic, stats frozen
    normalised = np.stack([rllib_filter(o, update=False) for o in raw_obs]).astype(np.float32)
    normalised[:, -N_MASK_FEATURES:] = raw_obs[:, -N_MASK_FEATURES:]  # the mask, raw
    state = {k: v.unsqueeze(0) for k, v in module.get_initial_state().items()}
    with torch.inference_mode():
        out = module.forward_inference({Columns.OBS: torch.from_numpy(normalised)[None], Columns.STATE_IN: state})
    logits = out[Columns.ACTION_DIST_INPUTS][0]
    dist = module.get_inference_action_dist_cls().from_logits(logits).to_deterministic()
    return dist.sample().numpy(), torch.softmax(logits.double(), dim=-1).numpy()


def test_policy_step_by_step_equals_rllib_sequence_inference_per_stream(checkpoint):
    policy = Policy.load(checkpoint["path"])
    envs = {"NSE:A": _episode_env(checkpoint["cfg"]), "NSE:B": _episode_env(checkpoint["cfg"])}
    obs = {"NSE:A": envs["NSE:A"].reset(seed=1, options={"start": 600})[0],
           "NSE:B": envs["NSE:B"].reset(seed=2, options={"start": 2000})[0]}
    record = {s: {"obs": [], "actions": [], "probs": []} for s in envs}
    for _ in range(BARS):
        for stream, env in envs.items():  # interleaved: A's state must not leak into B's
            action, probs = policy.act(stream, obs[stream])
            record[stream]["obs"].append(obs[stream])
            record[stream]["actions"].append(action)
            record[stream]["probs"].append(probs)
            obs[stream], _, terminated, truncated, _ = env.step(action)
            assert not terminated
    for stream, rec in record.items():
        ref_actions, ref_probs = _rllib_reference(checkpoint["path"], np.stack(rec["obs"]))
        assert len(ref_actions) == BARS
        np.testing.assert_array_equal(np.array(rec["actions"]), ref_actions, err_msg=stream)
        np.testing.assert_allclose(np.stack(rec["probs"]), ref_probs, atol=1e-5, err_msg=stream)


def test_policy_carries_recurrent_state_and_reset_forgets_it(checkpoint):
    policy = Policy.load(checkpoint["path"])
    env = _episode_env(checkpoint["cfg"])
    obs, _ = env.reset(seed=3, options={"start": 1000})
    first, carried, fresh = None, [], []
    for i in range(60):
        action, probs = policy.act("s", obs)
        first = first if first is not None else (action, probs, obs)
        carried.append(probs)
        fresh.append(_fresh(policy).act("s", obs)[1])  # the same bar without its history
        obs, *_ = env.step(action)
    assert np.abs(np.stack(carried) - np.stack(fresh)).max() > 1e-4  # the history changes the output
    policy.reset("s")
    assert policy.streams == ()
    action, probs = policy.act("s", first[2])
    assert action == first[0]
    np.testing.assert_allclose(probs, first[1], atol=1e-7)


def _fresh(policy: Policy) -> Policy:
    return Policy(policy.module, policy.normaliser)  # same weights and statistics, no stream state


def test_policy_sampling_mode_is_seeded_and_valid(checkpoint):
    obs = np.zeros(Policy.load(checkpoint["path"]).obs_dim, dtype=np.float32)
    runs = []
    for _ in range(2):
        policy = Policy.load(checkpoint["path"], deterministic=False, seed=11)
        runs.append([policy.act("s", obs)[0] for _ in range(30)])
    assert runs[0] == runs[1] and all(0 <= a < 5 for a in runs[0])


def test_policy_rejects_bad_observations_and_bad_paths(checkpoint, tmp_path):
    from tradebot.core.errors import UserInputError

    policy = Policy.load(checkpoint["path"])
    with pytest.raises(UserInputError, match=f"expects {policy.obs_dim}"):
        policy.act("s", np.zeros(policy.obs_dim + 1))
    with pytest.raises(UserInputError, match="NaN or infinite value at index 2"):
        policy.act("s", np.array([0.0, 0.0, np.nan] + [0.0] * (policy.obs_dim - 3)))
    assert policy.streams == ()  # a refused observation does not touch the stream's state
    with pytest.raises(UserInputError, match="checkpoint directory not found"):
        Policy.load(tmp_path / "nope")
    with pytest.raises(UserInputError, match="no RLModule"):
        Policy.load(tmp_path)


def test_masked_policy_puts_no_probability_on_invalid_actions(checkpoint):
    """Every observation's mask is the engine's rule; the policy's probability of each masked action is
    exactly 0 and its action is always a valid one, flat, long and short, over whole episodes."""
    from tradebot.envs.trading_env import MASK_FEATURES

    policy = Policy.load(checkpoint["path"], deterministic=False, seed=3)  # sampling: every allowed action shows up
    env = _episode_env(checkpoint["cfg"])
    obs, _ = env.reset(seed=4, options={"start": 700})
    sides, invalid = set(), 0
    for _ in range(BARS):
        mask = obs[-len(MASK_FEATURES):] > 0.5
        action, probs = policy.act("s", obs)
        assert mask[action] and np.all(probs[~mask] == 0.0) and probs.sum() == pytest.approx(1.0)
        sides.add(float(np.sign(env._state[1])))
        obs, _, terminated, truncated, info = env.step(action)
        invalid = info["invalid_actions"]
        if terminated or truncated:
            break
    assert invalid == 0 and sides == {-1.0, 0.0, 1.0}


def test_policy_decides_every_k_bars_and_masks_closes_before_the_minimum_hold(checkpoint):
    from tradebot.rl.policy import HOLD

    k_policy = Policy(Policy.load(checkpoint["path"]).module, Policy.load(checkpoint["path"]).normaliser,
                      decision_interval=3, min_hold_bars=4, deterministic=False, seed=5)
    plain = Policy.load(checkpoint["path"])
    env = _episode_env(checkpoint["cfg"])
    obs, _ = env.reset(seed=6, options={"start": 900})
    for bar in range(60):
        action, probs = k_policy.act("s", obs)
        if bar % 3:
            assert action == HOLD and probs[HOLD] == 1.0
        held = obs[-N_MASK_FEATURES - 2]  # bars_in_trade, raw
        if obs[-N_MASK_FEATURES - 4] != 0.0 and held + 1 < 4:  # in a position held too briefly to close
            assert probs[3] == 0.0 and probs[4] == 0.0
        obs, *_ = env.step(action)
    assert plain.decision_interval == 1 and plain.min_hold_bars == 0


def test_seed_ensemble_acts_on_the_mean_of_its_members_probabilities(checkpoint):
    import copy

    from tradebot.rl.ensemble import EnsemblePolicy

    base = Policy.load(checkpoint["path"])
    other = copy.deepcopy(base.module)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # a different "seed"
    members = [Policy(base.module, base.normaliser), Policy(other, base.normaliser)]
    solo = [Policy(base.module, base.normaliser), Policy(other, base.normaliser)]  # the same, stepped apart
    ensemble = EnsemblePolicy(members)
    env = _episode_env(checkpoint["cfg"])
    obs, _ = env.reset(seed=8, options={"start": 1200})
    differ = 0
    for _ in range(80):
        action, probs = ensemble.act("s", obs)
        single = [p.act("s", obs)[1] for p in solo]
        np.testing.assert_allclose(probs, (single[0] + single[1]) / 2, atol=1e-12)
        assert action == int(np.argmax(probs))
        mask = obs[-N_MASK_FEATURES:] > 0.5
        assert mask[action] and np.all(probs[~mask] == 0.0)
        differ += int(np.argmax(single[0]) != np.argmax(single[1]))
        obs, _, te, tr, _ = env.step(action)
    assert differ > 0  # the members disagree somewhere: the average is not one of them
