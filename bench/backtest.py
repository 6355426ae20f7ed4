"""Backtest speed and agreement: the engine's signal-driven path vs vectorbt's Portfolio.from_signals
on 1M bars, plus peak memory.

Data: a seeded geometric random walk on a synthetic NSE 5-minute calendar (75 bars a session,
09:15-15:25 IST, weekdays from 1990-01-01), not real prices. Signals: random long entries/exits
(an exit never on an entry bar). Assumptions made identical for the comparison: no costs, no
slippage, next-open fills (a signal at bar t fills at bar t+1's open: vectorbt gets the signals
shifted by one bar and price=open), a fixed size, long only, no stops, no square-off
(``EngineConfig.frictionless``). The engine closes the last position at the final close;
vectorbt marks it there, so final equity is the same number.

Timing: both are warmed up first (numba compilation excluded), then the best of ``--repeats``
end-to-end calls to the final equity. Engine: ``tradebot.envs.backtest.run_signals`` from a ``Bars`` (it
also builds the market arrays, the equity/position series and the timestamped trade log).
vectorbt: ``from_signals`` + ``final_value`` on numpy arrays, its fastest input path (the ratio
uses this); with pandas Series on a tz-aware index it is an order of magnitude slower under
pandas 3, shown as a second line. Memory: each side runs once more in a child process, and the peak resident set
growth during the run is read from /proc (VmHWM reset via /proc/self/clear_refs).

How to run:
    .venv/bin/python bench/backtest.py                  # 1M bars
    .venv/bin/python bench/backtest.py --bars 200000 --repeats 5

Results to expect (2-core dev box shared with other jobs, rough): engine ~0.045 s, vectorbt
~0.045 s with numpy inputs (ratio 0.98-1.07 across runs) and ~2.5 s with pandas inputs, for 1M
bars; final equity equal to ~7e-15 relative, 9,918 trades each; peak memory growth ~81 MiB for the
engine (its 56 MB per-bar array plus 24 MB of equity/cash/position series) vs ~42 MiB for vectorbt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

INITIAL_CASH = 1e9


def synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    """OHLC random walk on a 5-minute NSE calendar, and random entry/exit signals."""
    rng = np.random.default_rng(seed)
    days = -(-n // 75)
    dates = pd.bdate_range("1990-01-01", periods=days).as_unit("ns").asi8
    offsets = (9 * 60 + 15 + 5 * np.arange(75)) * 60 * 10**9 - (5 * 60 + 30) * 60 * 10**9  # IST -> UTC
    ts = (dates[:, None] + offsets[None, :]).ravel()[:n]
    close = 1000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0008, n)))
    open_ = np.r_[1000.0, close[:-1]] * np.exp(rng.normal(0.0, 0.0002, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.0005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.0005, n)))
    entries = rng.random(n) < 0.02
    exits = (rng.random(n) < 0.02) & ~entries
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "entries": entries, "exits": exits}


def make_bars(d: dict[str, np.ndarray]):
    from tradebot.features.bars import Bars

    idx = pd.DatetimeIndex(d["ts"], tz="UTC").tz_convert("Asia/Kolkata").rename("timestamp")
    frame = pd.DataFrame({k: d[k] for k in ("open", "high", "low", "close")}, index=idx)
    frame["volume"] = 0.0
    return Bars.from_frame(frame, timeframe="5m")


def run_engine(bars, d, qty: int) -> float:
    from tradebot.envs.backtest import run_signals
    from tradebot.envs.engine_config import EngineConfig

    cfg = EngineConfig.frictionless(fixed_qty=qty, initial_cash=INITIAL_CASH)
    res = run_signals(bars, d["entries"], d["exits"], config=cfg)
    return res.final_equity, len(res.trades)


def _vectorbt(close, open_, entries, exits, qty: int) -> tuple[float, int]:
    import vectorbt as vbt

    pf = vbt.Portfolio.from_signals(
        close=close, entries=entries, exits=exits, price=open_, size=qty, size_type="amount",
        init_cash=INITIAL_CASH, fees=0.0, slippage=0.0, direction="longonly", accumulate=False, freq="5min")
    return float(pf.final_value()), int(pf.trades.count())


def run_vectorbt(bars, d, qty: int) -> tuple[float, int]:
    """vectorbt's fastest input path: numpy arrays (a signal at t acts at t+1: shifted by one bar)."""
    return _vectorbt(d["close"], d["open"], np.r_[False, d["entries"][:-1]], np.r_[False, d["exits"][:-1]], qty)


def run_vectorbt_pandas(bars, d, qty: int) -> tuple[float, int]:
    """The same with pandas Series on the bars' (tz-aware) index: slower under pandas 3."""
    idx = bars.index
    return _vectorbt(bars.frame["close"], bars.frame["open"], pd.Series(np.r_[False, d["entries"][:-1]], index=idx),
                     pd.Series(np.r_[False, d["exits"][:-1]], index=idx), qty)


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def child(which: str, path: str, qty: int) -> None:
    """Run one side once on the saved data and print its peak RSS growth (JSON)."""
    warnings.filterwarnings("ignore")
    d = dict(np.load(path))
    bars = make_bars(d)
    fn = run_engine if which == "engine" else run_vectorbt
    small = {k: v[:2000] for k, v in d.items()}
    fn(make_bars(small), small, qty)  # compile / load caches
    import gc

    gc.collect()
    before = _status()["VmRSS"]
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    fn(bars, d, qty)
    print(json.dumps({"peak_growth": _status()["VmHWM"] - before, "reset": reset}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=1_000_000, help="bars to simulate (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side; the best counts (default: %(default)s)")
    ap.add_argument("--qty", type=int, default=10, help="fixed units per trade (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the child-process memory runs")
    ap.add_argument("--child", choices=["engine", "vectorbt"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.qty)
        return 0
    warnings.filterwarnings("ignore")

    d = synthetic(args.bars, args.seed)
    bars = make_bars(d)
    print(f"{len(bars):,} bars: random walk (seed {args.seed}) on a synthetic NSE 5-minute calendar "
          f"{bars.index[0]:%Y-%m-%d} .. {bars.index[-1]:%Y-%m-%d}; {int(d['entries'].sum()):,} entry and "
          f"{int(d['exits'].sum()):,} exit signals; {args.qty} units per trade, no costs/slippage/stops")
    small = {k: v[:2000] for k, v in d.items()}
    sbars = make_bars(small)
    times = {}
    results = {}
    for name, fn in (("engine", run_engine), ("vectorbt", run_vectorbt), ("vectorbt_pandas", run_vectorbt_pandas)):
        fn(sbars, small, args.qty)  # warm up: compile or load the numba caches
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            results[name] = fn(bars, d, args.qty)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    (eq_e, n_e), (eq_v, n_v) = results["engine"], results["vectorbt"]
    rel = abs(eq_e - eq_v) / abs(eq_v)
    print(f"time (best of {args.repeats}):  engine {times['engine']:.3f} s   vectorbt (numpy inputs) "
          f"{times['vectorbt']:.3f} s   ratio engine/vectorbt {times['engine'] / times['vectorbt']:.2f}")
    print(f"                   vectorbt with pandas Series inputs {times['vectorbt_pandas']:.3f} s "
          f"(final equity {results['vectorbt_pandas'][0]:,.6f})")
    print(f"final equity:  engine {eq_e:,.6f}   vectorbt {eq_v:,.6f}   relative difference {rel:.2e} "
          f"({'OK' if rel <= 1e-6 else 'MISMATCH'} at 1e-6)")
    print(f"trades:  engine {n_e:,} (all closed)   vectorbt {n_v:,} (closed + open)")

    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "data.npz")
            np.savez(path, **d)
            for name in ("engine", "vectorbt"):
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, "--data", path,
                                      "--qty", str(args.qty)], capture_output=True, text=True, check=True)
                info = json.loads(out.stdout.strip().splitlines()[-1])
                note = "" if info["reset"] else " (peak not resettable: upper bound)"
                print(f"peak memory growth during one {len(bars):,}-bar run, {name}: "
                      f"{info['peak_growth'] / 2**20:,.0f} MiB{note}")
    return 0 if rel <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
