"""Fixtures for the Serve tests: a private local Ray, a tiny trained policy, and the policy served on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_5M = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"
TOKEN = "test-token-3b1f"  # a test secret; real ones come from TRADEBOT_SERVE_TOKEN


def tiny_config(out: Path) -> dict:
    """A budget that trains in seconds (as tests/rl/rl_helpers.tiny_config): one 200-step iteration."""
    return {
        "data": {"path": str(SAMPLE_5M), "train": {"start": "2021-01-01", "end": "2021-02-01"},
                 "validation": {"start": "2021-02-01", "end": "2021-02-08"}},
        "env": {"episode": {"length": 100}},
        "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
        "model": {"lstm_cell_size": 16, "max_seq_len": 10, "fcnet_hiddens": [16]},
        "run": {"seed": 7, "iterations": 1, "checkpoint_every": 1, "validate_every": 1, "patience": None,
                "output_dir": str(out), "mlflow_experiment": "tests", "registered_model": "test-serving"},
    }


@pytest.fixture(scope="session")
def serve_ray(tmp_path_factory, ray_factory):
    """One private local Ray for the session (2 CPUs, replica logs kept out of the test output)."""
    with ray_factory(num_cpus=2, log_to_driver=False) as ray:
        yield ray


@pytest.fixture(scope="session")
def trained(tmp_path_factory, serve_ray):
    """A PPO-LSTM checkpoint after one tiny iteration, with its training config.yaml inside (as `tradebot train`)."""

    from tradebot.rl.train_config import TrainConfig
    from tradebot.rl.train import train_and_save
    from tradebot.core.config import parse_config

    tmp = tmp_path_factory.mktemp("policy")
    cfg = parse_config(TrainConfig, tiny_config(tmp / "out"))
    return {"path": train_and_save(cfg, tmp / "checkpoint"), "cfg": cfg}


@pytest.fixture(scope="session")
def random_walk(trained):
    """``random_walk(start, seed, steps)``: ``steps`` observations of the tiny policy's training env from bar
    ``start``, stepped with seeded random actions (what a served policy is fed in the parity tests)."""
    return lambda start, seed, steps: _random_walk(trained["cfg"], start, seed, steps)


def _random_walk(cfg, start: int, seed: int, steps: int):
    import numpy as np

    from tradebot.rl.train import make_env

    env = make_env({"env_id": cfg.run.env_id, "path": cfg.data.path, "start": "2021-01-01", "end": "2021-03-01",
                    "config": {"episode": {"length": steps + 5}}})
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed, options={"start": start})
    rows = []
    for _ in range(steps):
        rows.append(obs)
        obs, *_ = env.step(int(rng.integers(0, 5)))
    env.close()
    return np.asarray(rows, dtype=np.float32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def served(trained, serve_ray):
    """The tiny policy behind Ray Serve on 127.0.0.1 (bearer token required); its handle and URL."""
    from ray import serve

    from tradebot.serving.app import start_serve

    port = _free_port()
    handle = start_serve(str(trained["path"]), host="127.0.0.1", port=port, token=TOKEN)
    try:
        yield {"handle": handle, "url": f"http://127.0.0.1:{port}", "token": TOKEN, "port": port}
    finally:
        serve.shutdown()
