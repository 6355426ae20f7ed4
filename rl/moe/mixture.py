"""A mixture of expert policies and a gate, acting like one ``Policy``.

```python
mixture = MixturePolicy.load("runs/moe/mixture")        # or Policy.load(...) / "models:/tradebot-moe/3"
action, probs = mixture.act("NSE:SBIN-EQ", obs)          # the env's observation, as for any Policy
decision = mixture.explain("NSE:SBIN-EQ")                # the gate of that act: weights, chosen expert
decision.weights                                         # np.ndarray, one per mixture.expert_names, sum 1
```

Every expert is a ``Policy`` (its own normaliser, its own recurrent state per stream) and sees every
bar of every stream, chosen or not, so a later switch finds it up to date. Three gates:

* ``equal``: every expert weighs 1/K, always (the always-on ensemble: the control of a routing gate).
* ``supervised``: a softmax (multinomial logistic) classifier of the bar's market features (the
  observation without its account and mask tail), fitted on the training dates to the regime detector's
  hindsight (smoothed) regimes; its class probabilities are the weights (``tradebot.rl.moe.gates``).
* ``rl``: a PPO-LSTM policy over the frozen experts (``tradebot.rl.moe.gate_env``): its observation is
  the one-hot previous choice plus the bar's observation; it picks one expert per decision and paid a
  switching cost in training.

Mixing. With ``equal`` and ``supervised`` gates the action probabilities are the weighted mean of the
experts' (``sum_k w_k p_k``) and the action their argmax; with the ``rl`` gate the action and
probabilities are the chosen expert's, and the weights reported are the gate's probabilities. Either
way an action an expert's mask forbids has probability 0 in every expert, so it stays masked after
mixing. ``explain`` returns the weights (summing to 1) and the chosen expert (the largest weight) of
the stream's last ``act``.

On disk (``save`` / ``load``) a mixture is a folder: ``mixture.json`` (gate kind, expert names,
the supervised gate's coefficients, the detector and provenance), ``experts/<name>/`` (policy
exports) and, for an ``rl`` gate, ``gate/`` (a policy export). ``Policy.load`` recognises it.
Deterministic by default; ``load(..., deterministic=False)`` samples the action from the mixed
probabilities (and the rl gate's pick from its own), with a seeded generator.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic

MIXTURE_FILE = "mixture.json"
FORMAT = "tradebot.rl.moe/1"
GATES = ("equal", "supervised", "rl")
EXPERTS_DIR = "experts"
GATE_DIR = "gate"


@dataclass(frozen=True)
class GateDecision:
    """The gate's output for one act: ``weights`` per expert (``expert_names`` order, sum 1) and the
    chosen expert's name (the largest weight; the one acting with an ``rl`` gate)."""

    expert_names: tuple[str, ...]
    weights: np.ndarray
    expert: str

    def as_dict(self) -> dict[str, Any]:
        return {"expert": self.expert, "weights": {n: float(w) for n, w in zip(self.expert_names, self.weights)}}


class MixturePolicy:
    """Experts and a gate with ``Policy``'s acting interface (see the module docstring)."""

    def __init__(self, experts: dict[str, Any], gate: str, *, supervised: Any = None, gate_policy: Any = None,
                 meta: dict[str, Any] | None = None, source: str | None = None):
        if gate not in GATES:
            raise UserInputError(f"unknown gate {gate!r}; use one of {', '.join(GATES)}")
        if len(experts) < 2:
            raise UserInputError("a mixture needs at least two experts")
        first = next(iter(experts.values()))
        for name, m in experts.items():
            if (m.obs_dim, m.num_actions, m.decision_interval) != (first.obs_dim, first.num_actions,
                                                                 first.decision_interval):
                raise UserInputError(f"expert {name} differs from the others in observation size, actions or "
                                     "decision interval; train the experts with the same env config")
        if gate == "supervised" and supervised is None:
            raise UserInputError("a supervised gate needs its classifier")
        if gate == "rl":
            if gate_policy is None:
                raise UserInputError("an rl gate needs its gate policy")
            if gate_policy.num_actions != len(experts) or gate_policy.obs_dim != first.obs_dim + len(experts):
                raise UserInputError(f"the gate policy acts on {gate_policy.obs_dim} values over "
                                     f"{gate_policy.num_actions} choices; these {len(experts)} experts need "
                                     f"{first.obs_dim + len(experts)} over {len(experts)}")
        self.experts = dict(experts)
        self.expert_names: tuple[str, ...] = tuple(experts)
        self.gate = gate
        self.supervised = supervised
        self.gate_policy = gate_policy
        self.meta = dict(meta or {})
        self.obs_dim = first.obs_dim
        self.num_actions = first.num_actions
        self.decision_interval = first.decision_interval
        self.deterministic = bool(getattr(first, "deterministic", True))
        self._rng = np.random.default_rng(getattr(first, "seed", None))
        self.source = source or f"mixture of {', '.join(self.expert_names)} ({gate} gate)"
        self.version: str | None = None
        self._last: dict[Hashable, GateDecision] = {}
        self._choice: dict[Hashable, int] = {}  # rl gate: the previous choice per stream

    # ---- acting ----------------------------------------------------------------------------
    def act(self, stream_id: Hashable, obs: Any) -> tuple[int, np.ndarray]:
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        outs = [m.act(stream_id, x) for m in self.experts.values()]
        probs = np.stack([p for _, p in outs])  # [K, A]
        k = len(outs)
        if self.gate == "equal":
            weights = np.full(k, 1.0 / k)
        elif self.gate == "supervised":
            weights = self.supervised.weights(market_part(x))
        else:
            prev = self._choice.get(stream_id, 0)
            _, weights = self.gate_policy.act(stream_id, gate_observation(x, prev, k))
            weights = np.asarray(weights, dtype=np.float64)
        weights = weights / weights.sum()
        if self.gate == "rl":
            chosen = int(np.argmax(weights))
            self._choice[stream_id] = chosen
            action, mixed = outs[chosen][0], probs[chosen]
        else:
            chosen = int(np.argmax(weights))
            mixed = weights @ probs
            action = int(np.argmax(mixed)) if self.deterministic else int(self._rng.choice(len(mixed), p=mixed / mixed.sum()))
        self._last[stream_id] = GateDecision(self.expert_names, weights, self.expert_names[chosen])
        return action, mixed

    def explain(self, stream_id: Hashable) -> GateDecision | None:
        """The gate of ``stream_id``'s last ``act`` (None before its first)."""
        return self._last.get(stream_id)

    def reset(self, stream_id: Hashable | None = None) -> None:
        for m in self.experts.values():
            m.reset(stream_id)
        if self.gate_policy is not None:
            self.gate_policy.reset(stream_id)
        if stream_id is None:
            self._last.clear()
            self._choice.clear()
        else:
            self._last.pop(stream_id, None)
            self._choice.pop(stream_id, None)

    @property
    def streams(self) -> tuple[Hashable, ...]:
        return next(iter(self.experts.values())).streams

    # ---- persistence -----------------------------------------------------------------------
    def save(self, dest: str | Path, expert_dirs: dict[str, str | Path], gate_dir: str | Path | None = None) -> Path:
        """Write the mixture folder: the experts' (and the rl gate's) policy exports are copied from
        ``expert_dirs`` / ``gate_dir`` (policy exports or training checkpoints)."""
        from tradebot.rl.policy import export_policy

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in self.expert_names:
            export_policy(expert_dirs[name], dest / EXPERTS_DIR / name)
        if self.gate == "rl":
            if gate_dir is None:
                raise UserInputError("saving an rl-gated mixture needs the gate policy's folder")
            export_policy(gate_dir, dest / GATE_DIR)
        doc = {"format": FORMAT, "gate": self.gate, "experts": list(self.expert_names),
               "supervised": None if self.supervised is None else self.supervised.to_dict(), **self.meta}
        write_text_atomic(dest / MIXTURE_FILE, json.dumps(doc, indent=1))
        return dest

    @classmethod
    def load(cls, path: str | Path, *, deterministic: bool = True, seed: int | None = None) -> MixturePolicy:
        from tradebot.rl.moe.gates import SupervisedGate
        from tradebot.rl.policy import Policy

        path = Path(path).resolve()
        try:
            doc = json.loads((path / MIXTURE_FILE).read_text())
        except (OSError, ValueError) as err:
            raise UserInputError(f"{path / MIXTURE_FILE}: unreadable mixture ({err}); pass a folder written by "
                                 "`tradebot train --config experiments/moe.yaml`") from None
        if doc.get("format") != FORMAT:
            raise UserInputError(f"{path / MIXTURE_FILE}: not a tradebot mixture (format {doc.get('format')!r})")
        experts = {n: Policy.from_checkpoint(path / EXPERTS_DIR / n, deterministic=deterministic, seed=seed)
                   for n in doc["experts"]}
        gate = doc["gate"]
        supervised = SupervisedGate.from_dict(doc["supervised"]) if doc.get("supervised") else None
        gate_policy = (Policy.from_checkpoint(path / GATE_DIR, deterministic=deterministic, seed=seed)
                       if gate == "rl" else None)
        meta = {k: v for k, v in doc.items() if k not in ("format", "gate", "experts", "supervised")}
        mixture = cls(experts, gate, supervised=supervised, gate_policy=gate_policy, meta=meta, source=str(path))
        mixture.deterministic = deterministic
        mixture._rng = np.random.default_rng(seed)
        return mixture


def is_mixture(path: str | Path) -> bool:
    """True for a mixture folder (it has ``mixture.json``)."""
    return (Path(path) / MIXTURE_FILE).is_file()


def market_part(obs: np.ndarray) -> np.ndarray:
    """The observation's market features: everything before the account and mask tail."""
    from tradebot.envs.trading_env import N_POSITION_FEATURES

    return np.asarray(obs)[..., :-N_POSITION_FEATURES]


def gate_observation(obs: np.ndarray, previous: int | np.ndarray, k: int) -> np.ndarray:
    """The rl gate's observation: the one-hot previous choice, then the bar's observation (rows for a
    batch). The observation stays last so its action-mask tail is where the gate's module drops it."""
    obs = np.asarray(obs, dtype=np.float32)
    onehot = np.eye(k, dtype=np.float32)[np.asarray(previous)]
    return np.concatenate([onehot, obs], axis=-1)


def expert_names_of(policy: Any) -> Sequence[str]:
    """The expert names of a mixture, () for any other policy."""
    return tuple(getattr(policy, "expert_names", ()) or ())
