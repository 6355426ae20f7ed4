"""The evaluation's MLflow runs: a parent run, a nested run per fold (the seeds' training runs nest under it).

Their ids are kept in ``evaluation.json`` in the output folder, so a re-run resumes the same runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic
from tradebot.core.serialize import json_text
from tradebot.envs.performance import M
from tradebot.rl.tracking import PARENT_RUN_TAG, finite_metrics, flatten_params, log_params
from tradebot.rl.walkforward.evaluation_config import WalkForwardConfig
from tradebot.rl.walkforward.folds import Fold
from tradebot.rl.walkforward.results import (
    AGENT,
    AGENT_SELECTED,
    FOLDS_FILE,
    SCOPE_FOLDS,
    SCOPE_STITCHED,
    STATE_FILE,
    EvaluationResult,
    SeedRun,
)
from tradebot.rl.walkforward.summary import mean_and_std

LOGGED_KEYS = (M.TOTAL_RETURN, M.SHARPE, M.SORTINO, M.MAX_DRAWDOWN, M.TRADES, M.WIN_RATE, M.EXPOSURE, M.COSTS)


def read_state(out: Path) -> dict[str, Any]:
    """``{"parent_run_id": ..., "fold_runs": {fold: run id}}`` from ``out/evaluation.json`` (empty when new)."""
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


def parent_run(client, experiment_id: str, out: Path, cfg: WalkForwardConfig, folds: list[Fold],
               state: dict[str, Any]) -> str:
    """The evaluation's run (resumed when ``state`` names one); the whole config as params."""
    run_id = state.get("parent_run_id")
    if run_id:
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed", "true")
        return run_id
    run = client.create_run(experiment_id, run_name=f"walkforward {out.resolve().name}",
                            tags={"walkforward.output_dir": str(out.resolve()), "walkforward.folds": str(len(folds)),
                                  "walkforward.data": cfg.data.path})
    log_params(client, run.info.run_id, flatten_params(cfg.dump()))
    state["parent_run_id"] = run.info.run_id
    _write_state(out, state)
    return run.info.run_id


def fold_run(client, experiment_id: str, parent: str, fold: Fold, state: dict[str, Any], out: Path) -> str:
    """The fold's nested run (resumed when ``state`` names one); its window dates as params."""
    key = str(fold.index)
    run_id = state["fold_runs"].get(key)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(experiment_id, run_name=f"fold {fold.index}",
                            tags={PARENT_RUN_TAG: parent, "walkforward.fold": key})
    d = fold.to_dict()
    params = {f"{w}_{k}": str(d[w][k]) for w in ("train", "validation", "test") for k in ("first", "last", "sessions")}
    log_params(client, run.info.run_id, params)
    state["fold_runs"][key] = run.info.run_id
    _write_state(out, state)
    return run.info.run_id


def log_fold(client, run_id: str, runs: list[SeedRun], baselines: dict[str, Any]) -> None:
    """The fold's test metrics (agent mean and std over seeds, the selected seed, each baseline); ends the run."""
    values: dict[str, float] = {}
    for key in LOGGED_KEYS:
        mean, std = mean_and_std([r.metrics[key] for r in runs])
        values[f"{AGENT}_{key}_mean"] = mean
        if std is not None:
            values[f"{AGENT}_{key}_std"] = std
        values[f"{AGENT_SELECTED}_{key}"] = next(r for r in runs if r.selected).metrics[key]
        for name, m in baselines.items():
            values[f"{name}_{key}"] = m[key]
    client.log_batch(run_id, metrics=finite_metrics(values))
    client.set_terminated(run_id, "FINISHED")


def log_parent(client, run_id: str, result: EvaluationResult, out: Path) -> None:
    """Over-folds and stitched metrics, DSR and PBO, a verdict tag per baseline, and the output files."""
    values: dict[str, float] = {}
    s = result.summary
    for _, row in s[s["scope"].isin([SCOPE_FOLDS, SCOPE_STITCHED])].iterrows():
        for key in LOGGED_KEYS:
            values[f"{row['scope']}_{row['strategy']}_{key}"] = row[f"{key}_mean"]
    if result.deflated_sharpe is not None:
        values["deflated_sharpe_ratio"] = result.deflated_sharpe.dsr
        values["probabilistic_sharpe_ratio"] = result.deflated_sharpe.psr
    if result.pbo is not None:
        values["pbo"] = result.pbo.pbo
    values["beats_baselines"] = float(sum(v.beats for v in result.verdicts))
    client.log_batch(run_id, metrics=finite_metrics(values))
    for v in result.verdicts:
        client.set_tag(run_id, f"verdict.{v.baseline}", v.line[:5000])
    for path in result.files.values():
        client.log_artifact(run_id, str(path))
    client.log_artifact(run_id, str(out / FOLDS_FILE))
