"""``BatchedEnvRunner``: RLlib's single-agent env runner, sampling a vector env as whole arrays.

RLlib's ``SingleAgentEnvRunner`` spends its time per sub-env and per step in Python: appending
to one ``SingleAgentEpisode`` per sub-env, running the env-to-module connectors (the
``MeanStdFilter`` pushes one observation at a time) and the module-to-env connectors on lists of
single items. With a batched env that steps 1,000 accounts in microseconds, that bookkeeping is the
whole cost. ``BatchedEnvRunner`` (``config.env_runners(env_runner_cls=BatchedEnvRunner)``) keeps
everything of its parent (env and module construction, the connector pipelines and their state,
checkpoints, weight sync) and replaces only ``sample``: one vector step is one numba pass of the
``MeanStdFilter`` arithmetic over the batch, one forward pass of the RLModule, one draw from its
action distribution, one ``env.step``, written into arrays; the episodes handed to the learner are
cut from those arrays when the sample is complete.

It returns what the parent returns, bit for bit (``tests/rl/test_rl_batched_runner.py``): the
same episode chunks (observations normalised by the same running statistics, pushed in the same
order, the action-mask columns handed on raw when the filter is ``tradebot.rl.masking``'s; actions, log-probabilities, distribution inputs, LSTM states, rewards, terminated/truncated
flags, one step of look-back on continued chunks), the same ``MeanStdFilter`` state (where
``tradebot.rl.policy.Policy`` reads it from checkpoints) and the same sampling metrics. Two things
it does not do: keep the env's per-step ``infos`` in the episodes (PPO never reads them), and call
per-episode callbacks. It supports what ``tradebot.rl.train.build_algo_config`` builds: a vector env
with gymnasium's next-step autoreset, the default connectors plus ``MeanStdFilter``, discrete actions,
sampling by timesteps.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import numpy as np
import torch
from numba import njit
from ray.rllib.core import COMPONENT_ENV_TO_MODULE_CONNECTOR, COMPONENT_RL_MODULE, DEFAULT_AGENT_ID, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.filter import RunningStat
from ray.rllib.utils.metrics import (
    EPISODE_DURATION_SEC_MEAN,
    EPISODE_LEN_MAX,
    EPISODE_LEN_MEAN,
    EPISODE_LEN_MIN,
    EPISODE_RETURN_MAX,
    EPISODE_RETURN_MEAN,
    EPISODE_RETURN_MIN,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    SAMPLE_TIMER,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.numpy import SMALL_NUMBER, convert_to_numpy

# the observation filters it mirrors, by their names in the pipeline state (and in checkpoints): RLlib's
# MeanStdFilter, and tradebot.rl.masking's, which passes the action-mask columns through raw
FILTER_NAMES = ("MeanStdFilter", "MaskKeepingMeanStdFilter")


@njit(cache=True, error_model="numpy")
def _push_and_normalise(obs, stats, clip, out):
    """``MeanStdFilter`` on a batch, row by row, as RLlib's does it on one observation at a time.

    ``stats``: float64 [5, D] rows mean, sum of squared differences, their two "delta" twins, and
    in ``stats[4, 0:2]`` the push counts (total, delta). Each row of ``obs`` (float32) is pushed
    (``RunningStat.push``), then normalised with the statistics that include it:
    ``clip((x - mean) / (std + SMALL_NUMBER), -clip, clip)`` with RLlib's float32 std; ``clip`` <= 0: none.
    """
    nrow, dim = obs.shape
    n = np.int64(stats[4, 0])
    nd = np.int64(stats[4, 1])
    eps = np.float32(SMALL_NUMBER)
    for i in range(nrow):
        n += 1
        nd += 1
        for j in range(dim):
            x = np.float64(obs[i, j])
            if n == 1:
                stats[0, j] = x
                stats[2, j] = x
            else:
                delta = x - stats[0, j]
                stats[0, j] += delta / n
                stats[2, j] += delta / n
                stats[1, j] += delta * (x - stats[0, j])
                stats[3, j] += delta * (x - stats[0, j])
            var = np.float32(stats[1, j] / (np.float64(n) - 1.0)) if n > 1 else np.float32(0.0)
            std = np.float32(math.sqrt(max(np.float32(0.0), var)))
            y = (x - stats[0, j]) / np.float64(std + eps)
            if clip > 0.0:
                y = min(max(y, -clip), clip)
            out[i, j] = np.float32(y)
    stats[4, 0] = n
    stats[4, 1] = nd


class _Filter:
    """The ``MeanStdFilter`` connector's statistics as arrays for ``_push_and_normalise``."""

    def __init__(self, agent_state: dict[str, Any]):
        if not agent_state["de_mean_to_zero"] or not agent_state["de_std_to_one"]:
            raise ValueError("BatchedEnvRunner supports MeanStdFilter with de_mean_to_zero and de_std_to_one only")
        (rs,) = [RunningStat.from_state(s) for s in agent_state["running_stats"]]
        self.agent_state = agent_state
        self.clip = float(agent_state["clip_by_value"] or 0.0)
        dim = rs.mean_array.size
        self.stats = np.zeros((5, max(dim, 2)))
        self.stats[:4, :dim] = (rs.mean_array, rs.sum_sq_diff_array, rs.mean_delta_array, rs.sum_sq_diff_delta_array)
        self.stats[4, :2] = (rs.num_pushes, rs.num_pushes_delta)
        self.dim = dim
        self.raw_tail = int(agent_state.get("raw_tail", 0))  # trailing columns handed on unnormalised

    def __call__(self, obs: np.ndarray, out: np.ndarray) -> None:
        x = np.ascontiguousarray(obs, dtype=np.float32)
        _push_and_normalise(x, self.stats[:, :], self.clip, out)
        if self.raw_tail:
            out[:, -self.raw_tail:] = x[:, -self.raw_tail:]

    def state(self) -> dict[str, Any]:
        d = self.dim
        rs = RunningStat((d,))
        rs.mean_array, rs.sum_sq_diff_array = self.stats[0, :d].copy(), self.stats[1, :d].copy()
        rs.mean_delta_array, rs.sum_sq_diff_delta_array = self.stats[2, :d].copy(), self.stats[3, :d].copy()
        rs.num_pushes, rs.num_pushes_delta = int(self.stats[4, 0]), int(self.stats[4, 1])
        return {**self.agent_state, "running_stats": [rs.to_state()]}


class BatchedEnvRunner(SingleAgentEnvRunner):
    """A ``SingleAgentEnvRunner`` whose ``sample`` works on whole batches (see the module docstring)."""

    def __init__(self, *, config, **kwargs):
        super().__init__(config=config, **kwargs)
        self._ready = False  # the first sample() resets every sub-env
        self._seq_no = 0
        self._done_metrics: list[tuple[int, float, float]] = []

    # weight-sync bookkeeping (the parent keeps it privately; the episodes carry it per step)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if COMPONENT_RL_MODULE in state and state.get(WEIGHTS_SEQ_NO, 0) > 0:
            self._seq_no = int(state[WEIGHTS_SEQ_NO])

    def sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
               explore: bool | None = None, random_actions: bool = False,
               force_reset: bool = False) -> list[SingleAgentEpisode]:
        if self.env is None:
            raise ValueError(f"{self} has no env; it cannot sample")
        if num_episodes is not None or random_actions:
            raise NotImplementedError("BatchedEnvRunner samples by timesteps with the module's actions only")
        if self.config.batch_mode != "truncate_episodes":
            raise NotImplementedError("BatchedEnvRunner needs batch_mode='truncate_episodes'")
        explore = self.config.explore if explore is None else explore
        if num_timesteps is None:
            num_timesteps = self.config.get_rollout_fragment_length(self.worker_index) * self.num_envs
        with self.metrics.log_time(SAMPLE_TIMER):
            state = self.get_state(components=COMPONENT_ENV_TO_MODULE_CONNECTOR)[COMPONENT_ENV_TO_MODULE_CONNECTOR]
            name = next(iter(state), None)
            if len(state) != 1 or name not in FILTER_NAMES or list(state[name]) != [None]:
                raise ValueError(f"BatchedEnvRunner needs exactly one single-agent {' or '.join(FILTER_NAMES)} "
                                 f"connector; found {list(state)}")
            filt = _Filter(state[name][None])
            if force_reset or not self._ready:
                self._reset_all(filt)
            episodes, steps, finished = self._rollout(filt, int(num_timesteps), explore)
            self.set_state({COMPONENT_ENV_TO_MODULE_CONNECTOR: {name: {None: filt.state()}}})
        self._log_sampled(steps, finished)
        return episodes

    def get_metrics(self) -> dict:
        win = max(1, int(math.ceil(self.config.metrics_num_episodes_for_smoothing / (self.config.num_env_runners or 1))))
        log = self.metrics.log_value
        for length, ret, seconds in self._done_metrics:
            log(EPISODE_LEN_MEAN, length, window=win)
            log(EPISODE_RETURN_MEAN, ret, window=win)
            log(EPISODE_DURATION_SEC_MEAN, seconds, window=win)
            log(("agent_episode_return_mean", DEFAULT_AGENT_ID), ret, window=win)
            log(("module_episode_return_mean", DEFAULT_MODULE_ID), ret, window=win)
            log(EPISODE_LEN_MIN, length, reduce="min", window=win)
            log(EPISODE_RETURN_MIN, ret, reduce="min", window=win)
            log(EPISODE_LEN_MAX, length, reduce="max", window=win)
            log(EPISODE_RETURN_MAX, ret, reduce="max", window=win)
        self._done_metrics.clear()
        return self.metrics.reduce()

    # ---- internals ---------------------------------------------------------------------------
    def _reset_all(self, filt: _Filter) -> None:
        n = self.num_envs
        seed = None if self.config.seed is None else int(self.config.seed + (self.worker_index or 0))
        obs, _ = self.env.unwrapped.reset(seed=seed if not self._ready else None)
        self._obs = np.empty((n, filt.dim), dtype=np.float32)
        filt(obs, self._obs)
        initial = {k: v.detach().cpu().numpy() for k, v in self.module.get_initial_state().items()}
        self._initial = initial
        self._state = {k: np.repeat(v[None], n, axis=0) for k, v in initial.items()}
        # look-back of each sub-env's episode: the step before the current observation
        self._prev_obs = np.zeros_like(self._obs)
        self._prev_reward = np.zeros(n)
        self._prev_seq = np.zeros(n, dtype=np.int64)
        self._prev_action = self._prev_logp = self._prev_logits = None  # the module's outputs, once it has run
        self._prev_state: dict[str, np.ndarray] = {}
        self._pending_reset = np.zeros(n, dtype=np.bool_)  # done last step: the next env.step restarts it
        self._ids = [uuid.uuid4().hex for _ in range(n)]
        self._t = np.zeros(n, dtype=np.int64)  # steps taken in the current episode
        self._ret = np.zeros(n)
        self._started = np.full(n, time.perf_counter())
        self._ready = True

    def _forward(self, explore: bool, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        module = self.module
        batch = {Columns.OBS: torch.from_numpy(self._obs)[:, None, :]}
        if module.is_stateful():
            batch[Columns.STATE_IN] = {k: torch.from_numpy(v) for k, v in self._state.items()}
        with torch.no_grad():
            if explore:
                out = module.forward_exploration(batch, t=t)
                dist_cls = module.get_exploration_action_dist_cls()
            else:
                out = module.forward_inference(batch)
                dist_cls = module.get_inference_action_dist_cls()
            logits = out[Columns.ACTION_DIST_INPUTS]
            dist = dist_cls.from_logits(logits)
            if not explore:
                dist = dist.to_deterministic()
            actions = dist.sample()
            logp = out[Columns.ACTION_LOGP] if Columns.ACTION_LOGP in out else dist.logp(actions)
        # the module-to-env pipeline's TensorToNumpy: float64 -> float32, int64 -> int32
        actions, logp, logits, state_out = convert_to_numpy((actions, logp, logits, out.get(Columns.STATE_OUT, {})))
        return actions[:, 0], logp[:, 0], logits[:, 0], state_out

    def _rollout(self, filt: _Filter, num_timesteps: int, explore: bool):
        """Step until ``num_timesteps`` env steps; returns (episodes, steps, finished episodes)."""
        n = self.num_envs
        cap = -(-num_timesteps // n) + 4
        # column 0 is the look-back (the step before the current observation); column 1 the current one
        obs = np.empty((n, cap + 2, filt.dim), dtype=np.float32)
        rews = np.empty((n, cap + 1))
        seqs = np.empty((n, cap + 1), dtype=np.int64)
        acts = logps = logits = states = None  # allocated with the module's first outputs (their dtypes)
        restarted = np.zeros((n, cap + 1), dtype=np.bool_)  # the env step of column k restarted the sub-env
        done = np.zeros((n, cap + 1), dtype=np.bool_)
        terminated = np.zeros((n, cap + 1), dtype=np.bool_)
        obs[:, 0], obs[:, 1] = self._prev_obs, self._obs
        rews[:, 0], seqs[:, 0] = self._prev_reward, self._prev_seq
        env = self.env.unwrapped
        lifetime = self.num_env_steps_sampled_lifetime // (self.config.num_env_runners or 1)
        steps, k = 0, 0
        while steps < num_timesteps:
            k += 1
            if k > cap:  # more restarts than room: grow every buffer
                obs, acts, rews, logps, logits, seqs, restarted, done, terminated = (
                    _grow(a, cap) for a in (obs, acts, rews, logps, logits, seqs, restarted, done, terminated))
                states = {key: _grow(v, cap) for key, v in states.items()}
                cap *= 2
            action, logp, logit, state_out = self._forward(
                explore, (lifetime + steps) * (self.config.num_env_runners or 1))
            if acts is None:
                acts, logps, logits = (_buffer(x, cap, prev) for x, prev in
                                       ((action, self._prev_action), (logp, self._prev_logp), (logit, self._prev_logits)))
                states = {key: _buffer(v, cap, self._prev_state.get(key)) for key, v in state_out.items()}
            acts[:, k], logps[:, k], logits[:, k], seqs[:, k] = action, logp, logit, self._seq_no
            for key, v in state_out.items():
                states[key][:, k] = v
            new_obs, reward, term, trunc, _ = env.step(action)
            filt(new_obs, self._obs)
            obs[:, k + 1] = self._obs
            restart = self._pending_reset
            rews[:, k] = reward
            restarted[:, k] = restart
            ended = (term | trunc) & ~restart
            done[:, k] = ended
            terminated[:, k] = term & ~restart
            stepped = ~restart
            steps += int(stepped.sum())
            # next state in: the module's output, except for a sub-env that just restarted (initial state)
            self._state = {key: v.copy() for key, v in state_out.items()}
            if restart.any():
                for key, v in self._state.items():
                    v[restart] = self._initial[key]
            self._pending_reset = ended
        episodes, finished = self._cut_episodes(k, obs, acts, rews, logps, logits, states, seqs, restarted, done,
                                                terminated)
        # look-back for the next sample: the last column
        self._prev_obs = obs[:, k].copy()
        self._prev_action, self._prev_reward = acts[:, k].copy(), rews[:, k].copy()
        self._prev_logp, self._prev_logits, self._prev_seq = logps[:, k].copy(), logits[:, k].copy(), seqs[:, k].copy()
        self._prev_state = {key: v[:, k].copy() for key, v in states.items()}
        return episodes, steps, finished

    def _cut_episodes(self, last, obs, acts, rews, logps, logits, states, seqs, restarted, done, terminated):
        """Episode chunks of columns 1..``last``, per sub-env, in the parent's order (finished, then ongoing)."""
        space_obs = self.get_spaces()[DEFAULT_MODULE_ID][0]
        space_act = self.env.single_action_space
        now = time.perf_counter()
        finished_eps: list[tuple[int, int, SingleAgentEpisode]] = []
        ongoing: list[SingleAgentEpisode] = []
        finished = 0
        for i in range(self.num_envs):
            # a chunk runs over columns a..b (steps), with look-back column a-1 when it continues an episode
            a = 1
            marks = np.flatnonzero(restarted[i, 1:last + 1] | done[i, 1:last + 1]) + 1
            for c in list(marks) + [None]:
                if c is not None and restarted[i, c]:
                    self._new_episode(i, now)
                    a = c + 1
                    continue
                b = last if c is None else c
                if b >= a:
                    lookback = 1 if self._t[i] > 0 else 0
                    ep = self._episode(i, a - lookback, b, lookback, obs, acts, rews, logps, logits, states, seqs,
                                       space_obs, space_act)
                    steps = b - a + 1
                    self._t[i] += steps
                    self._ret[i] += float(rews[i, a:b + 1].sum())
                    if c is not None:  # finished here
                        ep.is_terminated = bool(terminated[i, c])
                        ep.is_truncated = not ep.is_terminated
                        finished_eps.append((c, i, ep))
                        self._done_metrics.append((int(self._t[i]), float(self._ret[i]), now - self._started[i]))
                        finished += 1
                    else:
                        ongoing.append(ep)
                a = b + 1
        finished_eps.sort(key=lambda e: (e[0], e[1]))  # the parent returns them in the order they ended
        return [e for _, _, e in finished_eps] + ongoing, finished

    def _new_episode(self, i: int, now: float) -> None:
        self._ids[i] = uuid.uuid4().hex
        self._t[i] = 0
        self._ret[i] = 0.0
        self._started[i] = now

    def _episode(self, i, a, b, lookback, obs, acts, rews, logps, logits, states, seqs, space_obs, space_act):
        """One ``SingleAgentEpisode`` (numpy) over columns a..b of sub-env ``i`` (observations a..b+1)."""
        t0 = int(self._t[i]) - lookback
        extra = {
            Columns.STATE_OUT: {key: v[i, a:b + 1].copy() for key, v in states.items()},
            Columns.ACTION_DIST_INPUTS: logits[i, a:b + 1].copy(),
            Columns.ACTION_LOGP: logps[i, a:b + 1].copy(),
            WEIGHTS_SEQ_NO: seqs[i, a:b + 1].copy(),
        }
        if not states:
            del extra[Columns.STATE_OUT]
        o = obs[i, a:b + 2].copy()
        return SingleAgentEpisode(
            id_=self._ids[i], observations=o, observation_space=space_obs, infos=[{} for _ in range(len(o))],
            actions=acts[i, a:b + 1].copy(), action_space=space_act,
            rewards=rews[i, a:b + 1].copy(), extra_model_outputs=extra, t_started=t0 + lookback,
            len_lookback_buffer=lookback)

    def _log_sampled(self, steps: int, finished: int) -> None:
        log = self.metrics.log_value
        log(NUM_ENV_STEPS_SAMPLED, steps, reduce="sum")
        log((NUM_AGENT_STEPS_SAMPLED, DEFAULT_AGENT_ID), steps, reduce="sum")
        log((NUM_MODULE_STEPS_SAMPLED, DEFAULT_MODULE_ID), steps, reduce="sum")
        log(NUM_EPISODES, finished, reduce="sum")
        log(NUM_ENV_STEPS_SAMPLED_LIFETIME, steps, reduce="lifetime_sum", with_throughput=True)
        log((NUM_AGENT_STEPS_SAMPLED_LIFETIME, DEFAULT_AGENT_ID), steps, reduce="lifetime_sum")
        log((NUM_MODULE_STEPS_SAMPLED_LIFETIME, DEFAULT_MODULE_ID), steps, reduce="lifetime_sum")
        log(NUM_EPISODES_LIFETIME, finished, reduce="lifetime_sum")


def _buffer(first: np.ndarray, cap: int, lookback: np.ndarray | None) -> np.ndarray:
    """[sub-envs, cap + 1, ...] of ``first``'s dtype, column 0 holding ``lookback`` (zeros when None)."""
    out = np.zeros((first.shape[0], cap + 1, *first.shape[1:]), dtype=first.dtype)
    if lookback is not None:
        out[:, 0] = lookback
    return out


def _grow(a: np.ndarray | None, by: int) -> np.ndarray | None:
    if a is None:
        return None
    pad = np.zeros((a.shape[0], by, *a.shape[2:]), dtype=a.dtype)
    return np.concatenate([a, pad], axis=1)
