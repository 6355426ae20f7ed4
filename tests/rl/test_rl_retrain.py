"""Champion / challenger retraining: the promotion rule, the windows, fine-tuning from the champion's
weights, and `tradebot retrain` end to end with both outcomes and a rollback (real Ray, real MLflow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tradebot.cli import main as cli_main
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError
from tradebot.rl.retrain import (
    CHAMPION,
    PREVIOUS,
    Candidate,
    Promotion,
    RetrainConfig,
    Windows,
    alias_version,
    decide,
    risk_checks,
    session_windows,
)
from rl_helpers import SAMPLE_5M, tiny_config

MODEL = "test-retrain"


def _cand(name, sharpe, dd=-0.02, trades=5, version=1):
    metrics = {"sharpe": sharpe, "worst_30d_drawdown": dd, "trades": trades}
    notes = risk_checks(metrics, Promotion())
    return Candidate(name, f"models:/m/{version}", version, metrics, not notes, notes)


def test_a_challenger_is_promoted_only_past_the_margin_and_the_risk_checks():
    rule = Promotion(metric="sharpe", margin=0.25, max_worst_30d_drawdown=0.10, min_trades=1)
    champion = _cand("champion", 1.0)
    won, why = decide(champion, [_cand("scratch", 1.3, version=2), _cand("finetune", 1.2, version=3)], rule)
    assert won is not None and won.name == "scratch" and "beats the champion" in why
    kept, why = decide(champion, [_cand("scratch", 1.2, version=2)], rule)
    assert kept is None and "the champion stays" in why
    risky, why = decide(champion, [_cand("scratch", 3.0, dd=-0.25, version=2)], rule)
    assert risky is None and "worst 30-day drawdown 25.00% > 10.00%" in why
    first, why = decide(None, [_cand("scratch", -0.5, version=2)], rule)
    assert first is not None and "no champion yet" in why


def test_risk_checks_name_what_fails():
    notes = risk_checks({"worst_30d_drawdown": -0.15, "trades": 0}, Promotion(min_trades=2))
    assert notes == ["worst 30-day drawdown 15.00% > 10.00%", "0 trade(s) < 2"]
    assert risk_checks({"worst_30d_drawdown": -0.05, "trades": 3}, Promotion()) == []


def test_windows_are_the_newest_sessions_in_order():
    from tradebot.features.bars import load_bars

    bars = load_bars(SAMPLE_5M)
    w = session_windows(bars, Windows(train_sessions=20, validation_sessions=5, test_sessions=4))
    days = sorted({t.date() for t in bars.index})
    assert w["test"][0] == days[-4] and w["validation"] == (days[-9], days[-4]) and w["train"] == (days[-29], days[-9])
    assert w["test"][1] > days[-1]
    with pytest.raises(UserInputError, match="retraining needs at least"):
        session_windows(bars.slice(None, 600), Windows(validation_sessions=5, test_sessions=5))


def test_the_config_refuses_unknown_keys_and_empty_challenger_lists():
    with pytest.raises(UserInputError, match="unknown config key 'promotion.marign'"):
        parse_config(RetrainConfig, {"registered_model": "m", "data": "x", "promotion": {"marign": 1}}, "retrain")
    with pytest.raises(UserInputError, match="at least one challenger"):
        parse_config(RetrainConfig, {"registered_model": "m", "data": "x", "challengers": []}, "retrain")


# ---- end to end ------------------------------------------------------------------------------------

def _retrain_file(tmp_path, name, **retrain):
    base = tmp_path / "base.yaml"
    if not base.exists():
        base.write_text(yaml.safe_dump(tiny_config(tmp_path / "unused", iterations=1, registered_model=MODEL)))
    body = {"registered_model": MODEL, "data": str(SAMPLE_5M), "base_config": str(base),
            "windows": {"train_sessions": 15, "validation_sessions": 3, "test_sessions": 4},
            "iterations": 1, "finetune_iterations": 1, "output_dir": str(tmp_path / "runs"),
            "mlflow_experiment": "tests-retrain", **retrain}
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"retrain": body}))
    return path


def _retrain(*args):
    result = CliRunner().invoke(cli_main, ["retrain", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.mark.integration
def test_retrain_promotes_a_winner_keeps_a_loser_and_rolls_back(tmp_path, local_ray, mlflow_store):
    permissive = {"max_worst_30d_drawdown": 1.0, "min_trades": 0}
    first = _retrain("--config", _retrain_file(tmp_path, "first.yaml", challengers=["scratch", "finetune"],
                                                promotion=permissive, extra_data=[str(SAMPLE_5M)]))
    assert first.exit_code == 0, first.output
    assert "finetune challenger is skipped" in first.output and "no champion yet" in first.output
    v1 = alias_version(MODEL, CHAMPION)
    assert v1 is not None and alias_version(MODEL, PREVIOUS) is None

    win = _retrain("--config", _retrain_file(tmp_path, "win.yaml", challengers=["finetune"],
                                              promotion={**permissive, "margin": -1e9}))
    assert win.exit_code == 0, win.output
    v2 = alias_version(MODEL, CHAMPION)
    assert "promoted version" in win.output and v2 != v1 and alias_version(MODEL, PREVIOUS) == v1

    lose = _retrain("--config", _retrain_file(tmp_path, "lose.yaml", challengers=["finetune"],
                                               promotion={**permissive, "margin": 1e9}))
    assert lose.exit_code == 0, lose.output
    assert "kept the champion" in lose.output and alias_version(MODEL, CHAMPION) == v2

    from tradebot.rl.policy import Policy

    running = Policy.load(f"models:/{MODEL}@{CHAMPION}")  # what a live run or the server loads at start
    assert running.source == f"models:/{MODEL}/{v2}" and running.version.endswith(f"(models:/{MODEL}@{CHAMPION})")
    back = _retrain("--rollback", MODEL)
    assert back.exit_code == 0, back.output
    assert alias_version(MODEL, CHAMPION) == v1 and alias_version(MODEL, PREVIOUS) == v2
    assert running.source == f"models:/{MODEL}/{v2}"  # a running session keeps its model
    assert Policy.load(f"models:/{MODEL}@{CHAMPION}").source == f"models:/{MODEL}/{v1}"  # the next one starts on v1

    import mlflow

    runs = mlflow.search_runs(experiment_names=["tests-retrain"], output_format="list")
    parents = [r for r in runs if r.info.run_name.startswith("retrain-")]
    assert sorted(r.data.tags["decision"] for r in parents) == ["kept", "promoted", "promoted"]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}]
    assert len(nested) == 3  # every challenger's training run sits under its retrain run
    first_scratch = min(nested, key=lambda r: r.info.start_time)  # trained on data and extra_data
    assert json.loads(first_scratch.data.params["data.extra_paths"]) == [str(SAMPLE_5M)]
    assert all(math.isfinite(p.data.metrics.get("finetune_sharpe", 0.0)) for p in parents)

    missing = _retrain("--rollback", "no-such-model")
    assert missing.exit_code == 2 and "no @previous version" in missing.output
    both = _retrain()
    assert both.exit_code == 2 and "--config FILE" in both.output


@pytest.mark.integration
def test_fine_tuning_starts_from_the_champions_weights_and_normaliser(tmp_path, local_ray, mlflow_store):
    from ray.rllib.core import DEFAULT_MODULE_ID

    from tradebot.rl.train import build_algorithm, start_from_policy, train_and_save
    from tradebot.rl.train_config import TrainConfig

    cfg = parse_config(TrainConfig, tiny_config(tmp_path / "out", iterations=1))
    source = train_and_save(cfg, tmp_path / "ckpt", iterations=2)
    fresh = build_algorithm(cfg)
    trained = build_algorithm(cfg, source)
    try:
        before = fresh.get_module(DEFAULT_MODULE_ID).get_state()
        start_from_policy(fresh, str(source))
        after, want = fresh.get_module(DEFAULT_MODULE_ID).get_state(), trained.get_module(DEFAULT_MODULE_ID).get_state()
        assert any(not np.array_equal(before[k], want[k]) for k in want)
        for key in want:
            np.testing.assert_array_equal(after[key], want[key])
        component = "env_to_module_connector"
        got = fresh.env_runner.get_state(components=component)[component]
        expect = trained.env_runner.get_state(components=component)[component]
        assert repr(got) == repr(expect)  # the normaliser's running statistics came along
        assert fresh.iteration == 0  # a new run: iterations count from zero, the optimizer is fresh
    finally:
        fresh.stop()
        trained.stop()
    other = build_algorithm(cfg)
    try:
        with pytest.raises(UserInputError, match="not an algorithm checkpoint"):
            start_from_policy(other, str(tmp_path))
    finally:
        other.stop()
