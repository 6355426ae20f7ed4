"""The chaos soak (``tradebot chaos --minutes N --seed S --out DIR``): the real live loop, in child processes
(``tradebot.live.chaos_child``) on the real fyers-apiv3 SDK, against the Fyers simulator, while a seeded
schedule breaks everything it can; then the invariants that must hold whatever happened.

```python
report = run_chaos(minutes=2, seed=1, out=Path("out/chaos"))    # writes out/chaos/invariants.json
report["breaches"]                                               # [] when every invariant held
```

The market: the NIFTY 1-minute sample and two equities derived from it, replayed by the simulator at
``SPEED`` market seconds per wall second (a 1-minute bar every 2 s), market orders filled at the quote.
The policy: the simulator's scripted policy server (it trades often) over HTTP. What the schedule does,
every few seconds:

* ``kill``: SIGKILL the loop, keep it down for 0 to ``MAX_DOWN_BARS`` bars, restart it (the first kill
  comes within the journal's first session);
* ``sigint``: Ctrl-C; it must exit within 10 s; restarted;
* a simulator fault: ``lose_reply`` (an order committed, its answer lost), ``book_lag`` (the order and
  trade books lag a few seconds), ``drop_order_socket``, ``refuse_order_socket`` (dropped, and the
  reconnects refused until they run out), ``expire_on_submit`` (the token dies during a submit: the loop
  halts and stops; the soak logs in again, resumes and restarts it), ``slow_policy`` (answers later
  than the loop waits), ``http_error`` (a 503 on a submit), ``rate_limit`` (a 429 on a submit);
* ``halt`` then ``resume`` (``tradebot live halt`` / ``resume`` on the journal);
* ``second_loop``: a second loop on the same journal, which must be refused (exit 2).

At the end the faults are cleared, the market is paused, the loop catches up and is stopped with
Ctrl-C, and the invariants are checked against the simulator's own books (see ``check_invariants``).
``invariants.json`` gets the figures: restarts, faults injected by kind, orders, fills, breaches.
"""

from __future__ import annotations

import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tradebot.core.files import write_json_atomic

SPEED = 30.0  # market seconds per wall second: a 1-minute bar every 2 s
BAR_WALL_S = 60.0 / SPEED
MAX_DOWN_BARS = 3
EXIT_LIMIT_S = 10.0
READY_TIMEOUT_S = 60.0
APP_ID = "SIMAPP-100"  # (the SDK's data socket decodes "APPID:HEADER" as base64: the id's length matters)
RUN = "chaos"
RISK = {"max_position": 150, "max_notional": 300_000.0, "max_daily_loss": 0.05, "max_drawdown": 0.2,
        "stale_entry_s": 60.0, "stale_flatten_s": 240.0}
LOOP = {"run": RUN, "unknown_poll_s": 30.0, "unknown_halt_s": 240.0, "unknown_expire_s": 600.0,
        "position_check_s": 120.0, "policy_down_s": 240.0, "checkpoint_every": 75}
EVENTS = ("kill", "kill", "kill", "sigint", "lose_reply", "book_lag", "drop_order_socket", "refuse_order_socket",
          "expire_on_submit", "slow_policy", "http_error", "rate_limit", "halt", "second_loop")


def chaos_market() -> list[Any]:
    """Three intraday symbols: the NIFTY 1-minute sample and two equities derived from it (scaled, with a
    slow drift of their own, OHLC kept consistent, prices on the 0.05 tick)."""
    from tradebot.features.bars import Bars, load_bars
    from tradebot.live.adapters.fyers.simulator import DEFAULT_DATA

    nifty = load_bars(DEFAULT_DATA)
    out: list[Any] = [nifty]
    f = nifty.frame
    k = np.arange(len(f))
    for name, scale, wave in (("NSE:CHAOSA-EQ", 1 / 30, 0.004), ("NSE:CHAOSB-EQ", 1 / 45, -0.006)):
        factor = scale * (1.0 + wave * np.sin(k / 37.0))
        o, h, lo, c = (np.round(f[col].to_numpy() * factor / 0.05) * 0.05 for col in ("open", "high", "low", "close"))
        frame = f.assign(open=o, high=np.maximum.reduce([h, o, c]), low=np.minimum.reduce([lo, o, c]), close=c,
                         volume=1000.0)
        out.append(Bars.from_frame(frame, symbol=name, timeframe=nifty.timeframe))
    return out


class Child:
    """One loop process and its log."""

    def __init__(self, settings: Path, log: Path):
        self.log = log
        self._fh = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tradebot.live.chaos_child", str(settings)],
                                     stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "READY" in self.text():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def stop(self, sig: int, timeout: float) -> float | None:
        """Send ``sig``; the seconds it took to exit, None if it did not within ``timeout`` (then SIGKILLed)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
            took: float | None = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            took = None
        self._fh.close()
        return took


class Soak:
    """The run's state: the simulator, the current loop process, the counters and the breaches."""

    def __init__(self, minutes: float, seed: int, out: Path, say: Callable[[str], None]):
        from tradebot.live.adapters.fyers.simulator import FyersSimulator

        self.minutes, self.seed, self.out, self.say = minutes, seed, out, say
        self.rng = np.random.default_rng(seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        self.journal = out / "journal.db"
        market = chaos_market()
        self.symbols = [b.symbol for b in market]
        self.sim = FyersSimulator(data=market, speed=SPEED, start="2021-03-02T09:15:00+05:30",
                                  token_ttl_s=86_400 * 30, policy_seed=seed, slippage_bps=1.0)
        self.tokens: list[str] = []
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.breaches: list[str] = []
        self.exit_times: list[float] = []
        self.child: Child | None = None
        self.n_children = 0
        self.expecting_fatal = False
        self.pending: list[tuple[float, Callable[[], None]]] = []  # (when, undo): faults lifted later

    # ------------------------------------------------------------------ set-up
    def login(self) -> None:
        self.tokens.append(simulator_login(self.sim, self.out / "token.json"))

    def settings(self) -> Path:
        path = self.out / "settings.json"
        write_json_atomic(path, {"base_url": self.sim.base_url, "token_file": str(self.out / "token.json"),
                                 "journal": str(self.journal), "log_dir": str(self.out / "logs" / "sdk"),
                                 "symbols": self.symbols, "risk": RISK, "loop": LOOP,
                                 "start_ns": int(self.sim.now()) * 1_000_000_000})
        return path

    def spawn(self) -> Child:
        self.n_children += 1
        return Child(self.settings(), self.out / "logs" / f"child-{self.n_children:03d}.log")

    def start_loop(self, why: str) -> None:
        self.child = self.spawn()
        if not self.child.wait_ready():
            self.breach(f"restart after {why} failed (child {self.n_children}): {self.child.text()[-600:]!r}")
            self.child.stop(signal.SIGKILL, 10)
            self.child = None
            return
        self.counts["restarts"] += 1

    def breach(self, what: str) -> None:
        self.breaches.append(what)
        self.say(f"BREACH: {what}")

    def control(self, command: str, reason: str) -> None:
        from tradebot.live.journal import request_control

        request_control(self.journal, command, reason, source="chaos")

    # ------------------------------------------------------------------ events
    def check_child(self) -> None:
        """A loop that exited on its own: only a fatal halt we caused (a dead token) is expected."""
        c = self.child
        if c is None or c.proc.poll() is None:
            return
        code = c.proc.returncode
        self.child = None
        if code == 3 and self.expecting_fatal:
            self.expecting_fatal = False
            self.counts["relogins"] += 1
            self.sim.clear_faults()
            self.login()
            self.control("resume", "logged in again after the token died")
            self.start_loop("a dead token")
            return
        self.breach(f"the loop exited by itself with code {code}: {c.text()[-600:]!r}")
        self.start_loop(f"an unexpected exit ({code})")

    def event(self, kind: str) -> None:
        sim, rng = self.sim, self.rng
        if kind == "kill" and self.child is not None:
            self.child.stop(signal.SIGKILL, 30)
            self.counts["kills"] += 1
            time.sleep(float(rng.integers(0, MAX_DOWN_BARS + 1)) * BAR_WALL_S)
            self.start_loop("SIGKILL")
        elif kind == "sigint" and self.child is not None:
            took = self.child.stop(signal.SIGINT, 30)
            self.counts["sigints"] += 1
            if took is None or took > EXIT_LIMIT_S:
                self.breach(f"exit after SIGINT took {'more than 30' if took is None else f'{took:.1f}'} s")
            if took is not None:
                self.exit_times.append(took)
            self.start_loop("SIGINT")
        elif kind == "lose_reply":
            sim.inject("lose_reply", count=1, route="/orders/sync", method="POST")
        elif kind == "book_lag":
            sim.inject("book_lag", seconds=float(rng.uniform(1.0, 4.0)))
            self.later(20.0, lambda: sim.inject("book_lag", seconds=0.0))
        elif kind == "drop_order_socket":
            sim.inject("drop_sockets", which="order")
        elif kind == "refuse_order_socket":
            sim.inject("refuse_sockets", which="order")
            self.later(float(rng.uniform(10.0, 30.0)), lambda: sim.inject("accept_sockets", which="order"))
        elif kind == "expire_on_submit":
            if self.expecting_fatal:
                return
            sim.inject("expire_tokens", count=1, route="/orders/sync", method="POST")
            self.expecting_fatal = True
        elif kind == "slow_policy":
            sim.inject("slow_policy", seconds=4.0, count=int(rng.integers(1, 4)))
        elif kind == "http_error":
            sim.inject("http_error", status=503, body="json", count=1, route="/orders/sync", method="POST")
        elif kind == "rate_limit":
            sim.inject("rate_limit", retry_after=1.0, count=1, route="/orders/sync", method="POST")
        elif kind == "halt":
            self.control("halt", "chaos: operator halt")
            self.counts["halts"] += 1
            self.later(float(rng.uniform(5.0, 15.0)), lambda: self.control("resume", "chaos: operator resume"))
        elif kind == "second_loop" and self.child is not None and self.child.proc.poll() is None:
            self.second_loop()
        else:
            return
        if kind not in ("kill", "sigint", "halt", "second_loop"):
            self.faults[kind] += 1

    def second_loop(self) -> None:
        other = self.spawn()
        try:
            other.proc.wait(60)
        except subprocess.TimeoutExpired:
            other.stop(signal.SIGKILL, 10)
            self.breach("a second loop on the journal was not refused within 60 s")
            return
        if self.child is None or self.child.proc.poll() is not None:
            return  # the first loop ended meanwhile (a dead token): the journal was free, so it was no second loop
        self.counts["second_loops"] += 1
        if other.proc.returncode != 2 or "already running" not in other.text():
            self.breach(f"a second loop on the journal exited {other.proc.returncode}, not refused with 2: "
                        f"{other.text()[-400:]!r}")

    def later(self, delay: float, undo: Callable[[], None]) -> None:
        self.pending.append((time.monotonic() + delay, undo))

    def due(self, everything: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for when, undo in self.pending:
            if everything or when <= now:
                undo()
            else:
                keep.append((when, undo))
        self.pending = keep

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        t0 = time.time()
        self.sim.start()
        try:
            self.login()
            self.start_loop("the first start")
            end = time.monotonic() + self.minutes * 60.0
            first_kill = time.monotonic() + float(self.rng.uniform(5.0, 15.0))  # the journal's first session
            while time.monotonic() < end:
                time.sleep(float(self.rng.uniform(2.0, 6.0)))
                self.due()
                self.check_child()
                if first_kill and time.monotonic() >= first_kill:
                    first_kill = 0.0
                    self.event("kill")
                    continue
                self.event(str(self.rng.choice(EVENTS)))
                self.check_child()
            self.settle()
        finally:
            if self.child is not None:
                self.child.stop(signal.SIGKILL, 10)
            state = self.sim.state()
            self.sim.stop()
        write_json_atomic(self.out / "broker_state.json", state)
        return self.report(state, t0)

    def settle(self) -> None:
        """Faults off, halts lifted, the market paused; the loop catches up, then Ctrl-C."""
        self.due(everything=True)
        self.sim.clear_faults()
        self.check_child()
        if self.expecting_fatal:  # the dead-token fault never fired: nothing to log in for
            self.expecting_fatal = False
        self.control("resume", "chaos: settling")
        if self.child is None:
            self.start_loop("settling")
        # orders whose outcome is unknown are found, or expire as never received (unknown_expire_s of market time)
        deadline = time.monotonic() + LOOP["unknown_expire_s"] / SPEED + 10.0
        while time.monotonic() < deadline:
            time.sleep(BAR_WALL_S)
            self.check_child()
            if not journal_rows(self.journal, "SELECT 1 FROM orders WHERE status='UNKNOWN' LIMIT 1"):
                break
        time.sleep(3 * BAR_WALL_S)
        self.sim.pause()
        time.sleep(LOOP["position_check_s"] / SPEED + 4.0)  # a position check and a few heartbeats
        self.check_child()
        if self.child is not None:
            took = self.child.stop(signal.SIGINT, 30)
            self.counts["sigints"] += 1
            if took is None or took > EXIT_LIMIT_S:
                self.breach(f"the final exit after SIGINT took {'more than 30' if took is None else f'{took:.1f}'} s")
            if took is not None:
                self.exit_times.append(took)
            self.child = None

    def report(self, state: dict[str, Any], t0: float) -> dict[str, Any]:
        from tradebot.live.chaos_checks import check_invariants

        invariants = check_invariants(self.journal, state, self.out, self.tokens, RISK, RUN)
        invariants["restarts_succeed"] = {"ok": not any("restart" in b or "exited by itself" in b
                                                        for b in self.breaches),
                                          "checked": self.counts["restarts"], "detail": ""}
        invariants["exit_within_10s_of_sigint"] = {
            "ok": not any("SIGINT" in b for b in self.breaches), "checked": len(self.exit_times),
            "detail": f"slowest {max(self.exit_times):.1f} s" if self.exit_times else ""}
        invariants["second_loop_refused"] = {"ok": not any("second loop" in b for b in self.breaches),
                                             "checked": self.counts["second_loops"], "detail": ""}
        breaches = list(self.breaches) + [f"{k}: {v['detail']}" for k, v in invariants.items()
                                          if not v["ok"] and k not in ("restarts_succeed", "exit_within_10s_of_sigint",
                                                                       "second_loop_refused")]
        tagged = [o for o in state["orders"] if str(o.get("orderTag", "")).startswith("1:")]
        return {"minutes": self.minutes, "seed": self.seed, "started": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                     time.gmtime(t0)),
                "wall_s": round(time.time() - t0, 1), "machine": f"{platform.node()} {os.cpu_count()} CPUs",
                "market": {"speed": SPEED, "symbols": self.symbols,
                           "clock_at_end": state["market"]["now_ist"]},
                "restarts": self.counts["restarts"] - 1, "kills": self.counts["kills"],
                "sigints": self.counts["sigints"], "relogins": self.counts["relogins"],
                "halts": self.counts["halts"], "second_loops": self.counts["second_loops"],
                "faults": dict(sorted(self.faults.items())), "orders": len(tagged),
                "broker_orders_total": len(state["orders"]), "fills": len(state["trades"]),
                "exit_after_sigint_s": {"n": len(self.exit_times),
                                        "max": round(max(self.exit_times), 2) if self.exit_times else None},
                "invariants": invariants, "breaches": breaches}


def run_chaos(minutes: float, seed: int, out: Path, say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the soak (see the module docstring); writes ``out/invariants.json`` and returns its content."""
    report = Soak(minutes, seed, out, say).run()
    write_json_atomic(out / "invariants.json", report)
    return report


def simulator_login(sim, token_file: Path, app_id: str = APP_ID) -> str:
    """Log in to the Fyers simulator ``sim`` and save the token where the loop reads it; the token."""
    from tradebot.live.adapters.fyers.auth import FyersToken, save_token

    token = sim.login(app_id)
    save_token(FyersToken.from_access_token(app_id, token, api_base=sim.base_url), token_file)
    return token


def journal_rows(path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


__all__ = ["EVENTS", "RISK", "SPEED", "chaos_market", "journal_rows", "run_chaos"]
