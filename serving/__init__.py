"""Ray Serve for the trained policy: ``serving.app`` (the deployment, ``build_app``, ``app_builder``) and
``serving.client`` (``HandlePolicy`` / ``HttpPolicy`` for the live loop, ``start_serve`` / ``local_serve``).

Imported lazily: ``import serving`` does not load Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PolicyServer": "serving.app",
    "build_app": "serving.app",
    "app_builder": "serving.app",
    "TOKEN_ENV": "serving.app",
    "HandlePolicy": "serving.client",
    "HttpPolicy": "serving.client",
    "start_serve": "serving.client",
    "local_serve": "serving.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
