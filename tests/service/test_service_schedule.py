"""The service's day logic on a fake clock: which day and phase comes next, weekends and holidays slept through,
the pre-open login alert, a day finished after a crash, the model alias checked between sessions only."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from tradebot.core.config import parse_config
from tradebot.live.service import service as service_module
from tradebot.live.service.service import TradingDayService
from tradebot.live.service.service_config import ServiceConfig
from tradebot.live.service.session import TokenStatus
from tradebot.live.service.state import Phase, ServiceState, ist_ns

NS = 1_000_000_000
FRIDAY, TUESDAY = dt.date(2024, 3, 22), dt.date(2024, 3, 26)  # Sat 23, Sun 24, Mon 25 (Holi) closed


class FakeClock:
    def __init__(self, ns: int):
        self.ns = ns
        self.idled: list[int] = []

    def now_ns(self) -> int:
        return self.ns

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        self.ns += int(seconds * NS)
        return not stop.is_set()

    def idle_until(self, ns: int, stop: threading.Event) -> bool:
        self.idled.append(ns)
        self.ns = max(self.ns, ns)
        return not stop.is_set()


class Inbox:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, text: str, **kw) -> list[str]:
        self.sent.append({"text": text, **kw})
        return []

    def kinds(self) -> list[str]:
        return [m["kind"] for m in self.sent]


def _service(tmp_path, now: int, resolve=lambda m: m, **over) -> TradingDayService:
    raw = {"state_dir": str(tmp_path / "state"), "symbols": ["NSE:SBIN-EQ"], "port": None,
           "policy": {"url": "http://127.0.0.1:1/policy"}, **over}
    svc = TradingDayService(parse_config(ServiceConfig, raw), clock=FakeClock(now), notifier=Inbox(),
                            resolve_alias=resolve)
    svc.state = ServiceState(tmp_path / "state" / "service.db")
    return svc


def test_after_fridays_report_the_service_sleeps_through_the_weekend_and_holi(tmp_path):
    svc = _service(tmp_path, ist_ns(FRIDAY, 16 * 60))
    svc.state.enter(FRIDAY, Phase.DONE, svc.now())
    svc.cycle()
    assert svc.clock.idled == [ist_ns(TUESDAY, 8 * 60)]  # Tuesday's pre-open, 08:00 IST


def test_on_a_trading_morning_the_service_waits_for_todays_pre_open(tmp_path):
    svc = _service(tmp_path, ist_ns(TUESDAY, 6 * 60), schedule={"pre_open": "07:45", "warm_up": "08:30"})
    svc.cycle()
    assert svc.clock.idled == [ist_ns(TUESDAY, 7 * 60 + 45)]


def test_a_day_left_unreported_by_a_crash_is_reported_first(tmp_path):
    svc = _service(tmp_path, ist_ns(TUESDAY, 6 * 60))
    svc.state.enter(FRIDAY, Phase.SQUARE_OFF, ist_ns(FRIDAY, 15 * 60 + 20))  # died in the square-off
    svc.cycle()
    rec = svc.state.day(FRIDAY)
    assert rec["phase"] is Phase.DONE and rec["detail"]["report"].endswith("2024-03-22/summary.json")
    assert [p[1] for p in svc.state.phase_history(FRIDAY)][-2:] == ["report", "done"]
    summary = (tmp_path / "state" / "days" / "2024-03-22" / "summary.json").read_text()
    assert '"traded": false' in summary and "while the service was down" in summary
    assert "day_summary" in svc.notifier.kinds()


def test_a_restart_after_the_session_goes_straight_to_the_report(tmp_path, monkeypatch):
    svc = _service(tmp_path, ist_ns(TUESDAY, 16 * 60))
    svc.state.enter(TUESDAY, Phase.TRADING, ist_ns(TUESDAY, 11 * 60))
    monkeypatch.setattr(svc, "trade", lambda *a, **k: pytest.fail("no session after 15:31"))
    svc.cycle()
    assert svc.state.day(TUESDAY)["phase"] is Phase.DONE


def test_a_refused_token_alerts_once_before_the_open_and_the_day_goes_on_after_the_login(tmp_path, monkeypatch):
    answers = iter([TokenStatus(False, 0.0, "code -16"), TokenStatus(False, 0.0, "code -16"),
                    TokenStatus(True, 20_000.0)])
    monkeypatch.setattr(service_module, "check_token", lambda config, now_s=None: next(answers))
    svc = _service(tmp_path, ist_ns(TUESDAY, 8 * 60))
    svc.state.enter(TUESDAY, Phase.PRE_OPEN, svc.now())
    assert svc.wait_for_token(TUESDAY)
    login = [m for m in svc.notifier.sent if m["kind"] == "login_needed"]
    assert len(login) == 1 and login[0]["severity"] == "critical" and "75 min before 09:15" in login[0]["text"]
    assert svc.notifier.kinds()[-1] == "login_ok"
    assert svc.metrics.value("tradebot_service_login_needed") == 0.0
    assert svc.clock.ns == ist_ns(TUESDAY, 8 * 60) + 2 * 60 * NS  # two re-checks, token_recheck_s apart


def test_without_a_login_the_day_is_skipped_once_the_session_is_over(tmp_path, monkeypatch):
    monkeypatch.setattr(service_module, "check_token", lambda config, now_s=None: TokenStatus(False, 0.0, "no token"))
    svc = _service(tmp_path, ist_ns(TUESDAY, 15 * 60), schedule={"token_recheck_s": 600})
    svc.state.enter(TUESDAY, Phase.PRE_OPEN, svc.now())
    assert not svc.wait_for_token(TUESDAY)
    assert svc.state.day(TUESDAY)["phase"] is Phase.SKIPPED
    assert svc.notifier.kinds() == ["login_needed", "session_missed"]
    assert svc.metrics.value("tradebot_service_login_needed") == 1.0


def test_the_model_alias_is_resolved_between_sessions_on_its_interval_and_never_mid_session(tmp_path):
    versions = iter(["models:/m/1", "models:/m/2"])
    calls = []

    def resolve(model: str) -> str:
        calls.append(model)
        return next(versions)

    svc = _service(tmp_path, ist_ns(FRIDAY, 16 * 60), policy={"model": "models:/m@champion"},
                   schedule={"alias_check_minutes": 30}, resolve=resolve)
    svc.check_alias(force=True)
    assert svc.state.get("model_version") == "models:/m/1"
    svc.clock.ns += 10 * 60 * NS
    svc.check_alias(force=False)  # not due yet
    assert len(calls) == 1
    svc.session = object()  # a session is running: never switched
    svc.clock.ns += 60 * 60 * NS
    svc.check_alias(force=True)
    assert len(calls) == 1
    svc.session = None
    svc.check_alias(force=False)
    assert svc.state.get("model_version") == "models:/m/2" and "model_changed" in svc.notifier.kinds()


def test_a_schedule_out_of_order_is_refused_with_the_key():
    from tradebot.core.errors import UserInputError

    with pytest.raises(UserInputError, match=r"schedule.*pre_open <= warm_up <= 09:15"):
        parse_config(ServiceConfig, {"state_dir": "x", "symbols": ["NSE:SBIN-EQ"], "policy": {"url": "u"},
                                     "schedule": {"pre_open": "09:30"}})
    with pytest.raises(UserInputError, match="exactly one of policy.model"):
        parse_config(ServiceConfig, {"state_dir": "x", "symbols": ["NSE:SBIN-EQ"], "policy": {}})
    with pytest.raises(UserInputError, match="risk_config"):
        parse_config(ServiceConfig, {"state_dir": "x", "symbols": ["NSE:SBIN-EQ"], "policy": {"url": "u"},
                                     "mode": "live"})


def test_a_failing_warm_up_alerts_once_retries_each_minute_and_the_day_is_still_reported(tmp_path, monkeypatch):
    from tradebot.core.errors import UserInputError

    attempts = []

    def no_policy_server(*args, **kwargs):
        attempts.append(svc.now())
        raise UserInputError("http://127.0.0.1:1/policy: the policy server does not answer (ConnectionError)")

    monkeypatch.setattr(service_module, "build_session", no_policy_server)
    svc = _service(tmp_path, ist_ns(TUESDAY, 9 * 60))
    svc.state.enter(TUESDAY, Phase.WARM_UP, svc.now())
    svc.trade(TUESDAY, Phase.WARM_UP)
    stop_at = ist_ns(TUESDAY, 15 * 60 + 30) + 600 * NS
    assert len(attempts) == (stop_at - ist_ns(TUESDAY, 9 * 60)) // (60 * NS)
    assert all(b - a == 60 * NS for a, b in zip(attempts, attempts[1:]))
    assert svc.notifier.kinds().count("warm_up_failed") == 1
    assert svc.health.describe()["checks"]["policy"] is False
    assert svc.state.day(TUESDAY)["phase"] is Phase.DONE
