"""Helpers for the training tests (a tiny config, YAML writing)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_5M = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"


def tiny_config(out: Path, *, iterations: int = 2, registered_model: str = "test-policy") -> dict:
    """A budget that trains in seconds: 200-step batches from 2 sub-envs (each ends a 100-step episode every
    iteration), a 16-unit LSTM, one week of validation."""
    return {
        "data": {"path": str(SAMPLE_5M), "train": {"start": "2021-01-01", "end": "2021-02-01"},
                 "validation": {"start": "2021-02-01", "end": "2021-02-08"}},
        "env": {"episode": {"length": 100}},
        "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
        "model": {"lstm_cell_size": 16, "max_seq_len": 10, "fcnet_hiddens": [16]},
        "run": {"seed": 7, "iterations": iterations, "checkpoint_every": 1, "validate_every": 1,
                "patience": None, "num_envs_per_env_runner": 2, "output_dir": str(out), "mlflow_experiment": "tests",
                "registered_model": registered_model},
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
