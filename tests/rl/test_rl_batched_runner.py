"""BatchedEnvRunner returns what RLlib's own SingleAgentEnvRunner returns, bit for bit.

Both runners are built from the same ``build_algo_config`` (same vector env, same seeds, same
initial weights) and sample in turn with the same torch seed; every episode chunk (observations
after the MeanStdFilter, actions, rewards, log-probabilities, distribution inputs, LSTM states,
weight sequence numbers, look-back, flags), the MeanStdFilter state and the sampling metrics must be
equal. Two instruments with 75-bar and 375-bar sessions desynchronise the sub-envs, so episodes
end at different steps, inside and across ``sample`` calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.filter import MeanStdFilter as RunningFilter
from ray.tune.registry import register_env
from rl_helpers import tiny_config

from tradebot.core.config import parse_config
from tradebot.rl.batched_runner import BatchedEnvRunner, _Filter
from tradebot.rl.train import RLLIB_ENV_NAME, build_algo_config, make_env
from tradebot.rl.train_config import TrainConfig

SAMPLE_1M = "data/sample/NSE_NIFTY50-INDEX_1m.csv.gz"
METRICS = ("num_env_steps_sampled", "num_episodes", "episode_len_mean", "episode_len_max",
           "num_env_steps_sampled_lifetime")


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
    np.testing.assert_array_equal(a, b, err_msg=where)


def _runners(tmp_path, num_envs: int, fragment: int, env: dict, extra_paths=()):
    register_env(RLLIB_ENV_NAME, make_env)
    raw = tiny_config(tmp_path)
    raw["data"].update(train={"start": "2021-01-01", "end": "2021-05-01"}, validation=None,
                       extra_paths=list(extra_paths))
    raw["env"] = env
    raw["ppo"].update(train_batch_size=num_envs * fragment, minibatch_size=num_envs * fragment)
    raw["run"]["num_envs_per_env_runner"] = num_envs
    config = build_algo_config(parse_config(TrainConfig, raw, "test")).env_runners(rollout_fragment_length=fragment)
    stock = SingleAgentEnvRunner(config=config)
    batched = BatchedEnvRunner(config=config)
    assert batched.env.unwrapped.num_envs == num_envs
    return stock, batched


@pytest.mark.parametrize("num_envs, fragment, env, extra, explore", [
    (5, 120, {"episode": {"mode": "session"}}, [SAMPLE_1M], True),
    (4, 13, {"episode": {"mode": "window", "length": 30},
             "reward": {"name": "differential_sharpe", "eta": 0.05}}, [], True),
    (3, 40, {"episode": {"mode": "window", "length": 25}}, [], False),
], ids=["two-instruments-sessions", "windows-cut-mid-episode", "deterministic"])
def test_batched_runner_samples_what_rllib_samples(tmp_path, num_envs, fragment, env, extra, explore):
    stock, batched = _runners(tmp_path, num_envs, fragment, env, extra)
    ended = 0
    for call in range(4):
        torch.manual_seed(call)
        expected = stock.sample(explore=explore)
        torch.manual_seed(call)
        got = batched.sample(explore=explore)
        assert len(got) == len(expected)
        for e, g in zip(expected, got):
            assert (g.t_started, len(g), g.is_terminated, g.is_truncated) == \
                   (e.t_started, len(e), e.is_terminated, e.is_truncated)
            assert g.is_numpy and e.is_numpy
            for name in ("observations", "actions", "rewards"):
                assert getattr(g, name).lookback == getattr(e, name).lookback, name
                _same(getattr(e, name).data, getattr(g, name).data, name)
            assert set(g.extra_model_outputs) == set(e.extra_model_outputs)
            for key, buf in e.extra_model_outputs.items():
                assert g.extra_model_outputs[key].lookback == buf.lookback, key
                _same(buf.data, g.extra_model_outputs[key].data, key)
            ended += e.is_done
        state = "env_to_module_connector"
        _same(str(stock.get_state(components=state)), str(batched.get_state(components=state)), state)
        m_stock, m_batched = stock.get_metrics(), batched.get_metrics()
        for key in METRICS:
            assert (key in m_stock) == (key in m_batched), key
            if key in m_stock:
                assert m_batched[key].peek() == pytest.approx(m_stock[key].peek(), nan_ok=True), key
    assert ended >= num_envs  # episode ends were compared, not only continuing chunks


def test_filter_kernel_is_rllibs_meanstdfilter_bit_for_bit():
    """Row-by-row push-then-normalise, as the connector does per observation, clip included."""
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((7, 64, 5)) * np.array([1, 1e3, 1e-3, 50, 0.1])).astype(np.float32)
    data[3, :, 0] = 40.0  # constant stretches and outliers the clip catches
    data[5, 7, 3] = 1e6
    ref = RunningFilter((5,), clip=10.0)
    connector = MeanStdFilter()
    connector._filters = {None: ref}
    filt = _Filter(connector.get_state()[None])
    for batch in data:
        expected = np.stack([ref(row) for row in batch])
        got = np.empty_like(batch)
        filt(batch, got)
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    _same(str(connector.get_state()[None]), str(filt.state()), "filter state")
