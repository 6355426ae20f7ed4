"""A walk-forward over several instruments: one policy per fold/seed trained on both stocks (episodes
from each, with its own futures lot and costs), tested on each, a view per stock and a pooled view (the
equal-weight portfolio), the seed ensemble, and the validation scores the design is chosen on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rl_helpers import ROOT
from tradebot.core.config import parse_config
from tradebot.rl.walkforward import WalkForwardConfig, run_walkforward
from tradebot.rl.walkforward.views import AGENT_ENSEMBLE, SELECTION_FILE, VIEWS_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SBIN = ROOT / "data" / "sample" / "NSE_SBIN-EQ_1d.csv.gz"
RELIANCE = ROOT / "data" / "sample" / "NSE_RELIANCE-EQ_1d.csv.gz"
DAILY = {"returns": {"horizons": [1, 5]}, "trend": {"sma": [10], "ema": [10]}, "volatility": {"realised_vol": [10]},
         "regime": {"percentile_window": 20}, "candles": {"enabled": False},
         "normalisation": {"window": 60, "min_periods": 10}}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, local_ray, mlflow_store):
    out = tmp_path_factory.mktemp("pooled") / "out"
    raw = {
        "data": {"path": str(SBIN), "extra_paths": [str(RELIANCE)], "start": "2021-01-01", "end": "2022-07-01"},
        "folds": {"unit": "months", "train": 6, "validation": 2, "test": 2, "step": 2, "purge": 1, "max_folds": 2},
        "evaluation": {"seeds": [0, 1], "baselines": ["buy_and_hold", "tsmom"], "pbo_partitions": 4,
                       "mlflow_experiment": "tests-pooled", "registered_model": "tests-pooled"},
        "training": {"env": {"features": DAILY, "episode": {"length": 30},
                             "engine": {"product": "futures", "carry_overnight": True, "lot_size": "catalog",
                                        "leverage": "catalog", "exposure": 1.0, "stop_loss": False,
                                        "take_profit_atr_mult": None, "initial_cash": 2_000_000.0}},
                     "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
                     "model": {"lstm_cell_size": 8, "max_seq_len": 10, "fcnet_hiddens": [8]},
                     "run": {"iterations": 1, "checkpoint_every": 1, "validate_every": 1, "patience": None,
                             "num_envs_per_env_runner": 4}},
    }
    cfg = parse_config(WalkForwardConfig, raw)
    return {"result": run_walkforward(cfg, output_dir=out), "out": out}


def test_every_stock_has_its_view_and_the_primary_view_is_the_pooled_portfolio(pooled):
    out, result = pooled["out"], pooled["result"]
    views = sorted(p.name for p in (out / VIEWS_DIR).iterdir())
    assert views == ["NSE_RELIANCE-EQ", "NSE_SBIN-EQ"]
    for v in views:
        table = pd.read_csv(out / VIEWS_DIR / v / "summary.csv")
        assert set(table["strategy"]) == {"agent", "agent_selected", AGENT_ENSEMBLE, "buy_and_hold", "tsmom"}
    for run in result.runs:  # the pooled record of a fold/seed: the mean of the two stocks' test equity
        seed_dir = run.output_dir / "test"
        eq = [pd.read_csv(seed_dir / v / "equity.csv", index_col="timestamp")["equity"] for v in views]
        np.testing.assert_allclose(run.record.equity.to_numpy(), (eq[0].to_numpy() + eq[1].to_numpy()) / 2)
        assert run.metrics["invalid_actions"] == 0  # masked policies


def test_each_stock_trades_its_own_futures_lot(pooled):
    out = pooled["out"]
    lots = {"NSE_SBIN-EQ": 1500, "NSE_RELIANCE-EQ": 250}  # the catalog's lots in 2021-2022
    traded = 0
    for view, lot in lots.items():
        for trades in out.glob(f"fold_*/seed_*/test/{view}/trades.csv"):
            try:
                qty = pd.read_csv(trades)["qty"].to_numpy()
            except pd.errors.EmptyDataError:
                continue
            assert (qty % lot == 0).all() and (qty > 0).all()
            traded += len(qty)
    assert traded > 0


def test_the_design_is_scored_on_validation_windows_for_the_pooled_portfolio(pooled):
    sel = json.loads((pooled["out"] / SELECTION_FILE).read_text())
    assert sel["views"] == ["NSE:SBIN-EQ", "NSE:RELIANCE-EQ", "pooled"]
    assert len(sel["folds"]) == 2 and sel["variant"] in ("agent_selected", "agent_ensemble")
    for fold in sel["folds"]:
        assert set(fold["seeds"]) == {"0", "1"} and fold["ensemble"] is not None
