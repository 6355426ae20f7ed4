"""The plain-line verdicts: does the agent beat each baseline out of sample, and how likely is it luck.

* Per baseline: "beats" only with a higher mean Sharpe ratio and a higher mean return over the folds
  and a lower Sharpe ratio in fewer than half of them (the agent's seeds averaged per fold).
* The deflated Sharpe ratio of ``agent_selected`` (trials = seeds x ``configs_tried``) and the PBO
  over the seeds (CSCV), both on session (daily) returns of the stitched out-of-sample record
  (``tradebot.rl.overfitting``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tradebot.envs.performance import M
from tradebot.rl.walkforward.results import AGENT
from tradebot.rl.walkforward.stitching import session_returns

if TYPE_CHECKING:
    from tradebot.rl.overfitting import DeflatedSharpe, PBOResult
    from tradebot.rl.walkforward.results import EvaluationResult


@dataclass(frozen=True)
class Verdict:
    """Agent (seeds averaged per fold) against one baseline, on the per-fold test Sharpe ratios and returns."""

    baseline: str
    beats: bool
    agent_sharpe: float  # mean over folds
    baseline_sharpe: float
    agent_return: float  # mean over folds of the test-window total return
    baseline_return: float
    folds_worse: int
    folds: int

    @property
    def line(self) -> str:
        """One plain sentence. "beats" needs a higher mean Sharpe ratio and a higher mean return over
        the folds, and a lower Sharpe ratio in fewer than half of the folds; anything else is reported
        as "does NOT beat"."""
        word = "beats" if self.beats else "does NOT beat"
        return (f"agent {word} {self.baseline} out of sample: mean Sharpe {self.agent_sharpe:.2f} vs "
                f"{self.baseline_sharpe:.2f}, mean return {self.agent_return * 100:.2f}% vs "
                f"{self.baseline_return * 100:.2f}% ({self.folds_worse}/{self.folds} folds worse)")


def baseline_verdicts(per_fold: Mapping[str, Sequence[Mapping[str, float]]], baselines: Sequence[str]) -> list[Verdict]:
    """A verdict per baseline from each strategy's per-fold test metrics (``per_fold[AGENT]``: seed means)."""
    verdicts = []
    agent_sharpe = [p[M.SHARPE] for p in per_fold[AGENT]]
    agent_ret = [p[M.TOTAL_RETURN] for p in per_fold[AGENT]]
    n_folds = len(agent_sharpe)
    for b in baselines:
        b_sharpe = [p[M.SHARPE] for p in per_fold[b]]
        b_ret = [p[M.TOTAL_RETURN] for p in per_fold[b]]
        worse = sum(a < x for a, x in zip(agent_sharpe, b_sharpe))
        beats = (float(np.mean(agent_sharpe)) > float(np.mean(b_sharpe))
                 and float(np.mean(agent_ret)) > float(np.mean(b_ret)) and worse < n_folds / 2)
        verdicts.append(Verdict(b, beats, float(np.mean(agent_sharpe)), float(np.mean(b_sharpe)),
                                float(np.mean(agent_ret)), float(np.mean(b_ret)), worse, n_folds))
    return verdicts


@dataclass(frozen=True)
class OverfittingStatistics:
    deflated_sharpe: DeflatedSharpe | None
    pbo: PBOResult | None
    notes: list[str]  # why a statistic is missing or was computed on fewer blocks than asked


def overfitting_statistics(seed_equity: Mapping[int, pd.Series], selected_equity: pd.Series, initial_cash: float,
                           *, configs_tried: int, pbo_partitions: int) -> OverfittingStatistics:
    """The DSR of the selected record and the PBO over the seeds' records (stitched equity curves)."""
    from tradebot.rl.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting, sharpe_ratio

    notes: list[str] = []
    daily_trials = pd.DataFrame({s: session_returns(e, initial_cash) for s, e in seed_equity.items()})
    selected_daily = session_returns(selected_equity, initial_cash)
    n_seeds = len(seed_equity)
    n_trials = n_seeds * configs_tried
    dsr = None
    if len(selected_daily) >= 2:
        dsr = deflated_sharpe_ratio(selected_daily.to_numpy(), n_trials=n_trials,
                                    trial_sharpes=[sharpe_ratio(daily_trials[c].to_numpy()) for c in daily_trials])
    else:
        notes.append("deflated Sharpe ratio: fewer than 2 out-of-sample sessions")
    pbo = None
    if n_seeds < 2:
        notes.append("PBO: needs at least 2 seeds (trials)")
    else:
        t = len(daily_trials)
        s = min(pbo_partitions, t - t % 2)
        if s >= 2:
            if s < pbo_partitions:
                notes.append(f"PBO: {t} sessions allow only {s} CSCV blocks (asked for {pbo_partitions})")
            pbo = probability_of_backtest_overfitting(daily_trials.to_numpy(), n_partitions=s)
        else:
            notes.append(f"PBO: {t} out-of-sample sessions are too few for CSCV")
    return OverfittingStatistics(dsr, pbo, notes)


def overfitting_lines(result: EvaluationResult) -> list[str]:
    """The deflated Sharpe ratio and PBO, in words (annualised Sharpe ratios use 252 sessions)."""
    lines = []
    d = result.deflated_sharpe
    if d is not None:
        ann = math.sqrt(252)
        lines.append(f"deflated Sharpe ratio of agent_selected: {d.dsr:.3f} = probability that its true Sharpe ratio "
                     f"beats {d.sr0 * ann:.2f}, what the best of {d.n_trials} unskilled trials reaches by luck "
                     f"(observed {d.sharpe * ann:.2f} annualised over {d.n_obs} sessions, skew {d.skew:.2f}, "
                     f"kurtosis {d.kurtosis:.2f}); PSR(0) = {d.psr:.3f}")
    p = result.pbo
    if p is not None:
        lines.append(f"probability of backtest overfitting (CSCV over {p.n_trials} seeds, {p.n_partitions} blocks, "
                     f"{p.n_combinations} combinations): {p.pbo:.2f}; in-sample winner loses out of sample in "
                     f"{p.prob_oos_loss:.0%} of them")
    return lines + [f"note: {n}" for n in result.notes]
