"""The summary table: per fold and overall, mean and spread of every metric for each strategy.

Strategies: ``agent`` (its seeds aggregated), ``agent_selected`` (per fold, the seed with the best
validation score: chosen without looking at the test) and each baseline. Scopes: ``fold`` (one test
window), ``folds`` (mean and spread over folds of the per-fold values) and ``stitched`` (metrics of
the out-of-sample equity chained across test windows). Spreads are std with ddof 1 (None for one sample).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tradebot.envs.performance import M
from tradebot.rl.walkforward.folds import Fold
from tradebot.rl.walkforward.results import AGENT, AGENT_SELECTED, SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED, SeedRun
from tradebot.rl.walkforward.stitching import WindowRecord, stitched_metrics

KEY_COLUMNS = (M.SHARPE, M.TOTAL_RETURN, M.MAX_DRAWDOWN, M.TRADES, M.WIN_RATE, M.EXPOSURE, M.COSTS)


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def _row(scope: str, fold: Fold | None, strategy: str, samples: Sequence[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"scope": scope, "fold": fold.index if fold is not None else None,
                           "test_first": fold.test[0].isoformat() if fold is not None else None,
                           "test_last": fold.test[-1].isoformat() if fold is not None else None,
                           "strategy": strategy, "n": len(samples)}
    for key in M.ALL:
        mean, std = mean_and_std([s[key] for s in samples])
        row[f"{key}_mean"], row[f"{key}_std"] = mean, std
    return row


@dataclass
class Summary:
    table: pd.DataFrame  # one row per scope, fold and strategy
    per_fold: dict[str, list[dict[str, float]]]  # strategy -> its metrics per fold (agent: seed means)
    stitched: dict[str, pd.Series]  # agent_selected, each baseline, agent_seed_S -> out-of-sample equity
    seed_equity: dict[int, pd.Series]  # seed -> its stitched out-of-sample equity


def summarise(folds: Sequence[Fold], runs: Sequence[SeedRun], baselines: Mapping[int, Mapping[str, Any]],
              baseline_records: Mapping[int, Mapping[str, WindowRecord]], baseline_names: Sequence[str],
              seeds: Sequence[int], initial_cash: float, timeframe: str) -> Summary:
    """The summary of every fold's seed runs and baseline tests (``baselines``: fold -> name -> Metrics)."""
    by_fold = {f.index: [r for r in runs if r.fold == f.index] for f in folds}
    rows: list[dict[str, Any]] = []
    per_fold: dict[str, list[dict[str, float]]] = {AGENT: [], AGENT_SELECTED: [], **{b: [] for b in baseline_names}}
    for fold in folds:
        fr = by_fold[fold.index]
        agent_samples = [r.metrics for r in fr]
        selected = next(r for r in fr if r.selected)
        rows.append(_row(SCOPE_FOLD, fold, AGENT, agent_samples))
        rows.append(_row(SCOPE_FOLD, fold, AGENT_SELECTED, [selected.metrics]))
        per_fold[AGENT].append({k: float(np.mean([s[k] for s in agent_samples])) for k in M.ALL})
        per_fold[AGENT_SELECTED].append(selected.metrics)
        for b in baseline_names:
            values = dict(baselines[fold.index][b].values)
            rows.append(_row(SCOPE_FOLD, fold, b, [values]))
            per_fold[b].append(values)
    for strategy, samples in per_fold.items():
        rows.append(_row(SCOPE_FOLDS, None, strategy, samples))

    ordered = sorted(folds, key=lambda f: f.index)
    stitched: dict[str, pd.Series] = {}
    seed_equity: dict[int, pd.Series] = {}
    seed_metrics = []
    for s in seeds:
        records = [next(r for r in by_fold[f.index] if r.seed == s).record for f in ordered]
        eq, m = stitched_metrics(records, initial_cash, timeframe)
        seed_equity[s] = eq
        seed_metrics.append(m)
    rows.append(_row(SCOPE_STITCHED, None, AGENT, seed_metrics))
    stitched[AGENT_SELECTED], m = stitched_metrics([next(r for r in by_fold[f.index] if r.selected).record
                                                    for f in ordered], initial_cash, timeframe)
    rows.append(_row(SCOPE_STITCHED, None, AGENT_SELECTED, [m]))
    for b in baseline_names:
        stitched[b], m = stitched_metrics([baseline_records[f.index][b] for f in ordered], initial_cash, timeframe)
        rows.append(_row(SCOPE_STITCHED, None, b, [m]))
    for s, eq in seed_equity.items():
        stitched[f"{AGENT}_seed_{s}"] = eq
    return Summary(pd.DataFrame(rows), per_fold, stitched, seed_equity)


def runs_frame(runs: Sequence[SeedRun]) -> pd.DataFrame:
    """One row per fold and seed: training outcome and test metrics."""
    rows = []
    for r in runs:
        rows.append({"fold": r.fold, "seed": r.seed, "selected": r.selected, "iterations": r.iterations,
                     "stopped_early": r.stopped_early, "best_validation_return": r.best_validation_return,
                     "model_uri": r.model_uri, "mlflow_run_id": r.mlflow_run_id, "checkpoint": r.checkpoint,
                     **{k: r.metrics[k] for k in M.ALL}})
    return pd.DataFrame(rows)


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
