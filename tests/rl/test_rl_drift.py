"""Drift monitors: the reference round-trips with the model, each monitor stays OK on data like its
reference and alarms on data that is not, states survive a restart, and ``tradebot drift check`` exits
0 / 1 / 2 on a clean file, a shifted file and bad input (a tiny model trained on the synthetic market)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from tradebot.cli import main as cli_main
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError
from tradebot.rl.drift import DriftConfig, DriftMonitors, DriftReference, MonitorState, build_reference
from tradebot.rl.drift.reference import REFERENCE_FILE, trade_returns
from tradebot.rl.drift.shifts import shifted_bars

NAMES = tuple(f"f{i}" for i in range(8))
REF_ACTIONS = np.array([0.6, 0.1, 0.1, 0.1, 0.1])


def _reference(seed: int = 0) -> DriftReference:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(5000, len(NAMES)))
    features[:, -1] = rng.integers(-1, 2, size=5000)  # a discrete feature: left out of the score
    actions = rng.choice(5, size=3000, p=REF_ACTIONS)
    returns = rng.normal(0.002, 0.01, size=200)
    return build_reference(features, NAMES, actions, returns, source={"test": True})


def _feed(monitors: DriftMonitors, rng, bars: int, scale: float = 1.0, probs=REF_ACTIONS, start: int = 0):
    changes = []
    for t in range(start, start + bars):
        x = rng.normal(size=len(NAMES)) * scale
        x[-1] = rng.integers(-1, 2)
        changes += monitors.on_bar(t, x, int(rng.choice(5, p=probs)))
    return changes


def test_reference_round_trips_through_its_file(tmp_path):
    ref = _reference()
    path = ref.save(tmp_path)
    assert path.name == REFERENCE_FILE
    assert DriftReference.load(tmp_path) == ref
    assert ref.quantiles.shape == (len(NAMES), 101)
    assert ref.action_probs.sum() == pytest.approx(1.0)
    assert 0.0 < ref.hit_rate < 1.0 and ref.trades == 200


def test_a_damaged_reference_is_one_clear_error(tmp_path):
    (tmp_path / REFERENCE_FILE).write_text(json.dumps({"format": "tradebot.drift.reference/1", "feature_names": ["a"]}))
    with pytest.raises(UserInputError, match="damaged drift reference"):
        DriftReference.load(tmp_path)
    (tmp_path / REFERENCE_FILE).write_text("{}")
    with pytest.raises(UserInputError, match="not a drift reference"):
        DriftReference.load(tmp_path)


def test_trade_returns_are_net_pnl_over_entry_notional():
    import pandas as pd

    trades = pd.DataFrame({"entry_price": [100.0, 200.0], "qty": [10.0, 5.0], "pnl": [15.0, -20.0]})
    np.testing.assert_allclose(trade_returns(trades), [0.015, -0.02])


def test_monitors_stay_ok_on_data_like_the_reference():
    monitors = DriftMonitors(_reference(), DriftConfig())
    rng = np.random.default_rng(1)
    changes = _feed(monitors, rng, 4000)
    for _ in range(60):
        changes += monitors.on_trade(0, float(rng.normal(0.002, 0.01)))
    assert changes == []
    assert monitors.overall is MonitorState.OK
    assert monitors.features.monitored == NAMES[:-1]  # the discrete feature is not scored


def test_tripled_feature_scale_alarms_and_names_the_time():
    monitors = DriftMonitors(_reference(), DriftConfig())
    rng = np.random.default_rng(2)
    assert _feed(monitors, rng, 1000) == []
    changes = _feed(monitors, rng, 1000, scale=3.0, start=1000)
    alarm = next(c for c in changes if c.new is MonitorState.ALARM)
    assert alarm.monitor == "features" and 1000 < alarm.ts < 1400
    assert monitors.states["features"] is MonitorState.ALARM
    assert monitors.snapshot()["features"]["detail"]["window_score"] > 2.0


def test_a_different_action_mix_alarms():
    monitors = DriftMonitors(_reference(), DriftConfig())
    rng = np.random.default_rng(3)
    assert _feed(monitors, rng, 800) == []
    changes = _feed(monitors, rng, 800, probs=np.array([0.05, 0.05, 0.05, 0.05, 0.8]), start=800)
    assert [c.new for c in changes if c.monitor == "actions"][-1] is MonitorState.ALARM


def test_losing_trades_alarm_the_performance_monitor():
    monitors = DriftMonitors(_reference(), DriftConfig())
    rng = np.random.default_rng(4)
    changes = []
    for i in range(80):
        changes += monitors.on_trade(i, float(rng.normal(-0.01, 0.01)))
    states = [c.new for c in changes if c.monitor == "performance"]
    assert states and states[-1] is MonitorState.ALARM
    assert monitors.snapshot()["performance"]["detail"]["z"] < -3


def test_monitor_state_survives_a_restart():
    ref, rng_a, rng_b = _reference(), np.random.default_rng(5), np.random.default_rng(5)
    original = DriftMonitors(ref, DriftConfig())
    _feed(original, np.random.default_rng(6), 700)
    restored = DriftMonitors(ref, DriftConfig())
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.snapshot() == original.snapshot()
    assert _feed(original, rng_a, 600, scale=3.0, start=700) == _feed(restored, rng_b, 600, scale=3.0, start=700)


def test_thresholds_are_configuration_with_unknown_keys_refused():
    with pytest.raises(UserInputError, match="unknown config key 'features.warm'"):
        parse_config(DriftConfig, {"features": {"warm": 0.1}}, "drift")
    with pytest.raises(UserInputError, match="alarm must be at or above warn"):
        parse_config(DriftConfig, {"actions": {"warn": 0.5, "alarm": 0.4}}, "drift")


def test_shifts_keep_bars_valid_and_continuous():
    from tradebot.rl.synthetic import SyntheticMarketConfig, synthetic_bars

    bars = synthetic_bars(SyntheticMarketConfig(sessions=20, volume=0.0, seed=1))
    at = 600
    for kind in ("vol_x3", "drift_reversed"):
        out = shifted_bars(bars, at, kind)
        np.testing.assert_array_equal(out.column("close")[:at], bars.column("close")[:at])
        moves = np.diff(np.log(out.column("close")))
        base = np.diff(np.log(bars.column("close")))
        expected = 3.0 * base[at - 1:] if kind == "vol_x3" else -base[at - 1:]
        np.testing.assert_allclose(moves[at - 1:], expected, rtol=1e-9, atol=1e-12)
        assert (out.column("high") >= np.maximum(out.column("open"), out.column("close")) - 1e-9).all()


# ---- the command, with a tiny model trained on the synthetic market -------------------------------

@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory, local_ray, mlflow_store):
    from tradebot.rl.synthetic import SyntheticMarketConfig, write_synthetic_bars
    from tradebot.rl.train import train
    from tradebot.rl.train_config import TrainConfig
    from rl_helpers import tiny_config

    folder = tmp_path_factory.mktemp("drift")
    market = SyntheticMarketConfig(sessions=160, volume=0.0, seed=21)
    data = folder / "NSE_SYNTH-EQ_5m.csv.gz"
    write_synthetic_bars(market, data)
    raw = tiny_config(folder / "out", iterations=1, registered_model="test-drift")
    raw["data"] = {"path": str(data), "train": {"start": "2030-01-01", "end": "2030-03-01"},
                   "validation": {"start": "2030-03-01", "end": "2030-04-01"}}
    result = train(parse_config(TrainConfig, raw))
    return {"checkpoint": result.final_checkpoint, "model_uri": result.model_uri, "data": data, "folder": folder}


def _check(*args):
    return CliRunner().invoke(cli_main, ["drift", "check", *map(str, args)])


@pytest.mark.integration
def test_drift_check_exit_codes_on_clean_shifted_and_bad_input(synthetic_model):
    from tradebot.features.bars import load_bars

    model, data, folder = synthetic_model["model_uri"], synthetic_model["data"], synthetic_model["folder"]
    clean = _check("--model", model, "--data", data, "--start", "2030-04-01", "--json")
    assert clean.exit_code == 0, clean.output
    report = json.loads(clean.output)
    assert set(report["final_states"].values()) == {"OK"} and report["bars"] > 2000
    assert report["reference"] == f"saved with {model}"  # registered with the model by tradebot train

    bars = load_bars(data)
    at = int(bars.index.searchsorted(bars.index[-1] - (bars.index[-1] - bars.index[0]) / 4))
    shifted = folder / "NSE_SYNTH-EQ_5m_shifted.csv"
    frame = shifted_bars(bars, at, "vol_x3").frame.reset_index()
    frame["timestamp"] = [t.isoformat() for t in frame["timestamp"]]
    frame.to_csv(shifted, index=False)
    alarmed = _check("--model", model, "--data", shifted, "--start", "2030-04-01", "--symbol", "NSE:SYNTH-EQ")
    assert alarmed.exit_code == 1, alarmed.output
    assert re.search(r"features: (OK|WARN) -> ALARM", alarmed.output), alarmed.output

    missing = _check("--model", model, "--data", folder / "nope.csv")
    assert missing.exit_code == 2 and "file not found" in missing.output
    bad = folder / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2030-01-01T09:15:00+05:30,1,2,0.5,nan,0\n")
    broken = _check("--model", model, "--data", bad)
    assert broken.exit_code == 2 and "error:" in broken.output and "Traceback" not in broken.output
    typo = folder / "drift.yaml"
    typo.write_text("drift:\n  feature: {warn: 0.1}\n")
    wrong_key = _check("--model", model, "--data", data, "--config", typo)
    assert wrong_key.exit_code == 2 and "unknown config key 'feature'" in wrong_key.output


@pytest.mark.integration
def test_the_reference_saved_with_the_model_equals_one_rebuilt_from_its_config(synthetic_model):
    from tradebot.rl.backtest_policy import load_policy_setup
    from tradebot.rl.drift.offline import reference_from_training, saved_reference

    model = synthetic_model["model_uri"]
    saved = saved_reference(model)
    setup = load_policy_setup(model)
    assert saved is not None and saved.source["validation"] == ["2030-03-01", "2030-04-01"]
    assert saved == reference_from_training(setup.policy, setup.train_config, setup.env_config)

