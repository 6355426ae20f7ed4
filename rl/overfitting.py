"""How much of a backtest's Sharpe ratio survives the search that found it.

Two statistics, both computed on plain return series (one column per trial):

* **Deflated Sharpe ratio** (Bailey & López de Prado, "The Deflated Sharpe Ratio", 2014). The
  probabilistic Sharpe ratio (PSR, Bailey & López de Prado 2012) of an observed, non-annualised
  Sharpe ratio ``SR`` measured on ``T`` returns with skewness ``g3`` and (non-excess) kurtosis
  ``g4``, against a benchmark ``SR*``::

      PSR(SR*) = Phi( (SR - SR*) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2) )

  The DSR is ``PSR(SR0)`` where ``SR0`` is the Sharpe ratio the best of ``N`` independent trials
  would reach by luck alone, given the variance ``V`` of the trials' Sharpe ratios::

      SR0 = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))

  (``gamma`` = Euler-Mascheroni constant, ``e`` = Euler's number). With one trial ``SR0 = 0`` and the
  DSR is the plain PSR against zero. The paper's example (annualised SR 2.5 over 1,250 daily
  returns, skew -3, kurtosis 10, 100 trials whose annualised Sharpe ratios have variance 0.5) gives
  ``SR0 = 0.1132`` per day and ``DSR = 0.9004``; a unit test checks exactly that.

* **Probability of backtest overfitting** (Bailey, Borwein, López de Prado & Zhu, "The Probability
  of Backtest Overfitting", 2015), by combinatorially symmetric cross-validation (CSCV): the
  ``T x N`` matrix of trial returns is cut into ``S`` (even) consecutive blocks of equal length
  (the first ``T mod S`` rows are dropped); for each of the ``C(S, S/2)`` ways to pick half of the
  blocks as in-sample (the rest, in time order, is out-of-sample), the trial with the best
  in-sample metric is found, its out-of-sample rank ``r`` among the ``N`` trials is taken
  (1 = worst, ties averaged), ``w = r / (N + 1)`` and the logit ``lambda = ln(w / (1 - w))``.
  ``PBO`` is the share of combinations with ``lambda <= 0``: how often the in-sample winner is no
  better than the out-of-sample median. The metric defaults to the per-period Sharpe ratio.

Both need more than one trial to say anything about selection; with ``N = 1`` the DSR reduces to the
PSR and the PBO is undefined (``None``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


def sharpe_ratio(returns: np.ndarray | Sequence[float]) -> float:
    """Per-period Sharpe ratio ``mean / std (ddof 1)``, risk-free rate 0; 0.0 when the std is 0."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return 0.0
    sd = float(np.std(r, ddof=1))
    return float(np.mean(r)) / sd if sd > 1e-15 else 0.0


def _sharpe_columns(matrix: np.ndarray) -> np.ndarray:
    """Per-column Sharpe ratios of a ``T x N`` matrix (0 where a column is flat)."""
    m = np.asarray(matrix, dtype=np.float64)
    sd = m.std(axis=0, ddof=1)
    mean = m.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 1e-15, mean / np.where(sd > 1e-15, sd, 1.0), 0.0)


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """``SR0``: the expected maximum of ``n_trials`` Sharpe ratios with this variance and true mean 0.

    Same frequency as the variance (non-annualised when the variance is). 0.0 for a single trial.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if sharpe_variance < 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {sharpe_variance}")
    if n_trials == 1 or sharpe_variance == 0:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def probabilistic_sharpe_ratio(sharpe: float, n_obs: int, skew: float, kurtosis: float,
                               benchmark: float = 0.0) -> float:
    """PSR: probability that the true Sharpe ratio exceeds ``benchmark``.

    ``sharpe`` and ``benchmark`` are per period (not annualised); ``kurtosis`` is the plain
    (non-excess) kurtosis, 3 for normal returns.
    """
    if n_obs < 2:
        raise ValueError(f"need at least 2 returns, got {n_obs}")
    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe ** 2
    if denom <= 0:  # moments so extreme that the variance estimate of the Sharpe ratio breaks down
        denom = 1e-12
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)
    return float(stats.norm.cdf(z))


@dataclass(frozen=True)
class DeflatedSharpe:
    """The DSR of one return series and everything it was computed from (per-period units)."""

    dsr: float  # PSR(SR0): probability that the true Sharpe ratio beats the best-of-N luck level
    psr: float  # PSR(0): probability that the true Sharpe ratio is positive
    sharpe: float  # observed per-period Sharpe ratio
    sr0: float  # expected maximum Sharpe ratio of n_trials unskilled trials
    n_trials: int
    n_obs: int
    skew: float
    kurtosis: float  # non-excess
    sharpe_variance: float  # variance of the trials' Sharpe ratios

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def deflated_sharpe_ratio(returns: np.ndarray | Sequence[float], *, n_trials: int,
                          trial_sharpes: np.ndarray | Sequence[float] | None = None,
                          sharpe_variance: float | None = None) -> DeflatedSharpe:
    """DSR of ``returns`` (the selected strategy's per-period returns) after ``n_trials`` trials.

    The variance of the trials' per-period Sharpe ratios is ``sharpe_variance`` when given, else the
    sample variance (ddof 1) of ``trial_sharpes`` (0 with fewer than two). Skewness and kurtosis are
    the sample moments of ``returns`` (``scipy.stats.skew`` / ``kurtosis(fisher=False)``, biased,
    as in the paper); a flat series has skew 0 and kurtosis 3.
    """
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        raise ValueError(f"need at least 2 returns, got {len(r)}")
    if sharpe_variance is None:
        trials = np.asarray(trial_sharpes if trial_sharpes is not None else [], dtype=np.float64)
        sharpe_variance = float(np.var(trials, ddof=1)) if len(trials) >= 2 else 0.0
    sr = sharpe_ratio(r)
    if float(np.std(r)) > 1e-15:
        skew = float(stats.skew(r))
        kurt = float(stats.kurtosis(r, fisher=True)) + 3.0
    else:
        skew, kurt = 0.0, 3.0
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    return DeflatedSharpe(
        dsr=probabilistic_sharpe_ratio(sr, len(r), skew, kurt, sr0),
        psr=probabilistic_sharpe_ratio(sr, len(r), skew, kurt, 0.0),
        sharpe=sr, sr0=sr0, n_trials=int(n_trials), n_obs=len(r), skew=skew, kurtosis=kurt,
        sharpe_variance=float(sharpe_variance))


@dataclass(frozen=True)
class PBOResult:
    """CSCV outcome: the PBO and, per combination, the logit and the winner's in/out-of-sample metric."""

    pbo: float  # share of combinations whose in-sample winner ranks at or below the OOS median
    logits: np.ndarray  # lambda per combination
    n_partitions: int  # S
    n_combinations: int  # C(S, S/2)
    n_trials: int  # N
    rows_used: int  # T - (T mod S)
    is_best: np.ndarray  # in-sample metric of the winner, per combination
    oos_of_best: np.ndarray  # its out-of-sample metric
    prob_oos_loss: float  # share of combinations where the winner's OOS metric is below 0

    def to_dict(self) -> dict[str, float | int]:
        return {"pbo": self.pbo, "n_partitions": self.n_partitions, "n_combinations": self.n_combinations,
                "n_trials": self.n_trials, "rows_used": self.rows_used, "prob_oos_loss": self.prob_oos_loss,
                "logit_median": float(np.median(self.logits))}


def probability_of_backtest_overfitting(returns: np.ndarray, n_partitions: int = 16,
                                        metric: Callable[[np.ndarray], np.ndarray] | None = None) -> PBOResult | None:
    """PBO of choosing the best of the ``N`` columns of ``returns`` (``T x N``) by CSCV.

    ``metric`` maps a ``t x N`` block to ``N`` scores (default: per-column Sharpe ratio). Returns None
    when there are fewer than two trials. ``n_partitions`` must be even and leave at least one row per
    block.
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"returns must be a T x N matrix, got shape {m.shape}")
    t, n = m.shape
    if n < 2:
        return None
    if n_partitions < 2 or n_partitions % 2:
        raise ValueError(f"n_partitions must be an even number >= 2, got {n_partitions}")
    if t < n_partitions:
        raise ValueError(f"{t} rows cannot be cut into {n_partitions} blocks; use fewer partitions")
    score = metric or _sharpe_columns
    m = m[t % n_partitions:]
    blocks = np.split(m, n_partitions)
    everything = set(range(n_partitions))
    logits, is_best, oos_best = [], [], []
    for chosen in itertools.combinations(range(n_partitions), n_partitions // 2):
        rest = sorted(everything - set(chosen))
        r_is = np.asarray(score(np.concatenate([blocks[i] for i in chosen])), dtype=np.float64)
        r_oos = np.asarray(score(np.concatenate([blocks[i] for i in rest])), dtype=np.float64)
        best = int(np.argmax(r_is))
        rank = float(stats.rankdata(r_oos)[best])  # 1 = worst; ties get their average rank
        w = rank / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
        is_best.append(float(r_is[best]))
        oos_best.append(float(r_oos[best]))
    lam = np.asarray(logits)
    oos = np.asarray(oos_best)
    return PBOResult(pbo=float(np.mean(lam <= 0)), logits=lam, n_partitions=n_partitions,
                     n_combinations=len(lam), n_trials=n, rows_used=len(m), is_best=np.asarray(is_best),
                     oos_of_best=oos, prob_oos_loss=float(np.mean(oos < 0)))
