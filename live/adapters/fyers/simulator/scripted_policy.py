"""A scripted policy server inside the simulator, for rehearsals and the chaos soak: the same HTTP API as
``tradebot serve`` (``tradebot.serving.app``), so the live loop calls it through
``tradebot.serving.policy_client.HttpPolicy`` over real HTTP, with its timeouts and failures.

* ``GET /policy/health`` -> ``{"status", "model_version", "obs_dim", "num_actions", "streams"}``
* ``POST /policy/act`` ``{"symbol", "obs", "client"?}`` -> ``{"symbol", "action", "action_name", "probs",
  "model_version"}``
* ``POST /policy/reset`` ``{"symbol"?, "client"?}``

It trades often: each call draws an action from a seeded generator per (client, symbol) stream
(``HOLD`` 40 %, each entry 20 %, each close 10 %). A slow or failing policy is an injected HTTP fault on
its route (``inject("delay", seconds=8, route="/policy/act")``, ``inject("slow_policy", seconds=8)``;
``http_error`` likewise). Any observation size is accepted; ``obs_dim`` reports what it was told.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from aiohttp import web

POLICY_PATH = "/policy"
ACTION_NAMES = ("HOLD", "BUY_LONG", "SELL_SHORT", "CLOSE_LONG", "CLOSE_SHORT")
WEIGHTS = np.array([0.4, 0.2, 0.2, 0.1, 0.1])


class ScriptedPolicy:
    """Seeded actions per (client, symbol) stream; see the module docstring."""

    def __init__(self, seed: int = 0, obs_dim: int = 0):
        self.seed = int(seed)
        self.obs_dim = int(obs_dim)
        self.streams: dict[tuple[str, str], np.random.Generator] = {}
        self.calls = 0

    def _stream(self, client: str, symbol: str) -> np.random.Generator:
        key = (client, symbol)
        if key not in self.streams:
            digest = hashlib.sha256(f"{self.seed}|{client}|{symbol}".encode()).digest()
            self.streams[key] = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return self.streams[key]

    def act(self, client: str, symbol: str) -> dict[str, Any]:
        self.calls += 1
        action = int(self._stream(client, symbol).choice(len(WEIGHTS), p=WEIGHTS))
        return {"symbol": symbol, "action": action, "action_name": ACTION_NAMES[action],
                "probs": WEIGHTS.tolist(), "model_version": f"simulator:scripted:{self.seed}"}

    def reset(self, client: str, symbol: str | None) -> int:
        for key in [k for k in self.streams if k[0] == client and (symbol is None or k[1] == symbol)]:
            del self.streams[key]
        return len(self.streams)


class PolicyRoutes:
    """The ``/policy`` handlers (a mixin of the simulator's server); ``policy`` is the ``ScriptedPolicy``."""

    policy: ScriptedPolicy

    def add_policy_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{POLICY_PATH}/health", self.policy_health)
        router.add_post(f"{POLICY_PATH}/act", self.policy_act)
        router.add_post(f"{POLICY_PATH}/reset", self.policy_reset)

    async def policy_health(self, request: web.Request) -> web.Response:
        p = self.policy
        return web.json_response({"status": "ok", "model_version": f"simulator:scripted:{p.seed}",
                                  "obs_dim": p.obs_dim, "num_actions": len(ACTION_NAMES), "streams": len(p.streams)})

    async def policy_act(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            symbol = str(body["symbol"])
            obs = [float(x) for x in body["obs"]]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"detail": "send {\"symbol\": ..., \"obs\": [...]}"}, status=422)
        if not all(np.isfinite(obs)):
            return web.json_response({"detail": "observation has NaN or inf values"}, status=422)
        return web.json_response(self.policy.act(str(body.get("client") or ""), symbol))

    async def policy_reset(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = await request.json() if text.strip() else {}
        except ValueError:
            return web.json_response({"detail": "reset body: not JSON"}, status=422)
        symbol = body.get("symbol") if isinstance(body, dict) else None
        client = str(body.get("client") or "") if isinstance(body, dict) else ""
        n = self.policy.reset(client, symbol)
        return web.json_response({"reset": symbol if symbol is not None else "all", "streams": n})


__all__ = ["POLICY_PATH", "PolicyRoutes", "ScriptedPolicy"]
