"""Env throughput: Gymnasium-API steps/s of tradebot/Trading-v0 against gym-anytrading and
gym-trading-env on the same bars (one env, one core, random actions), and the batched env's
env-steps/s.

How to run:
    .venv/bin/python bench/env.py                      # sample NIFTY 5-minute bars, 200k steps each
    .venv/bin/python bench/env.py --steps 50000 --batch 1024

Results to expect (2-core dev box shared with other jobs, rough): tradebot gymnasium.make and
.unwrapped ~500k steps/s (registered without gymnasium's per-step checker wrappers; with them
~450k), gym-anytrading stocks-v0 ~350k, gym-trading-env ~50k; batched env (4096 accounts)
~14M env-steps/s. Actions are drawn up front from
one seeded generator (the same draws for every env, mapped onto each env's action count), so the
action sampler's own cost is not measured. Episodes reset when they end (reset time included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_DATA = "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"


def _loop(env, actions: list[int]) -> tuple[float, float]:
    """Step ``env`` through ``actions`` (resetting at episode ends); (wall s, CPU s)."""
    step, reset = env.step, env.reset
    reset(seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    return time.perf_counter() - t0, time.process_time() - c0


def _measure(name: str, env, actions: list[int], warmup: int, rows: list) -> None:
    _loop(env, actions[:warmup])
    wall, cpu = _loop(env, actions)
    rows.append((name, len(actions) / wall, len(actions) / cpu))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="bar file (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=200_000, help="timed steps per single env (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=4096, help="accounts in the batched env (default: %(default)s)")
    ap.add_argument("--batched-steps", type=int, default=300, help="timed batched steps (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-others", action="store_true", help="only measure tradebot")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import gymnasium as gym
    from gymnasium.wrappers import OrderEnforcing

    import tradebot.envs as envs  # noqa: F401  (registers tradebot/Trading-v0)
    from tradebot.envs.trading_env import ENV_ID, BatchedTradingEnv
    from tradebot.features.bars import load_bars

    bars = load_bars(args.data)
    rng = np.random.default_rng(args.seed)
    draws = rng.integers(0, 1 << 30, args.steps)
    five = (draws % 5).tolist()
    two = (draws % 2).tolist()
    warm = min(5_000, args.steps)
    rows: list[tuple[str, float, float]] = []

    env = gym.make(ENV_ID, data=args.data)
    _measure("tradebot  gymnasium.make (as registered)", env, five, warm, rows)
    _measure("tradebot  .unwrapped", env.unwrapped, five, warm, rows)
    checked = OrderEnforcing(gym.make(ENV_ID, data=args.data, disable_env_checker=False))
    _measure("tradebot  make + PassiveEnvChecker + OrderEnforcing", checked, five, warm, rows)

    if not args.skip_others:
        import gym_anytrading  # noqa: F401  (registers stocks-v0)
        import gym_trading_env  # noqa: F401  (registers TradingEnv)

        df = bars.frame.rename(columns={"open": "Open", "high": "High", "low": "Low", "close": "Close",
                                        "volume": "Volume"})
        ga = gym.make("stocks-v0", df=df, window_size=30, frame_bound=(30, len(df)))
        _measure("gym-anytrading stocks-v0  gymnasium.make", ga, two, warm, rows)
        _measure("gym-anytrading stocks-v0  .unwrapped", ga.unwrapped, two, warm, rows)

        tdf = bars.frame.copy()
        tdf.index = tdf.index.tz_localize(None)
        tdf["feature_close"] = tdf["close"].pct_change()
        tdf = tdf.dropna()
        te = gym.make("TradingEnv", df=tdf, positions=[0, 1], trading_fees=0.0003, verbose=0)
        _measure("gym-trading-env TradingEnv  gymnasium.make", te, two, warm, rows)

    print(f"single env, {args.steps:,} random-action steps each, data {args.data} ({len(bars):,} bars)")
    print(f"{'env':55s} {'steps/s (wall)':>15s} {'steps/s (CPU)':>15s}")
    for name, wall, cpu in rows:
        print(f"{name:55s} {wall:15,.0f} {cpu:15,.0f}")

    for copy in (False, True):
        benv = BatchedTradingEnv(bars, args.batch, copy=copy)
        benv.reset(seed=args.seed)
        acts = rng.integers(0, 5, (64, args.batch))
        for k in range(20):
            benv.step(acts[k % 64])
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(args.batched_steps):
            benv.step(acts[k % 64])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = args.batched_steps * args.batch
        print(f"batched env, {args.batch} accounts, copy={copy}: {n / wall / 1e6:6.2f} M env-steps/s (wall), "
              f"{n / cpu / 1e6:6.2f} M (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
