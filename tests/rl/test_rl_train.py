"""Training end to end on real Ray and a real MLflow store, with a tiny budget.

One run is interrupted after its first iteration, then the same `tradebot train` command resumes it
from the checkpoint, finishes, and registers the policy; the tests read what that left behind.
"""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rl_helpers import tiny_config, write_yaml
from tradebot.rl import metric_names
from tradebot.rl.train_config import TrainConfig
from tradebot.rl.policy import MODULE_SUBDIR, Policy
from tradebot.rl.tracking import flatten_params
from tradebot.rl.train import STATE_FILE, IterationReport, make_env, train
from tradebot.cli import main as cli_main
from tradebot.core.config import parse_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "test-resumed-policy"


class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, local_ray, mlflow_store):
    """Iteration 1 then an interruption (python API); the CLI, re-run on the same folder, finishes."""
    tmp = tmp_path_factory.mktemp("train")
    out = tmp / "out"
    raw = tiny_config(out, iterations=2, registered_model=MODEL)
    cfg = parse_config(TrainConfig, raw)
    reports: list[IterationReport] = []

    def interrupt_after_first(report: IterationReport) -> None:
        reports.append(report)
        if report.iteration == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(cfg, on_iteration=interrupt_after_first)
    after_interrupt = json.loads((out / STATE_FILE).read_text())

    config_path = write_yaml(tmp / "tiny.yaml", raw)
    cli = CliRunner().invoke(cli_main, ["train", "--config", str(config_path), "--output", str(out)])
    assert cli.exit_code == 0, cli.output + repr(cli.exception)
    state = json.loads((out / STATE_FILE).read_text())
    return {"out": out, "cfg": cfg, "raw": raw, "config_path": config_path, "reports": reports,
            "after_interrupt": after_interrupt, "state": state, "cli_output": cli.output}


def test_train_interrupted_run_leaves_checkpoint_and_state(resumed_run):
    first = resumed_run["after_interrupt"]
    assert first["iteration"] == 1 and first["checkpoint"] == "checkpoints/iter_000001"
    assert first["model_uri"] is None and first["mlflow_run_id"]
    assert (resumed_run["out"] / first["checkpoint"] / MODULE_SUBDIR).is_dir()
    report = resumed_run["reports"][0]
    assert report.checkpoint == "checkpoints/iter_000001" and report.validation_return is not None
    for key in (metric_names.POLICY_LOSS, metric_names.VALUE_LOSS, metric_names.ENTROPY, metric_names.KL, metric_names.ENV_STEPS_PER_S):
        assert np.isfinite(report.metrics[key]), key


def test_train_rerun_resumes_same_mlflow_run_and_finishes(resumed_run, mlflow_store):
    from mlflow import MlflowClient

    state, first = resumed_run["state"], resumed_run["after_interrupt"]
    assert state["iteration"] == 2 and state["checkpoint"] == "checkpoints/iter_000002"
    assert state["mlflow_run_id"] == first["mlflow_run_id"]
    assert state["model_uri"] == f"models:/{MODEL}/{state['model_version']}"
    assert "models:/" in resumed_run["cli_output"]
    client = MlflowClient(mlflow_store)
    run = client.get_run(state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_at_iteration"] == "1"
    # RLlib's counters came back with the checkpoint: iteration 2 sampled on top of iteration 1.
    steps = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric_names.ENV_STEPS_TOTAL)}
    assert steps[2] == pytest.approx(2 * resumed_run["cfg"].ppo.train_batch_size, rel=0.05)


def test_train_logs_params_metrics_and_artifacts_to_mlflow(resumed_run, mlflow_store):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_store)
    run = client.get_run(resumed_run["state"]["mlflow_run_id"])
    assert run.data.params["ppo.lr"] == str(resumed_run["cfg"].ppo.lr)
    assert run.data.params["model.lstm_cell_size"] == "16"
    assert set(flatten_params(resumed_run["cfg"].model_dump(mode="json"))) <= set(run.data.params)
    for key in (metric_names.EPISODE_RETURN_MEAN, metric_names.POLICY_LOSS, metric_names.VALUE_LOSS, metric_names.ENTROPY, metric_names.KL, metric_names.ENV_STEPS_PER_S,
                metric_names.VALIDATION_RETURN, metric_names.BEST_VALIDATION_RETURN):
        history = client.get_metric_history(run.info.run_id, key)
        assert {m.step for m in history} >= {2}, key
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "config.yaml"} <= top
    # how it sampled and learned: 2 sub-envs, one torch thread, the CPU
    tags = run.data.tags
    assert (tags["num_envs_per_env_runner"], tags["torch_threads"], tags["learner_device"]) == ("2", "1", "cpu")
    inside = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert "checkpoint/learner_group" in inside and "checkpoint/env_runner" in inside


def test_train_registers_model_version_linked_to_run(resumed_run, mlflow_store):
    from mlflow import MlflowClient

    state = resumed_run["state"]
    version = MlflowClient(mlflow_store).get_model_version(MODEL, str(state["model_version"]))
    assert version.run_id == state["mlflow_run_id"]
    assert state["final_checkpoint"] in (state["checkpoint"], "checkpoints/iter_000001")


def test_policy_from_registry_acts_like_policy_from_checkpoint(resumed_run, mlflow_store):
    state, out, cfg = resumed_run["state"], resumed_run["out"], resumed_run["cfg"]
    from_registry = Policy.load(state["model_uri"])
    from_checkpoint = Policy.load(out / state["final_checkpoint"])
    assert from_registry.normaliser.count > 0
    np.testing.assert_array_equal(from_registry.normaliser.mean, from_checkpoint.normaliser.mean)
    np.testing.assert_array_equal(from_registry.normaliser.std, from_checkpoint.normaliser.std)

    env = make_env({"env_id": cfg.run.env_id, "path": cfg.data.path, "start": "2021-05-17", "end": "2021-06-10",
                    "config": {"episode": {"length": 50}}})
    obs, _ = env.reset(seed=1)
    for _ in range(50):
        a1, p1 = from_registry.act("NSE:NIFTY50-INDEX", obs)
        a2, p2 = from_checkpoint.act("NSE:NIFTY50-INDEX", obs)
        assert a1 == a2 and 0 <= a1 < 5
        np.testing.assert_allclose(p1, p2, atol=1e-6)
        assert p1.sum() == pytest.approx(1.0)
        obs, _, terminated, truncated, _ = env.step(a1)
        if terminated or truncated:
            break


def test_pyfunc_model_predicts_per_stream_like_policy(resumed_run, mlflow_store):
    import mlflow

    state = resumed_run["state"]
    model = mlflow.pyfunc.load_model(state["model_uri"])
    policy = Policy.load(resumed_run["out"] / state["final_checkpoint"])
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, policy.obs_dim))
    streams = ["A", "B", "A", "A", "B", "A"]
    frame = pd.DataFrame({"stream_id": streams, **{f"obs_{i}": obs[:, i] for i in range(policy.obs_dim)}})
    predicted = model.predict(frame)
    expected = [policy.act(s, o) for s, o in zip(streams, obs)]
    assert predicted["action"].tolist() == [a for a, _ in expected]
    np.testing.assert_allclose(predicted[[f"prob_{k}" for k in range(5)]].to_numpy(),
                               np.stack([p for _, p in expected]), atol=1e-6)


def test_train_rerun_of_finished_run_does_nothing(resumed_run, mlflow_store):
    result = train(resumed_run["cfg"])
    assert result.already_complete and result.iterations == 2
    assert result.model_uri == resumed_run["state"]["model_uri"]


def test_train_resume_with_different_config_is_refused(resumed_run, tmp_path):
    from tradebot.core.errors import UserInputError

    changed = dict(resumed_run["raw"], ppo={**resumed_run["raw"]["ppo"], "lr": 0.1})
    with pytest.raises(UserInputError, match=r"different config \(ppo.lr: 0.0003 -> 0.1\)"):
        train(parse_config(TrainConfig, changed))


def test_validations_before_select_after_pick_no_checkpoint_and_count_no_patience(tmp_path, local_ray, mlflow_store):
    """With patience 1 the second validation would stop the run; before run.select_after it is only logged."""
    from mlflow import MlflowClient

    raw = tiny_config(tmp_path / "out", iterations=3, registered_model="test-select-after")
    raw["run"].update(patience=1, select_after=3)
    result = train(parse_config(TrainConfig, raw))
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    assert not result.stopped_early and state["iteration"] == 3
    assert state["best_checkpoint"] == state["final_checkpoint"] == "checkpoints/iter_000003"
    client = MlflowClient(mlflow_store)
    history = {key: {m.step: m.value for m in client.get_metric_history(state["mlflow_run_id"], key)}
               for key in (metric_names.VALIDATION_RETURN, metric_names.BEST_VALIDATION_RETURN)}
    assert sorted(history[metric_names.VALIDATION_RETURN]) == [1, 2, 3]
    assert history[metric_names.BEST_VALIDATION_RETURN] == {3: history[metric_names.VALIDATION_RETURN][3]}
