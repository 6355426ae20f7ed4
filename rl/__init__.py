"""Training (RLlib PPO-LSTM, MLflow) and the one policy wrapper used everywhere a policy acts.

Public API (imported lazily, so ``import tradebot.rl.train_config`` does not pull in Ray and torch):

* ``TrainConfig``, ``load_train_config``: the training YAML (``tradebot.rl.train_config``).
* ``TrainResult``, ``IterationReport``: what a run returns / reports; the function itself is
  ``tradebot.rl.train.train`` (the package attribute ``tradebot.rl.train`` is that module).
* ``Policy``, ``ObsNormaliser``: load a checkpoint or ``models:/name/version`` and act one bar at a
  time per stream (``tradebot.rl.policy``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "tradebot.rl.train_config",
    "load_train_config": "tradebot.rl.train_config",
    "TrainResult": "tradebot.rl.train",
    "IterationReport": "tradebot.rl.train",
    "Policy": "tradebot.rl.policy",
    "ObsNormaliser": "tradebot.rl.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tradebot.rl' has no attribute {name!r}")
