"""Ray Serve for the trained policy: ``tradebot.serving.app`` (the deployment, ``build_app``, ``app_builder``) and
``tradebot.serving.client`` (``HandlePolicy`` / ``HttpPolicy`` for the live loop, ``start_serve`` / ``local_serve``).

Imported lazily: ``import serving`` does not load Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PolicyServer": "tradebot.serving.app",
    "build_app": "tradebot.serving.app",
    "app_builder": "tradebot.serving.app",
    "TOKEN_ENV": "tradebot.serving.app",
    "HandlePolicy": "tradebot.serving.client",
    "HttpPolicy": "tradebot.serving.client",
    "start_serve": "tradebot.serving.client",
    "local_serve": "tradebot.serving.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
