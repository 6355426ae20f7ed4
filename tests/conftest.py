"""Fixtures shared by every test package."""

from __future__ import annotations

import contextlib

import pytest


@contextlib.contextmanager
def private_ray(tmp_path_factory, num_cpus: int, **init_kwargs):
    """A private local Ray instance (no dashboard, token auth off for tests, torch on one thread),
    shut down on exit; an instance already running in this process is reused."""
    import ray

    tmp = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(tmp))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("RAY_ADDRESS", raising=False)
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=str(tmp),
                     logging_level="ERROR", **init_kwargs)
        yield ray
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_factory():
    """``private_ray`` for fixtures of the test packages (they cannot import this conftest by name)."""
    return private_ray
