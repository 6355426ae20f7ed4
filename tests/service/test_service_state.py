"""The service's memory across restarts: phases persisted per day, process lives, uptime in market hours."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from tradebot.live.service.clock import SharedClock
from tradebot.live.service.state import Phase, ServiceState, ist_date, ist_ns, uptime_report

NS = 1_000_000_000
DAY = dt.date(2024, 3, 22)  # a Friday; Mon 25 March 2024 is Holi


def test_ist_ns_and_ist_date_agree_at_the_open():
    open_ns = ist_ns(DAY, 9 * 60 + 15)
    assert ist_date(open_ns) == DAY and ist_date(ist_ns(DAY, 0) - 1) == DAY - dt.timedelta(days=1)
    assert open_ns == int(dt.datetime(2024, 3, 22, 3, 45, tzinfo=dt.timezone.utc).timestamp()) * NS


def test_a_phase_entered_is_what_a_new_connection_reads(tmp_path):
    state = ServiceState(tmp_path / "service.db")
    state.enter(DAY, Phase.PRE_OPEN, 1, pid=11)
    state.enter(DAY, Phase.WARM_UP, 2, pid=11, policy="server x")
    state.enter(DAY, Phase.WARM_UP, 3, pid=12)  # re-entered after a restart: not a new attempt
    state.note(DAY, bars=25)
    state.close()  # as if the process died here
    again = ServiceState(tmp_path / "service.db", read_only=True)
    rec = again.day(DAY)
    assert rec["phase"] is Phase.WARM_UP and rec["attempts"] == 2
    assert rec["detail"] == {"policy": "server x", "bars": 25}
    assert [(p[1], p[3]) for p in again.phase_history(DAY)] == [("pre_open", 11), ("warm_up", 11), ("warm_up", 12)]


def test_uptime_counts_market_hours_only_and_restarts_follow_unclean_ends(tmp_path):
    state = ServiceState(tmp_path / "service.db")
    open_, close = ist_ns(DAY, 9 * 60 + 15), ist_ns(DAY, 15 * 60 + 30)
    a = state.process_started(ist_ns(DAY, 8 * 60))  # up before the open
    state.seen(a, open_ + 3600 * NS)                 # killed one hour into the session
    b = state.process_started(open_ + 3600 * NS + 90 * NS)  # back 90 s later
    state.seen(b, close + 600 * NS)
    state.process_ended(b, close + 600 * NS, "clean")
    c = state.process_started(ist_ns(DAY + dt.timedelta(days=4), 8 * 60))  # Tuesday after the weekend and Holi
    state.seen(c, ist_ns(DAY + dt.timedelta(days=4), 12 * 60))
    report = uptime_report(state, until_ns=ist_ns(DAY + dt.timedelta(days=4), 12 * 60))
    days = {d["day"]: d for d in report["days"]}
    assert set(days) == {"2024-03-22", "2024-03-26"}  # no weekend, no Holi
    assert days["2024-03-22"]["down_s"] == pytest.approx(90.0)
    assert days["2024-03-22"]["uptime"] == pytest.approx(1 - 90 / 22_500)
    assert days["2024-03-22"]["starts_in_market_hours"] == 1
    assert days["2024-03-22"]["down"] == [["10:15:00", "10:16:30"]]  # IST
    assert days["2024-03-26"]["down"] == []
    assert days["2024-03-26"]["market_s"] == pytest.approx((12 * 60 - 9 * 60 - 15) * 60)  # until now
    assert report["months"][0]["month"] == "2024-03"
    assert report["months"][0]["uptime"] == pytest.approx((22_500 - 90 + days["2024-03-26"]["market_s"])
                                                          / (22_500 + days["2024-03-26"]["market_s"]))
    assert report["restarts"] == 1 and report["starts"] == 3  # a (killed) -> b; b ended cleanly -> c is no restart


def test_a_shared_clock_runs_at_its_speed_jumps_forward_only_and_survives_a_new_reader(tmp_path):
    wall = [10 * NS]
    clock = SharedClock.create(tmp_path / "clock.json", 1_000 * NS, 60.0, wall=lambda: wall[0])
    wall[0] += 2 * NS
    assert clock.now_ns() == 1_120 * NS
    reader = SharedClock(tmp_path / "clock.json", wall=lambda: wall[0])  # a restarted process
    assert reader.now_ns() == 1_120 * NS
    reader.jump_to(5_000 * NS)
    reader.jump_to(10 * NS)  # never back
    assert clock.now_ns() == 5_000 * NS and clock.seq == 1
    clock.set_speed(1.0)
    wall[0] += 3 * NS
    assert reader.now_ns() == 5_003 * NS


def test_a_jump_waits_for_the_harness_acknowledgement(tmp_path):
    clock = SharedClock.create(tmp_path / "clock.json", 1_000 * NS, 1.0, acks=True)
    done = threading.Event()

    def jump() -> None:
        clock.jump_to(clock.now_ns() + 3600 * NS)
        done.set()

    threading.Thread(target=jump, daemon=True).start()
    assert not done.wait(0.3)  # waiting for the harness
    clock.ack(1)
    assert done.wait(5)
