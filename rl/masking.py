"""Action masking: the policy puts no probability on an action the fill engine would ignore.

Where the mask comes from. Every observation ends with the env's action mask (``MASK_FEATURES``:
1.0 per valid action, from the account's position side, the product and the clock, written by the
engine's own kernel, ``tradebot.envs.engine.action_mask``). Observations are normalised before the
module sees them, which would blur 0/1 into arbitrary numbers, so the normaliser leaves the mask
columns as they are: ``MaskKeepingMeanStdFilter`` is RLlib's ``MeanStdFilter`` with the last
``N_MASK_FEATURES`` columns passed through raw (its statistics are still kept for every column);
``tradebot.rl.batched_runner`` and ``tradebot.rl.policy.ObsNormaliser`` apply the same rule, so the
module reads the exact mask in sampling, in learning and at inference (backtests, Serve, the live
loop).

What the module does. ``MaskedPPOTorchRLModule`` is RLlib's default PPO module (MLP -> LSTM ->
heads) on the observation without its mask columns, whose action logits are set to the float32
minimum wherever the mask is 0, in every forward pass (exploration, inference and training, so the
PPO ratio and the entropy are those of the masked distribution): an invalid action's probability is
exactly 0 and it is never sampled nor chosen. HOLD is always valid, so some action always is.
``UnmaskedPPOTorchRLModule`` is the same network without the gate (``model.action_masking: false``),
for comparison: it must learn the rules itself.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter
from ray.rllib.core.columns import Columns
from ray.rllib.utils.torch_utils import FLOAT_MIN

from tradebot.envs.trading_env import N_MASK_FEATURES

RAW_TAIL_KEY = "raw_tail"  # in the filter's state: how many trailing columns are passed through raw


def apply_mask(logits: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """``logits`` with every action whose mask column (the last ``N_MASK_FEATURES`` of ``obs``) is 0
    set to the float32 minimum (probability exactly 0 after the softmax)."""
    valid = obs[..., -N_MASK_FEATURES:] > 0.5
    return torch.where(valid, logits, torch.full_like(logits, FLOAT_MIN))


class UnmaskedPPOTorchRLModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module (MLP -> LSTM -> policy and value heads) on the observation without its
    action-mask columns: the network sees the features and the account, the mask only gates (in
    ``MaskedPPOTorchRLModule``). This class itself applies no mask: the unmasked baseline design."""

    def __init__(self, *, observation_space: gym.spaces.Box | None = None, **kwargs):
        self.observation_space_with_mask = observation_space
        inner = observation_space
        if isinstance(observation_space, gym.spaces.Box):
            inner = gym.spaces.Box(observation_space.low[:-N_MASK_FEATURES], observation_space.high[:-N_MASK_FEATURES],
                                   dtype=observation_space.dtype)
        super().__init__(observation_space=inner, **kwargs)

    def setup(self):
        super().setup()  # the networks are built for the observation without the mask
        self.observation_space = self.observation_space_with_mask  # what the module takes (and is saved with)

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {**batch, Columns.OBS: batch[Columns.OBS][..., :-N_MASK_FEATURES]}

    def _gate(self, out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        return out

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._gate(super()._forward(self._inputs(batch), **kwargs), batch)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._gate(super()._forward_train(self._inputs(batch), **kwargs), batch)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None):
        return super().compute_values(self._inputs(batch) if embeddings is None else batch, embeddings)


class MaskedPPOTorchRLModule(UnmaskedPPOTorchRLModule):
    """``UnmaskedPPOTorchRLModule`` with the observation's action mask applied to its logits in every
    forward pass."""

    def _gate(self, out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        out[Columns.ACTION_DIST_INPUTS] = apply_mask(out[Columns.ACTION_DIST_INPUTS], batch[Columns.OBS])
        return out


class MaskKeepingMeanStdFilter(MeanStdFilter):
    """RLlib's ``MeanStdFilter`` that hands the observation's action-mask columns (its last
    ``N_MASK_FEATURES``) to the module unnormalised; the other columns are normalised as usual."""

    def __call__(self, *, rl_module, batch, episodes, explore=None, persistent_data=None, **kwargs):
        tails = [np.array(ep.get_observations(indices=-1)[-N_MASK_FEATURES:], copy=True)
                 for ep in self.single_agent_episode_iterator(episodes)]
        batch = super().__call__(rl_module=rl_module, batch=batch, episodes=episodes, explore=explore,
                                 persistent_data=persistent_data, **kwargs)
        for ep, tail in zip(self.single_agent_episode_iterator(episodes), tails):
            obs = np.array(ep.get_observations(indices=-1), copy=True)
            obs[-N_MASK_FEATURES:] = tail
            ep.set_observations(at_indices=-1, new_data=obs)
        return batch

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        for agent_state in state.values():
            agent_state[RAW_TAIL_KEY] = N_MASK_FEATURES
        return state

    def merge_states(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        merged = super().merge_states([{a: {k: v for k, v in s.items() if k != RAW_TAIL_KEY}
                                        for a, s in state.items()} for state in states])
        for agent_state in merged.values():
            agent_state[RAW_TAIL_KEY] = N_MASK_FEATURES
        return merged
