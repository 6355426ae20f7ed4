"""The rl gate's environment: a trading account whose action is which frozen expert trades this decision.

``tradebot/Gate-v0`` (``run.env_id: "tradebot.rl.moe.gate_env:tradebot/Gate-v0"``) takes the trading
env's config plus a ``gate`` section::

    env:
      engine: {...}            # the experts' env config, unchanged
      gate: {experts: [runs/moe/experts/trend/checkpoints/iter_000020, ...], switching_cost: 0.0002}

Each step: every expert decides on the current observation (its own normaliser and recurrent state
per sub-env, its mask and minimum hold, exactly as ``Policy.act`` does), the expert the gate picked
trades (its argmax action goes to the account), and the reward is the account's reward minus
``switching_cost`` when the pick differs from the previous one. The gate observes the one-hot
previous pick and the trading observation (``tradebot.rl.moe.mixture.gate_observation``), which is
how ``MixturePolicy`` feeds it at inference. ``BatchedGateEnv`` runs N accounts with one batched
forward per expert per step; ``GateEnv`` is one of them as a ``gymnasium.Env`` (validation passes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import register, registry

from tradebot.core.errors import UserInputError
from tradebot.envs.trading_env import BARS_IN_TRADE_FROM_END, BatchedTradingEnv
from tradebot.rl.moe.mixture import gate_observation

GATE_ENV_ID = "tradebot/Gate-v0"


def _split(config: dict[str, Any] | None) -> tuple[dict[str, Any], list[str], float]:
    cfg = dict(config or {})
    gate = dict(cfg.pop("gate", None) or {})
    experts = [str(p) for p in gate.pop("experts", None) or []]
    cost = float(gate.pop("switching_cost", 0.0))
    if gate:
        raise UserInputError(f"env.gate: unknown key(s) {', '.join(sorted(gate))}; use experts and switching_cost")
    if len(experts) < 2:
        raise UserInputError("env.gate.experts: list the folders of at least two trained experts")
    if cost < 0:
        raise UserInputError(f"env.gate.switching_cost {cost} is negative; use 0 or more")
    return cfg, experts, cost


class _BatchedExpert:
    """One expert acting on a batch of observations, with one recurrent state per row."""

    def __init__(self, path: str, n: int):
        import torch

        from tradebot.rl.policy import Policy

        if not Path(path).is_dir():
            raise UserInputError(f"env.gate.experts: {path} is not a folder; give trained expert checkpoints")
        self.policy = Policy.from_checkpoint(path)
        self._torch = torch
        self._init = self.policy.initial_state()
        self.state = None if self._init is None else {k: v.repeat(n, *([1] * (v.dim() - 1)))
                                                      for k, v in self._init.items()}

    def reset_rows(self, rows: np.ndarray) -> None:
        if self.state is not None and len(rows):
            torch = self._torch
            fresh = torch.zeros(next(iter(self.state.values())).shape[0], dtype=torch.bool)
            fresh[torch.as_tensor(rows, dtype=torch.long)] = True
            # new tensors, not in-place writes: the states come out of inference mode
            self.state = {k: torch.where(fresh.view(-1, *([1] * (v.dim() - 1))), self._init[k], v)
                          for k, v in self.state.items()}

    def act(self, obs: np.ndarray) -> np.ndarray:
        p = self.policy
        x = np.asarray(obs, dtype=np.float32)
        if p.min_hold_bars and p.normaliser.raw_tail:
            early = x[:, -BARS_IN_TRADE_FROM_END] + 1.0 < p.min_hold_bars
            if early.any():
                x = x.copy()
                x[early, -2:] = 0.0  # no close before the minimum holding time (as Policy.act)
        logits, state_out = p.forward(p.normaliser(x)[:, None, :], self.state)
        if state_out is not None:
            self.state = state_out
        return logits[:, -1].argmax(dim=-1).numpy()


class BatchedGateEnv(gym.vector.VectorEnv):
    """N gate accounts as one ``VectorEnv`` (autoreset like ``BatchedTradingEnv``: the step after an
    episode ends ignores the pick and returns the new episode's first observation, reward 0)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, data: Any, num_envs: int, features: Any = None, atr: Any = None,
                 config: dict[str, Any] | None = None, copy: bool = True):
        trading, paths, self.switching_cost = _split(config)
        self.inner = BatchedTradingEnv(data, num_envs, features=features, atr=atr, config=trading, copy=False)
        n = self.num_envs = self.inner.num_envs
        self.experts = [_BatchedExpert(p, n) for p in paths]
        dims = {e.policy.obs_dim for e in self.experts}
        d = self.inner.single_observation_space.shape[0]
        if dims != {d}:
            raise UserInputError(f"env.gate.experts act on observations of {sorted(dims)} values; this env gives {d}: "
                                 "train the gate with the experts' env config")
        self.k = len(self.experts)
        self.copy = copy
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(d + self.k,), dtype=np.float32)
        self.single_action_space = spaces.Discrete(self.k)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, n)
        self.render_mode = None
        self._prev = np.zeros(n, dtype=np.int64)
        self._pending = np.zeros(n, dtype=np.bool_)
        self._trade_obs = np.zeros((n, d), dtype=np.float32)
        self.picks = np.zeros(self.k, dtype=np.int64)  # how often each expert was picked (diagnostics)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"prev_expert_{j}" for j in range(self.k)) + self.inner.feature_names

    def _out(self, obs: np.ndarray) -> np.ndarray:
        self._trade_obs[:] = obs
        return gate_observation(obs, self._prev, self.k)

    def _restart_rows(self, rows: np.ndarray) -> None:
        self._prev[rows] = 0
        for e in self.experts:
            e.reset_rows(rows)

    def reset(self, *, seed: Any = None, options: dict | None = None):
        obs, infos = self.inner.reset(seed=seed, options=options)
        mask = (options or {}).get("reset_mask")
        rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(np.asarray(mask, dtype=np.bool_))
        self._restart_rows(rows)
        self._pending[rows] = False
        return self._out(obs), infos

    def step(self, actions):
        picks = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if ((picks < 0) | (picks >= self.k)).any():
            raise UserInputError(f"gate actions must be expert indices 0..{self.k - 1}")
        decided = np.stack([e.act(self._trade_obs) for e in self.experts])  # [K, N]
        acts = decided[picks, np.arange(self.num_envs)]
        obs, rewards, terminated, truncated, infos = self.inner.step(acts)
        rewards = rewards.copy()
        live = ~self._pending
        switched = live & (picks != self._prev)
        rewards[switched] -= self.switching_cost
        np.add.at(self.picks, picks[live], 1)
        self._prev[live] = picks[live]
        restarted = np.flatnonzero(self._pending)
        self._restart_rows(restarted)  # their obs is a new episode's first: fresh experts, no previous pick
        self._pending = terminated | truncated
        return self._out(obs), rewards, terminated.copy(), truncated.copy(), infos


class GateEnv(gym.Env):
    """One gate account (``BatchedGateEnv`` with one sub-env) as a ``gymnasium.Env``."""

    metadata = {"render_modes": []}

    def __init__(self, data: Any, features: Any = None, atr: Any = None, config: dict[str, Any] | None = None):
        self.batch = BatchedGateEnv(data, 1, features=features, atr=atr, config=config)
        self.observation_space = self.batch.single_observation_space
        self.action_space = self.batch.single_action_space

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.batch.feature_names

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, infos = self.batch.reset(seed=seed, options=options)
        return obs[0].copy(), _first(infos)

    def step(self, action):
        obs, r, term, trunc, infos = self.batch.step(np.array([int(action)]))
        return obs[0].copy(), float(r[0]), bool(term[0]), bool(trunc[0]), _first(infos)


def _first(infos: dict[str, Any]) -> dict[str, Any]:
    return {k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in infos.items() if not k.startswith("_")}


if GATE_ENV_ID not in registry:
    register(id=GATE_ENV_ID, entry_point="tradebot.rl.moe.gate_env:GateEnv",
             vector_entry_point="tradebot.rl.moe.gate_env:BatchedGateEnv", disable_env_checker=True)
