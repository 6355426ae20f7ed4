"""Policies for the loop: a fixed schedule of actions (a baseline's, or an action file's), replayed bar
by bar, and a trained model acting in this process. The loop calls ``policy(symbol, obs)``; a schedule
ignores the observation and looks the bar up with ``tradebot.live.loop.current_bar()``.

``ModelPolicy`` is a loaded ``tradebot.rl.policy.Policy`` (a mixture of experts included: ``Policy.load``
gives one for a mixture folder) without Serve: one stream per symbol, and ``explain(symbol)`` tells
the loop a mixture's gate, as the served policy's client does (``tradebot.serving.policy_client``).

A baseline's actions are causal (action i uses bars <= i), so computing them over a replayed file up
front and handing them out bar by bar is what the baseline would do live; this is for replays only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tradebot.envs.baselines import get_baseline
from tradebot.envs.engine import Action, EngineConfig
from tradebot.features.bars import Bars
from tradebot.live.loop import current_bar
from tradebot.core.errors import UserInputError


class ScheduledPolicy:
    """Hands out ``schedule[symbol][bar start ns]`` (HOLD for bars not in it)."""

    def __init__(self, schedule: Mapping[str, Mapping[int, int]], version: str = "schedule"):
        self.schedule = {s: {int(t): int(a) for t, a in acts.items()} for s, acts in schedule.items()}
        self.version = version

    @classmethod
    def from_actions(cls, bars: Bars, actions: Any, version: str = "schedule") -> "ScheduledPolicy":
        acts = np.asarray(actions, dtype=np.int64)
        if acts.shape != (len(bars),):
            raise UserInputError(f"actions has shape {acts.shape}; expected one per bar ({len(bars)},)")
        if not bars.symbol:
            raise UserInputError("the bars need a symbol to schedule actions for")
        ns = bars.index.as_unit("ns").asi8
        return cls({bars.symbol: dict(zip(ns.tolist(), acts.tolist()))}, version=version)

    def __call__(self, symbol: str, obs: np.ndarray) -> int:
        bar = current_bar()
        if bar is None:
            raise RuntimeError("ScheduledPolicy is called by the live loop, which tells it the bar")
        return self.schedule.get(symbol, {}).get(bar.ts, int(Action.HOLD))


class ModelPolicy:
    """``policy(symbol, obs) -> (action, probs)`` of a loaded policy in this process (one stream per symbol);
    ``explain(symbol)``: the gate of the symbol's last decision for a mixture of experts, else None."""

    def __init__(self, policy: Any):
        self.policy = policy
        self.version = getattr(policy, "version", None) or getattr(policy, "source", None)
        self.obs_dim = int(policy.obs_dim)

    def __call__(self, symbol: str, obs: np.ndarray) -> tuple[int, np.ndarray]:
        return self.policy.act(symbol, obs)

    def explain(self, symbol: str) -> Any:
        explain = getattr(self.policy, "explain", None)
        return explain(symbol) if explain is not None else None

    def reset(self, symbol: str | None = None) -> None:
        self.policy.reset(symbol)


def baseline_policy(name: str, bars: Bars, engine: EngineConfig | None = None, seed: int = 0,
                    **params: Any) -> ScheduledPolicy:
    """The registered baseline ``name`` (``tradebot.envs.baselines``) over ``bars``, as a schedule."""
    baseline = get_baseline(name)
    actions = baseline(bars, engine, seed=seed, **params)
    version = f"baseline:{name}" + (f":seed={seed}" if baseline.seeded else "")
    return ScheduledPolicy.from_actions(bars, actions, version=version)
