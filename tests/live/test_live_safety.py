"""Issue 12, the loop's side: each test reproduces one defect of the live path (it failed on the code before
the fix) with the real loop, journal and paper broker."""

from __future__ import annotations

import math
import sqlite3
import threading
import time

import numpy as np
import pytest

from tradebot.core.errors import RejectedError
from tradebot.envs.engine import Action, EngineConfig
from tradebot.features.pipeline import FeaturePipeline
from tradebot.live.feeds import QueueFeed, ReplayFeed
from tradebot.live.journal import Journal, request_control
from tradebot.live.loop import LoopConfig, TradingLoop
from tradebot.live.observations import StreamFeatures
from tradebot.live.paper import PaperBroker
from tradebot.live.policies import ScheduledPolicy
from tradebot.live.ports import NS_PER_SECOND, Fill, Heartbeat, RiskState, Side, SimClock, Tick
from tradebot.live.risk import RiskConfig
from live_helpers import LOOSE_RISK, MINIMAL_FEATURES, make_bars, replay_loop, sample_bars

SYM = "NSE:TEST-EQ"
H, BUY, SHORT, CL, CS = (int(a) for a in Action)


class Crash(Exception):
    """Stands in for a SIGKILL at an exact stage (the loop object is then dropped, its journal closed)."""


def _bars(n=30, start=100.0):
    o = [start + k for k in range(n)]
    return make_bars(SYM, "2024-01-02", o, [v + 0.5 for v in o], [v - 0.5 for v in o], [v + 0.2 for v in o])


def _crash_at(stage_name: str, bar_ts: int):
    def on_stage(stage, symbol, ts):
        if stage == stage_name and ts == bar_ts:
            raise Crash
    return on_stage


def _crash_after_deciding_an_entry(tmp_path, risk=None):
    """A run SIGKILLed right after its entry at bar 5 was decided and written ahead (not sent)."""
    bars = _bars()
    jpath, ppath = tmp_path / "j.db", tmp_path / "p.db"
    actions = np.where(np.arange(30) == 5, BUY, H)
    risk = risk or RiskConfig(max_daily_loss=0.5, max_drawdown=0.5)
    loop = replay_loop(bars, actions, np.full(30, 1.0), journal=Journal(jpath), broker_path=str(ppath),
                       risk=risk, on_stage=_crash_at("decided", int(bars.index[5].value)))
    with pytest.raises(Crash):
        loop.run()
    loop.journal.close()
    [entry] = Journal(jpath, create=False).orders()
    assert entry["status"] == "PENDING_SUBMIT" and entry["submit_attempts"] == 0
    return bars, actions, jpath, ppath, risk, entry["client_order_id"]


def test_a_resumed_entry_is_not_sent_after_a_halt_requested_while_down(tmp_path):
    """Defect 3: the restart found the state HALTED (an operator's halt while it was down) and still sent
    the half-done bar's entry."""
    bars, actions, jpath, ppath, risk, coid = _crash_after_deciding_an_entry(tmp_path)
    request_control(jpath, "halt", "operator, while the loop was down")
    loop = replay_loop(bars, actions, np.full(30, 1.0), journal=Journal(jpath), broker_path=str(ppath), risk=risk)
    loop.run()
    row = loop.journal.order(coid)
    assert row["status"] == "EXPIRED" and "HALTED" in row["reason"] and row["submit_attempts"] == 0
    assert coid not in loop.broker.submit_counts() and loop.journal.fills() == []
    loop.journal.close()


def test_a_resumed_entry_on_stale_data_expires_when_the_clock_moved_while_down(tmp_path):
    """Defect 3 and the paper crash test's clock: the restart comes 10 minutes after the crash; the
    half-done bar's entry is stale by then and must not go out."""
    bars, actions, jpath, ppath, risk, coid = _crash_after_deciding_an_entry(tmp_path)
    loop = replay_loop(bars, actions, np.full(30, 1.0), journal=Journal(jpath), broker_path=str(ppath), risk=risk)
    loop.feed.clock.set(int(bars.index[5].value) + 15 * 60 * NS_PER_SECOND)  # down for 10 minutes after its end
    loop.run()
    row = loop.journal.order(coid)
    assert row["status"] == "EXPIRED" and "stale" in row["reason"]
    assert coid not in loop.broker.submit_counts()
    loop.journal.close()


def test_a_crash_on_the_journals_first_day_with_features_warmed_past_its_last_bar_restarts(tmp_path):
    """Defect 4: the features are warmed up to "now" by the history, the feed resumes after the journal's last
    bar (and a half-done bar waits), there was no checkpoint yet: every restart raised "bar ... is not after
    the previous bar". Now the journal's checkpoint (taken at start) wins and bars the stream has are dropped."""
    bars = sample_bars().slice(0, 400)
    pipe = FeaturePipeline.for_bars(bars, MINIMAL_FEATURES)
    engine = EngineConfig()
    jpath, ppath = tmp_path / "j.db", tmp_path / "p.db"
    policy = ScheduledPolicy.from_actions(bars, np.random.default_rng(5).choice([0, 0, 0, 1, 2, 3, 4], len(bars)))

    def build(history_end: int, on_stage=None) -> TradingLoop:
        feed = ReplayFeed(bars.slice(300, 400))
        return TradingLoop(feed=feed, broker=PaperBroker(engine, [bars.symbol], ppath, clock=feed.clock), policy=policy,
                           journal=Journal(jpath), features={bars.symbol: StreamFeatures(pipe, bars.slice(0, history_end))},
                           engine=engine, risk=LOOSE_RISK, config=LoopConfig(checkpoint_every=75), on_stage=on_stage)

    first = build(300, _crash_at("decided", int(bars.index[312].value)))
    with pytest.raises(Crash):
        first.run()
    first.journal.close()
    again = build(330)  # restarted 18 bars later: the warm-up history now reaches bar 329
    summary = again.run()
    done = [b.ts for b in again.journal.bars(bars.symbol, done=True)]
    assert done == [int(t.value) for t in bars.index[300:400]]  # every bar, the half-done one included
    assert summary.resumed_bars == 1 and again.journal.decision(bars.symbol, int(bars.index[350].value))
    again.journal.close()


class RefusesFirstFlattens(PaperBroker):
    """Refuses the first ``n`` flatten orders (a broker rejecting a square-off, e.g. a freeze limit)."""

    refusals = 1

    def submit(self, order):
        if order.intent.value == "flatten" and self.refusals > 0:
            self.refusals -= 1
            raise RejectedError("RMS: order rejected (freeze quantity)")
        return super().submit(order)


def test_a_refused_flatten_between_bars_is_tried_again_under_a_new_id_with_back_off():
    """Defect 7: the flatten's id was keyed on the last bar only, so once refused every retry found the id
    terminal and nothing more was sent (the old test asserted that one-shot flatten as correct)."""
    bars = _bars(30)
    actions = np.where(np.arange(30) == 2, BUY, H)
    loop = replay_loop(bars, actions, np.full(30, 2.0), risk=RiskConfig(stale_entry_s=30, stale_flatten_s=120,
                                                                        max_daily_loss=0.5, max_drawdown=0.5))
    loop.broker = RefusesFirstFlattens(EngineConfig(), [SYM], clock=loop.feed.clock, rate_limits=(10, 200))
    loop.start()
    it = iter(loop.feed)
    for _ in range(6):
        loop.handle(next(it))
    assert loop.broker.position_reports()[0].qty > 0
    due = int(bars.index[5].value) + 10 * 60 * NS_PER_SECOND
    clock = loop.feed.clock
    clock.set(due + 130 * NS_PER_SECOND)
    loop.heartbeat(clock.now_ns())
    flat = [o for o in loop.journal.orders() if o["intent"] == "flatten"]
    assert [o["status"] for o in flat] == ["REJECTED"]
    clock.set(clock.now_ns() + NS_PER_SECOND // 2)
    loop.heartbeat(clock.now_ns())  # inside the back-off (flatten_backoff_s 1 s): nothing new
    assert len([o for o in loop.journal.orders() if o["intent"] == "flatten"]) == 1
    clock.set(clock.now_ns() + NS_PER_SECOND)
    loop.heartbeat(clock.now_ns())
    flat = [o for o in loop.journal.orders() if o["intent"] == "flatten"]
    assert [o["status"] for o in flat] == ["REJECTED", "ACCEPTED"]
    assert flat[0]["client_order_id"] != flat[1]["client_order_id"] and flat[0]["bar_ts"] == flat[1]["bar_ts"]
    loop.handle(next(it))  # the data is back: the second flatten fills at this bar's open
    assert loop.broker.position_reports() == []


def test_halt_gets_through_while_the_policy_is_slow(tmp_path):
    """Defect 8: the journal's write lock was held across the policy (and broker) calls: a policy call of
    10 s or more made `tradebot live halt` die with a raw "database is locked"."""
    bars = _bars(12)
    inside, release = threading.Event(), threading.Event()

    def slow_policy(symbol, obs):
        inside.set()
        release.wait(30)
        return H

    jpath = tmp_path / "j.db"
    feed = ReplayFeed(bars)
    loop = TradingLoop(feed=feed, broker=PaperBroker(EngineConfig(), [SYM], clock=feed.clock), policy=slow_policy,
                       journal=Journal(jpath), features={SYM: _AtrOne()}, engine=EngineConfig(), risk=LOOSE_RISK)
    worker = threading.Thread(target=loop.run, daemon=True)
    worker.start()
    try:
        assert inside.wait(20)
        other = sqlite3.connect(jpath, timeout=1.0)
        other.execute("BEGIN IMMEDIATE")  # the write lock is free while the policy thinks
        other.execute("ROLLBACK")
        other.close()
        t0 = time.monotonic()
        request_control(jpath, "halt", "fat finger", patience_s=5.0)
        assert time.monotonic() - t0 < 2.0
    finally:
        release.set()
        worker.join(30)
    j = Journal(jpath, create=False)
    assert j.status()["risk_state"] == "HALTED" and j.status()["pending_commands"] == []
    j.close()


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


def test_a_second_loop_on_the_same_journal_is_refused(tmp_path):
    """Defect 10: two loops could run on one journal (two sets of orders from one run)."""
    from tradebot.core.errors import UserInputError

    bars = _bars(12)
    first = replay_loop(bars, np.zeros(12), np.full(12, 1.0), journal=Journal(tmp_path / "j.db"))
    first.start()
    second = replay_loop(bars, np.zeros(12), np.full(12, 1.0), journal=Journal(tmp_path / "j.db"))
    with pytest.raises(UserInputError, match="already running on this journal"):
        second.start()
    first.journal.close()  # the lock goes with the process (or the journal's close)
    third = replay_loop(bars, np.zeros(12), np.full(12, 1.0), journal=Journal(tmp_path / "j.db"))
    third.start()
    third.journal.close()


def test_heartbeats_keep_coming_while_another_symbol_ticks_steadily():
    """Defect 6: the feed yielded a heartbeat only when its queue was empty for heartbeat_s, so a steady tick
    stream of one symbol suppressed them, and a silent symbol was never found stale."""
    clock = SimClock(0)
    feed = QueueFeed(clock=clock, heartbeat_s=0.05)
    feed.subscribe(["NSE:A-EQ", "NSE:B-EQ"])
    stop = threading.Event()

    def ticks():
        while not stop.is_set():
            feed.push(Tick("NSE:A-EQ", 1, 100.0))
            time.sleep(0.005)

    t = threading.Thread(target=ticks, daemon=True)
    t.start()
    beats, t0 = 0, time.monotonic()
    for event in feed:
        beats += isinstance(event, Heartbeat)
        if time.monotonic() - t0 > 0.6:
            break
    stop.set()
    feed.close()
    assert beats >= 6  # one every 50 ms (old code: none while A ticked)


def test_a_policy_down_for_policy_down_s_makes_the_state_reducing():
    """Defect 14: a policy server that stays down held the loop ACTIVE forever (HOLD, entries possible once
    it answers again at a random moment); now the state escalates to REDUCING, and back when it answers."""
    bars = _bars(20)
    calls = {"n": 0}

    def flaky(symbol, obs):
        calls["n"] += 1
        if calls["n"] <= 14:
            raise ConnectionError("policy server down")
        return H

    feed = ReplayFeed(bars)  # 5-minute bars; policy_down_s is 60 s by default
    loop = TradingLoop(feed=feed, broker=PaperBroker(EngineConfig(), [SYM], clock=feed.clock), policy=flaky,
                       journal=Journal(), features={SYM: _AtrOne()}, engine=EngineConfig(), risk=LOOSE_RISK)
    loop.start()
    states = []
    for bar in feed:
        loop.handle(bar)
        states.append(loop.risk.state)
    assert states[0] is RiskState.ACTIVE and all(st is RiskState.REDUCING for st in states[1:14])
    assert states[-1] is RiskState.ACTIVE  # it answers again: cleared
    assert any(e["kind"] == "policy_down" for e in loop.journal.risk_events())


def test_a_new_journal_on_the_same_account_keeps_the_days_loss_budget_and_the_peak(tmp_path):
    """Defect 13: a fresh journal reset the day's loss budget and the drawdown peak (a new run name after a
    losing morning gave the full daily budget again)."""
    from tradebot.live.ledger import AccountLedger

    bars = _bars(30)
    ppath, ledger = tmp_path / "p.db", AccountLedger(tmp_path / "ledger.json")
    down = make_bars(SYM, "2024-01-02", [100.0 - k for k in range(30)], [100.5 - k for k in range(30)],
                     [99.0 - k for k in range(30)], [99.2 - k for k in range(30)])
    first = replay_loop(down, np.where(np.arange(30) == 1, BUY, H), np.full(30, 1.0), journal=Journal(tmp_path / "a.db"),
                        broker_path=str(ppath), risk=RiskConfig(max_daily_loss=0.5, max_drawdown=0.5), ledger=ledger,
                        loop=LoopConfig(run="morning"))
    first.run(max_events=20)
    first.journal.close()
    lost = first.risk.day_start_equity - first.broker.account_report().equity
    assert lost > 100  # the long lost money as the price fell
    second = replay_loop(bars, np.zeros(30), np.full(30, 1.0), journal=Journal(tmp_path / "b.db"),
                         broker_path=str(ppath), ledger=ledger, loop=LoopConfig(run="afternoon"))
    second.start()
    assert second.risk.day_start_equity == pytest.approx(first.risk.day_start_equity)
    assert second.risk.peak_equity == pytest.approx(first.risk.peak_equity)
    assert second.risk.peak_equity - second.broker.account_report().equity == pytest.approx(lost, rel=0.2)
    second.journal.close()


def test_partial_entry_fills_make_one_trade_with_the_whole_quantity():
    """Defect 13: a position entered in two fills was reported as a trade of the last fill's quantity."""
    j = Journal()
    ts = 1_700_000_000 * NS_PER_SECOND
    for fid, qty, price, kind, side in (("F1", 10, 100.0, "entry", Side.BUY), ("F2", 15, 101.0, "entry", Side.BUY),
                                        ("F3", 25, 105.0, "signal", Side.SELL)):
        j.record_fill(Fill(fid, "C1" if kind == "entry" else "X1", "C1", SYM, side, qty, price, 1.0, ts, kind,
                           realized_pnl=math.nan if kind == "entry" else 108.0), ts)
    [trade] = j.trades().to_dict("records")
    assert trade["qty"] == 25 and trade["entry_price"] == pytest.approx((10 * 100 + 15 * 101) / 25)
    assert trade["entry_costs"] == pytest.approx(2.0)


def test_journal_commits_are_synchronous_full(tmp_path):
    """Defect 14: an order row written ahead must be on disk before the order is sent (WAL + NORMAL could
    lose the last commits on a power cut)."""
    j = Journal(tmp_path / "j.db")
    assert j.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    j.close()


def test_the_nse_calendar_knows_holidays():
    """Defect 14: trading days from a maintained list (pandas_market_calendars' XNSE)."""
    from tradebot.core.nse_calendar import holidays_known_until, is_trading_day, next_trading_day, trading_days

    assert not is_trading_day("2024-01-26") and is_trading_day("2024-01-25") and not is_trading_day("2024-01-27")
    assert [d.day for d in trading_days("2021-03-08", "2021-03-12")] == [8, 9, 10, 12]  # 11th: Mahashivratri
    assert str(next_trading_day("2021-03-10")) == "2021-03-12" and holidays_known_until().year >= 2026


def test_a_position_above_the_cap_is_flattened_and_the_engine_halts(tmp_path):
    """Defect 1 (its second half): nothing checked the position against max_position, so the 12 orders one
    decision became left a twelvefold position in place. Here a position of 200 units meets a cap of 50 (the
    first run's limits were looser): the restart halts and flattens it at the next bar."""
    bars = _bars(30)
    jpath, ppath = tmp_path / "j.db", tmp_path / "p.db"
    actions = np.where(np.arange(30) == 2, BUY, H)
    loose = RiskConfig(max_position=10_000, max_daily_loss=0.5, max_drawdown=0.5)
    first = replay_loop(bars, actions, np.full(30, 50.0), journal=Journal(jpath), broker_path=str(ppath), risk=loose,
                        engine=EngineConfig(fixed_qty=200))
    first.run(max_events=6)
    first.journal.close()
    assert first.broker.position_reports()[0].qty == 200
    tight = RiskConfig(max_position=50, max_daily_loss=0.5, max_drawdown=0.5)
    again = replay_loop(bars, actions, np.full(30, 50.0), journal=Journal(jpath), broker_path=str(ppath), risk=tight,
                        engine=EngineConfig(fixed_qty=200))
    again.run(max_events=3)
    assert again.risk.state is RiskState.HALTED and "max_position 50" in again.risk.why()
    assert again.broker.position_reports() == []  # flattened
    flat = [o for o in again.journal.orders() if o["intent"] == "flatten"]
    assert flat and flat[0]["qty"] == 200 and flat[0]["status"] == "FILLED"
    again.journal.close()
