"""A mixture of experts shows its gate wherever it decides: ``tradebot backtest --policy`` writes
``decisions.csv`` (weights per expert, chosen expert, one row per decision) and charts it in
``report.html``; mixing keeps masked actions masked. Real tiny trained experts (one checkpoint as
three experts), a supervised gate with random coefficients, loaded by ``Policy.load``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tradebot.cli import main
from tradebot.features.bars import load_bars

from rl_helpers import SAMPLE_5M, tiny_config

START, END = "2021-03-01", "2021-03-04"  # three sessions after the training dates
GATE_CHARTS = ("Equity, shaded by the chosen expert", "Gate weights per expert (stacked)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, local_ray, mixture_factory):
    """One tiny PPO-LSTM checkpoint and a mixture of it (three experts, a random supervised gate)."""
    from tradebot.core.config import parse_config
    from tradebot.rl.train import train_and_save
    from tradebot.rl.train_config import TrainConfig

    tmp = tmp_path_factory.mktemp("moe-outputs")
    cfg = parse_config(TrainConfig, tiny_config(tmp / "out", iterations=1))
    checkpoint = train_and_save(cfg, tmp / "checkpoint")
    return {"checkpoint": checkpoint, "mixture": mixture_factory(checkpoint, tmp / "mixture"), "cfg": cfg}


def _backtest(model, out):
    result = CliRunner().invoke(main, ["backtest", "--data", str(SAMPLE_5M), "--policy", str(model), "--start", START,
                                       "--end", END, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result


def test_backtest_of_a_mixture_writes_one_decisions_row_per_decision_and_the_gate_charts(trained, tmp_path):
    from tradebot.envs.engine import Action
    from tradebot.rl.moe.mixture import MixturePolicy
    from tradebot.rl.policy import Policy

    assert isinstance(Policy.load(trained["mixture"]), MixturePolicy)  # loaded like any policy
    out = tmp_path / "moe"
    result = _backtest(trained["mixture"], out)
    assert "decisions.csv" in result.output
    decisions = pd.read_csv(out / "decisions.csv")
    equity = pd.read_csv(out / "equity.csv")
    weights = decisions[["w_trend", "w_mean_reversion", "w_high_vol"]].to_numpy()
    assert list(decisions.columns) == ["timestamp", "action", "w_trend", "w_mean_reversion", "w_high_vol", "expert"]
    # one row per decision: every evaluated bar but the last (decision interval 1; nothing fills after the last)
    assert len(decisions) == len(equity) - 1 > 150
    assert (decisions["timestamp"].to_numpy() == equity["timestamp"].to_numpy()[:-1]).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    assert (weights >= 0).all() and weights.std(axis=0).min() > 1e-3  # the gate's weights move with the bars
    chosen = np.array(["trend", "mean_reversion", "high_vol"])[weights.argmax(axis=1)]
    assert (decisions["expert"].to_numpy() == chosen).all()
    assert set(decisions["action"]) <= {a.name for a in Action}
    report = (out / "report.html").read_text()
    assert all(title in report for title in GATE_CHARTS)

    plain = tmp_path / "plain"  # one expert alone: no gate, no decisions.csv, no gate charts
    _backtest(trained["checkpoint"], plain)
    assert not (plain / "decisions.csv").exists()
    assert not any(title in (plain / "report.html").read_text() for title in GATE_CHARTS)


def test_mixing_keeps_masked_actions_masked(trained):
    """Probability 0 on every action the observation's mask (its last 5 values, 1 = allowed) forbids,
    as positions open and close under random actions."""
    from tradebot.envs.trading_env import TradingEnv
    from tradebot.rl.policy import Policy

    mixture = Policy.load(trained["mixture"])
    bars = load_bars(SAMPLE_5M).between("2021-01-01", "2021-04-01")
    env = TradingEnv(bars, config=dict(trained["cfg"].env))
    obs, _ = env.reset(options={"start": 3000})
    rng = np.random.default_rng(3)
    masks, experts = set(), set()
    for _ in range(200):
        action, probs = mixture.act("s", obs)
        mask = obs[-5:]
        masks.add(tuple(mask))
        assert probs[mask == 0].sum() == 0.0 and mask[action] == 1
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        gate = mixture.explain("s")
        assert gate.weights.sum() == pytest.approx(1.0, abs=1e-12)
        experts.add(gate.expert)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(5)))
        if terminated or truncated:
            obs, _ = env.reset(options={"start": 3000})
            mixture.reset("s")
    assert len(masks) >= 2  # flat and holding: different actions forbidden
    assert len(experts) >= 2
