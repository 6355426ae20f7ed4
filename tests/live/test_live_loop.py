"""The loop: the env's observation, ticks to bars, heartbeats and stale data, policy errors,
Prometheus metrics (and their HTTP endpoint), JSON logs."""

from __future__ import annotations

import io
import json
import logging
import math
import urllib.request

import numpy as np
import pytest

from tradebot.envs.engine import Action, EngineConfig
from tradebot.envs.trading_env import EnvConfig, TradingEnv
from tradebot.features.pipeline import FeaturePipeline
from tradebot.live.feeds import QueueFeed, ReplayFeed
from tradebot.live.journal import Journal
from tradebot.live.logs import JsonFormatter, configure_json_logging, get_logger
from tradebot.live.loop import TradingLoop, current_bar
from tradebot.live.observations import StreamFeatures
from tradebot.live.prometheus import LiveMetrics, serve_metrics
from tradebot.live.paper import PaperBroker
from tradebot.live.policies import ScheduledPolicy
from tradebot.live.ports import NS_PER_SECOND, Heartbeat, RiskState, SimClock, Tick
from tradebot.live.risk import RiskConfig
from live_helpers import LOOSE_RISK, MINIMAL_FEATURES, make_bars, replay_loop, sample_bars

SYM = "NSE:TEST-EQ"
H, BUY, SHORT, CL, CS = (int(a) for a in Action)


def _bars(n=30, start=100.0):
    o = [start + k for k in range(n)]
    return make_bars(SYM, "2024-01-01", o, [v + 0.5 for v in o], [v - 0.5 for v in o], [v + 0.2 for v in o])


class Recorder:
    """A policy that records what it saw and answers from a schedule."""

    def __init__(self, schedule: ScheduledPolicy):
        self.schedule = schedule
        self.seen: dict[int, np.ndarray] = {}

    def __call__(self, symbol, obs):
        self.seen[current_bar().ts] = obs.copy()
        return self.schedule(symbol, obs), np.full(5, 0.2)  # (action, probs), like tradebot.rl.policy.Policy.act


def test_the_policy_sees_the_env_observation_at_every_bar():
    bars = sample_bars().slice(0, 500)
    engine = EngineConfig()
    pipe = FeaturePipeline.for_bars(bars, MINIMAL_FEATURES)
    env = TradingEnv(bars, features=pipe, config=EnvConfig(engine=engine, features=MINIMAL_FEATURES,
                                                           episode={"length": None}))
    rng = np.random.default_rng(1)
    obs, _ = env.reset(options={"start": env.warmup})
    expected = {int(bars.index[env.warmup].value): obs}
    actions = np.zeros(len(bars), dtype=int)
    minute = bars.index.hour * 60 + bars.index.minute
    for t in range(env.warmup, len(bars) - 1):
        a = int(rng.choice([H, H, H, BUY, SHORT, CL, CS]))
        if minute[t] + 5 >= 15 * 60 + 15 and a in (BUY, SHORT):
            a = H  # the env would fill it the next morning; the risk engine's entry window refuses it
        actions[t] = a
        obs, *_ = env.step(a)
        expected[int(bars.index[t + 1].value)] = obs
    rec = Recorder(ScheduledPolicy.from_actions(bars, actions))
    feed = ReplayFeed(bars)
    loop = TradingLoop(feed=feed, broker=PaperBroker(engine, [bars.symbol], clock=feed.clock), policy=rec,
                       journal=Journal(), features={bars.symbol: StreamFeatures(pipe)}, engine=engine,
                       risk=LOOSE_RISK)
    loop.run()
    names = env.feature_names
    assert names[-9:-5] == ("side", "upnl_atr", "bars_in_trade", "time_left")  # then the action mask (5)
    compared = 0
    for ts, want in expected.items():
        got = rec.seen[ts]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(ts))
        compared += 1
    assert compared > 400
    held = [o for o in expected.values() if o[-9] != 0]
    assert len(held) > 50 and max(o[-7] for o in held) >= 3  # positions held for several bars were compared


def test_ticks_become_bars_and_trades_through_the_loop():
    clock = SimClock()
    feed = QueueFeed(clock=clock)
    engine = EngineConfig()
    policy = lambda symbol, obs: BUY  # noqa: E731
    loop = TradingLoop(feed=feed, broker=PaperBroker(engine, [SYM], clock=clock), policy=policy, journal=Journal(),
                       features={SYM: _AtrOne()}, engine=engine, risk=LOOSE_RISK, timeframe="5m")
    loop.start()
    t0 = int(np.datetime64("2024-01-02T03:45:00", "ns").astype(np.int64))  # 09:15 IST
    price = 100.0
    for k in range(5 * 60 * 3):  # one print a second for three bars
        clock.set(t0 + k * NS_PER_SECOND)
        price += 0.01
        loop.handle(Tick(SYM, t0 + k * NS_PER_SECOND, price, 1.0))
    assert [b.ts for b in loop.journal.bars(SYM)] == [t0, t0 + 300 * NS_PER_SECOND]  # the third is still open
    clock.set(t0 + 900 * NS_PER_SECOND + 3 * NS_PER_SECOND)  # past its end + grace: the timer closes it
    loop.handle(Heartbeat(clock.now_ns()))
    bars = loop.journal.bars(SYM)
    assert len(bars) == 3 and bars[0].volume == 300.0 and bars[0].open == pytest.approx(100.01)
    orders = loop.journal.orders()
    assert orders and orders[0]["intent"] == "entry"
    assert loop.journal.fills()[0].ts == t0 + 300 * NS_PER_SECOND  # decided at bar 1's close, filled at bar 2's open


def test_a_snapshot_print_of_a_bar_the_history_has_does_not_make_a_bar_again():
    clock = SimClock()
    feed = QueueFeed(clock=clock)
    engine = EngineConfig()
    features = _AtrOne()
    t0 = int(np.datetime64("2024-01-02T03:45:00", "ns").astype(np.int64))  # 09:15 IST
    yesterday_last = t0 - 86_400 * NS_PER_SECOND + 370 * 60 * NS_PER_SECOND  # 15:25 IST the day before
    features.last_ts = yesterday_last  # the warm-up history ends with that bar
    loop = TradingLoop(feed=feed, broker=PaperBroker(engine, [SYM], clock=clock), policy=lambda s, o: H,
                       journal=Journal(), features={SYM: features}, engine=engine, risk=LOOSE_RISK, timeframe="5m")
    loop.start()
    # the data socket's snapshot on subscribe: yesterday's last print (15:29:59), then today's prints
    loop.handle(Tick(SYM, yesterday_last + 299 * NS_PER_SECOND, 100.0, 0.0))
    for k in range(301):
        clock.set(t0 + k * NS_PER_SECOND)
        loop.handle(Tick(SYM, t0 + k * NS_PER_SECOND, 101.0, 1.0))
    assert [b.ts for b in loop.journal.bars(SYM)] == [t0]
    assert loop.builder.late_ticks == 1


class _AtrOne:
    feature_names = ()
    atr = 1.0
    ready = True
    last_ts = None

    def update(self, bar):
        self.last_ts = bar.ts
        return np.zeros(0)

    def state_dict(self):
        return {"last_ts": self.last_ts}

    def load_state_dict(self, state):
        self.last_ts = state["last_ts"]


def test_queue_feed_yields_pushed_events_and_heartbeats():
    clock = SimClock(5)
    feed = QueueFeed(clock=clock, heartbeat_s=0.01)
    feed.subscribe([SYM])
    feed.push(Tick(SYM, 1, 100.0))
    feed.push(Tick("NSE:OTHER-EQ", 2, 50.0))
    it = iter(feed)
    assert next(it) == Tick(SYM, 1, 100.0)  # the other symbol is dropped
    assert next(it) == Heartbeat(5)  # nothing for heartbeat_s
    feed.close()
    assert list(it) == []


def test_stale_data_between_bars_reduces_then_flattens():
    bars = _bars(30)
    actions = np.where(np.arange(30) == 2, BUY, H)
    loop = replay_loop(bars, actions, np.full(30, 2.0), risk=RiskConfig(stale_entry_s=30, stale_flatten_s=120,
                                                                        max_daily_loss=0.5, max_drawdown=0.5))
    loop.start()
    it = iter(loop.feed)
    for _ in range(6):
        loop.handle(next(it))
    assert loop.broker.position_reports()[0].qty > 0
    due = int(bars.index[5].value) + 10 * 60 * NS_PER_SECOND  # the 6th bar's successor should have ended
    loop.feed.clock.set(due + 45 * NS_PER_SECOND)
    loop.heartbeat(loop.feed.clock.now_ns())
    assert loop.risk.state is RiskState.REDUCING and not loop.journal.orders(None)[1:]
    loop.feed.clock.set(due + 130 * NS_PER_SECOND)
    loop.heartbeat(loop.feed.clock.now_ns())
    flat = [o for o in loop.journal.orders() if o["intent"] == "flatten"]
    assert len(flat) == 1 and flat[0]["status"] == "ACCEPTED"
    loop.heartbeat(loop.feed.clock.now_ns())  # again: the same order is not sent twice
    assert len([o for o in loop.journal.orders() if o["intent"] == "flatten"]) == 1
    loop.handle(next(it))  # data is back: the flatten fills at this bar's open
    assert loop.broker.position_reports() == [] and loop.risk.state is RiskState.ACTIVE
    assert any("stale data" in e["reason"] and e["kind"] == "override" for e in loop.journal.risk_events())


def test_policy_errors_and_bad_actions_become_hold_with_an_event():
    bars = _bars(12)
    calls = []

    def bad(symbol, obs):
        calls.append(1)
        if len(calls) % 2:
            raise ValueError("observation has a NaN at index 3")
        return 7

    feed = ReplayFeed(bars)
    loop = TradingLoop(feed=feed, broker=PaperBroker(EngineConfig(), [SYM], clock=feed.clock), policy=bad,
                       journal=Journal(), features={SYM: _AtrOne()}, engine=EngineConfig(), risk=LOOSE_RISK)
    loop.run()
    events = [e for e in loop.journal.risk_events() if e["kind"] == "policy_error"]
    assert len(events) == 12 and any("NaN" in e["reason"] for e in events) and any("7" in e["reason"] for e in events)
    assert loop.journal.orders() == []


def test_metrics_follow_the_run_and_are_served_over_http():
    bars = _bars(30)
    actions = np.tile([BUY, H, H, CL, H], 6)
    metrics = LiveMetrics()
    loop = replay_loop(bars, actions, np.full(30, 2.0), metrics=metrics)
    summary = loop.run()
    v = metrics.value
    assert v("tradebot_live_equity_rupees") == pytest.approx(summary.equity)
    assert v("tradebot_live_bars_total", {"symbol": SYM}) == 30
    assert v("tradebot_live_orders_total", {"status": "submitted"}) == summary.orders > 0
    assert v("tradebot_live_orders_total", {"status": "FILLED"}) == summary.orders
    assert v("tradebot_live_fills_total", {"symbol": SYM, "kind": "entry"}) >= 1
    assert v("tradebot_live_bar_to_order_seconds_count") == summary.orders
    assert v("tradebot_live_inference_seconds_count") == 30
    policy_total = sum(v("tradebot_live_actions_total", {"symbol": SYM, "stage": "policy", "action": a.name}) or 0
                       for a in Action)
    assert policy_total == 30
    assert v("tradebot_live_risk_state", {"tradebot_live_risk_state": "ACTIVE"}) == 1
    assert v("tradebot_live_position_units", {"symbol": SYM}) == 0
    server = serve_metrics(metrics, 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert "tradebot_live_equity_rupees" in text and "tradebot_live_day_pnl_rupees" in text
    assert "tradebot_live_data_staleness_seconds" in text and "tradebot_live_drawdown_ratio" in text


def test_logs_are_json_lines_with_an_event_name():
    stream = io.StringIO()
    handler = configure_json_logging(stream, level=logging.DEBUG)
    try:
        bars = _bars(12)
        replay_loop(bars, np.tile([BUY, H, CL], 4), np.full(12, 2.0)).run()
    finally:
        get_logger().removeHandler(handler)
        get_logger().propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = {rec["event"] for rec in lines}
    assert {"reconciled", "ready", "decision", "submit", "order", "fill", "finished"} <= events
    fill = next(rec for rec in lines if rec["event"] == "fill")
    assert fill["symbol"] == SYM and fill["run"] == "paper" and fill["level"] == "info" and "ts" in fill
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    rec.event, rec.fields = "e", {"x": math.nan, "y": np.float64(2.5)}
    assert json.loads(JsonFormatter().format(rec)) | {"ts": None} == {"ts": None, "level": "info", "logger": "x",
                                                                       "event": "e", "msg": "m", "x": None, "y": 2.5}


def test_the_grafana_dashboard_only_uses_metrics_the_loop_exports():
    import re
    from pathlib import Path

    from tradebot.live import prometheus as m

    dashboard = json.loads((Path(__file__).parents[2] / "deploy" / "grafana" / "tradebot-live.json").read_text())
    exported = {getattr(m, k) for k in dir(m) if k.isupper() and isinstance(getattr(m, k), str)}
    suffixes = ("_total", "_bucket", "_count", "_sum")
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\btradebot_live_[a-z_]+", target["expr"]):
                base = next((name[: -len(s)] for s in suffixes if name.endswith(s) and name[: -len(s)] in exported),
                            name)
                assert base in exported, name
                used.add(base)
    assert used == exported  # every metric is on the dashboard


def test_a_halt_between_bars_cancels_the_working_entry_and_nothing_fills():
    bars = _bars(10)
    actions = np.where(np.arange(10) == 3, BUY, H)
    loop = replay_loop(bars, actions, np.full(10, 2.0), risk=RiskConfig(max_daily_loss=0.5, max_drawdown=0.5))
    loop.start()
    it = iter(loop.feed)
    for _ in range(4):
        loop.handle(next(it))
    (entry,) = loop.journal.orders()
    assert entry["status"] == "ACCEPTED"  # decided at bar 3, fills at bar 4's open
    loop.journal.request("halt", "news")
    loop.heartbeat(loop.feed.clock.now_ns() + NS_PER_SECOND)
    assert loop.risk.state is RiskState.HALTED
    assert loop.journal.order(entry["client_order_id"])["status"] == "CANCELED"
    for bar in it:
        loop.handle(bar)
    loop.finish()
    assert loop.journal.fills() == [] and loop.journal.orders()[0]["status"] == "CANCELED"
    assert loop.metrics.value("tradebot_live_risk_state", {"tradebot_live_risk_state": "HALTED"}) == 1
