"""Fyers adapter latency through the real fyers-apiv3 SDK against the local simulator (127.0.0.1).

What is measured (one machine, loopback, simulator in step mode on the NIFTY 1-minute sample):

1. ``order round trip``: ``FyersExecutionClient.submit`` of a market order (REST POST /orders/sync
   through the SDK, paced by the shared limiter) -> the simulator is stepped one tick (the order fills
   there) -> the fill's order-socket update reaches the client (``poll_events`` would return it).
   Reported: submit (REST acknowledgement) and submit -> fill event, p50/p99. Buys and sells alternate,
   one every 0.15 s (below the shared limiter's 8 requests/s, so its waits do not count here; faster, the
   limiter blocks ~1 s every 8 calls by design).
2. ``tick -> bar -> decision``: a paper session (``build_fyers_paper_loop``: data socket ->
   ``FyersDataFeed`` -> the loop's ``BarBuilder`` -> features -> policy -> risk -> ``PaperBroker``). For each
   bar, from the moment the simulator is told to emit the print that closes it (the first print of the
   next bar) to the loop's ``decided`` stage for that bar; and from that print's arrival in the feed's
   socket callback to ``decided`` (the adapter + loop part alone).

How to run:
    OMP_NUM_THREADS=1 .venv/bin/python bench/fyers.py                 # 50 orders, 30 bars
    OMP_NUM_THREADS=1 .venv/bin/python bench/fyers.py --orders 200 --bars 60

Results to expect (2-core dev box shared with other engineers, rough): submit p50 a few ms; submit ->
fill event p50 ~5-15 ms (the simulator's tick step included); print -> decision p50 a few ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NIFTY = "NSE:NIFTY50-INDEX"


def _pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    if len(a) == 0:
        return "no samples"
    return f"p50 {np.percentile(a, 50):7.2f} ms  p99 {np.percentile(a, 99):7.2f} ms  (n={len(a)})"


class _SimClock:
    def __init__(self, sim) -> None:
        self.sim = sim

    def now_ns(self) -> int:
        return int(self.sim.now()) * 1_000_000_000


def bench_orders(sim, token, ep, logs: Path, n: int) -> dict[str, list[float]]:
    from tradebot.live.adapters.fyers.client import FyersExecutionClient
    from tradebot.live.adapters.fyers.ratelimit import RateLimiter, RateLimits
    from tradebot.live.adapters.fyers.rest import FyersRest, make_model
    from tradebot.live.adapters.fyers.sockets import OrderSocket
    from tradebot.live.ports import Fill, Intent, OrderRequest, Side

    rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=ep, log_path=logs),
                     limiter=RateLimiter(RateLimits(per_second=10, per_minute=200)))
    client = FyersExecutionClient(
        rest, access_token=token.socket_token(),
        socket_factory=lambda **cb: OrderSocket(token.socket_token(), endpoints=ep, log_path=logs, **cb))
    client.connect()
    submit, round_trip = [], []
    try:
        for i in range(n):
            side = Side.BUY if i % 2 == 0 else Side.SELL
            order = OrderRequest(client_order_id=f"TB{i:018d}", symbol=NIFTY, side=side, qty=50,
                                 intent=Intent.ENTRY if side is Side.BUY else Intent.EXIT, bar_ts=0, created_ns=0,
                                 reduce_only=side is Side.SELL)
            t0 = time.perf_counter()
            client.submit(order)
            t1 = time.perf_counter()
            sim.advance(1)
            while True:
                with client._lock:
                    done = any(isinstance(e, Fill) and e.client_order_id == order.client_order_id
                               for e in client._events)
                if done:
                    break
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError(f"no fill event for {order.client_order_id} within 10 s")
                time.sleep(0.0005)
            t2 = time.perf_counter()
            client.poll_events()
            time.sleep(0.15)  # stay under the limiter's 8 requests/s: measure latency, not pacing
            submit.append(t1 - t0)
            round_trip.append(t2 - t0)
    finally:
        client.disconnect()
    return {"submit (REST ack)": submit, "submit -> fill event (order socket)": round_trip}


def bench_loop(sim, token, ep, logs: Path, bars: int) -> dict[str, list[float]]:
    from tradebot.envs.engine import Action
    from tradebot.features.pipeline import FeatureConfig
    from tradebot.live.adapters.fyers.data import FyersDataFeed, default_socket_factory
    from tradebot.live.adapters.fyers.rest import FyersRest, make_model
    from tradebot.live.adapters.fyers.loops import build_fyers_paper_loop
    from tradebot.live.runner import LiveConfig

    features = FeatureConfig.model_validate({
        "returns": {"horizons": [1, 5]}, "normalisation": {"method": "none"}, "candles": {"enabled": False},
        "calendar": {"enabled": False}, "regime": {"enabled": False}})
    config = LiveConfig.model_validate({"features": features.model_dump(), "loop": {"session": "bench"},
                                        "risk": {"square_off": None, "stale_entry_s": 3600, "stale_flatten_s": 7200}})
    rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=ep, log_path=logs))
    arrived: dict[int, float] = {}
    feed = FyersDataFeed(default_socket_factory(token, endpoints=ep, log_path=logs), timeframe="1m", rest=rest,
                         clock=_SimClock(sim), heartbeat_s=0.05, stall_s=600,
                         on_tick=lambda t: arrived.setdefault(t.ts, time.perf_counter()))
    decided: dict[int, float] = {}

    def on_stage(stage: str, symbol: str, ts: int) -> None:
        if stage == "decided":
            decided.setdefault(ts, time.perf_counter())

    tmp = Path(tempfile.mkdtemp(prefix="bench-fyers-"))
    loop = build_fyers_paper_loop([NIFTY], journal=tmp / "journal.db", policy=lambda s, o: int(Action.HOLD),
                                  config=config, timeframe="1m", token=token, endpoints=ep, feed=feed, rest=rest,
                                  warmup_days=3, log_path=logs, on_stage=on_stage)
    sent: dict[int, float] = {}

    def drive() -> None:
        deadline = time.monotonic() + 15
        while feed.ticks == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(bars * 4):
            t = time.perf_counter()
            sim.advance(1)
            sent.setdefault(int(sim.now()) * 1_000_000_000, t)
            time.sleep(0.02)
        time.sleep(0.3)
        feed.close()

    loop.start()
    th = threading.Thread(target=drive, daemon=True)
    th.start()
    try:
        for ev in feed:
            loop.handle(ev)
        loop.finish()
    finally:
        th.join(5)
        loop.journal.close()
    e2e, adapter = [], []
    for ts, t_dec in decided.items():
        close_tick = ts + 60 * 1_000_000_000  # the next bar's first print closes this one
        if close_tick in sent:
            e2e.append(t_dec - sent[close_tick])
        if close_tick in arrived:
            adapter.append(t_dec - arrived[close_tick])
    return {"sim emits closing print -> decision": e2e, "print in socket callback -> decision": adapter}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=50)
    ap.add_argument("--bars", type=int, default=30)
    args = ap.parse_args()

    from tradebot.live.adapters.fyers.auth import FyersToken
    from tradebot.live.adapters.fyers.rest import Endpoints
    from tradebot.live.adapters.fyers.simulator import FyersSimulator
    from tradebot.live.adapters.fyers.simulator.sdk_patch import pointed_at

    logs = Path(tempfile.mkdtemp(prefix="bench-fyers-logs-"))
    with FyersSimulator(start="first") as sim, pointed_at(sim):
        token = FyersToken.from_access_token("SIMAPP-100", sim.login("SIMAPP-100"))
        ep = Endpoints.from_base(sim.base_url)
        sim.advance(4 * 30)  # some history before the measured part
        print(f"Fyers adapter bench: real SDK -> simulator {sim.base_url} (step mode)")
        for name, xs in bench_orders(sim, token, ep, logs, args.orders).items():
            print(f"  {name:40s} {_pct(xs)}")
        for name, xs in bench_loop(sim, token, ep, logs, args.bars).items():
            print(f"  {name:40s} {_pct(xs)}")


if __name__ == "__main__":
    main()
