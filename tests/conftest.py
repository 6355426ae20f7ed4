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


EXPERTS = ("trend", "mean_reversion", "high_vol")


def save_test_mixture(checkpoint: Path, dest: Path, seed: int = 0) -> Path:
    """A mixture of experts from a real trained ``checkpoint`` used as three experts, with a supervised
    gate of random coefficients (so its weights change from bar to bar), saved as ``train_mixture`` saves
    one (``mixture.json``, ``experts/``, the experts' ``config.yaml``): ``Policy.load(dest)`` loads it."""
    import numpy as np

    from tradebot.envs.trading_env import N_POSITION_FEATURES
    from tradebot.rl.moe.gates import SupervisedGate
    from tradebot.rl.moe.mixture import MixturePolicy
    from tradebot.rl.policy import Policy

    checkpoint, dest = Path(checkpoint), Path(dest)
    experts = {name: Policy.load(checkpoint) for name in EXPERTS}
    f = next(iter(experts.values())).obs_dim - N_POSITION_FEATURES  # the market part of the observation
    rng = np.random.default_rng(seed)
    gate = SupervisedGate(EXPERTS, np.zeros(f), np.ones(f), rng.normal(scale=0.5, size=(len(EXPERTS), f)),
                          np.zeros(len(EXPERTS)), accuracy=0.0)
    MixturePolicy(experts, "supervised", supervised=gate).save(dest, {name: checkpoint for name in EXPERTS})
    shutil.copyfile(checkpoint / "config.yaml", dest / "config.yaml")  # the experts' env, as train_mixture writes
    return dest


@pytest.fixture(scope="session")
def mixture_factory():
    """``save_test_mixture`` for the test packages (they cannot import this conftest by name)."""
    return save_test_mixture
