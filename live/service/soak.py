"""The service soak (``tradebot service soak --days N --out DIR``): the real service process (``tradebot service``)
over simulated trading days against the Fyers simulator on an accelerated clock, killed once in each phase.

```python
report = run_service_soak(days=5, speed=1200, out=Path("out/service-soak"))   # writes out/service-soak/soak.json
report["breaches"]                                                         # [] when everything held
```

How it runs:

* the market: one synthetic 15-minute equity (``NSE:SOAKA-EQ``, a seeded random walk) on every NSE trading day
  from a month before the first soak day (Wed 2024-03-20) on: the first five soak days cross a weekend and
  Holi (Mon 2024-03-25), which the service must sleep through;
* the clock: a ``SharedClock`` file in the service's state folder. The harness advances the simulator (step
  mode) to it every few milliseconds; the service jumps it forward when it has nothing to do until a time
  (each jump waits for the harness's acknowledgement, so the harness first does the night's work: the day's
  broker books saved and reset, as Fyers' are every day, and on one night every token expired). It runs at
  ``speed`` market seconds per wall second, and at real speed while the service warms up or restarts (a
  restart costs the market seconds a real one would) and while the service's loop is more than two bars
  behind the market (at 1200x a one-second hiccup of this machine would be 20 market minutes: the soak tests
  the service over days, not this machine's speed; ``soak.json`` says how long the clock was held); the
  square-off runs at ``SQUARE_OFF_SPEED`` so that the 15:15 flatten meets the last prints of the day;
* the policy: the simulator's scripted policy server; real orders (``mode: live``) to the simulator;
* the person: a local webhook receiver gets the service's alerts; on ``login_needed`` the harness logs in
  (a new token file) after ``LOGIN_DELAY_S`` wall seconds;
* the kills: SIGKILL in ``pre_open`` (day 1), ``warm_up`` (day 2), ``trading`` (day 3, mid-morning),
  ``square_off`` (day 4) and ``report`` (day 5), then a restart; a SIGTERM during day 4's session must end
  the process within 10 s; at the end a SIGTERM while idle.

Checked at the end (``soak.json``'s ``breaches``): every trading day reached ``done`` with its report files and
``summary.json``, flat; no day on the weekend or the holiday; each day's journal equals the simulator's books of
that day (``tradebot.live.chaos_checks.check_invariants``: one broker order per id, orders, fills, positions and
cash agree, no entry unless ACTIVE and fresh, no token in any file written); the login alert came before 09:15
and the day still traded; each phase was killed once and the restarts are counted; uptime reported per day.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tradebot.core.files import write_json_atomic
from tradebot.core.nse_calendar import trading_days
from tradebot.core.nse_time import bars_per_session
from tradebot.live.chaos import journal_rows as journal_orders, simulator_login
from tradebot.live.service.clock import SharedClock
from tradebot.live.service.state import Phase, ServiceState, ist_date, ist_ns

SYMBOL = "NSE:SOAKA-EQ"
FIRST_DAY = dt.date(2024, 3, 20)
HISTORY_FROM = dt.date(2024, 2, 19)
APP_ID = "SIMAPP-100"
RUN = "service"
LOGIN_DELAY_S = 0.2
EXIT_LIMIT_S = 10.0
BAR_S = 900.0
MAX_LEAD_S = 2 * BAR_S + 120.0  # the market may run this far ahead of the service's loop
SQUARE_OFF_SPEED = 150.0  # the square-off's flatten must meet a print before 15:30: a submit's round trip on this
#                           machine (up to ~1 s) is then ~2 market minutes, not 20
NS = 1_000_000_000
KILL_PLAN = (Phase.PRE_OPEN, Phase.WARM_UP, Phase.TRADING, Phase.SQUARE_OFF, Phase.REPORT)
RISK = {"max_position": 150, "max_notional": 300_000.0, "max_daily_loss": 0.05, "max_drawdown": 0.2,
        "stale_entry_s": 900.0, "stale_flatten_s": 1800.0}
LOOP = {"run": RUN, "unknown_poll_s": 60.0, "unknown_halt_s": 1800.0, "unknown_expire_s": 3600.0,
        "position_check_s": 1800.0, "policy_down_s": 1800.0, "checkpoint_every": 25}
FEATURES = {"returns": {"horizons": [1]}, "trend": {"enabled": False}, "momentum": {"enabled": False},
            "volatility": {"enabled": False}, "volume": {"enabled": False}, "regime": {"enabled": False},
            "calendar": {"enabled": False}, "candles": {"enabled": False}, "normalisation": {"method": "none"}}


def soak_days(days: int) -> list[dt.date]:
    out = trading_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=3 * days + 14))
    return out[:days]


def soak_market(last_day: dt.date, seed: int) -> Any:
    """15-minute bars of one synthetic equity on every trading day from ``HISTORY_FROM`` to ``last_day``."""
    from tradebot.features.bars import Bars

    rng = np.random.default_rng(seed)
    stamps = [pd.Timestamp(f"{d.isoformat()} 09:15", tz="Asia/Kolkata") + pd.Timedelta(minutes=15 * k)
              for d in trading_days(HISTORY_FROM, last_day) for k in range(25)]
    close = np.round(np.cumprod(1.0 + rng.normal(0.0, 0.002, len(stamps))) * 500.0 / 0.05) * 0.05
    open_ = np.concatenate([[500.0], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, 0.001, len(stamps))) * close
    high = np.round((np.maximum(open_, close) + wiggle) / 0.05) * 0.05
    low = np.round((np.minimum(open_, close) - wiggle) / 0.05) * 0.05
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                          "volume": rng.integers(1_000, 5_000, len(stamps)).astype(float)},
                         index=pd.DatetimeIndex(stamps, name="timestamp"))
    return Bars.from_frame(frame, symbol=SYMBOL, timeframe="15m")


class Inbox:
    """A local webhook receiver (http.server on 127.0.0.1): what the service's notifier posted."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with inbox.lock:
                    inbox.messages.append({**json.loads(body or b"{}"), "received_wall": time.time()})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m.get("kind") == kind]

    def close(self) -> None:
        self.server.shutdown()


class ServiceSoak:
    """The harness's state; ``run()`` returns the report."""

    def __init__(self, days: int, speed: float, out: Path, seed: int, say: Callable[[str], None],
                 mode: str = "live"):
        from tradebot.live.adapters.fyers.simulator import FyersSimulator

        self.mode = mode
        self.days = soak_days(days)
        self.speed, self.out, self.seed, self.say = speed, out, seed, say
        out.mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        self.state_dir = out / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.sim = FyersSimulator(data=[soak_market(self.days[-1], seed)], speed=None, fill_at_quote=True,
                                  start=f"{self.days[0].isoformat()}T09:15:00+05:30", token_ttl_s=86_400 * 60,
                                  policy_seed=seed, slippage_bps=1.0)
        self.inbox = Inbox()
        self.clock: SharedClock | None = None
        self.proc: subprocess.Popen | None = None
        self.n_procs = 0
        self.tokens: list[str] = []
        self.books: dict[str, dict[str, Any]] = {}
        self.kills: list[str] = []
        self.sigterm_exits: list[float] = []
        self.logins = 0
        self.breaches: list[str] = []
        self.waiting_pid: int | None = None  # a restarted process not yet back in a phase
        self.expire_before = self.days[1] if len(self.days) > 1 else None
        self.sigterm_day = self.days[3] if len(self.days) > 3 else None
        self.health_seen: dict[str, Any] = {}
        self.plan: dict[str, Phase] = {}
        self.done_kills: set[str] = set()
        self.sigterm_done = False
        self.held_since: float | None = None
        self.held_s = 0.0

    # ------------------------------------------------------------------ set-up
    def login(self) -> None:
        self.tokens.append(simulator_login(self.sim, self.out / "token.json", APP_ID))

    def write_config(self) -> Path:
        risk = self.out / "risk.yaml"
        risk.write_text(yaml.safe_dump({"risk": RISK}))
        money = ({"risk_config": str(risk), "i_understand_real_money": True} if self.mode == "live" else {})
        config = {"service": {"state_dir": str(self.state_dir), "mode": self.mode, "symbols": [SYMBOL],
                              "timeframe": "15m", "warmup_days": 10,
                              "policy": {"url": self.sim.base_url + "/policy", "timeout_s": 3.0}, **money,
                              "token_file": str(self.out / "token.json"), "fyers_log_dir": str(self.out / "logs" / "sdk"),
                              "port": 0, "clock": "shared", "feed_fresh_s": 1800.0,
                              "schedule": {"pre_open": "07:30", "warm_up": "08:45", "token_recheck_s": 120.0,
                                           "heartbeat_s": 0.05, "stop_after_close_s": 1800.0, "token_warn_s": 0.0},
                              "notify": {"webhook_url": self.inbox.url}},
                  "live": {"features": FEATURES, "loop": LOOP, **({"risk": RISK} if self.mode == "paper" else {})}}
        path = self.out / "service.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def spawn(self) -> None:
        self.n_procs += 1
        log = open(self.out / "logs" / f"service-{self.n_procs:02d}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tradebot.live.service.service_process",
                                      str(self.out / "service.yaml")], stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.proc_log = self.out / "logs" / f"service-{self.n_procs:02d}.log"
        log.close()
        self.waiting_pid = self.proc.pid
        self.clock.set_speed(1.0)

    # ------------------------------------------------------------------ the clock and the market
    def sync_market(self) -> None:
        """Advance the simulator to the clock; on a jump the night's work first, then the acknowledgement."""
        clock = self.clock
        seq = clock.seq
        now = clock.now_ns()
        if seq > clock.acked():
            before = self.market_day
            if ist_date(now) > before:
                self.night(before, ist_date(now))
            clock.ack(seq)
        self.sim.advance(to=int(now // NS))
        self.market_day = max(self.market_day, ist_date(now))

    def night(self, day: dt.date, next_day: dt.date) -> None:
        if day in self.days and day.isoformat() not in self.books:
            self.books[day.isoformat()] = self.sim.state()
            write_json_atomic(self.out / "books" / f"{day.isoformat()}.json", self.books[day.isoformat()])
            self.sim.reset()
        if self.expire_before is not None and day < self.expire_before <= next_day:
            self.sim.inject("expire_tokens")
            self.say(f"night before {self.expire_before}: every token expired")

    # ------------------------------------------------------------------ the service process
    def phase_now(self, state: ServiceState) -> tuple[str, str, int] | None:
        last = state.last_phase()
        return None if last is None else (last[0], last[1], last[3])

    def kill(self, day: str, phase: Phase, state: ServiceState) -> None:
        """SIGKILL the service in ``phase`` (checked in its state afterwards), then start it again."""
        self.clock.set_speed(1.0)
        if phase in (Phase.TRADING, Phase.SQUARE_OFF):
            time.sleep(0.15)  # a heartbeat at real speed: the downtime in market hours starts now
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        died_in = self.phase_now(state)
        self.kills.append(f"{day} {died_in[1] if died_in else 'none'}")
        if died_in is None or died_in[:2] != (day, phase.value):
            self.breach(f"the SIGKILL meant for {day} {phase.value} landed in {died_in}")
        self.say(f"SIGKILL in {day} {phase.value}")
        self.spawn()

    def sigterm(self, why: str) -> float | None:
        self.clock.set_speed(1.0)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
            took: float | None = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            took = None
        if took is None or took > EXIT_LIMIT_S:
            self.breach(f"exit after SIGTERM ({why}) took {'more than 30' if took is None else f'{took:.1f}'} s")
        if took is not None:
            self.sigterm_exits.append(took)
        self.say(f"SIGTERM in {why}: exited in {took if took is None else round(took, 2)} s (code {self.proc.returncode})")
        if self.proc.returncode != 0:
            self.breach(f"exit code {self.proc.returncode} after SIGTERM ({why})")
        return took

    def breach(self, what: str) -> None:
        self.breaches.append(what)
        self.say(f"BREACH: {what}")

    def probe_endpoints(self) -> None:
        import urllib.request

        match = re.search(r"endpoints: http://127\.0\.0\.1:(\d+)/healthz", self.proc_log.read_text(errors="replace"))
        if match is None:
            return
        base = f"http://127.0.0.1:{match.group(1)}"
        for path in ("/healthz", "/readyz", "/metrics"):
            try:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    self.health_seen[path] = {"status": r.status, "body": r.read().decode()[:4000]}
            except urllib.error.HTTPError as err:
                self.health_seen[path] = {"status": err.code, "body": err.read().decode()[:4000]}

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        t0 = time.time()
        self.sim.start()
        state: ServiceState | None = None
        try:
            self.login()
            self.write_config()
            self.clock = SharedClock.create(self.state_dir / "clock.json", ist_ns(self.days[0], 7 * 60), 1.0)
            self.market_day = self.days[0]
            self.spawn()
            self.plan = {day.isoformat(): phase for day, phase in zip(self.days, KILL_PLAN)}
            deadline = time.monotonic() + 120 + 90 * len(self.days)
            while time.monotonic() < deadline:
                time.sleep(0.005)
                if state is None and (self.state_dir / "service.db").exists():
                    state = ServiceState(self.state_dir / "service.db", read_only=True)
                finished = state is not None and self.step(state)
                self.sync_market()  # after the kill checks: a phase waiting for its jump's ack is still that phase
                if finished:
                    break
            else:
                self.breach(f"the soak did not finish in time (last phase: {self.phase_now(state) if state else None})")
            self.sigterm("idle, at the end")
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(30)
            if state is not None:
                state.close()
            self.inbox.close()
            last = self.days[-1].isoformat()
            if last not in self.books:  # the night after the last day may not have come
                self.books[last] = self.sim.state()
                write_json_atomic(self.out / "books" / f"{last}.json", self.books[last])
            self.sim.stop()
        return self.report(t0)

    def step(self, state: ServiceState) -> bool:
        """One look at the service: restart it if it died, set the clock's speed for its phase, kill or stop it
        where planned, log in when asked. True once the last day is done."""
        if self.proc.poll() is not None:
            self.breach(f"the service exited by itself (code {self.proc.returncode}): "
                        f"{self.proc_log.read_text(errors='replace')[-800:]!r}")
            self.spawn()
            return False
        current = self.phase_now(state)
        if current is None:
            return False
        day, phase, pid = current
        if self.waiting_pid is not None:
            if pid == self.waiting_pid and phase != Phase.WARM_UP.value:
                self.waiting_pid = None
                self.clock.set_speed(self.speed)
            return False
        now = self.clock.now_ns()
        self.set_pace(state, day, phase, now)
        self.person_logs_in()
        minute = (now - ist_ns(dt.date.fromisoformat(day), 0)) // (60 * NS)
        target = self.plan.get(day)
        if target is not None and day not in self.done_kills and phase == target.value and (
                target is not Phase.TRADING or minute >= 11 * 60):
            if target is Phase.TRADING:
                self.probe_endpoints()
            self.done_kills.add(day)
            self.kill(day, target, state)
            return False
        if (not self.sigterm_done and self.sigterm_day is not None and day == self.sigterm_day.isoformat()
                and phase == Phase.TRADING.value and minute >= 10 * 60):
            self.sigterm_done = True
            self.sigterm(f"{day} {phase}")
            self.spawn()
            return False
        last_day = self.days[-1].isoformat()
        last = state.day(self.days[-1])
        return (last is not None and last["phase"] is Phase.DONE
                and (last_day in self.done_kills or last_day not in self.plan))

    def set_pace(self, state: ServiceState, day: str, phase: str, now: int) -> None:
        """Real speed while the service warms up, and while its loop is more than ``MAX_LEAD_S`` behind the
        market (this machine's hiccups, multiplied by the speed, would otherwise be hours of market time);
        ``speed`` otherwise."""
        want = min(self.speed, SQUARE_OFF_SPEED) if phase == Phase.SQUARE_OFF.value else self.speed
        if phase == Phase.WARM_UP.value:
            want = 1.0
        elif phase in (Phase.TRADING.value, Phase.SQUARE_OFF.value):
            done = max(int(state.get("last_bar_end_ns") or 0), ist_ns(dt.date.fromisoformat(day), 9 * 60 + 15))
            lag = (now - done) / NS
            if lag > MAX_LEAD_S or (self.held_since is not None and lag > BAR_S):
                want = 1.0
        if want == 1.0 and phase != Phase.WARM_UP.value and self.held_since is None:
            self.held_since = time.monotonic()
        elif want != 1.0 and self.held_since is not None:
            self.held_s += time.monotonic() - self.held_since
            self.held_since = None
        if self.clock.speed != want:
            self.clock.set_speed(want)

    def paper_checks(self, day: dt.date, summary: dict[str, Any]) -> dict[str, Any]:
        """Paper mode: the day's journal has exactly the paper account's fills of that day (none of another day),
        and the day started with the equity the previous day ended with (one account across the journals)."""
        from tradebot.envs.engine_config import EngineConfig
        from tradebot.live.journal import Journal
        from tradebot.live.paper import PaperBroker
        from tradebot.live.service.session import DayBooks

        key = day.isoformat()
        broker = PaperBroker(EngineConfig(), [SYMBOL], self.state_dir / "account" / "paper.db")
        broker.connect()
        try:
            today = {f.fill_id for f in DayBooks(broker, day).fill_reports()
                     if f.ts < ist_ns(day + dt.timedelta(days=1), 0)}
        finally:
            broker.disconnect()
        journal = Journal(self.state_dir / "days" / key / "journal.db", create=False)
        try:
            mine = journal.fill_ids()
        finally:
            journal.close()
        out = {"journal_equals_paper_account": {"ok": mine == today, "checked": len(today | mine),
                                                "detail": "" if mine == today else
                                                f"journal only {sorted(mine - today)[:3]}, account only "
                                                f"{sorted(today - mine)[:3]}"}}
        history = json.loads((self.state_dir / "account" / "history.json").read_text())
        i = next(k for k, h in enumerate(history) if h["day"] == key)
        if i > 0 and history[i - 1].get("equity_end") is not None:
            before, start = history[i - 1]["equity_end"], summary.get("day_start_equity")
            ok = start is not None and abs(start - before) <= 0.01
            out["account_carried_over"] = {"ok": ok, "checked": 1,
                                           "detail": "" if ok else f"started {start}, the day before ended {before}"}
        for name, v in out.items():
            if not v["ok"]:
                self.breach(f"{key} {name}: {v['detail']}")
        return out

    def person_logs_in(self) -> None:
        """The person reads the login alert and logs in (a new token file)."""
        alerts = self.inbox.of("login_needed")
        if len(alerts) > self.logins and time.time() - alerts[self.logins]["received_wall"] >= LOGIN_DELAY_S:
            self.logins += 1
            self.login()
            self.say(f"logged in after the alert: {alerts[self.logins - 1]['text']}")

    # ------------------------------------------------------------------ the checks
    def report(self, t0: float) -> dict[str, Any]:
        from tradebot.live.chaos_checks import check_invariants
        from tradebot.live.launch import REPORT_FILES
        from tradebot.live.service.service import service_status

        status = service_status(self.state_dir)
        by_day = {d["day"]: d for d in status["days"]}
        invariants: dict[str, Any] = {}
        for day in self.days:
            key = day.isoformat()
            rec = by_day.get(key)
            if rec is None or rec["phase"] != Phase.DONE.value:
                self.breach(f"{key}: ended in phase {rec['phase'] if rec else 'none'}, not done")
                continue
            summary_file = self.state_dir / "days" / key / "summary.json"
            if not summary_file.is_file():
                self.breach(f"{key}: no summary.json")
                continue
            summary = json.loads(summary_file.read_text())
            missing = [f for f in REPORT_FILES if not (self.state_dir / "days" / key / "report" / f).is_file()]
            if not summary.get("traded") or missing:
                self.breach(f"{key}: report files missing ({', '.join(missing) or 'no bars traded'})")
            if not summary.get("flat"):
                self.breach(f"{key}: not flat at the end: {summary.get('positions_at_end')}")
            short = {s: n for s, n in (summary.get("bars") or {}).items() if n != bars_per_session("15m")}
            if short:
                self.breach(f"{key}: bars done per symbol {short}, not the session's {bars_per_session('15m')}")
            lost = journal_orders(self.state_dir / "days" / key / "journal.db",
                                  "SELECT client_order_id FROM orders WHERE reason LIKE '%of looking it up%'")
            if lost:  # no fault makes an order's outcome unknown here: only a stop in the middle of a submit would
                self.breach(f"{key}: orders whose submit was cut off (outcome never known): {lost}")
            if summary.get("open_orders"):
                self.breach(f"{key}: {summary['open_orders']} orders still open in the journal")
            if self.mode == "paper":
                invariants[key] = self.paper_checks(day, summary)
                invariants[key]["bars"] = summary.get("bars")
                continue
            books = self.books.get(key)
            if books is None:
                self.breach(f"{key}: the broker's books of the day were not saved")
                continue
            inv = check_invariants(self.state_dir / "days" / key / "journal.db", books, self.out, self.tokens, RISK, RUN)
            invariants[key] = {k: {"ok": v["ok"], "checked": v["checked"], "detail": v["detail"]} for k, v in inv.items()}
            for name, v in inv.items():
                if not v["ok"]:
                    self.breach(f"{key} {name}: {v['detail']}")
            invariants[key]["bars"] = summary.get("bars")
        calendar_days = {d["day"] for d in status["days"]}
        skipped = [d.isoformat() for d in pd.date_range(self.days[0], self.days[-1]).date if d not in self.days]
        for d in skipped:
            if d in calendar_days:
                self.breach(f"{d}: not a trading day, but the service ran it")
        alerts = self.inbox.of("login_needed")
        if self.expire_before is not None:
            mine = [a for a in alerts if a.get("day") == self.expire_before.isoformat()]
            if not mine:
                self.breach(f"no login alert on {self.expire_before} after the overnight token expiry")
            else:
                ev = [e for e in ServiceState(self.state_dir / "service.db", read_only=True).events("login_needed")
                      if e["day"] == self.expire_before.isoformat()]
                if not ev or ev[0]["ts_ns"] >= ist_ns(self.expire_before, 9 * 60 + 15):
                    self.breach("the login alert came after 09:15")
            if not self.inbox.of("login_ok"):
                self.breach("no login_ok message after the login")
        killed_in = [k.split(" ", 1)[1] for k in self.kills]
        want = [p.value for p in KILL_PLAN[:len(self.days)]]
        if sorted(killed_in) != sorted(want):
            self.breach(f"killed in {killed_in}, planned {want}")
        if status["uptime"]["restarts"] != len(self.kills):
            self.breach(f"{status['uptime']['restarts']} restarts counted, {len(self.kills)} kills")
        summaries = self.inbox.of("day_summary")
        if len({m.get("day") for m in summaries}) != len(self.days):
            self.breach(f"day summaries sent for {sorted({m.get('day') for m in summaries})}")
        if self.health_seen and self.health_seen.get("/healthz", {}).get("status") != 200:
            self.breach(f"/healthz during the session: {self.health_seen.get('/healthz')}")
        report = {"mode": self.mode, "days": len(self.days), "trading_days": len(self.days), "first_day": self.days[0].isoformat(),
                  "last_day": self.days[-1].isoformat(), "not_trading_days_slept": skipped,
                  "speed": self.speed, "seed": self.seed, "wall_s": round(time.time() - t0, 1),
                  "machine": f"{platform.node()} {os.cpu_count()} CPUs", "kills": len(self.kills),
                  "killed_in": killed_in, "restarts": status["uptime"]["restarts"],
                  "process_starts": status["uptime"]["starts"], "logins": self.logins,
                  "sigterm_exit_s": [round(x, 2) for x in self.sigterm_exits],
                  "clock_held_for_the_loop_s": round(self.held_s, 1),
                  "alerts": sorted({m.get("kind") for m in self.inbox.messages}),
                  "uptime": status["uptime"], "days_status": status["days"], "invariants": invariants,
                  "endpoints_during_session": {k: {"status": v["status"], "body": v["body"][:300]}
                                               for k, v in self.health_seen.items()},
                  "breaches": self.breaches}
        write_json_atomic(self.out / "soak.json", report)
        return report


def run_service_soak(days: int, speed: float, out: Path, seed: int = 1,
                     say: Callable[[str], None] = lambda line: None, mode: str = "live") -> dict[str, Any]:
    """Run the soak (see the module docstring); writes ``out/soak.json`` and returns it. ``mode="paper"``: the
    service trades on paper (its own paper account across the days' journals) instead of sending orders to
    the simulator; the journals are then checked against the paper account."""
    return ServiceSoak(days, speed, out, seed, say, mode).run()


__all__ = ["KILL_PLAN", "run_service_soak", "soak_days", "soak_market"]
