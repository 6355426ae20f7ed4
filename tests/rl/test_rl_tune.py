"""``tradebot tune`` end to end: two tiny trials on real Ray Tune (ASHA) and a real MLflow sqlite store.

The search runs once (module fixture); the tests read what it left in MLflow and in Tune's folder.
"""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from tradebot.rl import metric_names
from tradebot.rl.backtest_policy import saved_train_config
from tradebot.rl.policy import Policy
from tradebot.rl.tune import PARENT_RUN_TAG, TRIAL_SCORE, TuneFileConfig, check_search_space, base_train_config
from rl_helpers import tiny_config, write_yaml
from tradebot.cli import main as cli_main
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = "tests-tune"
MODEL = "test-tuned-policy"
SEARCH = {"ppo.lr": {"loguniform": [1.0e-4, 1.0e-3]},
          "model.lstm_cell_size": {"choice": [8, 16]},
          "env.reward.name": {"grid": ["net_log_return", "differential_sharpe"]}}


def _tune_yaml(tmp, **tune) -> dict:
    return {"train": tiny_config(tmp / "unused", iterations=2), "search": SEARCH,
            "scheduler": {"grace_period": 1, "reduction_factor": 2},
            "tune": {"num_samples": 1, "iterations": 2, "max_concurrent_trials": 1, "seed": 3,
                     "output_dir": str(tmp / "tune"), "name": "search", "mlflow_experiment": EXPERIMENT,
                     "registered_model": MODEL, **tune}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray, mlflow_store):
    tmp = tmp_path_factory.mktemp("tune")
    path = write_yaml(tmp / "tune.yaml", _tune_yaml(tmp))
    result = CliRunner().invoke(cli_main, ["tune", "--config", str(path), "--samples", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {"tmp": tmp, "output": result.output}


def _runs(mlflow_store):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if PARENT_RUN_TAG not in r.data.tags]
    trials = [r for r in runs if PARENT_RUN_TAG in r.data.tags]
    return client, parent, trials


def test_tune_tracks_every_trial_as_a_finished_child_run_with_config_and_metrics(searched, mlflow_store):
    client, parent, trials = _runs(mlflow_store)
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert len(trials) == 2  # one sample x a grid of two rewards
    assert {t.data.params["env.reward.name"] for t in trials} == {"net_log_return", "differential_sharpe"}
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert trial.data.tags[PARENT_RUN_TAG] == parent[0].info.run_id
        assert {"ppo.lr", "model.lstm_cell_size", "ppo.gamma", "data.path"} <= set(trial.data.params)
        history = client.get_metric_history(trial.info.run_id, metric_names.VALIDATION_RETURN)
        steps = [m.step for m in history]  # the validation score is reported at every iteration it ran
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 2
        for key in (metric_names.POLICY_LOSS, metric_names.ENTROPY, metric_names.VALIDATION_EQUITY_CHANGE, TRIAL_SCORE):
            assert key in trial.data.metrics, key
        assert "config.yaml" in {a.path for a in client.list_artifacts(trial.info.run_id)}
    # ASHA (grace 1, reduction 2) may stop the trial behind at iteration 1; the one ahead runs to the end
    longest = max(len(client.get_metric_history(t.info.run_id, metric_names.VALIDATION_RETURN)) for t in trials)
    assert longest == 2


def test_tune_registers_best_trial_checkpoint_linked_to_its_run(searched, mlflow_store):
    client, parent, trials = _runs(mlflow_store)
    best = next(t for t in trials if t.info.run_id == parent[0].data.tags["best_run_id"])
    assert best.data.metrics[TRIAL_SCORE] == max(t.data.metrics[TRIAL_SCORE] for t in trials)
    uri = parent[0].data.tags["registered_model_uri"]
    version = client.get_model_version(MODEL, uri.rsplit("/", 1)[1])
    assert version.run_id == best.info.run_id and best.data.tags["best_trial"] == "true"
    assert uri in searched["output"]
    saved = saved_train_config(uri)  # the registered model carries the best trial's training config
    assert saved is not None and saved.config.model.lstm_cell_size == int(best.data.params["model.lstm_cell_size"])
    assert saved.config.env["reward"]["name"] == best.data.params["env.reward.name"]
    policy = Policy.load(uri)
    assert policy.module.model_config["lstm_cell_size"] == saved.config.model.lstm_cell_size


def test_tune_trial_folders_look_like_train_outputs(searched):
    trial_dirs = sorted((searched["tmp"] / "tune" / "search").glob("trial_*"))
    assert len(trial_dirs) == 2
    for folder in trial_dirs:
        assert (folder / "config.yaml").is_file() and (folder / "state.json").is_file()
        assert any((folder / "checkpoints").glob("iter_*/config.yaml"))


def test_tune_bad_search_key_is_one_line_error_before_ray(tmp_path):
    raw = _tune_yaml(tmp_path)
    raw["search"] = {"ppo.learning_rate": {"choice": [1.0e-4]}}
    path = write_yaml(tmp_path / "bad.yaml", raw)
    result = CliRunner().invoke(cli_main, ["tune", "--config", str(path)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ppo.learning_rate" in lines[0], result.stderr


def test_tune_config_rejects_dimension_with_two_kinds_and_reward_typo(tmp_path):
    with pytest.raises(UserInputError, match="exactly one"):
        parse_config(TuneFileConfig, {"search": {"ppo.lr": {"choice": [1], "uniform": [0, 1]}}})
    cfg = parse_config(TuneFileConfig, {"train": tiny_config(tmp_path, iterations=1),
                                        "search": {"env.reward.name": {"choice": ["net_log_return", "sharpe"]}}})
    with pytest.raises(UserInputError, match="env.reward"):
        check_search_space(cfg, base_train_config(cfg))


def test_tune_example_config_loads_and_its_search_space_fits_the_demo():
    from tradebot.rl.tune import load_tune_config

    cfg = load_tune_config("experiments/tune.yaml")
    check_search_space(cfg, base_train_config(cfg, "experiments/tune.yaml"))
    assert set(cfg.search) == {"ppo.lr", "ppo.gamma", "ppo.entropy_coeff", "model.lstm_cell_size",
                               "model.max_seq_len", "env.reward.name"}
    assert yaml.safe_load(open("experiments/tune.yaml"))["train"] == "experiments/intraday_nifty5m.yaml"
    check_search_space(cfg, base_train_config(cfg.model_copy(update={"train": "experiments/demo.yaml"})))


def test_tune_trial_count_is_samples_times_every_grid():
    search = {"ppo.lr": {"loguniform": [1.0e-5, 1.0e-3]}, "ppo.gamma": {"grid": [0.9, 0.99]},
              "env.reward.name": {"grid": ["net_log_return", "differential_sharpe", "sharpe"]}}
    cfg = parse_config(TuneFileConfig, {"search": search, "tune": {"num_samples": 4}})
    assert cfg.trial_count() == 4 * 2 * 3
    assert cfg.trial_count(1) == 6
    assert parse_config(TuneFileConfig, {"search": {"ppo.lr": {"choice": [1e-4]}}}).trial_count(0) == 1
