"""Testing on one fold's test window: the trained policy and every baseline, on the same bars and engine.

The policy acts bar by bar on the env's observations (the env is given every earlier bar, for the
feature warm-up only; the account starts flat at the first test bar), and its actions go through
``tradebot.envs.backtest.run_backtest`` on the test bars, with the env's own ATR, after costs.

Every baseline is backtested on the same test bars under the same engine settings (its own
overrides applied, as in ``tradebot backtest --compare``): intraday baselines decide on the earlier
bars too (indicator warm-up) and only their test-window actions are backtested (every test window
starts at a session open, where an intraday account is flat); baselines that carry positions
overnight (the passive ``buy_and_hold``) decide on the test bars alone, so they start flat in the
test window like the agent (``buy_and_hold`` buys once its ATR(14), which the engine sizes with, is
known: the 15th bar, 10:30 on 5-minute bars).

A finished test is kept in ``<seed folder>/test/`` (equity, trades, metrics); a re-run reads it back
when it was made with the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic
from tradebot.core.serialize import json_text
from tradebot.envs.performance import M, Metrics
from tradebot.envs.window import BacktestWindow
from tradebot.rl.train_config import TrainConfig
from tradebot.rl.walkforward.folds import Fold
from tradebot.rl.walkforward.stitching import WindowRecord

TEST_FILES = ("metrics.json", "equity.csv", "trades.csv")


def backtest_window(bars, fold: Fold) -> BacktestWindow:
    """The warm-up history plus the test window of ``fold`` (``tradebot.envs.window``)."""
    try:
        return BacktestWindow.from_dates(bars, fold.test[0], fold.test_range.end)
    except UserInputError:
        raise UserInputError(f"{fold.label}: fewer than 2 bars in the test window") from None


def policy_backtest(policy, bars, fold: Fold, train_cfg: TrainConfig, window: str = "test"):
    """The policy's backtest over the fold's test (or ``window="validation"``) dates: ``(BacktestResult, actions)``.

    ``tradebot.rl.backtest_policy`` does the work: a TradingEnv over every bar before the test end (earlier
    bars only warm the features up) under the training config's env section, reset at the first test
    bar (account flat, recurrent state fresh), stepped with the policy's deterministic actions; the
    actions then go through ``run_backtest`` on the test bars with the env's engine and ATR.
    """
    from tradebot.rl.backtest_policy import backtest_policy, policy_env_config

    first, end = (fold.test[0], fold.test_range.end) if window == "test" else (fold.validation[0],
                                                                               fold.validation_range.end)
    run = backtest_policy(policy, bars, policy_env_config(train_cfg), start=first, end=end)
    return run.result, run.actions


def baseline_backtest(name: str, window: BacktestWindow, engine, seed: int = 0):
    """Backtest baseline ``name`` on the test bars under ``engine`` (its own overrides applied)."""
    from tradebot.envs.baselines import get_baseline

    return window.run_baseline(get_baseline(name), engine, seed)[0]


def write_test_files(test_dir: Path, checkpoint: str, metrics, bt, actions: np.ndarray) -> None:
    """Keep a finished policy test: equity (with positions and actions), trades, then metrics."""
    test_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"equity": bt.equity.to_numpy(), "position": bt.positions.to_numpy(), "action": actions},
                         index=pd.Index([t.isoformat() for t in bt.equity.index], name="timestamp"))
    write_text_atomic(test_dir / "equity.csv", frame.to_csv(float_format="%.10g"))
    write_text_atomic(test_dir / "trades.csv", bt.trades.to_csv(index=False, float_format="%.10g"))
    # metrics.json last: its presence says the test is complete
    write_text_atomic(test_dir / "metrics.json", json_text({"checkpoint": checkpoint, **metrics.to_dict()}))


def read_test_files(test_dir: Path, checkpoint: str) -> tuple[dict[str, float], WindowRecord] | None:
    """A kept test of ``checkpoint``: ``(metrics, record)``, or None (missing, another checkpoint, unreadable)."""
    from tradebot.core.nse_time import IST

    path = test_dir / "metrics.json"
    if not all((test_dir / name).is_file() for name in TEST_FILES):
        return None
    try:
        saved = json.loads(path.read_text())
        if saved.get("checkpoint") != checkpoint:
            return None
        frame = pd.read_csv(test_dir / "equity.csv", index_col="timestamp")
        index = pd.DatetimeIndex(pd.to_datetime(frame.index, format="ISO8601")).tz_convert(IST)
        equity = pd.Series(frame["equity"].to_numpy(dtype=np.float64), index=index, name="equity")
        try:
            trades = pd.read_csv(test_dir / "trades.csv")
        except pd.errors.EmptyDataError:
            trades = pd.DataFrame()
        metrics = dict(Metrics.from_dict(saved).values)
        record = WindowRecord.from_frames(equity, frame["position"].to_numpy(), trades, metrics[M.COSTS],
                                        int(metrics[M.INVALID_ACTIONS]))
        return metrics, record
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: test again
