"""Fixtures for the training tests: a private local Ray and a tmp MLflow store."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory, ray_factory):
    """One private local Ray instance for the session (1 CPU)."""
    with ray_factory(num_cpus=1) as ray:
        yield ray


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
