"""Policy backtests: the policy acts on the training env's observations and the fill engine books exactly
the trades the env would, over the requested dates only; ``tradebot backtest --policy`` end to end.

One tiny training run (real Ray, real MLflow sqlite store) provides a checkpoint and a registered model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tradebot.envs.baselines import BASELINES
from tradebot.features.bars import load_bars
from tradebot.rl.backtest_policy import (
    backtest_policy,
    policy_actions,
    policy_env_config,
    saved_train_config,
)
from tradebot.rl.train_config import TrainConfig
from tradebot.rl.policy import Policy
from tradebot.rl.train import make_env, train
from rl_helpers import SAMPLE_5M, tiny_config
from tradebot.cli import main as cli_main
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError

pytestmark = [pytest.mark.integration]

MODEL = "test-backtest-policy"
START, END = "2021-02-08", "2021-02-13"  # the week after the tiny config's validation dates


@pytest.fixture(scope="module")
def trained(tmp_path_factory, local_ray, mlflow_store):
    out = tmp_path_factory.mktemp("policy-backtest") / "out"
    cfg = parse_config(TrainConfig, tiny_config(out, iterations=1, registered_model=MODEL))
    result = train(cfg)
    return {"cfg": cfg, "checkpoint": result.final_checkpoint, "model_uri": result.model_uri,
            "run_id": result.mlflow_run_id, "bars": load_bars(SAMPLE_5M)}


def _env_equity_with_policy(cfg: TrainConfig, policy: Policy, start: str, end: str):
    """Reference: the training env itself (tradebot.rl.train.make_env, gym.make), stepped with the policy's actions."""
    env = make_env({"env_id": cfg.run.env_id, "path": cfg.data.path, "symbol": cfg.data.symbol, "start": None,
                    "end": end, "config": {**cfg.env, "episode": {"mode": "window", "length": None}}})
    index = env.unwrapped.bars.index
    first = int(index.searchsorted(pd.Timestamp(start, tz=index.tz)))
    obs, info = env.reset(options={"start": first})
    policy.reset("reference")
    actions, equity = [], [info["equity"]]
    truncated = terminated = False
    while not (truncated or terminated):
        action, _ = policy.act("reference", obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        equity.append(info["equity"])
    return np.array(actions), np.array(equity), env.unwrapped.trades, first


@pytest.mark.parametrize("deterministic", [True, False], ids=["argmax", "sampled"])
def test_policy_backtest_equity_and_trades_equal_env_stepped_with_policy(trained, deterministic):
    """Sampled (seeded, the same draws on both sides) as well: a one-iteration policy's argmax mostly
    holds, and the sampled one trades often, so the parity covers many fills, stops and square-offs."""
    cfg = trained["cfg"]

    def load() -> Policy:
        return Policy.load(trained["checkpoint"], deterministic=deterministic, seed=3)

    run = backtest_policy(load(), trained["bars"], policy_env_config(cfg), START, END)
    ref_actions, ref_equity, ref_trades, first = _env_equity_with_policy(cfg, load(), START, END)
    assert run.warmup_bars == first
    np.testing.assert_array_equal(run.actions[:-1], ref_actions)
    np.testing.assert_array_equal(run.result.equity.to_numpy(), ref_equity)
    if not deterministic:
        assert len(run.result.trades) >= 10, "too few trades for the parity check to mean much"
    trades = run.result.trades
    shifted = ref_trades.assign(entry_bar=ref_trades["entry_bar"] - first, exit_bar=ref_trades["exit_bar"] - first)
    pd.testing.assert_frame_equal(trades, shifted)


def test_policy_backtest_reports_only_the_period_and_never_reads_later_bars(trained):
    cfg = trained["cfg"]
    bars = trained["bars"]
    env_config = policy_env_config(cfg)
    run = backtest_policy(Policy.load(trained["checkpoint"]), bars, env_config, START, END)
    index = run.result.equity.index
    assert index[0] == pd.Timestamp(f"{START} 09:15", tz="Asia/Kolkata")
    assert index[-1] < pd.Timestamp(END, tz="Asia/Kolkata")
    assert run.result.equity.iloc[0] == env_config.engine.initial_cash  # flat at the start of the period
    assert len(run.result.trades) == 0 or run.result.trades["entry_time"].min() >= index[0]
    # The data cut at --end gives the same actions and equity: nothing after the period is read.
    cut = backtest_policy(Policy.load(trained["checkpoint"]), bars.between(None, END), env_config, START, END)
    np.testing.assert_array_equal(cut.actions, run.actions)
    pd.testing.assert_series_equal(cut.result.equity, run.result.equity)


def test_policy_backtest_refuses_other_observation_layout_in_one_line(trained):
    cfg = trained["cfg"]
    other = parse_config(TrainConfig, {**cfg.model_dump(mode="json"),
                                       "env": {**cfg.env, "features": {"returns": {"enabled": False}}}})
    with pytest.raises(UserInputError) as err:
        policy_actions(Policy.load(trained["checkpoint"]), trained["bars"], policy_env_config(other), START, END)
    message = str(err.value)
    assert "\n" not in message and "observation values" in message and "trained with" in message


def test_policy_backtest_refuses_start_inside_feature_warmup(trained):
    with pytest.raises(UserInputError, match="warm-up"):
        policy_actions(Policy.load(trained["checkpoint"]), trained["bars"], policy_env_config(trained["cfg"]),
                       "2021-01-01", END)


def test_saved_train_config_found_for_checkpoint_model_alias_and_run(trained, mlflow_store):
    from mlflow import MlflowClient

    cfg = trained["cfg"]
    client = MlflowClient(mlflow_store)
    version = trained["model_uri"].rsplit("/", 1)[1]
    client.set_registered_model_alias(MODEL, "champion", version)
    for source in (trained["checkpoint"], trained["model_uri"], f"models:/{MODEL}@champion",
                   f"runs:/{trained['run_id']}/policy"):
        saved = saved_train_config(source)
        assert saved is not None, source
        assert saved.config.env == cfg.env and saved.config.data.train == cfg.data.train, source
    assert saved_train_config(trained["checkpoint"].parent) is None  # not a checkpoint folder


def test_backtest_cli_policy_from_registry_writes_four_files_for_the_period(trained, tmp_path):
    out = tmp_path / "policy"
    result = CliRunner().invoke(cli_main, ["backtest", "--data", str(SAMPLE_5M), "--policy", trained["model_uri"],
                                           "--start", START, "--end", END, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["equity.csv", "metrics.json", "report.html", "trades.csv"]
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert run["strategy"] == "policy" and run["policy"]["model"] == trained["model_uri"]
    assert run["policy"]["train_config"].endswith("artifacts/policy/config.yaml")
    assert run["start"].startswith(START) and run["end"] < END
    equity = pd.read_csv(out / "equity.csv")
    ref = backtest_policy(Policy.load(trained["checkpoint"]), trained["bars"], policy_env_config(trained["cfg"]),
                          START, END)
    np.testing.assert_allclose(equity["equity"].to_numpy(), ref.result.equity.to_numpy(), rtol=1e-9)


def test_backtest_cli_compare_with_policy_adds_a_row_on_the_same_dates(trained, tmp_path):
    out = tmp_path / "compare"
    result = CliRunner().invoke(cli_main, ["backtest", "--data", str(SAMPLE_5M), "--compare", "--policy",
                                           str(trained["checkpoint"]), "--start", START, "--end", END,
                                           "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    table = pd.read_csv(out / "compare.csv", index_col="strategy")
    assert list(table.index) == [*BASELINES, "policy"]
    assert (table["bars"] == table.loc["policy", "bars"]).all()
    assert {"metrics.json", "equity.csv", "trades.csv", "report.html"} <= {p.name for p in out.iterdir()}
    payload = json.loads((out / "compare.json").read_text())
    assert payload["run"]["start"].startswith(START) and payload["policy"]["model"] == str(trained["checkpoint"])
    assert "policy" in result.output


@pytest.mark.parametrize("model, needle", [
    ("models:/no-such-model/1", "cannot load the MLflow model"),
    ("runs:/0123456789abcdef0123456789abcdef/policy", "cannot load the MLflow model"),
    ("no/such/checkpoint", "checkpoint directory not found"),
])
def test_backtest_cli_bad_model_exits_2_with_one_line(trained, tmp_path, model, needle):
    out = tmp_path / "bad"
    result = CliRunner().invoke(cli_main, ["backtest", "--data", str(SAMPLE_5M), "--policy", model, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert not out.exists()
