"""Live latency through Ray Serve: bar close -> order submitted in the live loop, Serve act latency over
HTTP and through a DeploymentHandle against a direct in-process ``Policy.act`` (the floor), and acts per
second with many symbols.

What is measured (all on one machine, loopback, one Serve replica, torch on 1 thread):

1. ``act``: ``--calls`` sequential single-observation calls, each a new bar of one of 2 symbols (the
   recurrent state carried): ``Policy.act`` in this process, ``handle.act.remote(...).result()``, and
   ``POST /act`` with a keep-alive ``requests.Session`` (bearer token on, as in production).
2. ``50 symbols``: ``--bars`` bar closes of ``--symbols`` symbols: over HTTP one call after another,
   and through the handle with all symbols of a bar in flight at once (the replica still serialises
   them: one policy, one lock). Reported as acts per second.
3. ``live loop``: a paper replay run (``tradebot.live.runner.build_replay_loop``, journal on disk) over
   the sample 5-minute NIFTY bars from ``--start`` to ``--end``, the policy called through the handle, over HTTP,
   and in-process; per bar, wall time from the bar's arrival to its decision (every bar) and from the
   bar's arrival to the order's submission to the paper broker (bars that made an order). The
   policy is a tiny PPO-LSTM trained here for one iteration (or ``--model``), acting by sampling its
   probabilities (served with ``deterministic=False``) so that it trades often enough to give order
   samples; its quality is irrelevant to the latency.

How to run:
    .venv/bin/python bench/live.py                       # trains a throwaway tiny policy first (~30 s)
    .venv/bin/python bench/live.py --model runs/x/checkpoints/iter_000050 --calls 500

Results to expect (2-core dev box shared with other engineers, rough): Policy.act p50 ~0.3 ms;
handle p50 ~2-4 ms; HTTP p50 ~5-10 ms; live loop bar->order p99 under 20 ms through the handle.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE_5M = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"
TOKEN = "bench-token"


def _pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    if len(a) == 0:
        return "no samples"
    return f"p50 {np.percentile(a, 50):6.2f} ms  p99 {np.percentile(a, 99):6.2f} ms  (n={len(a)})"


def _train_tiny(out: Path) -> Path:

    from tradebot.rl.train_config import TrainConfig
    from tradebot.rl.train import train_and_save
    from tradebot.core.config import parse_config

    raw = {
        "data": {"path": str(SAMPLE_5M), "train": {"start": "2021-01-01", "end": "2021-02-01"},
                 "validation": {"start": "2021-02-01", "end": "2021-02-08"}},
        "env": {"episode": {"length": 100}},
        "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
        "model": {"lstm_cell_size": 16, "max_seq_len": 10, "fcnet_hiddens": [16]},
        "run": {"seed": 7, "iterations": 1, "output_dir": str(out / "run"), "mlflow_experiment": "bench"},
    }
    cfg = parse_config(TrainConfig, raw)
    return train_and_save(cfg, out / "checkpoint")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _loop_latency(policy, model: str, journal: Path, start: str, end: str) -> tuple[list[float], list[float], int]:
    """(bar -> decided for every bar, bar -> submitted for bars with an order, bars) over a paper replay."""
    from tradebot.features.bars import load_bars
    from tradebot.live.runner import LiveConfig, build_replay_loop
    from tradebot.serving.policy_client import model_features

    received: dict[tuple[str, int], float] = {}
    decided: list[float] = []
    submitted: list[float] = []

    def on_stage(stage: str, symbol: str, ts: int) -> None:
        now = time.perf_counter()
        if stage == "bar_received":
            received[(symbol, ts)] = now
        elif stage == "decided":
            decided.append(now - received[(symbol, ts)])
        elif stage == "submitted" and (symbol, ts) in received:
            submitted.append(now - received[(symbol, ts)])

    bars = load_bars(SAMPLE_5M).between(None, end)
    config = LiveConfig(features=model_features(model))
    loop = build_replay_loop(bars, journal=journal, config=config, start=start, policy=policy, on_stage=on_stage)
    try:
        summary = loop.run()
    finally:
        loop.journal.close()
    return decided, submitted, summary.bars


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for what each figure means.")
    ap.add_argument("--model", default=None, help="checkpoint folder or MLflow model URI (default: train a tiny one)")
    ap.add_argument("--calls", type=int, default=300, help="sequential act calls per path (default 300)")
    ap.add_argument("--symbols", type=int, default=50, help="symbols for the throughput figure (default 50)")
    ap.add_argument("--bars", type=int, default=20, help="bar closes for the throughput figure (default 20)")
    ap.add_argument("--start", default="2021-06-01", help="live replay: first traded day (default 2021-06-01)")
    ap.add_argument("--end", default="2021-06-08", help="live replay: end, exclusive (default 2021-06-08)")
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_TMPDIR", os.path.join(tempfile.gettempdir(), f"tradebot-bench-ray-{os.getuid()}"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import requests
    import torch
    from ray import serve

    from tradebot.rl.policy import Policy
    from tradebot.serving.app import ensure_ray, start_serve
    from tradebot.serving.policy_client import HandlePolicy, HttpPolicy

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    ensure_ray(num_cpus=2)
    if args.model is None:
        t0 = time.perf_counter()
        model = str(_train_tiny(tmp))
        print(f"trained a tiny policy in {time.perf_counter() - t0:.1f} s: {model}")
    else:
        model = args.model
    # Sampled actions (seeded in-process; the replica's RNG unseeded): a barely trained policy's argmax is
    # nearly always HOLD, which would leave no orders to time. Sampling costs the same as the argmax.
    policy = Policy.load(model, deterministic=False, seed=0)
    port = _free_port()
    handle = start_serve(model, port=port, token=TOKEN, deterministic=False)
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((args.calls, policy.obs_dim)).astype(np.float32)
    lists = obs.tolist()
    try:
        # warm-up (first calls build the FastAPI route, torch kernels, connections)
        for i in range(20):
            policy.act("warm", obs[i])
            handle.act.remote("warm", lists[i]).result()
            session.post(f"{url}/act", json={"symbol": "warm", "obs": lists[i]}).raise_for_status()
        print(f"\nact latency, {args.calls} sequential calls, 2 symbols interleaved (recurrent state kept):")
        direct = _timed(lambda i: policy.act(f"S{i % 2}", obs[i]), args.calls)
        by_handle = _timed(lambda i: handle.act.remote(f"S{i % 2}", lists[i]).result(), args.calls)
        by_http = _timed(lambda i: session.post(f"{url}/act", json={"symbol": f"S{i % 2}", "obs": lists[i]})
                         .raise_for_status(), args.calls)
        print(f"  Policy.act in-process (floor)  {_pct(direct)}")
        print(f"  Serve DeploymentHandle         {_pct(by_handle)}")
        print(f"  Serve HTTP POST /act           {_pct(by_http)}")

        syms = [f"NSE:SYM{k:02d}-EQ" for k in range(args.symbols)]
        n = args.symbols * args.bars
        t0 = time.perf_counter()
        for b in range(args.bars):
            for k, s in enumerate(syms):
                session.post(f"{url}/act", json={"symbol": s, "obs": lists[(b * args.symbols + k) % args.calls]}
                             ).raise_for_status()
        http_rate = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in range(args.bars):
            refs = [handle.act.remote(s, lists[(b * args.symbols + k) % args.calls]) for k, s in enumerate(syms)]
            for r in refs:
                r.result()
        handle_rate = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in range(args.bars):
            for k, s in enumerate(syms):
                policy.act(s, obs[(b * args.symbols + k) % args.calls])
        direct_rate = n / (time.perf_counter() - t0)
        print(f"\nthroughput, {args.symbols} symbols x {args.bars} bars:")
        print(f"  HTTP, sequential               {http_rate:8.0f} acts/s")
        print(f"  handle, a bar's symbols in flight together {handle_rate:8.0f} acts/s")
        print(f"  Policy.act in-process          {direct_rate:8.0f} acts/s")

        print(f"\nlive loop (paper replay {args.start}..{args.end}, journal on disk), bar arrival -> ...:")
        for name, pol in (("in-process Policy", lambda s, o: policy.act(s, o)), ("Serve handle", HandlePolicy(handle)),
                          ("Serve HTTP", HttpPolicy(url, token=TOKEN))):
            policy.reset()
            decided, submitted, bars = _loop_latency(pol, model, tmp / f"journal-{name.replace(' ', '-')}.db", args.start, args.end)
            print(f"  {name:<18} decided:   {_pct(decided)}")
            print(f"  {'':<18} submitted: {_pct(submitted)}   ({bars} bars)")
    finally:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
