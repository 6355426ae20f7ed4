"""Ray Serve for the trained policy: ``tradebot.serving.app`` (the deployment, ``build_app``, ``app_builder``,
and running it: ``start_serve`` / ``local_serve`` / ``serve_until_stopped``) and ``tradebot.serving.policy_client``
(``HandlePolicy`` / ``HttpPolicy``, the live loop's policy callables).

Imported lazily: ``import tradebot.serving`` does not load Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PolicyServer": "tradebot.serving.app",
    "build_app": "tradebot.serving.app",
    "app_builder": "tradebot.serving.app",
    "TOKEN_ENV": "tradebot.serving.app",
    "start_serve": "tradebot.serving.app",
    "local_serve": "tradebot.serving.app",
    "HandlePolicy": "tradebot.serving.policy_client",
    "HttpPolicy": "tradebot.serving.policy_client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tradebot.serving' has no attribute {name!r}")
