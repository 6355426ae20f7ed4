"""A LIVE Fyers run (``build_fyers_live_loop``: real orders through ``FyersExecutionClient`` and the real
SDK) driven tick by tick against a ``FyersSimulator`` in step mode; used in-process by
``test_fyers_live_loop.py`` and run as a subprocess by its crash test:

    python tests/live/fyers/fyers_live_run.py BASE_URL TOKEN JOURNAL LOGDIR SCHEDULE TICKS [STAGE N]

``SCHEDULE``: ``k:ACTION,...`` -- the policy's action at the bar starting k minutes after 09:15 IST (HOLD
otherwise), so that a restarted process decides exactly as the one that crashed. The process drives the
simulator itself over its HTTP control routes (``/_sim/advance``, ``/_sim/state``), ``TICKS`` ticks; with
``STAGE N`` it SIGKILLs itself the N-th time the loop reaches that stage. It prints ``READY`` once
reconciled and ``DONE`` at the end (without ``finish()``: the run stays open, as after a crash).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from tradebot.envs.engine import Action
from tradebot.features.pipeline import FeatureConfig
from tradebot.live.adapters.fyers.auth import FyersToken
from tradebot.live.adapters.fyers.client import FyersExecutionClient, fyers_status, tag_of
from tradebot.live.adapters.fyers.data import FyersDataFeed, TickClock, default_socket_factory
from tradebot.live.adapters.fyers.ratelimit import RateLimiter, RateLimits
from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest, make_model
from tradebot.live.adapters.fyers.loops import build_fyers_live_loop
from tradebot.live.loop import TradingLoop, current_bar
from tradebot.live.ports import Heartbeat, to_ist
from tradebot.live.risk import RiskConfig
from tradebot.live.runner import LiveConfig

SYMBOL = "NSE:NIFTY50-INDEX"
APP = "SIMAPP-100"
RUN = "fy-live"
FEATURES = FeatureConfig.model_validate({
    "returns": {"horizons": [1]}, "trend": {"enabled": False}, "momentum": {"enabled": False},
    "volatility": {"enabled": False}, "volume": {"enabled": False}, "regime": {"enabled": False},
    "calendar": {"enabled": False}, "candles": {"enabled": False}, "normalisation": {"method": "none"}})
# loose enough for a test on 1-minute NIFTY bars: 50 units (margin ~1.5 lakh of the simulator's 10 lakh),
# no square-off, data never stale (the replay's clock is the sample's historical time)
RISK = RiskConfig(max_position=50, max_daily_loss=0.5, max_drawdown=0.5, square_off=None, stale_entry_s=3600,
                  stale_flatten_s=7200)


class SimControl:
    """The simulator's HTTP control routes (they work from any process)."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()

    def advance(self, ticks: int = 1) -> int:
        r = self.http.post(f"{self.base_url}/_sim/advance", json={"ticks": int(ticks)}, timeout=30)
        r.raise_for_status()
        return int(r.json()["ticks"])

    def state(self) -> dict[str, Any]:
        r = self.http.get(f"{self.base_url}/_sim/state", timeout=30)
        r.raise_for_status()
        return r.json()


class CountingPolicy:
    """The brief's script: ``actions[n]`` at the n-th call (1-based), HOLD otherwise."""

    def __init__(self, actions: Mapping[int, int]):
        self.actions = dict(actions)
        self.calls = 0

    def __call__(self, symbol: str, obs: Any) -> int:
        self.calls += 1
        return int(self.actions.get(self.calls, Action.HOLD))


def session_minute(ns: int) -> int:
    """Minutes from 09:15 IST to ``ns`` on its day (the k-th 1-minute bar of the session starts at k)."""
    t = to_ist(ns)
    return t.hour * 60 + t.minute - (9 * 60 + 15)


class SchedulePolicy:
    """``schedule[k]`` at the bar starting ``k`` minutes after 09:15 IST (stateless: a restarted process
    decides exactly as the one that crashed)."""

    def __init__(self, schedule: Mapping[int, int]):
        self.schedule = dict(schedule)
        self.seen: list[int] = []

    def __call__(self, symbol: str, obs: Any) -> int:
        k = session_minute(current_bar().ts)
        self.seen.append(k)
        return int(self.schedule.get(k, Action.HOLD))


def parse_schedule(text: str) -> dict[int, int]:
    return {int(k): int(Action[a]) for k, a in (item.split(":") for item in text.split(",") if item)}


def build(base_url: str, token: str, journal: str | Path, log_path: str | Path, policy: Callable[[str, Any], Any],
          start_ns: int, on_stage: Callable[[str, str, int], None] | None = None) -> tuple[TradingLoop, FyersDataFeed]:
    """The live loop on the simulator at ``base_url``: its own REST model, data socket and execution client
    (``build_fyers_live_loop`` makes the client from the token), warmed up with 5 days of history."""
    tok = FyersToken.from_access_token(APP, token, api_base=base_url)
    ep = Endpoints.from_base(base_url)
    rest = FyersRest(make_model(APP, token, endpoints=ep, log_path=log_path),
                     limiter=RateLimiter(RateLimits(per_second=10, per_minute=200)))
    feed = FyersDataFeed(default_socket_factory(tok, endpoints=ep, log_path=log_path), timeframe="1m", rest=rest,
                         clock=TickClock(start_ns), heartbeat_s=0.05, stall_s=600)
    config = LiveConfig.model_validate({"features": FEATURES.model_dump(), "loop": {"run": RUN}})
    loop = build_fyers_live_loop([SYMBOL], journal=journal, policy=policy, risk_config=RISK,
                                 i_understand_real_money=True, config=config, timeframe="1m", token=tok,
                                 endpoints=ep, rest=rest, feed=feed, warmup_days=5, log_path=log_path,
                                 on_stage=on_stage)
    assert isinstance(loop.broker, FyersExecutionClient)
    return loop, feed


def sim_order_id(item: Mapping[str, Any]) -> str:
    """The client order id the adapter gives a simulator order (our orderTag, else ``FY<id>``)."""
    return tag_of(item.get("orderTag")) or f"FY{item['id']}"


class Driver:
    """Moves the simulator one tick at a time; after each tick waits until the feed and the execution
    client have seen everything the simulator sent, then hands the feed's events to the loop."""

    def __init__(self, loop: TradingLoop, feed: FyersDataFeed, control: SimControl):
        self.loop, self.feed, self.control = loop, feed, control
        self.client: FyersExecutionClient = loop.broker  # type: ignore[assignment]
        self._events = iter(feed)
        self.state: dict[str, Any] = {}

    def synced(self, state: Mapping[str, Any]) -> bool:
        now_ns = int(state["market"]["now"]) * 1_000_000_000
        if self.feed._last_tick_ns.get(SYMBOL, 0) < now_ns:
            return False
        c = self.client
        with c._lock:
            if not {t["tradeNumber"] for t in state["trades"]} <= set(c._fills):
                return False
            for o in state["orders"]:
                rec = c._orders.get(sim_order_id(o))
                if rec is None or rec.status is not fyers_status(o["status"]):
                    return False
            net = {v["symbol"]: v["qty"] for v in c._net.values()}
            for p in state["positions"]["netPositions"]:
                if net.get(p["symbol"], 0.0) != p["netQty"]:
                    return False
        return True

    def settle(self, timeout: float = 15.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            state = self.control.state()
            if self.synced(state):
                self.state = state
                return state
            if time.monotonic() > end:
                raise AssertionError(f"the feed / order socket did not catch up with the simulator in {timeout:g} s "
                                     f"(clock {state['market']['now_ist']}, {len(state['orders'])} orders, "
                                     f"{len(state['trades'])} trades; client {self.client!r})")
            time.sleep(0.02)

    def pump(self) -> None:
        """Handle the feed's queued events, up to (and with) the first heartbeat (an empty queue)."""
        for event in self._events:
            self.loop.handle(event)
            if isinstance(event, Heartbeat):
                return

    def step(self, ticks: int = 1, after: Callable[[dict[str, Any]], None] | None = None) -> int:
        done = 0
        for _ in range(ticks):
            if self.control.advance(1) == 0:
                break
            done += 1
            state = self.settle()
            self.pump()
            if after is not None:
                after(state)
        return done

    def start(self) -> None:
        self.loop.start()  # reconcile, then subscribe (the data socket connects here)
        self.settle()
        self.pump()

    def close(self) -> None:
        """Stop the feed and the order socket, and wait until their SDK sockets are closed (the adapter closes
        them in the background; a second close from the SDK patch's teardown meanwhile can hang)."""
        self.feed.close()
        self.client.disconnect()
        for t in threading.enumerate():
            if t.name == "fyers-socket-close":
                t.join(10)


def sim_equity(state: Mapping[str, Any], initial_funds: float = 1_000_000.0) -> float:
    """The account's equity from first principles, not from the funds rows the adapter reads: the initial
    funds, plus the cash every trade moved, plus the open quantity of each symbol at the market's last price
    (the old check used the simulator's "Total Balance" + unrealized, which is the adapter's own formula)."""
    cash = sum(-t["side"] * t["tradedQty"] * t["tradePrice"] for t in state["trades"])
    held: dict[str, float] = {}
    for t in state["trades"]:
        held[t["symbol"]] = held.get(t["symbol"], 0.0) + t["side"] * t["tradedQty"]
    ltp = state["market"]["ltp"]
    return initial_funds + cash + sum(q * float(ltp[s]) for s, q in held.items())


def main(argv: list[str]) -> int:
    base_url, token, journal, log_path, schedule, ticks = argv[:6]
    kill_stage, kill_at = (argv[6], int(argv[7])) if len(argv) > 7 else (None, 0)
    seen = 0

    def on_stage(stage: str, symbol: str, ts: int) -> None:
        nonlocal seen
        if stage == kill_stage:
            seen += 1
            if seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    from tradebot.live.adapters.fyers.simulator import sdk_patch

    port = int(base_url.rsplit(":", 1)[1])
    sdk_patch.point_sdk_at(port)  # fast socket teardown; the URLs come from the endpoints anyway
    control = SimControl(base_url)
    start_ns = int(control.state()["market"]["now"]) * 1_000_000_000
    loop, feed = build(base_url, token, journal, log_path, SchedulePolicy(parse_schedule(schedule)),
                       start_ns, on_stage)
    driver = Driver(loop, feed, control)
    driver.start()
    print("READY", flush=True)
    driver.step(int(ticks))
    print("DONE", flush=True)
    os._exit(0)  # a hard stop: no finish(), no socket teardown


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
