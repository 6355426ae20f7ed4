"""Fixtures shared by every test package."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest


@contextlib.contextmanager
def private_ray(num_cpus: int, **init_kwargs):
    """A private local Ray instance (no dashboard, token auth off for tests, torch on one thread),
    shut down on exit; an instance already running in this process is reused."""
    import ray

    # Ray's socket paths (<tmp>/ray/session_<time>_<pid>/sockets/plasma_store) must stay under the
    # 107-byte AF_UNIX limit, which pytest's deep tmp paths can exceed: use a short folder in /tmp.
    tmp = Path(tempfile.mkdtemp(prefix="tbray-", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(tmp))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("RAY_ADDRESS", raising=False)
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=str(tmp),
                     logging_level="ERROR", **init_kwargs)
        try:
            yield ray
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_factory():
    """``private_ray`` for fixtures of the test packages (they cannot import this conftest by name)."""
    return private_ray
