"""Run (or resume) a walk-forward evaluation: per fold, backtest the baselines, train and test every seed.

Each fold/seed is trained by ``tradebot.rl.train.train`` (train dates = the fold's training sessions,
validation dates = its validation sessions: early stopping and the best checkpoint), then tested on
the test dates only (``tradebot.rl.walkforward.out_of_sample``). Re-running resumes: a fold/seed
whose training finished is loaded from its checkpoint (``train`` returns at once), an interrupted one
continues from its latest checkpoint, and a finished test is read back from ``test/`` (if it was
made with the same checkpoint). The config may not change between runs in what decides what was
trained (data, folds, training, seeds, MLflow names).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic
from tradebot.core.serialize import json_text
from tradebot.rl.tracking import PARENT_RUN_TAG, finite_metrics, flatten_params, open_experiment
from tradebot.rl.walkforward import mlflow_runs
from tradebot.rl.walkforward.evaluation_config import WalkForwardConfig
from tradebot.rl.walkforward.folds import Fold, make_folds, trading_sessions
from tradebot.rl.walkforward.html_report import render_report
from tradebot.rl.walkforward.parallel_training import local_cpus, train_in_parallel
from tradebot.envs.window import BacktestWindow
from tradebot.rl.walkforward.out_of_sample import (
    backtest_window,
    baseline_backtest,
    policy_backtest,
    read_test_files,
    write_test_files,
)
from tradebot.rl.walkforward.results import (
    AGENT_SELECTED,
    VALIDATION_DIR,
    FOLDS_FILE,
    REPORT_HTML,
    RUNS_CSV,
    STITCHED_CSV,
    SUMMARY_CSV,
    SUMMARY_JSON,
    TEST_DIR,
    WALKFORWARD_CONFIG_FILE,
    EvaluationEvent,
    EvaluationResult,
    SeedRun,
)
from tradebot.rl.walkforward.stitching import WindowRecord
from tradebot.envs.performance import Metrics
from tradebot.rl.walkforward.summary import runs_frame, summarise
from tradebot.rl.walkforward.verdicts import baseline_verdicts, overfitting_statistics
from tradebot.rl.walkforward.views import (
    AGENT_ENSEMBLE,
    POOLED,
    SELECTION_FILE,
    VIEWS_DIR,
    ValidationScores,
    ViewTests,
    pool_records,
    pooled_sharpe,
    record_as_metrics,
    record_metrics,
    selection,
    view_dir_name,
)

# Sections of the config that must not change when an evaluation is resumed (they decide what was trained).
FIXED_ON_RESUME = ("data", "folds", "training", "evaluation.seeds", "evaluation.registered_model",
                   "evaluation.mlflow_experiment")


def run_walkforward(cfg: WalkForwardConfig, *, output_dir: str | Path | None = None, address: str | None = None,
                    on_event: Callable[[EvaluationEvent], None] | None = None) -> EvaluationResult:
    """Run (or resume) the walk-forward evaluation of ``cfg`` into ``output_dir`` (default
    ``evaluation.output_dir``); ``address``: a Ray cluster to join (default ``RAY_ADDRESS``, else a
    private local instance). Returns the primary view's result: the instrument, or ``pooled`` when
    the evaluation trains on several (each instrument's is under ``views/<symbol>/``)."""
    from tradebot.features.bars import load_bars

    if output_dir is not None:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"output_dir": str(output_dir)})})
    out = Path(cfg.evaluation.output_dir).resolve()
    emit = on_event or (lambda event: None)
    instruments = []
    for path, symbol in [(cfg.data.path, cfg.data.symbol), *((p, None) for p in cfg.data.extra_paths)]:
        if not Path(path).is_file():
            raise UserInputError(f"{path}: bar file not found (data.path / data.extra_paths)")
        instruments.append(load_bars(path, symbol=symbol))
    names = [b.symbol or Path(b_path).name for b, b_path in zip(instruments, [cfg.data.path, *cfg.data.extra_paths])]
    if len(set(names)) != len(names) or len({b.timeframe for b in instruments}) != 1:
        raise UserInputError("data.path and data.extra_paths must be distinct instruments of one bar size")
    bars = instruments[0]
    sessions = trading_sessions(bars.index, cfg.data.start, cfg.data.end)
    folds = make_folds(sessions, cfg.folds, cfg.data.end)
    if not folds:
        raise UserInputError(f"{cfg.data.path}: {len(sessions)} sessions in the data range leave no complete fold; "
                             "shorten folds.train/validation/test or widen data.start/end")
    _check_resumable(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / WALKFORWARD_CONFIG_FILE, cfg.to_yaml())
    write_text_atomic(out / FOLDS_FILE, json_text({"folds": [f.to_dict() for f in folds]}))
    env_cfg = cfg.env_config()  # a bad env config fails here, before Ray starts

    import ray

    from tradebot.rl.train import init_ray

    experiment = open_experiment(cfg.evaluation.mlflow_experiment)
    client = experiment.client()
    state = mlflow_runs.read_state(out)
    parent = mlflow_runs.parent_run(client, experiment.experiment_id, out, cfg, folds, state)
    cash = env_cfg.engine.initial_cash
    views = {name: ViewTests() for name in names + ([POOLED] if len(names) > 1 else [])}
    scores: list[ValidationScores] = []

    started_ray = False
    status = "FAILED"
    try:
        if not ray.is_initialized():
            init_ray(address, num_cpus=local_cpus(cfg), logging_level=logging.WARNING)
            started_ray = True
        trained_here = train_in_parallel(cfg, folds, out, experiment.tracking_uri, emit)
        for fold in folds:
            emit(EvaluationEvent("fold", fold.index, len(folds), message=fold.label))
            fold_run = mlflow_runs.fold_run(client, experiment.experiment_id, parent, fold, state, out)
            emit(EvaluationEvent("baselines", fold.index, len(folds), message="baselines"))
            for name, inst in zip(names, instruments):
                metrics_b, records_b = _fold_baselines(cfg, backtest_window(inst, fold), env_cfg.engine, inst.timeframe)
                views[name].baselines[fold.index], views[name].records[fold.index] = metrics_b, records_b
            fold_scores = _fold_seeds(cfg, fold, instruments, names, views, out, client, fold_run, emit, address,
                                      len(folds), trained_here, cash)
            scores.append(fold_scores)
            if len(names) > 1:
                _pool_fold(fold, views, names, cash, bars.timeframe)
            primary = views[POOLED if len(names) > 1 else names[0]]
            mlflow_runs.log_fold(client, fold_run, [r for r in primary.runs if r.fold == fold.index],
                                 primary.baselines[fold.index])
        emit(EvaluationEvent("summary", message="summary"))
        results = {}
        for name, tests in views.items():
            view_out = out if name == (POOLED if len(names) > 1 else names[0]) else out / VIEWS_DIR / view_dir_name(name)
            view_out.mkdir(parents=True, exist_ok=True)
            result = _result(cfg, view_out, folds, tests, bars.timeframe, parent)
            _write_outputs(result, cfg)
            results[name] = result
        primary = results[POOLED if len(names) > 1 else names[0]]
        chosen = selection(scores)
        write_text_atomic(out / SELECTION_FILE, json_text({"views": list(views), **chosen}))
        primary.files["selection"] = out / SELECTION_FILE
        client.log_batch(parent, metrics=finite_metrics({  # what the designs are compared on, for MLflow's Compare view
            "validation_score": chosen["score"],
            "validation_sharpe_agent_selected": chosen["agent_selected_validation_sharpe"],
            "validation_sharpe_agent_ensemble": chosen["agent_ensemble_validation_sharpe"]}))
        client.set_tag(parent, "deployable_variant", chosen["variant"])
        mlflow_runs.log_parent(client, parent, primary, out)
        status = "FINISHED"
        return primary
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent, status)
        if started_ray:
            ray.shutdown()


# ---- one fold/seed ----------------------------------------------------------------------------

def _train_seed(cfg: WalkForwardConfig, fold: Fold, seed: int, out: Path, client, fold_run: str, emit,
                address: str | None, n_folds: int, trained_here: set[tuple[int, int]]):
    """Train (or load) one fold/seed; returns ``(seed, train config, TrainResult, reused)``."""
    from tradebot.rl.moe.training import train_any as train
    from tradebot.rl.train import IterationReport

    seed_dir = out / f"fold_{fold.index:02d}" / f"seed_{seed}"
    train_cfg = cfg.train_config(fold, seed, seed_dir)
    emit(EvaluationEvent("train", fold.index, n_folds, seed, message=f"training seed {seed}",
                         iterations=train_cfg.run.iterations))

    def on_iteration(report: IterationReport) -> None:
        val = report.validation_return
        emit(EvaluationEvent("iteration", fold.index, n_folds, seed, iteration=report.iteration,
                             iterations=report.iterations, message=f"val {val:.4f}" if val is not None else ""))

    result = train(train_cfg, address=address, on_iteration=on_iteration)
    client.set_tag(result.mlflow_run_id, PARENT_RUN_TAG, fold_run)
    client.set_tag(result.mlflow_run_id, "walkforward.fold", str(fold.index))
    client.set_tag(result.mlflow_run_id, "walkforward.seed", str(seed))
    reused = result.already_complete and (fold.index, seed) not in trained_here
    return seed, train_cfg, result, reused


def _tested(policy, key: str, inst, fold: Fold, train_cfg, folder: Path, window: str):
    """``(metrics, record)`` of ``policy`` on one instrument's fold window, kept in ``folder`` (a re-run with
    the same ``key``, e.g. the checkpoint, reads it back); ``reused``: whether it was read back."""
    from tradebot.envs.performance import metrics_from_result

    cached = read_test_files(folder, key)
    if cached is not None:
        return cached[0], cached[1], True
    bt, actions = policy_backtest(policy, inst, fold, train_cfg, window)
    m = metrics_from_result(bt, inst.timeframe)
    write_test_files(folder, key, m, bt, actions)
    return dict(m.values), WindowRecord.from_result(bt), False


def _fold_seeds(cfg: WalkForwardConfig, fold: Fold, instruments, names, views, out: Path, client, fold_run: str,
                emit, address: str | None, n_folds: int, trained_here: set[tuple[int, int]],
                cash: float) -> ValidationScores:
    """Train each seed and test its policy on each instrument's test window (and score it on the validation
    window) before the next seed; then the seed ensemble. The seed runs go into each instrument's view."""
    from tradebot.rl.ensemble import EnsemblePolicy
    from tradebot.rl.policy import Policy

    multi = len(names) > 1
    fold_runs: dict[str, list[SeedRun]] = {name: [] for name in names}
    val_sharpe: dict[int, float] = {}
    policies = []
    trained = []
    for seed in cfg.evaluation.seeds:
        seed, train_cfg, result, reused = _train_seed(cfg, fold, seed, out, client, fold_run, emit, address, n_folds,
                                                      trained_here)
        trained.append((seed, train_cfg, result, reused))
        checkpoint = str(result.final_checkpoint.resolve())
        seed_dir = out / f"fold_{fold.index:02d}" / f"seed_{seed}"
        emit(EvaluationEvent("test", fold.index, n_folds, seed, message=f"testing seed {seed}"))
        policy = Policy.load(result.final_checkpoint.resolve())  # (RLlib reads a relative path as a URI)
        policies.append(policy)
        val_records = []
        reused_test = True
        for name, inst in zip(names, instruments):
            sub = view_dir_name(name) if multi else ""
            metrics, record, hit = _tested(policy, checkpoint, inst, fold, train_cfg, seed_dir / TEST_DIR / sub, "test")
            reused_test &= hit
            _, val_record, _ = _tested(policy, checkpoint, inst, fold, train_cfg, seed_dir / VALIDATION_DIR / sub,
                                       "validation")
            val_records.append(val_record)
            if not hit and name == names[0]:
                client.log_batch(result.mlflow_run_id,
                                 metrics=finite_metrics({f"test_{k}": v for k, v in metrics.items()}))
            fold_runs[name].append(SeedRun(
                fold=fold.index, seed=seed, output_dir=seed_dir, checkpoint=checkpoint, iterations=result.iterations,
                stopped_early=result.stopped_early, best_validation_return=result.best_validation_return,
                mlflow_run_id=result.mlflow_run_id, model_uri=result.model_uri, metrics=metrics, record=record,
                reused_training=reused, reused_test=reused_test))
        val_sharpe[seed] = pooled_sharpe(val_records, cash, instruments[0].timeframe)
        emit(EvaluationEvent("done", fold.index, n_folds, seed, message=f"seed {seed} tested"))
    for name in names:
        _mark_selected(fold_runs[name])
        views[name].runs.extend(fold_runs[name])
    _test_other_mixtures(trained, instruments, names, views, fold, multi)
    selected_seed = next(r.seed for r in fold_runs[names[0]] if r.selected)
    ensemble_sharpe = None
    if cfg.evaluation.ensemble and len(policies) > 1:
        ensemble = EnsemblePolicy(policies)
        key = "ensemble:" + ",".join(r.checkpoint for r in fold_runs[names[0]])
        folder = out / f"fold_{fold.index:02d}" / "ensemble"
        val_records = []
        for name, inst in zip(names, instruments):
            sub = view_dir_name(name) if multi else ""
            train_cfg = trained[0][1]
            metrics, record, _ = _tested(ensemble, key, inst, fold, train_cfg, folder / TEST_DIR / sub, "test")
            views[name].baselines[fold.index][AGENT_ENSEMBLE] = Metrics(metrics)
            views[name].records[fold.index][AGENT_ENSEMBLE] = record
            val_records.append(_tested(ensemble, key, inst, fold, train_cfg, folder / VALIDATION_DIR / sub,
                                       "validation")[1])
        ensemble_sharpe = pooled_sharpe(val_records, cash, instruments[0].timeframe)
    return ValidationScores(fold.index, val_sharpe, selected_seed, ensemble_sharpe)


def _test_other_mixtures(trained, instruments, names, views, fold: Fold, multi: bool) -> None:
    """A mixture-of-experts evaluation also tests its first seed's mixtures with the other gates (the
    always-on ``equal`` ensemble of the same experts among them), as rows ``moe_<gate>`` of the fold."""
    from tradebot.rl.moe.training import MoEConfig, mixture_variants
    from tradebot.rl.policy import Policy

    seed, train_cfg, result, _ = trained[0]
    if not isinstance(train_cfg, MoEConfig):
        return
    for gate, folder in mixture_variants(result.output_dir).items():
        if gate == train_cfg.moe.gate:
            continue
        policy = Policy.load(folder)
        for name, inst in zip(names, instruments):
            sub = view_dir_name(name) if multi else ""
            metrics, record, _ = _tested(policy, f"moe_{gate}:{folder}", inst, fold, train_cfg,
                                         result.output_dir / f"moe_{gate}" / TEST_DIR / sub, "test")
            views[name].baselines[fold.index][f"moe_{gate}"] = Metrics(metrics)
            views[name].records[fold.index][f"moe_{gate}"] = record


def _pool_fold(fold: Fold, views: dict[str, ViewTests], names: list[str], cash: float, timeframe: str) -> None:
    """The pooled view of one fold: every seed's, baseline's and the ensemble's records pooled over the instruments."""
    pooled = views[POOLED]
    per = [[r for r in views[n].runs if r.fold == fold.index] for n in names]
    for runs in zip(*per):
        record = pool_records([r.record for r in runs], cash)
        first = runs[0]
        pooled.runs.append(SeedRun(
            fold=fold.index, seed=first.seed, output_dir=first.output_dir, checkpoint=first.checkpoint,
            iterations=first.iterations, stopped_early=first.stopped_early,
            best_validation_return=first.best_validation_return, mlflow_run_id=first.mlflow_run_id,
            model_uri=first.model_uri, metrics=record_metrics(record, cash, timeframe), record=record,
            reused_training=first.reused_training, reused_test=all(r.reused_test for r in runs),
            selected=first.selected))
    pooled.records[fold.index] = {}
    pooled.baselines[fold.index] = {}
    for strategy in views[names[0]].records[fold.index]:
        record = pool_records([views[n].records[fold.index][strategy] for n in names], cash)
        pooled.records[fold.index][strategy] = record
        pooled.baselines[fold.index][strategy] = record_as_metrics(record, cash, timeframe)


def _mark_selected(runs: list[SeedRun]) -> None:
    """The fold's selected model: best validation score (ties and missing scores: the first seed)."""
    def score(r: SeedRun) -> float:
        return r.best_validation_return if r.best_validation_return is not None else -math.inf

    best = max(runs, key=score)  # max keeps the first of equal scores
    best.selected = True


def _fold_baselines(cfg: WalkForwardConfig, window: BacktestWindow, engine, timeframe: str):
    from tradebot.envs.performance import metrics_from_result

    metrics, records = {}, {}
    for name in cfg.baseline_names:
        res = baseline_backtest(name, window, engine, cfg.evaluation.baseline_seed)
        metrics[name] = metrics_from_result(res, timeframe)
        records[name] = WindowRecord.from_result(res)
    return metrics, records


# ---- results and outputs ----------------------------------------------------------------------

def _result(cfg: WalkForwardConfig, out: Path, folds: list[Fold], tests: ViewTests, timeframe: str,
            parent: str) -> EvaluationResult:
    cash = cfg.env_config().engine.initial_cash
    first = tests.baselines[folds[0].index]
    mixtures = sorted(k for k in first if k.startswith("moe_"))  # the other gates' mixtures (the agent's controls)
    names = cfg.baseline_names
    shown = names + ([AGENT_ENSEMBLE] if AGENT_ENSEMBLE in first else []) + mixtures
    summary = summarise(folds, tests.runs, tests.baselines, tests.records, shown, cfg.evaluation.seeds, cash,
                        timeframe)
    verdicts = baseline_verdicts(summary.per_fold, names + mixtures)
    stats = overfitting_statistics(summary.seed_equity, summary.stitched[AGENT_SELECTED], cash,
                                   configs_tried=cfg.evaluation.configs_tried,
                                   pbo_partitions=cfg.evaluation.pbo_partitions)
    return EvaluationResult(output_dir=out, folds=folds, runs=tests.runs, baselines=tests.baselines,
                            summary=summary.table, verdicts=verdicts, deflated_sharpe=stats.deflated_sharpe,
                            pbo=stats.pbo, parent_run_id=parent, stitched=summary.stitched, notes=stats.notes)


def _write_outputs(result: EvaluationResult, cfg: WalkForwardConfig) -> None:
    out = result.output_dir
    files = {"summary_csv": out / SUMMARY_CSV, "summary_json": out / SUMMARY_JSON, "runs_csv": out / RUNS_CSV,
             "report": out / REPORT_HTML, "config": out / WALKFORWARD_CONFIG_FILE, "stitched_csv": out / STITCHED_CSV}
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

def _check_resumable(out: Path, cfg: WalkForwardConfig) -> None:
    saved = out / WALKFORWARD_CONFIG_FILE
    if not saved.is_file():
        return
    import yaml

    old = parse_config(WalkForwardConfig, yaml.safe_load(saved.read_text()), str(saved))
    a, b = flatten_params(old.dump()), flatten_params(cfg.dump())
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key) and any(key == p or key.startswith(p + ".") for p in FIXED_ON_RESUME):
            raise UserInputError(f"{out} holds an evaluation with a different config "
                                 f"({key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}); resume it with the "
                                 "same data, folds, training and seeds or pass another --out")

