"""Drift monitors in a paper run: an ALARM moves the risk engine as configured (REDUCING or HALTED), every
state change is journaled, a WARN journals a retraining request, the state survives a restart, and
`tradebot live status` and Prometheus show the monitors."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tradebot.features.pipeline import FeaturePipeline
from tradebot.live.drift_watch import DriftWatch
from tradebot.live.journal import Journal, journal_status
from tradebot.live.runner import LiveConfig, build_replay_loop
from tradebot.rl.drift import build_reference
from tradebot.rl.drift.shifts import shifted_bars
from live_helpers import LOOSE_RISK, MINIMAL_FEATURES


SYNTH = "NSE:SYNTH-EQ"


@functools.lru_cache(maxsize=1)
def _market():
    from tradebot.rl.synthetic import SyntheticMarketConfig, synthetic_bars

    return synthetic_bars(SyntheticMarketConfig(sessions=50, volume=0.0, seed=5))  # 75 bars a session


def _reference(bars):
    pipe = FeaturePipeline.for_bars(bars, MINIMAL_FEATURES)
    train = pipe.transform(bars.slice(None, 30 * 75)).to_numpy()  # the first 30 sessions
    rng = np.random.default_rng(0)
    return build_reference(train, pipe.feature_names, rng.integers(0, 5, 2000), rng.normal(0, 0.01, 100))


def _run(tmp_path, on_alarm, shift=True, name="drift", features=None):
    bars = _market()
    at = 38 * 75  # the market changes at the 39th session; the run watches sessions 31 .. 50
    data = shifted_bars(bars, at, "vol_x3") if shift else bars
    config = LiveConfig.model_validate({"features": MINIMAL_FEATURES.model_dump(), "risk": LOOSE_RISK.model_dump(),
                                        "loop": {"run": name},
                                        # the reference's actions are not this strategy's: the market monitor only
                                        "drift": {"on_alarm": on_alarm, "actions": {"enabled": False},
                                                  "performance": {"enabled": False},
                                                  "features": features or {}}})
    journal = tmp_path / f"{name}.db"
    loop = build_replay_loop(data, journal=journal, strategy="sma_crossover", config=config,
                             start=bars.index[30 * 75].isoformat())
    loop.drift = DriftWatch(_reference(bars), config.drift, loop.symbols)
    loop.run()
    return loop, journal, data.index[at]


@pytest.mark.parametrize("on_alarm,state", [("reduce", "REDUCING"), ("halt", "HALTED")])
def test_a_drift_alarm_moves_the_risk_engine_as_configured_and_is_journaled(tmp_path, on_alarm, state):
    loop, journal, shift_time = _run(tmp_path, on_alarm)
    j = Journal(journal, create=False)
    try:
        events = [e for e in j.risk_events() if e["kind"] == "drift"]
    finally:
        j.close()
    alarm = next(e for e in events if "-> ALARM" in e["reason"])
    assert alarm["ts"] >= shift_time.value  # not before the market changed
    assert loop.risk.state.value == state and "drift" in loop.risk.conditions
    st = journal_status(journal)
    assert st["risk_state"] == state and "drift ALARM: features" in st["conditions"]["drift"]["reason"]
    assert st["drift"][SYNTH]["features"]["state"] == "ALARM"
    assert loop.metrics.value("tradebot_live_drift_state",
                              {"symbol": SYNTH, "monitor": "features", "state": "ALARM"}) == 1.0


def test_an_unshifted_market_raises_no_feature_alarm_and_on_alarm_none_only_records(tmp_path):
    loop, journal, _ = _run(tmp_path, "none", shift=False, name="calm")
    assert loop.drift.monitors[SYNTH].states["features"].value != "ALARM"
    loop2, _, _ = _run(tmp_path, "none", name="record-only")
    assert "drift" not in loop2.risk.conditions  # recorded, not acted on
    assert any(s.value == "ALARM" for s in loop2.drift.monitors[SYNTH].states.values())


def test_a_warn_journals_one_retraining_request_and_the_monitors_survive_a_restart(tmp_path):
    loop, journal, _ = _run(tmp_path, "reduce", name="warn", features={"warn": 0.5, "alarm": 1e6})
    j = Journal(journal, create=False)
    try:
        requests = [e for e in j.risk_events() if e["kind"] == "retrain_request"]
        saved = j.load_state("drift")
    finally:
        j.close()
    assert len(requests) == 1 and "retraining requested" in requests[0]["reason"]
    assert loop.risk.state.value == "ACTIVE"  # a WARN asks for retraining; it does not stop trading
    restored = DriftWatch(loop.drift.reference, loop.drift.config, loop.symbols)
    restored.load_state_dict(saved)
    assert restored.snapshot() == loop.drift.snapshot()
