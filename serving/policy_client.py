"""Calling the served policy: the live loop's ``policy(symbol, obs)`` callable, over a handle or HTTP.

```python
with local_serve("runs/x/checkpoints/iter_000050", port=None) as handle:   # tradebot.serving.app: Serve here
    policy = HandlePolicy(handle)
    action, probs = policy("NSE:SBIN-EQ", obs)
    policy.explain("NSE:SBIN-EQ")       # a mixture of experts: that decision's GateDecision (else None)
policy = HttpPolicy("http://127.0.0.1:8000", token=os.environ.get("TRADEBOT_SERVE_TOKEN"))
```

Both adapters reset a symbol's stream on the server the first time they see it (the live loop's
policy state is not journaled, so a new process starts every symbol afresh, as training episodes do).
Each adapter has its own random ``client`` id: its streams on the server are (client, symbol), so no
other caller can reset or advance them. ``HttpPolicy`` takes the server's token from ``token``, else
``$TRADEBOT_SERVE_TOKEN``, else the file a ``tradebot serve`` with a generated token wrote.

A served mixture of experts answers each act with its gate; ``explain(symbol)`` returns it as the
in-process ``MixturePolicy.explain`` does (a ``GateDecision``: weights per expert, the chosen expert),
so the live loop journals and exports it the same way for either path.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np

from tradebot.core.errors import UserInputError
from tradebot.rl.moe.mixture import GateDecision
from tradebot.serving.app import TOKEN_ENV, check_model, start_serve, token_file


class _FirstSeenReset:
    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._gates: dict[str, GateDecision] = {}
        self.client = uuid.uuid4().hex  # this caller's streams on the server: (client, symbol)

    def _first(self, symbol: str) -> bool:
        if symbol in self._seen:
            return False
        self._seen.add(symbol)
        return True

    def _answer(self, symbol: str, out: dict[str, Any]) -> tuple[int, np.ndarray]:
        """``(action, probs)`` of an act's answer; its gate (a mixture's) is kept for ``explain``."""
        gate = out.get("gate")
        if gate:
            names = tuple(gate["weights"])
            self._gates[symbol] = GateDecision(names, np.asarray([gate["weights"][n] for n in names], dtype=np.float64),
                                               str(gate["expert"]))
        else:
            self._gates.pop(symbol, None)
        return int(out["action"]), np.asarray(out["probs"])

    def explain(self, symbol: str) -> GateDecision | None:
        """The gate of ``symbol``'s last decision (a served mixture of experts), else None."""
        return self._gates.get(symbol)

    def _forget(self, symbol: str | None) -> None:
        if symbol is None:
            self._gates.clear()
        else:
            self._gates.pop(symbol, None)


class HandlePolicy(_FirstSeenReset):
    """``policy(symbol, obs) -> (action, probs)`` through a Serve ``DeploymentHandle`` (same Ray cluster)."""

    def __init__(self, handle: Any, timeout_s: float = 10.0):
        super().__init__()
        self.handle = handle
        self.timeout_s = timeout_s
        self.info = handle.info.remote().result(timeout_s=timeout_s)
        self.version = f"serve:{self.info['model_version']}"
        self.obs_dim = int(self.info["obs_dim"])

    def __call__(self, symbol: str, obs: np.ndarray) -> tuple[int, np.ndarray]:
        if self._first(symbol):
            self.handle.reset.remote(symbol, self.client).result(timeout_s=self.timeout_s)
        out = self.handle.act.remote(symbol, np.asarray(obs, dtype=np.float32).tolist(),
                                     self.client).result(timeout_s=self.timeout_s)
        return self._answer(symbol, out)

    def reset(self, symbol: str | None = None) -> None:
        self.handle.reset.remote(symbol, self.client).result(timeout_s=self.timeout_s)
        self._forget(symbol)


class HttpPolicy(_FirstSeenReset):
    """``policy(symbol, obs) -> (action, probs)`` over HTTP (``/act``), one keep-alive connection."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 5.0):
        import requests

        super().__init__()
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.http = requests.Session()
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if token is None and token_file().is_file():
            token = token_file().read_text().strip() or None
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        try:
            r = self.http.get(f"{self.url}/health", timeout=timeout_s)
        except requests.RequestException as err:
            raise UserInputError(f"{self.url}: the policy server does not answer ({type(err).__name__}); "
                                 "start it with `tradebot serve --model URI` or fix --serve-url") from None
        if r.status_code == 401:
            raise UserInputError(f"{self.url}: 401 unauthorised; set {TOKEN_ENV} to the server's token (or read it "
                                 f"from {token_file()} where `tradebot serve` generated it)")
        if r.status_code != 200:
            raise UserInputError(f"{self.url}/health answered {r.status_code}; is it a `tradebot serve` server?")
        self.info = r.json()
        self.version = f"serve:{self.info['model_version']}"
        self.obs_dim = int(self.info["obs_dim"])

    def __call__(self, symbol: str, obs: np.ndarray) -> tuple[int, np.ndarray]:
        if self._first(symbol):
            self.reset(symbol)
        r = self.http.post(f"{self.url}/act", json={"symbol": symbol, "client": self.client,
                                                       "obs": np.asarray(obs, dtype=np.float32).tolist()},
                           timeout=self.timeout_s)
        if r.status_code != 200:
            raise RuntimeError(f"/act answered {r.status_code}: {r.text[:200]}")
        return self._answer(symbol, r.json())

    def reset(self, symbol: str | None = None) -> None:
        r = self.http.post(f"{self.url}/reset", json={"symbol": symbol, "client": self.client}, timeout=self.timeout_s)
        r.raise_for_status()
        self._forget(symbol)

    def close(self) -> None:
        self.http.close()


def model_features(model: str):
    """The ``FeatureConfig`` ``model`` was trained with (its saved training config), so the live
    observation has the training layout; the env's default features when no config was saved."""
    from tradebot.rl.backtest_policy import policy_env_config, saved_train_config

    saved = saved_train_config(model)
    return policy_env_config(saved.config if saved is not None else None).features


def check_obs_dim(policy: HandlePolicy | HttpPolicy, loop: Any, model: str) -> None:
    """Refuse (one line) a loop whose observations do not have the served policy's size."""
    from tradebot.envs.trading_env import N_POSITION_FEATURES

    for symbol, src in loop.features.items():
        dim = len(src.feature_names) + N_POSITION_FEATURES
        if dim != policy.obs_dim:
            raise UserInputError(f"{model}: the served policy takes {policy.obs_dim} observation values but the live "
                                 f"loop gives {dim} for {symbol}; serve the model this run was configured for "
                                 "(the features come from the model's saved config.yaml)")


def serve_policy(model: str, serve_url: str | None = None) -> tuple[HandlePolicy | HttpPolicy, Any]:
    """The live loop's policy for ``model``: over HTTP to ``serve_url``, else through the handle of a Serve
    started in this process. Returns ``(policy, stop)``; call ``stop()`` when the run ends."""
    if serve_url:
        policy = HttpPolicy(serve_url)
        if policy.info["model_version"] != model:
            import logging

            logging.getLogger("tradebot.serving").warning("the server at %s serves %s, not %s", serve_url,
                                                          policy.info["model_version"], model)
        return policy, policy.close
    from ray import serve

    check_model(model)
    handle = start_serve(model)
    return HandlePolicy(handle), serve.shutdown
