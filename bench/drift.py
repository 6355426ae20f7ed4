"""Drift monitors: cost per bar, false alarms on stationary replays, time to alarm after injected shifts.

How to run this script:
    .venv/bin/python bench/drift.py [--model models:/tradebot-ppo-lstm-demo/1] [--real-data FILE] [--json OUT]

It needs a trained model (``make demo`` registers ``models:/tradebot-ppo-lstm-demo/1`` in ./mlflow.db).

What it measures (each replay is the model backtested bar by bar, monitors fed as the live loop feeds them):
1. cost: the monitors' update per bar (all three, the model's feature count), p50 / p99 in microseconds;
2. false alarms per 1,000 bars on stationary data:
   a. the synthetic market (``tradebot.rl.synthetic``, index-like, no shifts): the reference is built
      on its first sessions (features) and the next ones (the policy's actions and trades), the
      monitors then watch the rest;
   b. real held-back bars (``--real-data``, default the sample's June 2021) against the model's own
      reference (its training months);
3. time to alarm: the same synthetic continuation with a shift injected at a known bar
   (``tradebot.rl.drift.shifts``: volatility tripled, drift reversed, another instrument swapped in:
   real NIFTY 5-minute moves), bars from the shift to the first WARN and the first ALARM per monitor.

Results to expect: see docs/results.md, "Drift detection" (figures written by this script).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"


def onsets(check, stamps: np.ndarray) -> dict[str, dict[str, list[int]]]:
    """Per monitor, the bar positions where it entered WARN (from OK) and ALARM."""
    out: dict[str, dict[str, list[int]]] = {}
    for t in check.transitions:
        pos = int(np.searchsorted(stamps, t.ts, side="left"))
        slot = out.setdefault(t.monitor, {"WARN": [], "ALARM": []})
        if t.new.value == "ALARM":
            slot["ALARM"].append(pos)
        elif t.new.value == "WARN" and t.old.value == "OK":
            slot["WARN"].append(pos)
    return out


def replay(policy, env_config, reference, bars, start, config, trace=None):
    from tradebot.rl.backtest_policy import backtest_policy
    from tradebot.rl.drift.offline import monitor_run

    run = backtest_policy(policy, bars, env_config, start=start)
    check = monitor_run(reference, run, env_config, config, trace=trace)
    return check, run.bars.index.as_unit("ns").asi8


def crossings(trace, column: int, threshold: float, higher_is_worse: bool = True) -> list[int]:
    """Bars where the statistic crosses ``threshold`` from the good side (onsets at that threshold)."""
    values = np.asarray(trace, dtype=np.float64)[:, column]
    bad = values >= threshold if higher_is_worse else values <= threshold
    return [int(i) for i in np.flatnonzero(bad[1:] & ~bad[:-1]) + 1] + ([0] if len(bad) and bad[0] else [])


TRADE_OFF = {"features": (0, (0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 1.0)), "actions": (1, (0.2, 0.25, 0.3, 0.35, 0.4))}


def quantiles(trace) -> dict[str, dict[str, float]]:
    """The stationary distribution of each monitor's statistic (the thresholds are set above it)."""
    values = np.asarray(trace, dtype=np.float64)
    out = {}
    for j, name in enumerate(("features", "actions", "performance")):
        col = values[:, j]
        col = col[np.isfinite(col) & (col != 0.0)]
        if len(col):
            out[name] = {q: float(np.quantile(col, float(q))) for q in ("0.0", "0.001", "0.01", "0.5", "0.99", "0.999",
                                                                          "1.0")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models:/tradebot-ppo-lstm-demo/1")
    ap.add_argument("--real-data", default=str(SAMPLE), help="held-back real bars of the model's instrument")
    ap.add_argument("--real-start", default="2021-06-01", help="first held-back day in --real-data")
    ap.add_argument("--sessions", type=int, default=360, help="synthetic sessions (75 bars each)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch

    torch.set_num_threads(1)
    from tradebot.features.bars import load_bars
    from tradebot.rl.backtest_policy import load_policy_setup
    from tradebot.rl.drift import DriftConfig, DriftMonitors
    from tradebot.rl.drift.offline import model_reference, reference_for
    from tradebot.rl.drift.shifts import SHIFTS, shifted_bars
    from tradebot.rl.synthetic import SyntheticMarketConfig, synthetic_bars

    config = DriftConfig()
    setup = load_policy_setup(args.model)
    policy, env_config = setup.policy, setup.env_config
    results: dict = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                     "command": " ".join(["python", *sys.argv]), "model": args.model,
                     "config": config.model_dump(mode="json")}

    # ---- synthetic: reference on the first sessions, stationary continuation, then shifts
    market = SyntheticMarketConfig(sessions=args.sessions, volume=0.0, seed=11)
    bars = synthetic_bars(market)
    days = sorted({t.date() for t in bars.index})
    train, val, watch = (days[0], days[100]), (days[100], days[140]), days[140]
    t0 = time.time()
    reference = reference_for(policy, env_config, bars, train, val, source={"synthetic": market.model_dump(mode="json")})
    trace: list = []
    check, stamps = replay(policy, env_config, reference, bars, watch, config, trace)
    n = len(stamps)
    found = onsets(check, stamps)
    results["synthetic_stationary"] = {
        "bars": n, "onsets": found, "statistic_quantiles": quantiles(trace),
        "per_1000_bars": {m: {k: 1000.0 * len(v) / n for k, v in s.items()} for m, s in found.items()},
        "final": {k: v.value for k, v in check.final_states.items()}}
    print(f"synthetic stationary: {n:,} bars watched ({time.time() - t0:.0f} s); onsets {found}; statistic "
          f"quantiles {results['synthetic_stationary']['statistic_quantiles']}")

    real = load_bars(args.real_data)
    shift_at = 3000
    first_watch = int(np.searchsorted(bars.index.as_unit("ns").asi8, stamps[0]))
    stationary_trace = trace
    results["shifts"] = {}
    shift_traces = {}
    for kind in SHIFTS:
        at = first_watch + shift_at
        cut = bars.slice(None, min(len(bars), at + len(real) - 1))  # the swapped-in moves must last to the end
        shifted = shifted_bars(cut, at, kind, other=real)
        shift_traces[kind] = []
        check, st = replay(policy, env_config, reference, shifted, watch, config, shift_traces[kind])
        found = onsets(check, st)
        delays = {m: {k: next((p - shift_at for p in v if p >= shift_at), None) for k, v in s.items()}
                  for m, s in found.items()}
        before = {m: {k: sum(p < shift_at for p in v) for k, v in s.items()} for m, s in found.items()}
        results["shifts"][kind] = {"shift_bar": shift_at, "bars_to_first": delays, "onsets_before_shift": before,
                                   "bars_after_shift": len(st) - shift_at}
        print(f"shift {kind}: bars from the shift to the first onset {delays}; before the shift {before}")

    # ---- real held-back bars against the model's own reference
    model_ref, origin = model_reference(args.model, setup)
    trace = []
    check, st = replay(policy, env_config, model_ref, real, args.real_start, config, trace)
    found = onsets(check, st)
    results["real_heldback"] = {"data": args.real_data, "start": args.real_start, "bars": len(st),
                                "statistic_quantiles": quantiles(trace),
                                "reference": origin, "onsets": found,
                                "per_1000_bars": {m: {k: 1000.0 * len(v) / len(st) for k, v in s.items()}
                                                  for m, s in found.items()},
                                "final": {k: v.value for k, v in check.final_states.items()},
                                "monitors": check.snapshot}
    print(f"real held-back from {args.real_start}: {len(st):,} bars; onsets {found}; final "
          f"{results['real_heldback']['final']}; statistic quantiles {results['real_heldback']['statistic_quantiles']}")

    # ---- the trade-off: each threshold's false alarms (stationary replays) and delay (after each shift)
    trade_off = {}
    for name, (col, levels) in TRADE_OFF.items():
        rows = []
        for level in levels:
            row = {"threshold": level,
                   "synthetic_per_1000": 1000.0 * len(crossings(stationary_trace, col, level)) / len(stationary_trace),
                   "real_per_1000": 1000.0 * len(crossings(trace, col, level)) / len(trace)}
            for kind, tr in shift_traces.items():
                after = [b - shift_at for b in crossings(tr, col, level) if b >= shift_at]
                row[f"bars_to_{kind}"] = after[0] if after else None
            rows.append(row)
        trade_off[name] = rows
        for row in rows:
            print(f"trade-off {name}: {row}")
    results["trade_off"] = trade_off

    # ---- cost per bar
    from tradebot.features.pipeline import FeaturePipeline

    pipe = FeaturePipeline.for_bars(real, env_config.features)
    feats = pipe.transform(real).to_numpy()[pipe.warmup_bars:]
    monitors = DriftMonitors(model_ref, config)
    rng = np.random.default_rng(0)
    times = []
    for i, row in enumerate(feats):
        t = time.perf_counter_ns()
        monitors.on_bar(i, row, int(rng.integers(0, 5)))
        if i % 20 == 0:
            monitors.on_trade(i, float(rng.normal(0, 0.003)))
        times.append(time.perf_counter_ns() - t)
    us = np.asarray(times[200:]) / 1000.0
    results["cost_us_per_bar"] = {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99)),
                                  "bars": len(us), "features": len(model_ref.feature_names)}
    print(f"cost per bar: p50 {results['cost_us_per_bar']['p50']:.1f} us, p99 {results['cost_us_per_bar']['p99']:.1f} us "
          f"({len(us):,} bars, {len(model_ref.feature_names)} features)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
