"""Walk-forward evaluation: train on rolling folds, test out of sample, compare with every baseline.

How to run
----------
``tradebot evaluate --config experiments/walkforward.yaml [--out DIR] [--address ray://...]`` or
``tradebot.rl.evaluate.evaluate(load_walkforward_config(path))``. Re-running the same command resumes: a
fold/seed whose training finished is loaded from its checkpoint (``tradebot.rl.train.train`` returns at
once), an interrupted one continues from its latest checkpoint, and a finished test is read back
from ``test/`` (if it was made with the same checkpoint). On a small shared machine set
``OMP_NUM_THREADS=1``: the networks are tiny, and torch's default thread pool, contending with
other processes, made a PPO iteration about 15 times slower here (50 s instead of 3.5 s).

The config (``WalkForwardConfig``; an unknown key is a one-line error naming it)::

    data:       {path: ..., symbol: null, start: 2021-01-01, end: null}   # dates folds may use
    folds:      {unit: months, train: 6, validation: 1, test: 1, step: 2, purge: 2, embargo: 0,
                 anchored: false, max_folds: null}
    evaluation: {seeds: [0, 1, 2], baselines: null, baseline_seed: 0, configs_tried: 1,
                 pbo_partitions: 8, output_dir: runs/walkforward, mlflow_experiment: ...,
                 registered_model: ...}
    training:   {env: {...}, ppo: {...}, model: {...}, run: {...}}   # tradebot.rl.config sections, no data

The fold rule
-------------
Sessions are the IST trading dates that have bars in ``[data.start, data.end)``.

* ``unit: sessions``: fold ``k`` trains on ``train`` sessions starting at session ``k * step``
  (``anchored``: always at the first session, growing by ``step``), skips ``purge`` sessions,
  validates on the next ``validation`` sessions, skips ``purge`` sessions, tests on the next
  ``test`` sessions.
* ``unit: months``: the same with calendar months (``train``/``validation``/``test``/``step``
  counted in months from the first month with data); the purge gaps (in sessions) are cut from the
  end of the training window and from the end of the validation window, so each test window is a
  whole calendar month (or several).
* Folds continue while the test window lies inside the data; ``max_folds`` keeps the first N.
* ``step`` must be at least ``test``: test windows never overlap, and the stitched out-of-sample
  record uses each session at most once. ``embargo``: the first ``embargo`` sessions after a test
  window are also left out of the next fold's test window (training always precedes testing in a
  walk-forward, so the embargo of purged k-fold CV, which drops training data that follows a test
  window, has nothing to drop inside a fold; here it keeps consecutive test windows apart).
* Train -> validation -> test never overlap and are strictly ordered (tested).

Each fold/seed is trained by ``tradebot.rl.train.train`` (train dates = the fold's training sessions,
validation dates = its validation sessions: early stopping and the best checkpoint), then tested
with the shared engine on the test dates only (``tradebot.rl.backtest_policy``): the policy acts bar by bar
on the env's observations (the env is given every earlier bar, for the feature warm-up only; the
account starts flat at the first test bar), and the actions go through
``tradebot.envs.backtest.run_backtest`` on the test bars, with the env's own ATR, after costs.

Every baseline of ``tradebot.envs.baselines.BASELINES`` is backtested on the same test bars under the same
engine settings (its own overrides applied, as in ``tradebot backtest --compare``): intraday
baselines decide on the earlier bars too (indicator warm-up) and only their test-window actions
are backtested (every test window starts at a session open, where an intraday account is flat);
baselines that carry positions overnight (the passive ``hold``) decide on the test bars alone, so
they start flat in the test window like the agent (``hold`` buys once its ATR(14), which the
engine sizes with, is known: the 15th bar, 10:30 on 5-minute bars).

What it reports
---------------
* ``summary.csv`` / ``summary.json``: per fold and overall, mean and spread (std, ddof 1) of every
  metric (``tradebot.envs.performance.M``) for ``agent`` (its seeds aggregated), ``agent_selected`` (per fold,
  the seed with the best validation score: chosen without looking at the test) and each baseline;
  scope ``fold`` (one test window), ``folds`` (mean and spread over folds of the per-fold values)
  and ``stitched`` (metrics of the out-of-sample equity chained across test windows).
* ``runs.csv``: one row per fold and seed (validation score, iterations, test metrics).
* ``report.html``: per-fold Sharpe ratio and return of the agent against every baseline and the
  stitched out-of-sample equity (plotly, self-contained).
* The verdict per baseline ("beats" only with a higher mean Sharpe ratio and a higher mean return
  over the folds and a lower Sharpe ratio in fewer than half of them), the deflated Sharpe ratio of
  ``agent_selected`` (trials = seeds x ``configs_tried``) and the PBO over the seeds (CSCV), both
  on session (daily) returns of the stitched record (``tradebot.rl.overfitting``).
* MLflow: a parent run for the evaluation, a nested run per fold (test dates, fold metrics), and
  under each fold the training run of every seed (made by ``train``, tagged with its parent and
  given the ``test_*`` metrics); the summary, runs table, config and plot are artifacts of the parent.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from tradebot.core.files import write_text_atomic
from tradebot.core.serialize import json_text
from tradebot.envs.performance import METRIC_LABELS, M
from tradebot.rl.config import DataSection, DateRange, ModelSection, PPOSection, RunSection, TrainConfig
from tradebot.core.config import FrozenConfig, load_config, parse_config
from tradebot.core.errors import UserInputError

AGENT = "agent"
AGENT_SELECTED = "agent_selected"
SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED = "fold", "folds", "stitched"
STATE_FILE = "evaluation.json"
CONFIG_FILE = "walkforward.yaml"
SUMMARY_CSV, SUMMARY_JSON, RUNS_CSV, REPORT_HTML = "summary.csv", "summary.json", "runs.csv", "report.html"
TEST_DIR = "test"
# Sections of the config that must not change when an evaluation is resumed (they decide what was trained).
_FIXED_ON_RESUME = ("data", "folds", "training", "evaluation.seeds", "evaluation.registered_model",
                    "evaluation.mlflow_experiment")
# Keys of the training template's run section that the evaluation sets per fold and seed.
_RUN_KEYS_SET_HERE = {"seed": "evaluation.seeds", "output_dir": "evaluation.output_dir (or --out)",
                      "mlflow_experiment": "evaluation.mlflow_experiment",
                      "registered_model": "evaluation.registered_model"}


# ---- configuration ----------------------------------------------------------------------------

class WalkForwardData(FrozenConfig):
    """The bar file and the dates the folds may use (half-open, IST); earlier bars warm features up."""

    path: str = Field(description="bar file (CSV, CSV.gz or Parquet)")
    symbol: str | None = Field(None, description="Fyers symbol; null: taken from the file name")
    start: dt.date | None = Field(None, description="first day the folds may use; null: the first bar")
    end: dt.date | None = Field(None, description="first day excluded; null: after the last bar")

    @model_validator(mode="after")
    def _ordered(self) -> "WalkForwardData":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class FoldSpec(FrozenConfig):
    """How the dates are cut into train / validation / test windows (see the module docstring)."""

    unit: Literal["sessions", "months"] = Field("months", description="unit of train/validation/test/step")
    train: int = Field(6, ge=1, description="training window length")
    validation: int = Field(1, ge=1, description="validation window length")
    test: int = Field(1, ge=1, description="test window length")
    step: int | None = Field(None, ge=1, description="shift between folds; null: the test length")
    purge: int = Field(0, ge=0, description="sessions left out between train and validation and between "
                                            "validation and test")
    embargo: int = Field(0, ge=0, description="sessions after a test window left out of the next test window")
    anchored: bool = Field(False, description="training windows all start at the first session and grow")
    max_folds: int | None = Field(None, ge=1, description="keep only the first N folds")

    @property
    def step_size(self) -> int:
        return self.step if self.step is not None else self.test

    @model_validator(mode="after")
    def _no_overlapping_tests(self) -> "FoldSpec":
        if self.step_size < self.test:
            raise ValueError(f"step {self.step_size} is shorter than the test window {self.test}: test windows "
                             "would overlap; use step >= test")
        return self


class EvaluationSection(FrozenConfig):
    """Seeds, baselines, the overfitting statistics and where everything goes."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="training seeds per fold (each fold trains one policy per seed)")
    baselines: list[str] | None = Field(None, description="baselines to compare with; null: every baseline")
    baseline_seed: int = Field(0, description="seed of the random baseline")
    configs_tried: int = Field(1, ge=1, description="configurations tried so far (this one included): "
                                                    "the deflated Sharpe ratio counts seeds x configs_tried trials")
    pbo_partitions: int = Field(8, ge=2, description="CSCV blocks S (even; lowered to fit short records)")
    output_dir: str = Field("runs/walkforward", description="fold checkpoints, tests, summary; re-running resumes")
    mlflow_experiment: str = Field("tradebot-walkforward",
                                   description="MLflow experiment (evaluation and training runs)")
    registered_model: str = Field("tradebot-walkforward",
                                  description="registered model the fold policies are versions of")

    @model_validator(mode="after")
    def _checks(self) -> "EvaluationSection":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed; give distinct seeds")
        if self.pbo_partitions % 2:
            raise ValueError(f"pbo_partitions must be even, got {self.pbo_partitions}")
        if self.baselines is not None:
            from tradebot.envs.baselines import BASELINES

            unknown = [b for b in self.baselines if b not in BASELINES]
            if unknown:
                raise ValueError(f"unknown baseline {unknown[0]!r}; valid: {', '.join(BASELINES)}")
        return self


class TrainingTemplate(FrozenConfig):
    """``tradebot.rl.config.TrainConfig`` without ``data``: the dates come from the folds."""

    env: dict[str, Any] = Field(default_factory=dict, description="the env's config (TradingEnv: envs.EnvConfig)")
    ppo: PPOSection = Field(default_factory=PPOSection)
    model: ModelSection = Field(default_factory=ModelSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _run_keys_not_set(self) -> "TrainingTemplate":
        for key, where in _RUN_KEYS_SET_HERE.items():
            if key in self.run.model_fields_set:
                raise ValueError(f"run.{key} is set per fold by the evaluation; set {where} instead")
        return self


class WalkForwardConfig(FrozenConfig):
    """Everything ``tradebot evaluate`` needs; see the module docstring for the YAML layout."""

    data: WalkForwardData
    folds: FoldSpec = Field(default_factory=FoldSpec)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    training: TrainingTemplate = Field(default_factory=TrainingTemplate)

    def dump(self) -> dict[str, Any]:
        """Plain data (JSON types), without the training run keys the evaluation sets itself."""
        return self.model_dump(mode="json", exclude={"training": {"run": set(_RUN_KEYS_SET_HERE)}})

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.dump(), sort_keys=False)

    @property
    def baseline_names(self) -> list[str]:
        from tradebot.envs.baselines import BASELINES

        return list(self.evaluation.baselines) if self.evaluation.baselines is not None else list(BASELINES)

    def train_config(self, fold: "Fold", seed: int, output_dir: Path) -> TrainConfig:
        """The ``TrainConfig`` of one fold and seed."""
        t = self.training
        run = t.run.model_copy(update={"seed": seed, "output_dir": str(output_dir),
                                       "mlflow_experiment": self.evaluation.mlflow_experiment,
                                       "registered_model": self.evaluation.registered_model})
        data = DataSection(path=self.data.path, symbol=self.data.symbol, train=fold.train_range,
                           validation=fold.validation_range)
        return TrainConfig(data=data, env=dict(t.env), ppo=t.ppo, model=t.model, run=run)


def load_walkforward_config(path: str | Path) -> WalkForwardConfig:
    """Load a ``WalkForwardConfig`` from YAML (a missing file or unknown key is a ``UserInputError``)."""
    return load_config(WalkForwardConfig, path)


# ---- folds ------------------------------------------------------------------------------------

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: the IST sessions of each window (each tuple sorted, windows in order)."""

    index: int
    train: tuple[dt.date, ...]
    validation: tuple[dt.date, ...]
    test: tuple[dt.date, ...]
    purged: tuple[dt.date, ...] = ()  # sessions left out between the windows (purge gaps)
    embargoed: tuple[dt.date, ...] = ()  # sessions left out of the start of the test window

    @property
    def train_range(self) -> DateRange:
        return DateRange(start=self.train[0], end=self.train[-1] + _DAY)

    @property
    def validation_range(self) -> DateRange:
        return DateRange(start=self.validation[0], end=self.validation[-1] + _DAY)

    @property
    def test_range(self) -> DateRange:
        return DateRange(start=self.test[0], end=self.test[-1] + _DAY)

    @property
    def label(self) -> str:
        return f"fold {self.index} (test {self.test[0]}..{self.test[-1]})"

    def to_dict(self) -> dict[str, Any]:
        def window(days: tuple[dt.date, ...]) -> dict[str, Any]:
            return {"first": days[0].isoformat(), "last": days[-1].isoformat(), "sessions": len(days)}

        return {"index": self.index, "train": window(self.train), "validation": window(self.validation),
                "test": window(self.test), "purged": [d.isoformat() for d in self.purged],
                "embargoed": [d.isoformat() for d in self.embargoed]}


def trading_sessions(index: pd.DatetimeIndex, start: dt.date | None = None,
                     end: dt.date | None = None) -> list[dt.date]:
    """The IST calendar dates that have bars, sorted, within ``[start, end)``."""
    from tradebot.core.nse_time import IST

    days = pd.DatetimeIndex(index).tz_convert(IST).normalize().unique()
    out = sorted({d.date() for d in days})
    return [d for d in out if (start is None or d >= start) and (end is None or d < end)]


def _month_key(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def _window_months(sessions: Sequence[dt.date], first_month: int, lo: int, hi: int) -> list[dt.date]:
    """Sessions in calendar months ``[first_month + lo, first_month + hi)``."""
    return [d for d in sessions if first_month + lo <= _month_key(d) < first_month + hi]


def _month_end(key: int) -> dt.date:
    """The day after the last day of month ``key``."""
    year, month = divmod(key, 12)
    return dt.date(year, month + 1, calendar.monthrange(year, month + 1)[1]) + _DAY


def make_folds(sessions: Sequence[dt.date], spec: FoldSpec, end: dt.date | None = None) -> list[Fold]:
    """The walk-forward folds over ``sessions`` (sorted IST dates) by the rule in the module docstring.

    ``end``: the first day after the usable data (months unit: a test month must end by then); None:
    the day after the last session.
    """
    sessions = sorted(sessions)
    if not sessions:
        return []
    end = end or sessions[-1] + _DAY
    raw: list[tuple[list[dt.date], list[dt.date], list[dt.date], list[dt.date]]] = []
    step, p = spec.step_size, spec.purge
    k = 0
    while spec.max_folds is None or len(raw) < spec.max_folds:
        if spec.unit == "sessions":
            t0 = 0 if spec.anchored else k * step
            t1 = t0 + spec.train + (k * step if spec.anchored else 0)
            v0, v1 = t1 + p, t1 + p + spec.validation
            s0, s1 = v1 + p, v1 + p + spec.test
            if s1 > len(sessions):
                break
            train, val, test = sessions[t0:t1], sessions[v0:v1], sessions[s0:s1]
            purged = sessions[t1:v0] + sessions[v1:s0]
        else:
            m0 = _month_key(sessions[0])
            a = 0 if spec.anchored else k * step
            b = spec.train + k * step
            c = b + spec.validation
            e = c + spec.test
            if _month_end(m0 + e - 1) > end or not _window_months(sessions, m0, c, e):
                break
            train_all = _window_months(sessions, m0, a, b)
            val_all = _window_months(sessions, m0, b, c)
            train, val = train_all[:len(train_all) - p], val_all[:len(val_all) - p]
            purged = train_all[len(train_all) - p:] + val_all[len(val_all) - p:] if p else []
            test = _window_months(sessions, m0, c, e)
        if not train or not val or not test:
            raise UserInputError(f"fold {k}: the purge of {p} sessions leaves an empty training or validation "
                                 "window; lower folds.purge or lengthen the windows")
        raw.append((train, val, test, purged))
        k += 1
    folds: list[Fold] = []
    position = {d: i for i, d in enumerate(sessions)}
    for i, (train, val, test, purged) in enumerate(raw):
        embargoed: list[dt.date] = []
        if i > 0 and spec.embargo:
            last_test = position[raw[i - 1][2][-1]]
            embargoed = [d for d in test if position[d] <= last_test + spec.embargo]
            test = [d for d in test if position[d] > last_test + spec.embargo]
            if not test:
                raise UserInputError(f"fold {i}: the embargo of {spec.embargo} sessions empties its test window; "
                                     "lower folds.embargo or raise folds.step")
        folds.append(Fold(i, tuple(train), tuple(val), tuple(test), tuple(purged), tuple(embargoed)))
    return folds


# ---- testing a policy and the baselines on one fold --------------------------------------------

@dataclass
class FoldData:
    """The bars a fold's test needs: every bar up to the test end, and where the test starts."""

    bars: Any  # tradebot.features.bars.Bars, up to the test end
    start: int  # index of the first test bar in ``bars``

    @property
    def test_bars(self):
        return self.bars.slice(self.start, None)


def fold_data(bars, fold: Fold) -> FoldData:
    upto = bars.between(None, fold.test_range.end.isoformat())
    start = int(upto.index.searchsorted(pd.Timestamp(fold.test[0].isoformat(), tz=upto.index.tz)))
    if start >= len(upto) - 1:
        raise UserInputError(f"{fold.label}: fewer than 2 bars in the test window")
    return FoldData(upto, start)


def _env_config(env: dict[str, Any]):
    from tradebot.envs.trading_env import EnvConfig

    return parse_config(EnvConfig, env, "training.env")


def policy_backtest(policy, bars, fold: Fold, train_cfg: TrainConfig):
    """The policy's backtest over the fold's test dates: ``(BacktestResult, actions)``.

    ``tradebot.rl.backtest_policy`` does the work: a TradingEnv over every bar before the test end (earlier
    bars only warm the features up) under the training config's env section, reset at the first test
    bar (account flat, recurrent state fresh), stepped with the policy's deterministic actions; the
    actions then go through ``run_backtest`` on the test bars with the env's engine and ATR.
    """
    from tradebot.rl.backtest_policy import backtest_policy, policy_env_config

    run = backtest_policy(policy, bars, policy_env_config(train_cfg), start=fold.test[0], end=fold.test_range.end)
    return run.result, run.actions


def baseline_backtest(name: str, data: FoldData, engine, seed: int = 0):
    """Backtest baseline ``name`` on the test bars under ``engine`` (its own overrides applied)."""
    from tradebot.envs.backtest import run_backtest
    from tradebot.envs.baselines import get_baseline
    from tradebot.envs.engine import compute_atr

    baseline = get_baseline(name)
    run_config = baseline.engine_config(engine)
    if run_config.flat_at_session_end:  # decide with the warm-up bars, keep the test window's actions
        actions = baseline(data.bars, run_config, seed=seed)[data.start:]
        atr = compute_atr(data.bars, run_config.atr_period)[data.start:]
        return run_backtest(data.test_bars, actions, run_config, atr=atr)
    test = data.test_bars  # carried positions: start flat at the first test bar, like the agent
    return run_backtest(test, baseline(test, run_config, seed=seed), run_config)


# ---- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TestRecord:
    """What one test window left behind, enough to chain windows into one out-of-sample record."""

    equity: pd.Series  # marked at each bar's close, starting from the initial cash
    positions: np.ndarray
    trade_pnl: np.ndarray  # net P&L of each closed trade
    traded_notional: float  # entries and exits of every closed trade
    costs: float
    invalid_actions: int

    @classmethod
    def from_result(cls, result) -> "TestRecord":
        """From an ``tradebot.envs.backtest.BacktestResult``."""
        return cls.from_frames(result.equity, result.positions.to_numpy(), result.trades, result.costs_total,
                               result.invalid_actions)

    @classmethod
    def from_frames(cls, equity: pd.Series, positions: np.ndarray, trades: pd.DataFrame, costs: float,
                    invalid_actions: int) -> "TestRecord":
        pnl = trades["pnl"].to_numpy(dtype=np.float64) if len(trades) else np.zeros(0)
        notional = 0.0
        if len(trades):
            qty = trades["qty"].to_numpy(dtype=np.float64)
            notional = float(np.nansum(qty * trades["entry_price"].to_numpy(dtype=np.float64))
                             + np.nansum(qty * trades["exit_price"].to_numpy(dtype=np.float64)))
        return cls(equity, np.asarray(positions, dtype=np.float64), pnl, notional, float(costs), int(invalid_actions))


@dataclass
class SeedRun:
    """One fold/seed: training outcome and test result."""

    fold: int
    seed: int
    output_dir: Path
    checkpoint: str
    iterations: int
    stopped_early: bool
    best_validation_return: float | None
    mlflow_run_id: str
    model_uri: str
    metrics: dict[str, float]
    record: TestRecord
    reused_training: bool
    reused_test: bool
    selected: bool = False


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


@dataclass(frozen=True)
class EvaluationEvent:
    """Progress: ``stage`` is one of fold, baselines, train, iteration, test, done (a fold/seed finished), summary."""

    stage: str
    fold: int | None = None
    folds: int = 0
    seed: int | None = None
    message: str = ""
    iteration: int | None = None
    iterations: int | None = None


@dataclass
class EvaluationResult:
    output_dir: Path
    folds: list[Fold]
    runs: list[SeedRun]
    baselines: dict[int, dict[str, Any]]  # fold -> name -> Metrics
    summary: pd.DataFrame
    verdicts: list[Verdict]
    deflated_sharpe: Any  # tradebot.rl.overfitting.DeflatedSharpe | None
    pbo: Any  # tradebot.rl.overfitting.PBOResult | None
    parent_run_id: str
    stitched: dict[str, pd.Series] = field(default_factory=dict)  # strategy (and agent_seed_S) -> out-of-sample equity
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def reused_trainings(self) -> int:
        return sum(r.reused_training for r in self.runs)


# ---- the entry point --------------------------------------------------------------------------

def evaluate(cfg: WalkForwardConfig, *, output_dir: str | Path | None = None, address: str | None = None,
             on_event: Callable[[EvaluationEvent], None] | None = None) -> EvaluationResult:
    """Run (or resume) the walk-forward evaluation of ``cfg`` into ``output_dir``."""
    from tradebot.features.bars import load_bars

    if output_dir is not None:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"output_dir": str(output_dir)})})
    out = Path(cfg.evaluation.output_dir).resolve()
    emit = on_event or (lambda event: None)
    path = Path(cfg.data.path)
    if not path.is_file():
        raise UserInputError(f"{path}: bar file not found (data.path)")
    bars = load_bars(path, symbol=cfg.data.symbol)
    sessions = trading_sessions(bars.index, cfg.data.start, cfg.data.end)
    folds = make_folds(sessions, cfg.folds, cfg.data.end)
    if not folds:
        raise UserInputError(f"{path}: {len(sessions)} sessions in the data range leave no complete fold; "
                             "shorten folds.train/validation/test or widen data.start/end")
    _check_resumable(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG_FILE, cfg.to_yaml())
    write_text_atomic(out / "folds.json", json_text({"folds": [f.to_dict() for f in folds]}))
    env_cfg = _env_config(cfg.training.env)  # a bad env config fails here, before Ray starts

    import mlflow
    import ray
    from mlflow import MlflowClient

    from tradebot.rl.train import _experiment_id, default_tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tracking_uri = default_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = _experiment_id(cfg.evaluation.mlflow_experiment, tracking_uri)
    state = _read_state(out)
    parent = _parent_run(client, experiment_id, out, cfg, folds, state)

    started_ray = False
    status = "FAILED"
    try:
        if not ray.is_initialized():
            addr = address or os.environ.get("RAY_ADDRESS")
            if addr:
                ray.init(address=addr, logging_level=logging.WARNING)
            else:
                ray.init(address="local", num_cpus=cfg.training.run.num_env_runners + 1, include_dashboard=False,
                         logging_level=logging.WARNING)
            started_ray = True
        runs: list[SeedRun] = []
        baselines: dict[int, dict[str, Any]] = {}
        baseline_records: dict[int, dict[str, TestRecord]] = {}
        for fold in folds:
            emit(EvaluationEvent("fold", fold.index, len(folds), message=fold.label))
            fold_run = _fold_run(client, experiment_id, parent, fold, state, out)
            data = fold_data(bars, fold)
            emit(EvaluationEvent("baselines", fold.index, len(folds), message="baselines"))
            metrics_b, records_b = _fold_baselines(cfg, data, env_cfg.engine, bars.timeframe)
            baselines[fold.index], baseline_records[fold.index] = metrics_b, records_b
            fold_runs = [_seed_run(cfg, fold, seed, bars, out, client, fold_run, emit, address, len(folds))
                         for seed in cfg.evaluation.seeds]
            _mark_selected(fold_runs)
            runs.extend(fold_runs)
            _log_fold(client, fold_run, fold_runs, metrics_b)
        emit(EvaluationEvent("summary", message="summary"))
        result = _summarise(cfg, out, folds, runs, baselines, baseline_records, bars.timeframe, parent)
        _write_outputs(result, cfg)
        _log_parent(client, parent, result, out)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent, status)
        if started_ray:
            ray.shutdown()


# ---- one fold/seed ----------------------------------------------------------------------------

def _seed_run(cfg: WalkForwardConfig, fold: Fold, seed: int, bars, out: Path, client, fold_run: str, emit,
              address: str | None, n_folds: int) -> SeedRun:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from tradebot.envs.performance import metrics_from_result
    from tradebot.rl.policy import Policy
    from tradebot.rl.train import IterationReport, train

    seed_dir = out / f"fold_{fold.index:02d}" / f"seed_{seed}"
    train_cfg = cfg.train_config(fold, seed, seed_dir)
    emit(EvaluationEvent("train", fold.index, n_folds, seed, message=f"training seed {seed}",
                         iterations=train_cfg.run.iterations))

    def on_iteration(report: IterationReport) -> None:
        val = report.validation_return
        emit(EvaluationEvent("iteration", fold.index, n_folds, seed, iteration=report.iteration,
                             iterations=report.iterations, message=f"val {val:.4f}" if val is not None else ""))

    result = train(train_cfg, address=address, on_iteration=on_iteration)
    client.set_tag(result.mlflow_run_id, MLFLOW_PARENT_RUN_ID, fold_run)
    client.set_tag(result.mlflow_run_id, "walkforward.fold", str(fold.index))
    client.set_tag(result.mlflow_run_id, "walkforward.seed", str(seed))
    checkpoint = str(result.final_checkpoint.resolve())
    test_dir = seed_dir / TEST_DIR
    cached = _read_test(test_dir, checkpoint)
    if cached is not None:
        metrics, record = cached
        reused_test = True
    else:
        emit(EvaluationEvent("test", fold.index, n_folds, seed, message=f"testing seed {seed}"))
        policy = Policy.load(result.final_checkpoint.resolve())  # (RLlib reads a relative path as a URI)
        bt, actions = policy_backtest(policy, bars, fold, train_cfg)
        m = metrics_from_result(bt, bars.timeframe)
        metrics, record = dict(m.values), TestRecord.from_result(bt)
        _write_test(test_dir, checkpoint, m, bt, actions)
        client.log_batch(result.mlflow_run_id, metrics=_mlflow_metrics({f"test_{k}": v for k, v in metrics.items()}))
        reused_test = False
    emit(EvaluationEvent("done", fold.index, n_folds, seed, message=f"seed {seed} tested"))
    return SeedRun(fold=fold.index, seed=seed, output_dir=seed_dir, checkpoint=checkpoint, iterations=result.iterations,
                   stopped_early=result.stopped_early, best_validation_return=result.best_validation_return,
                   mlflow_run_id=result.mlflow_run_id, model_uri=result.model_uri, metrics=metrics, record=record,
                   reused_training=result.already_complete, reused_test=reused_test)


def _mark_selected(runs: list[SeedRun]) -> None:
    """The fold's selected model: best validation score (ties and missing scores: the first seed)."""
    def score(r: SeedRun) -> float:
        return r.best_validation_return if r.best_validation_return is not None else -math.inf

    best = max(runs, key=score)  # max keeps the first of equal scores
    best.selected = True


def _fold_baselines(cfg: WalkForwardConfig, data: FoldData, engine, timeframe: str):
    from tradebot.envs.performance import metrics_from_result

    metrics, records = {}, {}
    for name in cfg.baseline_names:
        res = baseline_backtest(name, data, engine, cfg.evaluation.baseline_seed)
        metrics[name] = metrics_from_result(res, timeframe)
        records[name] = TestRecord.from_result(res)
    return metrics, records


def _write_test(test_dir: Path, checkpoint: str, metrics, bt, actions: np.ndarray) -> None:
    test_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"equity": bt.equity.to_numpy(), "position": bt.positions.to_numpy(), "action": actions},
                         index=pd.Index([t.isoformat() for t in bt.equity.index], name="timestamp"))
    write_text_atomic(test_dir / "equity.csv", frame.to_csv(float_format="%.10g"))
    write_text_atomic(test_dir / "trades.csv", bt.trades.to_csv(index=False, float_format="%.10g"))
    # metrics.json last: its presence says the test is complete
    write_text_atomic(test_dir / "metrics.json", json_text({"checkpoint": checkpoint, **metrics.to_dict()}))


def _read_test(test_dir: Path, checkpoint: str):
    from tradebot.core.nse_time import IST

    path = test_dir / "metrics.json"
    if not all((test_dir / name).is_file() for name in ("metrics.json", "equity.csv", "trades.csv")):
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
        metrics = dict(saved["metrics"])
        record = TestRecord.from_frames(equity, frame["position"].to_numpy(), trades, metrics[M.COSTS],
                                        int(metrics[M.INVALID_ACTIONS]))
        return metrics, record
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: test again


# ---- aggregation ------------------------------------------------------------------------------

def _stats(values: Sequence[float]) -> tuple[float, float | None]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def _row(scope: str, fold: Fold | None, strategy: str, samples: Sequence[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"scope": scope, "fold": fold.index if fold is not None else None,
                           "test_first": fold.test[0].isoformat() if fold is not None else None,
                           "test_last": fold.test[-1].isoformat() if fold is not None else None,
                           "strategy": strategy, "n": len(samples)}
    for key in M.ALL:
        mean, std = _stats([s[key] for s in samples])
        row[f"{key}_mean"], row[f"{key}_std"] = mean, std
    return row


def stitch(equities: Sequence[pd.Series], initial_cash: float) -> pd.Series:
    """Chain test-window equity curves (each starting from ``initial_cash``) into one record."""
    from tradebot.envs.performance import returns_from_equity

    r = pd.concat([returns_from_equity(e, initial_cash) for e in equities])
    return (initial_cash * (1.0 + r).cumprod()).rename("equity")


def stitched_metrics(records: Sequence[TestRecord], initial_cash: float,
                     timeframe: str) -> tuple[pd.Series, dict[str, float]]:
    """The chained equity of ``records`` and its metrics (trades, exposure and costs summed over windows)."""
    from tradebot.envs.performance import compute_metrics

    equity = stitch([r.equity for r in records], initial_cash)
    m = compute_metrics(equity, timeframe=timeframe, initial_capital=initial_cash,
                        trade_pnl=np.concatenate([r.trade_pnl for r in records]),
                        positions=np.concatenate([r.positions for r in records]),
                        traded_notional=sum(r.traded_notional for r in records),
                        costs=sum(r.costs for r in records),
                        invalid_actions=sum(r.invalid_actions for r in records))
    return equity, dict(m.values)


def session_returns(equity: pd.Series, initial_cash: float) -> pd.Series:
    """Per-session (daily) returns of an equity curve, closing equity to closing equity."""
    from tradebot.core.nse_time import IST

    closes = equity.groupby(equity.index.tz_convert(IST).date).last()
    prev = np.concatenate([[initial_cash], closes.to_numpy()[:-1]])
    return pd.Series(closes.to_numpy() / prev - 1.0, index=closes.index, name="returns")


def _summarise(cfg: WalkForwardConfig, out: Path, folds: list[Fold], runs: list[SeedRun],
               baselines: dict[int, dict[str, Any]], baseline_records: dict[int, dict[str, TestRecord]],
               timeframe: str, parent: str) -> EvaluationResult:
    from tradebot.rl.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting, sharpe_ratio

    cash = _env_config(cfg.training.env).engine.initial_cash
    names = cfg.baseline_names
    by_fold = {f.index: [r for r in runs if r.fold == f.index] for f in folds}
    rows: list[dict[str, Any]] = []
    per_fold: dict[str, list[dict[str, float]]] = {AGENT: [], AGENT_SELECTED: [], **{b: [] for b in names}}
    for fold in folds:
        fr = by_fold[fold.index]
        agent_samples = [r.metrics for r in fr]
        selected = next(r for r in fr if r.selected)
        rows.append(_row(SCOPE_FOLD, fold, AGENT, agent_samples))
        rows.append(_row(SCOPE_FOLD, fold, AGENT_SELECTED, [selected.metrics]))
        per_fold[AGENT].append({k: float(np.mean([s[k] for s in agent_samples])) for k in M.ALL})
        per_fold[AGENT_SELECTED].append(selected.metrics)
        for b in names:
            values = dict(baselines[fold.index][b].values)
            rows.append(_row(SCOPE_FOLD, fold, b, [values]))
            per_fold[b].append(values)
    for strategy, samples in per_fold.items():
        rows.append(_row(SCOPE_FOLDS, None, strategy, samples))

    # stitched out-of-sample records
    ordered = sorted(folds, key=lambda f: f.index)
    seeds = cfg.evaluation.seeds
    stitched: dict[str, pd.Series] = {}
    seed_stitched: dict[int, pd.Series] = {}
    seed_metrics = []
    for s in seeds:
        records = [next(r for r in by_fold[f.index] if r.seed == s).record for f in ordered]
        eq, m = stitched_metrics(records, cash, timeframe)
        seed_stitched[s] = eq
        seed_metrics.append(m)
    rows.append(_row(SCOPE_STITCHED, None, AGENT, seed_metrics))
    stitched[AGENT_SELECTED], m = stitched_metrics([next(r for r in by_fold[f.index] if r.selected).record
                                                    for f in ordered], cash, timeframe)
    rows.append(_row(SCOPE_STITCHED, None, AGENT_SELECTED, [m]))
    for b in names:
        stitched[b], m = stitched_metrics([baseline_records[f.index][b] for f in ordered], cash, timeframe)
        rows.append(_row(SCOPE_STITCHED, None, b, [m]))
    for s, eq in seed_stitched.items():
        stitched[f"{AGENT}_seed_{s}"] = eq
    summary = pd.DataFrame(rows)

    # verdicts: per-fold seed-mean Sharpe of the agent against each baseline
    verdicts = []
    agent_sharpe = [p[M.SHARPE] for p in per_fold[AGENT]]
    agent_ret = [p[M.TOTAL_RETURN] for p in per_fold[AGENT]]
    for b in names:
        b_sharpe = [p[M.SHARPE] for p in per_fold[b]]
        b_ret = [p[M.TOTAL_RETURN] for p in per_fold[b]]
        worse = sum(a < x for a, x in zip(agent_sharpe, b_sharpe))
        beats = (float(np.mean(agent_sharpe)) > float(np.mean(b_sharpe))
                 and float(np.mean(agent_ret)) > float(np.mean(b_ret)) and worse < len(folds) / 2)
        verdicts.append(Verdict(b, beats, float(np.mean(agent_sharpe)), float(np.mean(b_sharpe)),
                                float(np.mean(agent_ret)), float(np.mean(b_ret)), worse, len(folds)))

    # overfitting statistics on session returns of the stitched records
    notes: list[str] = []
    daily_trials = pd.DataFrame({s: session_returns(e, cash) for s, e in seed_stitched.items()})
    selected_daily = session_returns(stitched[AGENT_SELECTED], cash)
    n_trials = len(seeds) * cfg.evaluation.configs_tried
    dsr = None
    if len(selected_daily) >= 2:
        dsr = deflated_sharpe_ratio(selected_daily.to_numpy(), n_trials=n_trials,
                                    trial_sharpes=[sharpe_ratio(daily_trials[c].to_numpy()) for c in daily_trials])
    else:
        notes.append("deflated Sharpe ratio: fewer than 2 out-of-sample sessions")
    pbo = None
    if len(seeds) < 2:
        notes.append("PBO: needs at least 2 seeds (trials)")
    else:
        t = len(daily_trials)
        s = min(cfg.evaluation.pbo_partitions, t - t % 2)
        if s >= 2:
            if s < cfg.evaluation.pbo_partitions:
                notes.append(f"PBO: {t} sessions allow only {s} CSCV blocks "
                             f"(asked for {cfg.evaluation.pbo_partitions})")
            pbo = probability_of_backtest_overfitting(daily_trials.to_numpy(), n_partitions=s)
        else:
            notes.append(f"PBO: {t} out-of-sample sessions are too few for CSCV")
    return EvaluationResult(output_dir=out, folds=folds, runs=runs, baselines=baselines, summary=summary,
                            verdicts=verdicts, deflated_sharpe=dsr, pbo=pbo, parent_run_id=parent,
                            stitched=stitched, notes=notes)


# ---- outputs ----------------------------------------------------------------------------------

def runs_frame(runs: Sequence[SeedRun]) -> pd.DataFrame:
    """One row per fold and seed: training outcome and test metrics."""
    rows = []
    for r in runs:
        rows.append({"fold": r.fold, "seed": r.seed, "selected": r.selected, "iterations": r.iterations,
                     "stopped_early": r.stopped_early, "best_validation_return": r.best_validation_return,
                     "model_uri": r.model_uri, "mlflow_run_id": r.mlflow_run_id, "checkpoint": r.checkpoint,
                     **{k: r.metrics[k] for k in M.ALL}})
    return pd.DataFrame(rows)


def _write_outputs(result: EvaluationResult, cfg: WalkForwardConfig) -> None:
    out = result.output_dir
    files = {"summary_csv": out / SUMMARY_CSV, "summary_json": out / SUMMARY_JSON, "runs_csv": out / RUNS_CSV,
             "report": out / REPORT_HTML, "config": out / CONFIG_FILE, "stitched_csv": out / "stitched_equity.csv"}
    write_text_atomic(files["summary_csv"], result.summary.to_csv(index=False, float_format="%.10g"))
    write_text_atomic(files["runs_csv"], runs_frame(result.runs).to_csv(index=False, float_format="%.10g"))
    stitched = pd.DataFrame(result.stitched)
    stitched.index = pd.Index([t.isoformat() for t in stitched.index], name="timestamp")
    write_text_atomic(files["stitched_csv"], stitched.to_csv(float_format="%.10g"))
    payload = {
        "config": cfg.dump(),
        "folds": [f.to_dict() for f in result.folds],
        "summary": _records(result.summary),
        "runs": _records(runs_frame(result.runs)),
        "verdicts": [{**v.__dict__, "line": v.line} for v in result.verdicts],
        "deflated_sharpe": result.deflated_sharpe.to_dict() if result.deflated_sharpe is not None else None,
        "pbo": result.pbo.to_dict() if result.pbo is not None else None,
        "notes": result.notes,
        "mlflow_parent_run_id": result.parent_run_id,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(files["summary_json"], json_text(payload))
    write_text_atomic(files["report"], render_report(result, cfg))
    result.files = files


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()})
    return out


# ---- resumption -------------------------------------------------------------------------------

def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    if not path.is_file():
        return {"parent_run_id": None, "fold_runs": {}}
    try:
        state = json.loads(path.read_text())
        state.setdefault("fold_runs", {})
        return state
    except ValueError as err:
        raise UserInputError(f"{path}: unreadable evaluation state ({err}); delete it or use another --out") from None


def _write_state(out: Path, state: dict[str, Any]) -> None:
    write_text_atomic(out / STATE_FILE, json_text(state))


def _flat(data: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(data, dict) and data:
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(data) if isinstance(data, (list, dict)) else str(data)
    return out


def _check_resumable(out: Path, cfg: WalkForwardConfig) -> None:
    saved = out / CONFIG_FILE
    if not saved.is_file():
        return
    import yaml

    old = parse_config(WalkForwardConfig, yaml.safe_load(saved.read_text()), str(saved))
    a, b = _flat(old.dump()), _flat(cfg.dump())
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key) and any(key == p or key.startswith(p + ".") for p in _FIXED_ON_RESUME):
            raise UserInputError(f"{out} holds an evaluation with a different config "
                                 f"({key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}); resume it with the "
                                 "same data, folds, training and seeds or pass another --out")


# ---- MLflow -----------------------------------------------------------------------------------

def _mlflow_metrics(values: dict[str, float], step: int = 0) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and math.isfinite(float(v))]


def _parent_run(client, experiment_id: str, out: Path, cfg: WalkForwardConfig, folds: list[Fold],
                state: dict[str, Any]) -> str:
    from mlflow.entities import Param

    run_id = state.get("parent_run_id")
    if run_id:
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed", "true")
        return run_id
    run = client.create_run(experiment_id, run_name=f"walkforward {out.resolve().name}",
                            tags={"walkforward.output_dir": str(out.resolve()), "walkforward.folds": str(len(folds)),
                                  "walkforward.data": cfg.data.path})
    params = _flat(cfg.dump())
    items = [Param(k[:250], v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    state["parent_run_id"] = run.info.run_id
    _write_state(out, state)
    return run.info.run_id


def _fold_run(client, experiment_id: str, parent: str, fold: Fold, state: dict[str, Any], out: Path) -> str:
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    key = str(fold.index)
    run_id = state["fold_runs"].get(key)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(experiment_id, run_name=f"fold {fold.index}",
                            tags={MLFLOW_PARENT_RUN_ID: parent, "walkforward.fold": key})
    d = fold.to_dict()
    params = {f"{w}_{k}": str(d[w][k]) for w in ("train", "validation", "test") for k in ("first", "last", "sessions")}
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    state["fold_runs"][key] = run.info.run_id
    _write_state(out, state)
    return run.info.run_id


_LOGGED_KEYS = (M.TOTAL_RETURN, M.SHARPE, M.SORTINO, M.MAX_DRAWDOWN, M.TRADES, M.WIN_RATE, M.EXPOSURE, M.COSTS)


def _log_fold(client, run_id: str, runs: list[SeedRun], baselines: dict[str, Any]) -> None:
    values: dict[str, float] = {}
    for key in _LOGGED_KEYS:
        mean, std = _stats([r.metrics[key] for r in runs])
        values[f"{AGENT}_{key}_mean"] = mean
        if std is not None:
            values[f"{AGENT}_{key}_std"] = std
        values[f"{AGENT_SELECTED}_{key}"] = next(r for r in runs if r.selected).metrics[key]
        for name, m in baselines.items():
            values[f"{name}_{key}"] = m[key]
    client.log_batch(run_id, metrics=_mlflow_metrics(values))
    client.set_terminated(run_id, "FINISHED")


def _log_parent(client, run_id: str, result: EvaluationResult, out: Path) -> None:
    values: dict[str, float] = {}
    s = result.summary
    for _, row in s[s["scope"].isin([SCOPE_FOLDS, SCOPE_STITCHED])].iterrows():
        for key in _LOGGED_KEYS:
            values[f"{row['scope']}_{row['strategy']}_{key}"] = row[f"{key}_mean"]
    if result.deflated_sharpe is not None:
        values["deflated_sharpe_ratio"] = result.deflated_sharpe.dsr
        values["probabilistic_sharpe_ratio"] = result.deflated_sharpe.psr
    if result.pbo is not None:
        values["pbo"] = result.pbo.pbo
    values["beats_baselines"] = float(sum(v.beats for v in result.verdicts))
    client.log_batch(run_id, metrics=_mlflow_metrics(values))
    for v in result.verdicts:
        client.set_tag(run_id, f"verdict.{v.baseline}", v.line[:5000])
    for path in result.files.values():
        client.log_artifact(run_id, str(path))
    client.log_artifact(run_id, str(out / "folds.json"))


# ---- the HTML report --------------------------------------------------------------------------

KEY_COLUMNS = (M.SHARPE, M.TOTAL_RETURN, M.MAX_DRAWDOWN, M.TRADES, M.WIN_RATE, M.EXPOSURE, M.COSTS)


def _fmt_cell(key: str, mean: float, std: float | None) -> str:
    from tradebot.envs.performance import format_metric

    text = format_metric(key, mean)
    if std is not None and math.isfinite(std):
        text += f" ± {format_metric(key, std)}"
    return text


def summary_rows(summary: pd.DataFrame, scope: str) -> list[tuple[str, str, list[str]]]:
    """``(where, strategy, formatted key metrics)`` rows of one scope, for tables (CLI and HTML)."""
    rows = []
    for _, r in summary[summary["scope"] == scope].iterrows():
        where = f"{int(r['fold'])}: {r['test_first']}..{r['test_last']}" if scope == SCOPE_FOLD else scope
        std = lambda k: r[f"{k}_std"] if r[f"{k}_std"] is not None and pd.notna(r[f"{k}_std"]) else None  # noqa: E731
        rows.append((where, str(r["strategy"]), [_fmt_cell(k, float(r[f"{k}_mean"]), std(k)) for k in KEY_COLUMNS]))
    return rows


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


def render_report(result: EvaluationResult, cfg: WalkForwardConfig) -> str:
    """One self-contained HTML page (plotly.js inline): per-fold Sharpe/return and the stitched equity."""
    import html

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from tradebot.core.nse_time import IST

    s = result.summary
    folds = s[s["scope"] == SCOPE_FOLD]
    labels = [f"F{f.index} {f.test[0]:%Y-%m-%d}" for f in result.folds]
    names = [AGENT, AGENT_SELECTED] + cfg.baseline_names
    palette = ["#2c7fb8", "#08306b", "#9e9e9e", "#1a9850", "#d73027", "#fdae61", "#984ea3", "#a6761d", "#e7298a"]
    colour = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.08, row_heights=[0.28, 0.28, 0.44],
                        subplot_titles=("Sharpe ratio per test window (after costs, annualised)",
                                        "Total return per test window (after costs)",
                                        "Stitched out-of-sample equity (session closes; test windows back to back)"))
    for row, key, scale in ((1, M.SHARPE, 1.0), (2, M.TOTAL_RETURN, 100.0)):
        for name in names:
            part = folds[folds["strategy"] == name].sort_values("fold")
            err = part[f"{key}_std"].astype(float).fillna(0.0).to_numpy() * scale if name == AGENT else None
            fig.add_trace(go.Bar(name=name, x=labels, y=part[f"{key}_mean"].astype(float).to_numpy() * scale,
                                 marker_color=colour[name], legendgroup=name, showlegend=row == 1,
                                 error_y=dict(type="data", array=err, visible=True) if err is not None else None),
                          row=row, col=1)
    for name, eq in result.stitched.items():
        closes = eq.groupby(eq.index.tz_convert(IST).date).last()
        x = [d.isoformat() for d in closes.index]
        seed_line = name.startswith(f"{AGENT}_seed_")
        fig.add_trace(go.Scatter(x=x, y=closes.to_numpy(), mode="lines", name=name,
                                 line=dict(color=colour.get(AGENT) if seed_line else colour.get(name, "#333333"),
                                           width=1 if seed_line else 2, dash="dot" if seed_line else "solid"),
                                 legendgroup=AGENT if seed_line else name, showlegend=seed_line),
                      row=3, col=1)
    fig.update_layout(barmode="group", height=1100, template="plotly_white", margin=dict(l=60, r=30, t=60, b=40))
    fig.update_xaxes(type="category", row=3, col=1, nticks=12)
    fig.update_yaxes(title_text="Sharpe", row=1, col=1)
    fig.update_yaxes(title_text="%", row=2, col=1)
    fig.update_yaxes(title_text="equity (Rs)", row=3, col=1)
    plot = fig.to_html(full_html=False, include_plotlyjs=True)

    def table(scope: str) -> str:
        head = "".join(f"<th>{html.escape(METRIC_LABELS[k])}</th>" for k in KEY_COLUMNS)
        body = "".join(f"<tr><td>{html.escape(w)}</td><td>{html.escape(n)}</td>"
                       + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                       for w, n, cells in summary_rows(s, scope))
        return f"<table><tr><th>window</th><th>strategy</th>{head}</tr>{body}</table>"

    lines = [v.line for v in result.verdicts] + overfitting_lines(result)
    bullet = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
    title = (f"Walk-forward evaluation: {Path(cfg.data.path).name}, {len(result.folds)} folds x "
             f"{len(cfg.evaluation.seeds)} seeds")
    style = ("body{font-family:sans-serif;margin:24px;color:#222} table{border-collapse:collapse;margin:8px 0 24px}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}"
             "td:nth-child(-n+2){text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Metrics after NSE costs and slippage; mean ± std over seeds (per fold) or over folds (folds).</p>"
            f"<ul>{bullet}</ul>{plot}<h2>Per fold</h2>{table(SCOPE_FOLD)}<h2>Over folds</h2>{table(SCOPE_FOLDS)}"
            f"<h2>Stitched out-of-sample record</h2>{table(SCOPE_STITCHED)}</body></html>\n")
