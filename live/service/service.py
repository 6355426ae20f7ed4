"""``TradingDayService``: one long-running process for every trading day (``tradebot service --config FILE``).

Each NSE trading day (``tradebot.core.nse_calendar``) goes through its phases; weekends and holidays are slept
through. The phase is written to ``STATE_DIR/service.db`` *before* its work starts, so a process killed at
any point starts again where it was:

* ``pre_open`` (``schedule.pre_open``, 08:00): resolve the model alias (``@champion``) when its interval is due;
  check the Fyers token with the profile call. Refused: alert at once (``login_needed``, a person has until
  09:15) and check again every ``token_recheck_s`` until it works or the session is over.
* ``warm_up`` (``schedule.warm_up``): history, features, the policy (probed), the day's journal, reconciliation.
* ``trading`` (09:15): the loop, exactly as ``tradebot live --feed fyers`` runs it (``run_fyers_loop``), until
  ``stop_after_close_s`` after 15:30. A token that dies mid-session halts the loop (fatal): login alert,
  then a new warm-up on the same journal once a person has logged in.
* ``square_off`` (``schedule.square_off``): the same loop; the risk engine flattens intraday positions. At the
  end the day's journal must show no position: otherwise a critical alert.
* ``report``: the day's run files from the journal, ``summary.json``, the account's ``history.json``, and the
  day's summary to the configured webhook / Telegram.

A restart in ``warm_up``, ``trading`` or ``square_off`` warms up again and resumes the day's journal (the loop
reconciles with the broker first); after the session's end it goes straight to ``report``. SIGTERM or Ctrl-C:
the loop stops taking decisions (no new entries), journals the broker's last news and its state, disconnects,
and the process exits 0 within seconds. The model version is pinned at warm-up: never switched mid-session.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from tradebot.core.errors import FatalError, RetryableError, UserInputError
from tradebot.core.nse_calendar import is_trading_day, next_trading_day
from tradebot.core.nse_time import hhmm_minute, timeframe_minutes
from tradebot.live.logs import get_logger, log_event
from tradebot.live.ports import RiskState
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.runner import LiveConfig
from tradebot.live.service.clock import SharedClock, WallClock
from tradebot.live.service.notify import Notifier
from tradebot.live.service.service_config import ServiceConfig
from tradebot.live.service.service_metrics import ServiceHealth, ServiceMetrics, serve_endpoints
from tradebot.live.service.session import (Session, build_session, check_token, day_summary_text, journal_path,
                                           write_day_report)
from tradebot.live.service.state import ACTIVE_PHASES, Phase, ServiceState, ist_date, ist_ns, uptime_report

NS = 1_000_000_000
OPEN_MIN, CLOSE_MIN = 9 * 60 + 15, 15 * 60 + 30
STATE_FILE = "service.db"
WARM_UP_RETRY_S = 60.0
STOP_GRACE_S = 8.0  # SIGTERM: the loop's own stop (finish the bar, cancel, journal, disconnect) within this
STOPPING = "service_stopping"  # the risk condition a stop sets (exits only); cleared at the next warm-up


def default_alias_resolver(model: str) -> str:
    from tradebot.rl.policy import resolve_model_alias

    return resolve_model_alias(model)


class TradingDayService:
    """See the module docstring. ``clock``: ``WallClock()`` or a soak's ``SharedClock``; ``resolve_alias``:
    ``models:/NAME@ALIAS`` -> ``models:/NAME/N`` (MLflow's registry by default)."""

    def __init__(self, config: ServiceConfig, live: LiveConfig | None = None, *, clock: Any = None,
                 notifier: Notifier | None = None, resolve_alias: Callable[[str], str] = default_alias_resolver,
                 feed_heartbeat_s: float = 1.0, logger: logging.Logger | None = None):
        self.config = config
        self.live = live or LiveConfig()
        self.clock = clock or WallClock()
        self.notifier = notifier or Notifier(config.notify)
        self.resolve_alias = resolve_alias
        self.feed_heartbeat_s = feed_heartbeat_s
        self.log = logger or get_logger()
        self.stop = threading.Event()
        self.metrics = ServiceMetrics(LiveMetrics())
        self.health = ServiceHealth(alive_within_s=max(30.0, 6 * config.schedule.heartbeat_s))
        self.state: ServiceState | None = None
        self.server: Any = None
        self.life = 0
        self.session: Session | None = None
        # set when the thread running the session's loop has ended (not Thread.is_alive: in Python 3.12 a
        # KeyboardInterrupt landing in Thread.join marks the joined thread stopped while it still runs)
        self._session_done = threading.Event()
        self._session_done.set()
        self.token_ok: bool | None = None
        self._alerted: set[tuple[str, str]] = set()
        self._uptime_due = 0.0
        self._phase_lock = threading.RLock()  # the heartbeat thread enters square_off; the main thread the rest

    # ------------------------------------------------------------------ times
    def at(self, day: dt.date, hhmm: str | int) -> int:
        return ist_ns(day, hhmm if isinstance(hhmm, int) else hhmm_minute(hhmm))

    def stop_minute(self) -> int:
        return CLOSE_MIN + math.ceil(self.config.schedule.stop_after_close_s / 60.0)

    def now(self) -> int:
        return self.clock.now_ns()

    # ------------------------------------------------------------------ the process
    def run(self) -> int:
        """Run until SIGTERM / Ctrl-C (exit 0)."""
        cfg = self.config
        cfg.state.mkdir(parents=True, exist_ok=True)
        self.state = ServiceState(cfg.state / STATE_FILE)
        lives = self.state.lives()
        crashed = bool(lives) and lives[-1]["ended"] != "clean"
        self.life = self.state.process_started(self.now(), os.getpid())
        self.metrics.restarts.set(self.state.restarts())
        self.metrics.max_drawdown.set(self._risk().max_drawdown)
        if cfg.port is not None:
            self.server = serve_endpoints(self.metrics, self.health, cfg.host, cfg.port)
            self.say(f"endpoints: http://{cfg.host}:{self.server.server_port}/healthz /readyz /metrics")
        beat = threading.Thread(target=self._heartbeat, name="service-heartbeat", daemon=True)
        beat.start()
        previous = self._install_signals()
        how = "clean"
        try:
            if crashed:
                last = self._last_phase()
                self.alert("restarted", f"restarted after the previous process died (last phase: {last})",
                           "warning", key=str(self.life))
            log_event(self.log, logging.INFO, "service_started", pid=os.getpid(), restarts=self.state.restarts(),
                      mode=cfg.mode, symbols=list(cfg.symbols))
            while not self.stop.is_set():
                self.cycle()
        except KeyboardInterrupt:
            self.say("stopped (SIGTERM / Ctrl-C)")
        except BaseException as err:
            how = f"error: {type(err).__name__}"
            self.alert("service_error", f"the service stopped on an error: {type(err).__name__}: {err}", "critical",
                       key=str(self.life))
            raise
        finally:
            self.stop.set()
            if self.session is not None:
                self._close_session()
            beat.join(2.0)  # it wakes at once on stop; only a call in progress is waited for
            self.state.process_ended(self.life, self.now(), how)
            self.metrics.phase("idle")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.server is not None:
                self.server.shutdown()
            self.state.close()
        return 0

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def interrupt(signum: int, frame: Any) -> None:
            self.stop.set()
            raise KeyboardInterrupt

        return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _heartbeat(self) -> None:
        every = self.config.schedule.heartbeat_s
        while not self.stop.wait(every):
            try:
                self.state.seen(self.life, self.now())
                self.health.beat()
                self._watch_session()
            except Exception as err:  # the heartbeat must survive a bad moment (e.g. a closing db)
                log_event(self.log, logging.WARNING, "heartbeat_failed", reason=f"{type(err).__name__}: {err}")

    def _last_phase(self) -> str:
        days = self.state.days()
        return f"{days[-1]['day']} {days[-1]['phase'].value}" if days else "none"

    def say(self, line: str) -> None:
        log_event(self.log, logging.INFO, "service", message=line)

    def alert(self, kind: str, text: str, severity: str = "critical", day: dt.date | None = None,
              key: str = "") -> None:
        """Tell people (webhook / Telegram) once per (kind, key); recorded in the state's events."""
        if (kind, key) in self._alerted:
            return
        self._alerted.add((kind, key))
        log_event(self.log, logging.WARNING if severity != "info" else logging.INFO, "alert", kind=kind,
                  severity=severity, message=text)
        if self.state is not None:
            self.state.event(kind, self.now(), day, severity=severity, text=text)
        for failure in self.notifier.send(text, kind=kind, severity=severity, day=day.isoformat() if day else None):
            self.metrics.notify_failures.labels(failure.split(":", 1)[0]).inc()
            log_event(self.log, logging.WARNING, "notify_failed", reason=failure)

    # ------------------------------------------------------------------ which day, which phase
    def cycle(self) -> None:
        """One step: finish a past day left unreported, else work on today, else sleep until the next pre-open."""
        now = self.now()
        today = ist_date(now)
        for rec in self.state.days():
            if rec["day"] < today and rec["phase"] in ACTIVE_PHASES:
                self.report(rec["day"], why="the session ended while the service was down")
        rec = self.state.day(today)
        stop_at = self.at(today, self.stop_minute())
        pre_open = self.at(today, self.config.schedule.pre_open)
        if is_trading_day(today) and rec is None and now < pre_open:
            self.idle_until(pre_open)
            return
        if is_trading_day(today) and now < stop_at and (rec is None or rec["phase"] in ACTIVE_PHASES):
            self.run_day(today, rec["phase"] if rec else Phase.PRE_OPEN)
            return
        if rec is not None and rec["phase"] in ACTIVE_PHASES:  # after the session: only the report is left
            self.report(today, why="the session ended while the service was down")
            return
        self.idle_until(self.at(next_trading_day(today), self.config.schedule.pre_open))

    def idle_until(self, ns: int) -> None:
        """Sleep until ``ns``, checking the model alias on its interval meanwhile."""
        self.metrics.phase("idle")
        self.health.phase = "idle"
        self.health.set("feed", None)
        self.health.set("policy", None)
        every = int(self.config.schedule.alias_check_minutes * 60 * NS)
        while not self.stop.is_set() and self.now() < ns:
            step = min(ns, self.now() + every) if self._alias_applies() else ns
            if not self.clock.idle_until(step, self.stop):
                return
            self.check_alias(force=False)

    def enter(self, day: dt.date, phase: Phase, **detail: Any) -> None:
        with self._phase_lock:
            self.state.enter(day, phase, self.now(), os.getpid(), **detail)
        self.metrics.phase(phase.value)
        self.health.phase = phase.value
        log_event(self.log, logging.INFO, "phase", day=day.isoformat(), phase=phase.value)

    def run_day(self, day: dt.date, phase: Phase) -> None:
        if phase is Phase.PRE_OPEN:
            self.enter(day, Phase.PRE_OPEN)
            self.check_alias(force=True)
            if not self.wait_for_token(day):
                return
            if not self.clock.idle_until(self.at(day, self.config.schedule.warm_up), self.stop):
                return
            phase = Phase.WARM_UP
        if phase is Phase.REPORT:
            self.report(day)
            return
        if phase is Phase.WARM_UP:
            self.enter(day, Phase.WARM_UP)
        self.trade(day, resumed=phase)

    # ------------------------------------------------------------------ pre-open
    def wait_for_token(self, day: dt.date) -> bool:
        """The token accepted by the server; until then a login alert and a re-check every ``token_recheck_s``.
        False when stopped or when the session ended without a login (the day is then reported as skipped)."""
        sched = self.config.schedule
        while not self.stop.is_set():
            status = check_token(self.config, now_s=self.now() / NS)
            self.metrics.token_seconds_left.set(max(status.seconds_left, 0.0))
            self.token_ok = status.ok
            self.health.set("token", status.ok, status.reason)
            self.metrics.login_needed.set(0.0 if status.ok else 1.0)
            if status.ok:
                if (("login_needed", day.isoformat()) in self._alerted
                        or self.state.events("login_needed") and self.state.events("login_needed")[-1]["day"] == day.isoformat()):
                    self.alert("login_ok", f"{day}: the Fyers token works again; trading as planned", "info",
                               day, key=day.isoformat())
                return True
            left = (self.at(day, OPEN_MIN) - self.now()) / NS
            when = f"{left / 60:.0f} min before 09:15" if left > 0 else "the session has started"
            self.alert("login_needed", f"{day}: Fyers login needed ({status.reason}); {when}: run "
                       "`tradebot fyers login`", "critical", day, key=day.isoformat())
            if self.now() >= self.at(day, self.stop_minute()):
                self.enter(day, Phase.SKIPPED, why=f"no valid Fyers token during the session ({status.reason})")
                self.alert("session_missed", f"{day}: no session traded: no valid Fyers token", "critical", day,
                           key=day.isoformat())
                return False
            self.clock.sleep(sched.token_recheck_s, self.stop)
        return False

    def _alias_applies(self) -> bool:
        return bool(self.config.policy.model and "@" in self.config.policy.model)

    def check_alias(self, force: bool) -> None:
        """Between sessions only: resolve the model alias when its interval is due (or ``force``); a new version
        is recorded and served from the next warm-up."""
        if not self._alias_applies() or self.session is not None:
            return
        now = self.now()
        last = float(self.state.get("alias_checked_ns") or 0)
        if not force and now - last < self.config.schedule.alias_check_minutes * 60 * NS:
            return
        try:
            version = self.resolve_alias(self.config.policy.model)
        except (UserInputError, OSError, RuntimeError) as err:
            self.alert("alias_check_failed", f"model alias check failed: {err}", "warning", key=str(now // (3600 * NS)))
            return
        self.state.put("alias_checked_ns", str(now))
        before = self.state.get("model_version")
        if version != before:
            self.state.put("model_version", version)
            self.state.event("model_version", now, None, before=before, after=version)
            if before is not None:
                self.alert("model_changed", f"{self.config.policy.model} now names {version} (was {before}); "
                           "served from the next session", "info", key=version)

    # ------------------------------------------------------------------ warm-up, trading, square-off
    def warm_up(self, day: dt.date) -> Session:
        version = self.state.get("model_version") if self._alias_applies() else None
        session = build_session(self.config, self.live, day, self.clock, self.metrics.live, model_version=version,
                                feed_heartbeat_s=self.feed_heartbeat_s)
        loop = session.loop  # a stop (SIGTERM) left "exits only" in the journal: this process trades again
        loop.recorder.risk(loop.risk.set_condition(STOPPING, None, "the service started again", self.now(),
                                                   kind="service"))
        self.health.set("policy", True)
        self.state.note(day, policy=session.policy_name, journal=str(journal_path(self.config, day)))
        return session

    def trade(self, day: dt.date, resumed: Phase) -> None:
        stop_at = self.at(day, self.stop_minute())
        while not self.stop.is_set() and self.now() < stop_at:
            try:
                self.session = self.warm_up(day)
            except FatalError as err:  # the token died between the pre-open check and now
                self._token_died(day, err)
                if not self.wait_for_token(day):
                    return
                continue
            except (RetryableError, UserInputError, OSError) as err:  # e.g. the policy server does not answer
                self.health.set("policy", False, str(err)[:200])
                self.alert("warm_up_failed", f"{day}: the warm-up failed ({type(err).__name__}: {err}); trying "
                           f"again every {WARM_UP_RETRY_S:.0f} s", "critical", day, key=day.isoformat())
                if not self.clock.sleep(WARM_UP_RETRY_S, self.stop):
                    return
                continue
            if not self.clock.idle_until(self.at(day, OPEN_MIN), self.stop):
                return
            square_off = self.at(day, self.config.schedule.square_off)
            if resumed not in (Phase.TRADING, Phase.SQUARE_OFF) or self.now() < square_off:
                self.enter(day, Phase.TRADING if self.now() < square_off else Phase.SQUARE_OFF)
            else:
                self.enter(day, resumed)
            if self.now() >= stop_at:  # warmed up too late: nothing left to trade today
                self._close_session()
                break
            try:
                summary, interrupted = self.run_session_loop(self.session)
            except FatalError as err:  # e.g. the token died mid-session: halted; log in, then resume the journal
                self._close_session()
                self._token_died(day, err)
                resumed = Phase.TRADING
                if not self.wait_for_token(day):
                    return
                continue
            finally:
                if self.stop.is_set():
                    self._close_session()
            if interrupted or self.stop.is_set():
                self._close_session()
                raise KeyboardInterrupt
            self._close_session()
            self.state.note(day, risk_state=summary.risk_state)
            break
        if not self.stop.is_set():
            self.report(day)

    def run_session_loop(self, session: Session) -> tuple[Any, bool]:
        """The day's loop as ``tradebot live`` runs it (``run_fyers_loop``), in a thread of its own so that a
        SIGTERM never lands inside an order submit: the stop makes the risk engine take exits only, closes the
        feed, and the loop ends after the bar it is on (cancels what is working, journals, disconnects).
        The heartbeat thread ends it at the session's end. Returns ``(summary, interrupted)``."""
        from tradebot.live.launch import run_fyers_loop

        out: dict[str, Any] = {}

        done = self._session_done = threading.Event()

        def work() -> None:
            try:
                out["result"] = run_fyers_loop(session.loop)
            except BaseException as err:  # handed to the main thread
                out["error"] = err
            finally:
                done.set()

        worker = threading.Thread(target=work, name="session-loop", daemon=True)
        worker.start()
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop.set()
            loop = session.loop
            try:
                log_event(self.log, logging.INFO, "service_stopping", reason="SIGTERM / Ctrl-C: exits only, then stop")
                loop.risk.set_condition(STOPPING, RiskState.REDUCING, "the service is stopping: exits only",
                                        self.now(), kind="service")
                loop.feed.close()
            finally:  # whatever happens here (a second signal included), the loop gets its grace to finish
                _wait_through_signals(done, STOP_GRACE_S)
            return loop.summary(), True
        if "error" in out:
            raise out["error"]
        return out["result"]

    def _token_died(self, day: dt.date, err: Exception) -> None:
        self.health.set("token", False, str(err))
        self.metrics.login_needed.set(1.0)
        self.alert("token_refused", f"{day}: the Fyers token was refused during the day: {err}", "critical", day,
                   key=f"{day}:{self.now() // (600 * NS)}")

    def _close_session(self) -> None:
        with self._phase_lock:
            session, self.session = self.session, None
        if session is None:
            return
        try:
            session.loop.feed.close()
            if not self._session_done.is_set():
                # the loop's thread is still in the journal (past its grace): closing SQLite under it can crash
                # the process; its commits are durable, and the process's exit releases the file
                log_event(self.log, logging.WARNING, "session_close_skipped",
                          reason="the session's loop is still running; its journal is left open")
                return
            session.loop.broker.disconnect()  # idempotent: the loop's own end has usually done it
            session.loop.journal.close()
        finally:
            session.stop_policy()
            self.health.set("feed", None)
            self.health.set("policy", None)

    def _watch_session(self) -> None:
        """From the heartbeat thread: readiness of the running session, the square-off phase when due, and the
        session's end: the feed is closed once every symbol's last bar of the day (ending 15:30) is processed and
        no order is working, or ``stop_after_close_s`` after 15:30 at the latest (a lagging loop still gets its
        last bar)."""
        session = self.session
        if session is None:
            return
        now = self.now()
        day = ist_date(now)
        loop = session.loop
        ends = dict(loop.risk.last_bar_end)
        open_ns, close_ns = self.at(day, OPEN_MIN), self.at(day, CLOSE_MIN)
        last = max(ends.values(), default=None)
        if last is not None and str(last) != self.state.get("last_bar_end_ns"):
            self.state.put("last_bar_end_ns", str(last))  # the loop's progress (a soak keeps its clock near it)
        done = len(ends) == len(loop.symbols) and min(ends.values()) >= close_ns
        if done:  # and no order working: a late fill's report may still come
            try:
                done = all(loop.orders.working(s) is None for s in loop.symbols)
            except RuntimeError:  # the loop's thread changed its orders meanwhile: look again at the next beat
                done = False
        if done or now >= self.at(day, self.stop_minute()):
            loop.feed.close()  # the loop finishes: cancels what is working, journals, disconnects
        since = max(last or 0, open_ns)
        fresh = (now - since) / NS <= timeframe_minutes(self.config.timeframe) * 60 + self.config.feed_fresh_s
        self.health.set("feed", fresh if open_ns <= now < close_ns else None,
                        "" if fresh else f"no bar for {(now - since) / NS:.0f}s")
        self.health.set("policy", session.policy.last_ok is not False, session.policy.last_error)
        with self._phase_lock:
            rec = self.state.day(day)
            if (self.session is session and rec is not None and rec["phase"] is Phase.TRADING
                    and now >= self.at(day, self.config.schedule.square_off)):
                self.enter(day, Phase.SQUARE_OFF)
        if self.token_ok:
            from tradebot.live.adapters.fyers.auth import load_token

            try:
                left = load_token(self.config.token_file, allow_expired=True).seconds_left(now / NS)
            except Exception:  # noqa: BLE001 - a missing file shows at the next check
                left = None
            if left is not None:
                self.metrics.token_seconds_left.set(max(left, 0.0))
                if left < self.config.schedule.token_warn_s:
                    self.alert("token_expiring", f"{day}: the Fyers token expires in {left / 60:.0f} min", "warning",
                               day, key=day.isoformat())
        if time.monotonic() >= self._uptime_due:  # a few ms of work: not every heartbeat
            self._uptime_due = time.monotonic() + 5.0
            self.metrics.uptime_today.set(self.uptime_today(now))

    def uptime_today(self, now: int) -> float:
        days = uptime_report(self.state, until_ns=now)["days"]
        return days[-1]["uptime"] if days and days[-1]["day"] == ist_date(now).isoformat() else 1.0

    # ------------------------------------------------------------------ report
    def report(self, day: dt.date, why: str = "") -> None:
        self.enter(day, Phase.REPORT)
        rec = self.state.day(day) or {"detail": {}}
        policy = rec["detail"].get("policy", "?")
        summary = write_day_report(self.config, self.live, day, policy, extra={"why": why} if why else None)
        self.state.note(day, bars=sum((summary.get("bars") or {}).values()), orders=summary.get("orders", 0),
                        fills=summary.get("fills", 0), flat=summary.get("flat"))
        uptime = next((d for d in uptime_report(self.state, self.now())["days"] if d["day"] == day.isoformat()), None)
        if summary.get("traded") and not summary.get("flat"):
            self.alert("not_flat", f"{day}: positions left at the end of the day: {summary.get('positions_at_end')}",
                       "critical", day, key=day.isoformat())
        text = day_summary_text(summary) + (f"; uptime {uptime['uptime']:.2%}" if uptime else "")
        self.alert("day_summary", text, "info", day, key=day.isoformat())
        self.enter(day, Phase.DONE, report=str(journal_path(self.config, day).parent / "summary.json"))
        self.metrics.days_reported.set(sum(1 for d in self.state.days() if d["phase"] is Phase.DONE))

    def _risk(self) -> Any:
        if self.config.mode == "live":
            from tradebot.live.risk import load_risk_file

            return load_risk_file(self.config.risk_config)
        return self.live.risk


def service_status(state_dir: Any, now_ns: int | None = None) -> dict[str, Any]:
    """What ``tradebot service status`` shows: each day's phase and outcome, uptime per day and per month,
    process starts and restarts, the last alerts. Uptime covers market hours from the first start to the last
    heartbeat, or to now (``now_ns``, default this machine's clock or a soak's clock file) when the last
    process died instead of being stopped."""
    from pathlib import Path

    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: no service state here (is it the service's state_dir?)")
    state = ServiceState(path, read_only=True)
    try:
        lives = state.lives()
        if now_ns is None:
            clock_file = Path(state_dir) / "clock.json"  # a soak's clock, not this machine's
            now_ns = SharedClock(clock_file).now_ns() if clock_file.is_file() else time.time_ns()
        last_seen = max((lv["seen_ns"] for lv in lives), default=now_ns)
        # a service stopped on purpose is not down while stopped; one that died is down until now
        until = last_seen if lives and lives[-1]["ended"] == "clean" else max(now_ns, last_seen)
        return {"state_dir": str(state_dir),
                "days": [{"day": d["day"].isoformat(), "phase": d["phase"].value, "attempts": d["attempts"],
                          **{k: v for k, v in d["detail"].items() if k in ("why", "bars", "orders", "fills", "report")}}
                         for d in state.days()],
                "uptime": uptime_report(state, until),
                "alerts": [{k: e[k] for k in ("kind", "day", "severity", "text") if k in e}
                           for e in state.events() if "severity" in e][-20:],
                "lives": [{"pid": lv["pid"], "ended": lv["ended"] or "killed / crashed"} for lv in lives][-20:]}
    finally:
        state.close()




def run_service(config_path: Any, *, log_json: bool = True) -> int:
    """``tradebot service --config FILE``: the ``service:`` and ``live:`` sections of FILE, then run until stopped."""
    from pathlib import Path

    from tradebot.live.logs import configure_json_logging
    from tradebot.live.service.clock import make_clock

    config = ServiceConfig.from_yaml(config_path)
    live = LiveConfig.from_yaml(Path(config_path))
    if log_json:
        configure_json_logging()
    clock = make_clock(config.clock, config.state / "clock.json")
    return TradingDayService(config, live, clock=clock,
                             feed_heartbeat_s=min(1.0, config.schedule.heartbeat_s)).run()


__all__ = ["TradingDayService", "run_service", "service_status"]


def _wait_through_signals(done: threading.Event, grace_s: float) -> None:
    """Wait up to ``grace_s`` for ``done``; a further SIGTERM / Ctrl-C meanwhile does not cut the wait short
    (the stop is already under way)."""
    deadline = time.monotonic() + grace_s
    while not done.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            done.wait(min(left, 0.5))
        except KeyboardInterrupt:
            continue
