"""Deflated Sharpe ratio and PBO against the papers' example and values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradebot.rl.overfitting import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
)


def test_dsr_paper_example_matches_published_values():
    # Bailey & López de Prado (2014), section 4: annualised SR 2.5 on T = 1250 daily returns,
    # skew -3, kurtosis 10, N = 100 trials whose annualised Sharpe ratios have variance 0.5
    # (250 days a year): SR0 = 0.1132 per day and DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    dsr = probabilistic_sharpe_ratio(2.5 / math.sqrt(250), 1250, -3.0, 10.0, benchmark=sr0)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_psr_normal_returns_hand_computed():
    # SR 0.1, T 101, skew 0, kurtosis 3: z = 0.1 * 10 / sqrt(1 + 2/4 * 0.01) = 0.997509, Phi(z) = 0.840741
    assert probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0) == pytest.approx(0.840741, abs=1e-6)
    # negative skew and fat tails widen the Sharpe ratio's error: z = 1 / sqrt(1 + 0.1 + 5/4 * 0.01) = 0.948091
    assert probabilistic_sharpe_ratio(0.1, 101, -1.0, 6.0) == pytest.approx(0.828458, abs=1e-6)


def test_expected_max_sharpe_two_trials_hand_computed():
    # N = 2: Phi^-1(1/2) = 0, Phi^-1(1 - 1/(2e)) = 0.900453; SR0 = sqrt(V) * gamma * 0.900453
    assert expected_max_sharpe(2, 0.04) == pytest.approx(0.2 * 0.5772156649 * 0.900453, abs=1e-6)
    assert expected_max_sharpe(1, 0.04) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0


def test_dsr_single_trial_equals_psr_against_zero():
    r = np.random.default_rng(3).normal(0.001, 0.01, 300)
    d = deflated_sharpe_ratio(r, n_trials=1)
    assert d.sr0 == 0.0 and d.dsr == pytest.approx(d.psr)
    assert d.sharpe == pytest.approx(r.mean() / r.std(ddof=1))
    assert d.n_obs == 300 and d.kurtosis == pytest.approx(3.0, abs=0.6)


def test_dsr_more_trials_deflate_more():
    r = np.random.default_rng(4).normal(0.002, 0.01, 250)
    trials = [0.05, 0.12, 0.20, 0.02]
    few = deflated_sharpe_ratio(r, n_trials=4, trial_sharpes=trials)
    many = deflated_sharpe_ratio(r, n_trials=400, trial_sharpes=trials)
    assert few.sharpe_variance == pytest.approx(np.var(trials, ddof=1))
    assert many.sr0 > few.sr0 > 0
    assert many.dsr < few.dsr < few.psr


def test_sharpe_ratio_flat_series_is_zero():
    assert sharpe_ratio(np.zeros(10)) == 0.0
    assert sharpe_ratio([0.01]) == 0.0


# CSCV by hand: 4 blocks of one row, 3 trials (A, B, C), metric = block mean.
HAND = np.array([
    [5.0, 1.0, 0.0],
    [4.0, 0.0, 2.0],
    [0.0, 2.0, 3.0],
    [1.0, 4.0, 2.0],
])
# in-sample blocks -> sums (A, B, C) -> winner -> out-of-sample sums -> winner's OOS rank -> logit
# {0,1}: 9 1 2 -> A; {2,3}: 1 6 5 -> rank 1 -> ln(1/3)   (overfit)
# {0,2}: 5 3 3 -> A; {1,3}: 5 4 4 -> rank 3 -> ln(3)
# {0,3}: 6 5 2 -> A; {1,2}: 4 2 5 -> rank 2 -> 0        (overfit: at the median)
# {1,2}: 4 2 5 -> C; {0,3}: 6 5 2 -> rank 1 -> ln(1/3)   (overfit)
# {1,3}: 5 4 4 -> A; {0,2}: 5 3 3 -> rank 3 -> ln(3)
# {2,3}: 1 6 5 -> B; {0,1}: 9 1 2 -> rank 1 -> ln(1/3)   (overfit)
# PBO = 4 / 6


def _mean(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=0)


def test_pbo_hand_computed_example():
    res = probability_of_backtest_overfitting(HAND, n_partitions=4, metric=_mean)
    assert res is not None
    assert res.n_combinations == 6 and res.n_trials == 3 and res.rows_used == 4
    third = math.log(1 / 3)
    np.testing.assert_allclose(res.logits, [third, math.log(3), 0.0, third, math.log(3), third], atol=1e-12)
    assert res.pbo == pytest.approx(4 / 6)
    np.testing.assert_allclose(res.is_best, [4.5, 2.5, 3.0, 2.5, 2.5, 3.0])
    np.testing.assert_allclose(res.oos_of_best, [0.5, 2.5, 2.0, 1.0, 2.5, 0.5])


def test_pbo_persistent_winner_is_zero_and_anti_persistent_is_one():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, (64, 5))
    skilled = noise.copy()
    skilled[:, 2] += 0.05  # one trial is best in every block
    res = probability_of_backtest_overfitting(skilled, n_partitions=8)
    assert res is not None and res.pbo == 0.0 and res.prob_oos_loss == 0.0
    # two trials that take turns: whichever wins in-sample loses out of sample
    t = np.arange(8)
    a = np.where(t % 2 == 0, 1.0, -1.0)
    flip = np.stack([a, -a], axis=1)
    res = probability_of_backtest_overfitting(flip, n_partitions=8, metric=_mean)
    # every IS half with more even blocks picks trial 0, which is then worse OOS;
    # balanced halves tie (rank 1.5 of 2 -> w = 1.5 / 3 = 0.5, logit 0)
    assert res is not None and res.pbo == 1.0


def test_pbo_drops_leading_rows_and_needs_two_trials():
    m = np.random.default_rng(1).normal(size=(21, 3))
    res = probability_of_backtest_overfitting(m, n_partitions=4)
    assert res is not None and res.rows_used == 20 and res.n_combinations == 6
    assert probability_of_backtest_overfitting(m[:, :1], n_partitions=4) is None
    with pytest.raises(ValueError):
        probability_of_backtest_overfitting(m, n_partitions=3)
