"""The MLflow helpers shared by train, tune and evaluate (tradebot.rl.tracking); no Ray."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tradebot.rl.train_config import TrainConfig
from tradebot.rl.tracking import (
    MAX_PARAM_VALUE,
    PARAMS_PER_BATCH,
    finite_metrics,
    flatten_params,
    is_finite_number,
    log_params,
    open_experiment,
)


def test_flatten_params_dots_nested_keys_and_writes_lists_as_json():
    flat = flatten_params({"ppo": {"lr": 3e-4, "nested": {"k": None}}, "model": {"fcnet_hiddens": [64, 64]},
                           "evaluation": {"baselines": ["buy_and_hold", "random"]}, "env": {}, "flag": True})
    assert flat == {"ppo.lr": "0.0003", "ppo.nested.k": "None", "model.fcnet_hiddens": "[64, 64]",
                    "evaluation.baselines": '["buy_and_hold", "random"]', "env": "{}", "flag": "True"}


def test_flatten_params_of_a_train_config_has_every_leaf_as_text():
    flat = flatten_params(TrainConfig().model_dump(mode="json"))
    assert flat["model.lstm_cell_size"] == "64" and flat["data.train.start"] == "2021-01-01"
    assert flat["run.patience"] == "10" and flat["model.fcnet_hiddens"] == "[64]"
    assert all(isinstance(v, str) for v in flat.values())


class _Client:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list]] = []

    def log_batch(self, run_id, params=()):
        self.batches.append((run_id, list(params)))


def test_log_params_batches_and_cuts_values_to_mlflow_limits():
    client = _Client()
    params = {f"k{i}": str(i) for i in range(PARAMS_PER_BATCH * 2 + 5)}
    params["long"] = "x" * (MAX_PARAM_VALUE + 10)
    log_params(client, "run-1", params)
    assert [len(batch) for _, batch in client.batches] == [PARAMS_PER_BATCH, PARAMS_PER_BATCH, 6]
    logged = {p.key: p.value for _, batch in client.batches for p in batch}
    assert logged["k7"] == "7" and len(logged["long"]) == MAX_PARAM_VALUE
    assert {run for run, _ in client.batches} == {"run-1"}


def test_finite_metrics_leave_out_missing_non_finite_and_non_numbers():
    values = {"a": 1.5, "b": np.float32(2.0), "c": np.int64(3), "nan": math.nan, "inf": -math.inf, "none": None,
              "flag": True, "text": "1.0"}
    metrics = finite_metrics(values, step=4)
    assert {m.key: m.value for m in metrics} == {"a": 1.5, "b": 2.0, "c": 3.0}
    assert {m.step for m in metrics} == {4}
    assert not is_finite_number(False) and is_finite_number(0)


def test_open_experiment_on_sqlite_keeps_artifacts_beside_the_database(tmp_path):
    import mlflow

    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        first = open_experiment("tracking test/one", uri)
        assert first.tracking_uri == uri and mlflow.get_tracking_uri() == uri
        again = open_experiment("tracking test/one", uri)
        assert again.experiment_id == first.experiment_id
        location = first.client().get_experiment(first.experiment_id).artifact_location
        assert Path(location.removeprefix("file://")) == (tmp_path / "mlruns" / "tracking_test_one").resolve()
    finally:
        mlflow.set_tracking_uri(before)

