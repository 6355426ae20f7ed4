"""A seed ensemble: several trained policies acting as one, on their averaged action probabilities.

```python
ensemble = EnsemblePolicy([Policy.load(p) for p in checkpoints])   # e.g. one fold's seeds
action, probs = ensemble.act("NSE:SBIN-EQ", obs)                  # probs: the members' mean
```

Each member keeps its own normaliser and recurrent state per stream and sees the same observation;
the ensemble's probabilities are the mean of the members' (a masked member gives an invalid action
probability 0, so the mean does too) and its action is their argmax (the lowest action on a tie,
HOLD first). The members must share the observation size, the actions and the decision interval.
It has ``Policy``'s acting interface (``act``, ``reset``, ``streams``, ``obs_dim``,
``num_actions``), so backtests and the walk-forward take it where they take a ``Policy``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from tradebot.core.errors import UserInputError


class EnsemblePolicy:
    """Policies acting together on their mean action probabilities (see the module docstring)."""

    def __init__(self, members: Sequence[Any], source: str | None = None):
        if not members:
            raise UserInputError("an ensemble needs at least one policy")
        first = members[0]
        for m in members[1:]:
            if (m.obs_dim, m.num_actions, m.decision_interval) != (first.obs_dim, first.num_actions,
                                                                 first.decision_interval):
                raise UserInputError("ensemble members differ in observation size, actions or decision interval; "
                                     "combine policies trained with the same env config")
        self.members = list(members)
        self.obs_dim = first.obs_dim
        self.num_actions = first.num_actions
        self.decision_interval = first.decision_interval
        self.deterministic = True
        self.source = source or f"ensemble of {len(members)}"
        self.version: str | None = None

    def act(self, stream_id: Hashable, obs: Any) -> tuple[int, np.ndarray]:
        probs = np.mean([m.act(stream_id, obs)[1] for m in self.members], axis=0)
        return int(np.argmax(probs)), probs

    def reset(self, stream_id: Hashable | None = None) -> None:
        for m in self.members:
            m.reset(stream_id)

    @property
    def streams(self) -> tuple[Hashable, ...]:
        return self.members[0].streams
