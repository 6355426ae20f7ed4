"""Regime detection: filtered (causal) HMM probabilities, incremental equals batch, fitted on its window only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tradebot.core.errors import UserInputError
from tradebot.features.bars import load_bars
from tradebot.features.pipeline import FeaturePipeline
from tradebot.features.regimes import COLUMNS, RegimeDetector, rule_regimes

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"


@pytest.fixture(scope="module")
def bars():
    return load_bars(SAMPLE)


@pytest.fixture(scope="module")
def detector(bars):
    return RegimeDetector.fit(bars, "2021-01-01", "2021-04-01")


def test_probabilities_sum_to_one_after_the_warm_up(bars, detector):
    p = detector.transform(bars)
    assert list(p.columns) == list(COLUMNS)
    done = p.iloc[detector.warmup_bars + 1:]
    assert not done.isna().any().any()
    np.testing.assert_allclose(done.sum(axis=1), 1.0, atol=1e-12)
    assert sorted(detector.labels) == ["high_vol", "mean_reversion", "trend"]


def test_no_lookahead_truncating_the_bars_changes_no_earlier_row(bars, detector):
    full = detector.transform(bars).to_numpy()
    for t in (300, 1500, 4000, len(bars) - 1):
        np.testing.assert_array_equal(detector.transform(bars.slice(None, t)).to_numpy(), full[:t])


def test_bar_by_bar_equals_batch_and_state_round_trips(bars, detector):
    full = detector.transform(bars).to_numpy()
    stream = detector.stream(history=bars.slice(None, 3000))
    restored = RegimeDetector.from_dict(detector.to_dict()).stream()
    restored.load_state_dict(stream.state_dict())
    closes = bars.column("close")
    for t in range(3000, 3400):
        np.testing.assert_array_equal(stream.update(closes[t]), full[t])
        np.testing.assert_array_equal(restored.update(closes[t]), full[t])


def test_fitting_reads_only_its_window(bars):
    a = RegimeDetector.fit(bars, "2021-01-01", "2021-03-01")
    later_changed = bars.frame.copy()
    later_changed.loc[later_changed.index >= "2021-03-01", ["open", "high", "low", "close"]] *= 1.5
    from tradebot.features.bars import Bars

    b = RegimeDetector.fit(Bars.from_frame(later_changed, symbol=bars.symbol), "2021-01-01", "2021-03-01")
    assert a.to_dict() == b.to_dict()
    with pytest.raises(UserInputError, match="fit on a longer window"):
        RegimeDetector.fit(bars, "2021-01-04", "2021-01-06")


def test_rule_based_regimes_are_one_hot_from_the_pipeline_features(bars):
    feats = FeaturePipeline.for_bars(bars).transform(bars)
    r = rule_regimes(feats).dropna()
    assert len(r) > 1000 and set(np.unique(r.to_numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(r.sum(axis=1), 1.0)
    with pytest.raises(UserInputError, match="regime features"):
        rule_regimes(feats.drop(columns=["adx"]))
