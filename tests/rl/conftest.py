"""Fixtures for the training tests: a private local Ray and a tmp MLflow store."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory):
    """One private local Ray instance for the session (1 CPU, no dashboard, token auth off for tests)."""
    import ray

    tmp = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(tmp))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("RAY_ADDRESS", raising=False)
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=str(tmp),
                     logging_level="ERROR")
        yield ray
        ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """MLFLOW_TRACKING_URI pointing at a sqlite file in a tmp folder (artifacts land beside it)."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        yield uri
    mlflow.set_tracking_uri(before)  # None: back to MLflow's default (and the env var unset)
