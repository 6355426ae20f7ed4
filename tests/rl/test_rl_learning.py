"""Learning regression: the real training pipeline learns a pattern that is known to be there.

A synthetic market (``tradebot.rl.synthetic``: sessions drift up or down, the regime persists from session
to session and shows in the features) is written as a bar file; ``tradebot.rl.train.train`` trains PPO-LSTM
on it exactly as ``tradebot train`` does (real Ray, RLlib, MLflow in a sqlite store under tmp), on a
small budget; then the registered policy (the best checkpoint on validation) acts deterministically,
through ``tradebot.rl.policy.Policy`` and ``TradingEnv``, over 30 synthetic sessions it never saw. Its
actions and the baselines ``random`` (best of several seeds), ``buy_and_hold`` (passive, delivery) and
``intraday_long`` (long from each session's open) are backtested on those dates by the same fill engine, with the same
engine config and ATR, after NSE costs: the agent must beat every one of them by a clear margin
(total return and Sharpe), and spend most of its time in the market on the side of the session's
true regime (so the edge is the pattern, not luck). Its backtest must also reproduce the env's
own equity exactly (the same engine behind both).

Everything comes from ``experiments/learning_regression.yaml`` (market, training config, test
dates, thresholds); that file also says what results to expect. With one torch thread and no
remote env runners a seed gives the same numbers run after run. The engine there is cheaper than the
default one (slippage 0.5 bp, no take-profit, a wider stop); costs are the full NSE charges.

This proves that the pipeline (env, features, normaliser, RLlib PPO-LSTM, checkpoints, policy
wrapper) can learn; it says nothing about real markets, where no such pattern is known to exist.

Run: ``.venv/bin/python -m pytest -m slow tests/rl/test_rl_learning.py -s`` (prints the table);
``TRADEBOT_LEARNING_SEEDS=0,1,2`` trains once per listed seed instead of the YAML's ``run.seed``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from tradebot.envs.backtest import run_backtest
from tradebot.envs.baselines import BASELINES
from tradebot.envs.performance import M, Metrics, metrics_from_result
from tradebot.envs.trading_env import EnvConfig
from tradebot.features.bars import Bars, load_bars
from tradebot.features.pipeline import FeaturePipeline
from tradebot.rl.train_config import DateRange, TrainConfig
from tradebot.rl.policy import Policy
from tradebot.rl.synthetic import SyntheticMarketConfig, session_regimes, synthetic_bars, write_synthetic_bars
from tradebot.rl.train import make_env, train
from tradebot.core.config import FrozenConfig, load_config


ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "learning_regression.yaml"
SEEDS_ENV = "TRADEBOT_LEARNING_SEEDS"
AGENT = "agent"
PASSIVE_AND_RANDOM = ("random", "buy_and_hold", "intraday_long")


class EvaluationSection(FrozenConfig):
    """The ``evaluation`` section: held-back dates and the bar the agent must clear."""

    test: DateRange = Field(description="dates after validation, never seen in training")
    random_seeds: int = Field(5, ge=1, description="the random baseline's best of this many seeds")
    min_margin: float = Field(0.5, ge=0, description="agent total return minus each baseline's, at least")
    min_with_regime: float = Field(0.7, ge=0, le=1, description="share of the agent's bars in the market "
                                   "on its session's side, at least (no skill: about 0.5)")


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Metrics]  # AGENT and each baseline, on the test dates, after costs
    env_final_equity: float  # the env's own equity at the end of the agent's pass
    agent_trades: pd.DataFrame  # the agent's trades on the test dates (tradebot.envs.backtest.TRADE_COLUMNS)
    regimes: pd.Series  # the test sessions' true regimes (+1 up, -1 down), by session date
    train_seconds: float

    @property
    def with_regime(self) -> float:
        """Share of the agent's bars in the market spent on its session's side (long when up, short when down)."""
        trades = self.agent_trades
        held = trades["bars_held"].to_numpy(dtype=float)
        if held.sum() <= 0:
            return 0.0
        day = pd.DatetimeIndex(trades["entry_time"]).tz_localize(None).normalize()
        regime = self.regimes.reindex(day).to_numpy()
        side = np.where(trades["side"].astype(str).to_numpy() == "long", 1, -1)
        return float(held[side == regime].sum() / held.sum())


def _seeds() -> list[int | None]:
    raw = os.environ.get(SEEDS_ENV, "").strip()
    return [int(s) for s in raw.split(",") if s.strip()] if raw else [None]


def _agent_actions(cfg: TrainConfig, checkpoint: Path, test: DateRange) -> tuple[np.ndarray, int, float]:
    """The policy's deterministic actions over the test dates: (actions, first test bar, env final equity).

    The env gets every bar up to the test end (earlier bars warm the features up) and one episode
    from the first test bar to the last, as ``tradebot.rl.train`` validates.
    """
    env_cfg = {**dict(cfg.env), "episode": {"mode": "window", "length": None}}
    env = make_env({"env_id": cfg.run.env_id, "path": cfg.data.path, "symbol": cfg.data.symbol,
                    "start": None, "end": test.end.isoformat(), "config": env_cfg})
    try:
        index = env.unwrapped.bars.index
        start = int(index.searchsorted(pd.Timestamp(test.start.isoformat(), tz=index.tz)))
        policy = Policy.from_checkpoint(checkpoint)
        actions = np.zeros(len(index) - start, dtype=np.int8)  # the last bar's decision is never filled
        obs, info = env.reset(seed=cfg.run.seed, options={"start": start})
        while True:
            action, _ = policy.act("test", obs)
            actions[env.unwrapped.bar_index - start] = action
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        return actions, start, float(info["equity"])
    finally:
        env.close()


def evaluate(cfg: TrainConfig, evaluation: EvaluationSection, checkpoint: Path
             ) -> tuple[dict[str, Metrics], float, pd.DataFrame]:
    """Agent and baselines backtested on the test dates by one engine, config and ATR; plus the env's
    final equity and the agent's trades."""
    env_config = EnvConfig.model_validate(dict(cfg.env))
    history = load_bars(cfg.data.path, cfg.data.symbol).between(None, evaluation.test.end.isoformat())
    actions, start, env_equity = _agent_actions(cfg, checkpoint, evaluation.test)
    test_bars: Bars = history.slice(start)
    # the ATR the env sized and stopped with: the feature pipeline's, over the whole history
    atr = FeaturePipeline.for_bars(history, env_config.features).atr(history).to_numpy()[start:]
    engine = env_config.engine
    agent = run_backtest(test_bars, actions, engine, atr=atr)
    out = {AGENT: metrics_from_result(agent, test_bars.timeframe)}
    for name in PASSIVE_AND_RANDOM:
        baseline = BASELINES[name]
        run_config = baseline.engine_config(engine)
        seeds = range(evaluation.random_seeds) if baseline.seeded else [0]
        runs = [metrics_from_result(run_backtest(test_bars, baseline(test_bars, run_config, seed=s), run_config,
                                                 atr=atr), test_bars.timeframe) for s in seeds]
        out[name] = max(runs, key=lambda m: m[M.TOTAL_RETURN])
    return out, env_equity, agent.trades


def held_back_regimes(market: SyntheticMarketConfig, test: DateRange) -> pd.Series:
    """The true regime of each test session."""
    regimes = session_regimes(market)
    days = regimes.index
    return regimes[(days >= pd.Timestamp(test.start)) & (days < pd.Timestamp(test.end))]


def _table(result: Evaluation, seed: int) -> str:
    rows = [f"learning regression, training seed {seed}: {result.train_seconds:.0f} s training; test sessions "
            f"{len(result.regimes)} ({int((result.regimes > 0).sum())} up); agent's time in the market on "
            f"the session's side: {result.with_regime:.0%}",
            f"  {'strategy':<13}{'return':>9}{'sharpe':>8}{'max dd':>8}{'trades':>8}{'costs %':>9}"]
    for name, m in result.metrics.items():
        rows.append(f"  {name:<13}{m[M.TOTAL_RETURN] * 100:>8.2f}%{m[M.SHARPE]:>8.2f}{m[M.MAX_DRAWDOWN] * 100:>7.2f}%"
                    f"{m[M.TRADES]:>8.0f}{m[M.COSTS_PCT] * 100:>8.2f}%")
    return "\n".join(rows)


@pytest.fixture(scope="module", params=_seeds(), ids=lambda s: "yaml-seed" if s is None else f"seed{s}")
def learned(request, tmp_path_factory, local_ray):
    """Train on the synthetic market (MLflow in a tmp sqlite store) and evaluate on the test dates.

    Torch runs on one thread while training: the networks are small, and two intra-op threads
    fighting other jobs for two shared cores made iterations up to 20x slower (spin-waiting).
    """
    import mlflow
    import torch

    tmp = tmp_path_factory.mktemp("learning")
    market = load_config(SyntheticMarketConfig, EXPERIMENT, "market")
    evaluation = load_config(EvaluationSection, EXPERIMENT, "evaluation")
    cfg = load_config(TrainConfig, EXPERIMENT, "train")
    data = write_synthetic_bars(market, tmp / market.file_name())
    run = {"output_dir": str(tmp / "out")}
    if request.param is not None:
        run["seed"] = request.param
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(data)}),
                                 "run": cfg.run.model_copy(update=run)})
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        previous, threads = mlflow.get_tracking_uri(), torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - t0
        finally:
            mlflow.set_tracking_uri(previous)
            torch.set_num_threads(threads)
    metrics, env_equity, trades = evaluate(cfg, evaluation, result.final_checkpoint)
    out = Evaluation(metrics, env_equity, trades, held_back_regimes(market, evaluation.test), seconds)
    print("\n" + _table(out, cfg.run.seed))
    return {"evaluation": out, "cfg": cfg, "settings": evaluation, "result": result}


class TestLearning:
    """The trained agent on the test dates (the synthetic market's own tests, below, are fast)."""

    # about 2 minutes per seed on 2 lightly loaded cores, several times that when they are busy
    pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]

    def test_learning_backtest_replays_the_env_pass_exactly(self, learned):
        """The agent's backtest is the env's own account: same fills, same costs, same final equity."""
        ev = learned["evaluation"]
        agent = ev.metrics[AGENT]
        assert agent[M.FINAL_EQUITY] == pytest.approx(ev.env_final_equity, rel=1e-9)
        assert agent[M.INVALID_ACTIONS] >= 0 and agent[M.BARS] > 0

    def test_learning_test_dates_are_balanced_and_unseen(self, learned):
        """The test dates follow validation, and the market is not one-sided there (so holding cannot win)."""
        cfg, settings, ev = learned["cfg"], learned["settings"], learned["evaluation"]
        assert cfg.data.validation is not None and settings.test.start >= cfg.data.validation.end
        up = float((ev.regimes > 0).mean())
        assert 0.3 <= up <= 0.7, f"{up:.0%} up sessions on the test dates"

    @pytest.mark.parametrize("baseline", PASSIVE_AND_RANDOM)
    def test_learning_agent_beats_baseline_after_costs(self, learned, baseline):
        """On unseen dates the trained agent's total return after costs beats the baseline's by the margin."""
        ev, margin = learned["evaluation"], learned["settings"].min_margin
        agent, other = ev.metrics[AGENT], ev.metrics[baseline]
        gap = agent[M.TOTAL_RETURN] - other[M.TOTAL_RETURN]
        assert gap >= margin, (f"agent {agent[M.TOTAL_RETURN]:.2%} vs {baseline} {other[M.TOTAL_RETURN]:.2%}: "
                               f"margin {gap:.2%} < {margin:.2%}\n" + _table(ev, learned["cfg"].run.seed))
        assert agent[M.SHARPE] > other[M.SHARPE]

    def test_learning_agent_holds_the_session_side(self, learned):
        """It learned the pattern, not a fluke: most of its time in the market is on the session's side."""
        ev, floor = learned["evaluation"], learned["settings"].min_with_regime
        assert ev.metrics[AGENT][M.TRADES] >= len(ev.regimes) // 2, "the agent barely trades"
        assert ev.with_regime >= floor, _table(ev, learned["cfg"].run.seed)


# ---- the synthetic market itself (fast) ---------------------------------------------------------

def test_synthetic_market_writes_a_valid_nse_bar_file(tmp_path):
    """A full NSE 5-minute calendar in IST on weekdays, valid OHLC, read back by ``load_bars``."""
    config = SyntheticMarketConfig(sessions=7, seed=3)
    path = write_synthetic_bars(config, tmp_path / config.file_name())
    bars = load_bars(path)
    assert bars.symbol == "NSE:SYNTH-EQ" and bars.timeframe == "5m" and len(bars) == 7 * 75
    local = bars.index.tz_convert("Asia/Kolkata")
    days = pd.Series(local.date)
    assert days.nunique() == 7 and (pd.DatetimeIndex(local.normalize()).dayofweek < 5).all()
    first, last = local[0], local[74]
    assert (first.hour, first.minute, last.hour, last.minute) == (9, 15, 15, 25)
    assert bars.has_volume
    same = synthetic_bars(config)
    np.testing.assert_allclose(bars.frame.to_numpy(), same.frame.to_numpy(), rtol=1e-7)


def test_synthetic_market_session_drift_follows_the_regime():
    """Sessions drift with their regime: the session's return has the regime's sign far above chance."""
    config = SyntheticMarketConfig(sessions=200, seed=5)
    bars, regimes = synthetic_bars(config), session_regimes(config).to_numpy()
    k = config.bars_per_session
    opens, closes = bars.column("open")[::k], bars.column("close")[k - 1::k]
    agree = np.mean(np.sign(np.log(closes / opens)) == regimes)
    assert agree > 0.9  # drift 2 bp x 75 bars against 8 bp x sqrt(75) noise: ~97 % expected
    stays = np.mean(regimes[1:] == regimes[:-1])
    assert abs(stays - config.persistence) < 0.1


def test_synthetic_market_same_seed_same_bars_and_other_seed_differs():
    a = synthetic_bars(SyntheticMarketConfig(sessions=3, seed=1))
    b = synthetic_bars(SyntheticMarketConfig(sessions=3, seed=1))
    c = synthetic_bars(SyntheticMarketConfig(sessions=3, seed=2))
    assert a.frame.equals(b.frame) and not a.frame.equals(c.frame)


def test_synthetic_market_bad_config_names_the_key():
    from tradebot.core.config import parse_config
    from tradebot.core.errors import UserInputError

    with pytest.raises(UserInputError, match="bar_minutes"):
        parse_config(SyntheticMarketConfig, {"bar_minutes": 7}, "market")
    with pytest.raises(UserInputError, match="symbol"):
        parse_config(SyntheticMarketConfig, {"symbol": "SYNTH"}, "market")


def test_synthetic_market_cli_writes_bars_and_a_train_config(tmp_path, monkeypatch):
    """``python -m tradebot.rl.synthetic EXPERIMENT.yaml`` prepares a run that ``tradebot train`` accepts."""
    from tradebot.rl.train_config import load_train_config
    from tradebot.rl.synthetic import main

    monkeypatch.chdir(tmp_path)
    assert main([str(EXPERIMENT)]) == 0
    cfg = load_train_config(tmp_path / "runs" / "learning_regression" / "train.yaml")
    bars = load_bars(cfg.data.path)
    assert len(bars) == load_config(SyntheticMarketConfig, EXPERIMENT, "market").sessions * 75
    assert main([str(tmp_path / "missing.yaml")]) == 2
