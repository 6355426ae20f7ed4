"""Walk-forward evaluation: the fold rule (pure), and a smoke evaluation on real Ray and MLflow.

The smoke run (2 folds x 2 seeds, one tiny training iteration each, experiments/walkforward_smoke.yaml
on the bundled sample) is interrupted after its first fold/seed, finished by `tradebot evaluate`,
and run a third time; the tests read what that left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from rl_helpers import ROOT, SAMPLE_5M, write_yaml
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError
from tradebot.rl.walkforward import EvaluationEvent, WalkForwardConfig, run_walkforward
from tradebot.rl.walkforward.folds import FoldSpec, make_folds, trading_sessions
from tradebot.rl.walkforward.results import AGENT, AGENT_SELECTED, SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED
from tradebot.rl.walkforward.views import AGENT_ENSEMBLE, SELECTION_FILE

SMOKE_YAML = ROOT / "experiments" / "walkforward_smoke.yaml"


def _weekdays(start: dt.date, n: int) -> list[dt.date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def _check_ordered(fold, sessions: list[dt.date], purge: int) -> None:
    pos = {d: i for i, d in enumerate(sessions)}
    assert max(fold.train) < min(fold.validation) and max(fold.validation) < min(fold.test)
    assert not set(fold.test) & (set(fold.train) | set(fold.validation))
    assert not set(fold.train) & set(fold.validation)
    # at least `purge` sessions between the windows
    assert pos[min(fold.validation)] - pos[max(fold.train)] - 1 >= purge
    assert pos[min(fold.test)] - pos[max(fold.validation)] - 1 >= purge
    # the date ranges handed to training are half-open and never reach the next window
    assert fold.train_range.end <= fold.validation_range.start
    assert fold.validation_range.end <= fold.test_range.start


# ---- the fold rule ----------------------------------------------------------------------------

def test_make_folds_sessions_purge_respected_and_windows_disjoint():
    sessions = _weekdays(dt.date(2021, 1, 4), 60)
    spec = FoldSpec(unit="sessions", train=20, validation=5, test=5, step=5, purge=2)
    folds = make_folds(sessions, spec)
    # fold k: train [5k, 5k+20), purge 2, validation 5, purge 2, test 5 -> needs 34 + 5k sessions
    assert len(folds) == 6
    for k, f in enumerate(folds):
        assert f.index == k
        assert f.train == tuple(sessions[5 * k:5 * k + 20])
        assert f.validation == tuple(sessions[5 * k + 22:5 * k + 27])
        assert f.test == tuple(sessions[5 * k + 29:5 * k + 34])
        assert f.purged == tuple(sessions[5 * k + 20:5 * k + 22] + sessions[5 * k + 27:5 * k + 29])
        _check_ordered(f, sessions, 2)
    tests = [d for f in folds for d in f.test]
    assert len(tests) == len(set(tests))  # test windows never overlap


def test_make_folds_months_tests_are_whole_months_and_purge_cut_from_earlier_window():
    index = pd.read_csv(SAMPLE_5M, usecols=["timestamp"])["timestamp"]
    sessions = trading_sessions(pd.DatetimeIndex(pd.to_datetime(index, format="ISO8601")))
    spec = FoldSpec(unit="months", train=3, validation=1, test=1, step=1, purge=2)
    folds = make_folds(sessions, spec)
    # Jan..Jun 2021: train Jan-Mar / val Apr / test May, then train Feb-Apr / val May / test Jun
    assert [(f.test[0].month, f.test[-1].month) for f in folds] == [(5, 5), (6, 6)]
    for f in folds:
        month = f.test[0].month
        assert f.test == tuple(d for d in sessions if d.month == month)  # the whole month
        val_month = [d for d in sessions if d.month == month - 1]
        assert f.validation == tuple(val_month[:-2]) and f.purged[-2:] == tuple(val_month[-2:])
        train_months = [d for d in sessions if month - 4 <= d.month <= month - 2]
        assert f.train == tuple(train_months[:-2])
        _check_ordered(f, sessions, 2)


def test_make_folds_embargo_anchored_and_max_folds():
    sessions = _weekdays(dt.date(2021, 1, 4), 40)
    folds = make_folds(sessions, FoldSpec(unit="sessions", train=10, validation=3, test=4, step=4, embargo=2))
    assert len(folds) >= 3
    for prev, f in zip(folds, folds[1:]):
        i = sessions.index(prev.test[-1])
        assert f.embargoed == tuple(sessions[i + 1:i + 3])
        assert sessions.index(f.test[0]) == i + 3 and len(f.test) == 2
    anchored = make_folds(sessions, FoldSpec(unit="sessions", train=10, validation=3, test=4, step=4,
                                             anchored=True, max_folds=2))
    assert len(anchored) == 2
    assert anchored[0].train[0] == anchored[1].train[0] == sessions[0]
    assert len(anchored[1].train) == len(anchored[0].train) + 4


def test_trading_sessions_are_ist_dates():
    # 20:00 UTC on Jan 3 is 01:30 IST on Jan 4; 03:45 UTC on Jan 4 is 09:15 IST the same day
    index = pd.DatetimeIndex(["2021-01-03T20:00:00Z", "2021-01-04T03:45:00Z", "2021-01-05T09:59:00Z"])
    assert trading_sessions(index) == [dt.date(2021, 1, 4), dt.date(2021, 1, 5)]
    assert trading_sessions(index, start=dt.date(2021, 1, 5)) == [dt.date(2021, 1, 5)]


def test_walkforward_config_rejects_overlapping_tests_and_run_keys_set_per_fold():
    base = {"data": {"path": str(SAMPLE_5M)}}
    with pytest.raises(UserInputError, match="test windows would overlap"):
        parse_config(WalkForwardConfig, {**base, "folds": {"test": 2, "step": 1}})
    with pytest.raises(UserInputError, match="evaluation.seeds"):
        parse_config(WalkForwardConfig, {**base, "training": {"run": {"seed": 3}}})
    with pytest.raises(UserInputError, match="unknown baseline"):
        parse_config(WalkForwardConfig, {**base, "evaluation": {"baselines": ["hodl"]}})
    with pytest.raises(UserInputError, match="unknown config key 'folds.purg'"):
        parse_config(WalkForwardConfig, {**base, "folds": {"purg": 1}})
    smoke = parse_config(WalkForwardConfig, yaml.safe_load(SMOKE_YAML.read_text()))
    assert smoke.folds.max_folds == 2 and smoke.evaluation.seeds == [0, 1]


# ---- the smoke walk-forward -------------------------------------------------------------------

class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, local_ray, mlflow_store):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend on a shared 2-core machine
    try:
        yield _smoke_run(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _smoke_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("walkforward")
    out = tmp / "out"
    raw = yaml.safe_load(SMOKE_YAML.read_text())
    raw["data"]["path"] = str(SAMPLE_5M)
    raw["evaluation"]["mlflow_experiment"] = "tests-walkforward"
    raw["evaluation"]["registered_model"] = "tests-walkforward"
    cfg = parse_config(WalkForwardConfig, raw)
    events: list[EvaluationEvent] = []

    def interrupt_after_first(event: EvaluationEvent) -> None:
        events.append(event)
        if event.stage == "done":
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_walkforward(cfg, output_dir=out, on_event=interrupt_after_first)
    first_ckpt = out / "fold_00" / "seed_0" / "checkpoints" / "iter_000001"
    first_mtime = first_ckpt.stat().st_mtime_ns
    state_after_interrupt = json.loads((out / "evaluation.json").read_text())

    config_path = write_yaml(tmp / "smoke.yaml", raw)
    cli = CliRunner().invoke(__import__("tradebot.cli", fromlist=["main"]).main,
                             ["evaluate", "--config", str(config_path), "--out", str(out)])
    assert cli.exit_code == 0, cli.output + repr(cli.exception)
    again = run_walkforward(cfg, output_dir=out)  # everything is on disk now: nothing is trained or tested again
    return {"out": out, "cfg": cfg, "events": events, "cli": cli.output, "result": again,
            "first_ckpt": first_ckpt, "first_mtime": first_mtime, "state_after_interrupt": state_after_interrupt}


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_summary_has_agent_and_every_baseline_per_fold(smoke):
    from tradebot.envs.baselines import BASELINES

    summary = smoke["result"].summary
    strategies = {AGENT, AGENT_SELECTED, AGENT_ENSEMBLE, *BASELINES}  # the seed ensemble: on by default
    folds = summary[summary["scope"] == SCOPE_FOLD]
    assert set(folds["fold"]) == {0, 1}
    for k in (0, 1):
        assert set(folds[folds["fold"] == k]["strategy"]) == strategies
    for scope in (SCOPE_FOLDS, SCOPE_STITCHED):
        assert set(summary[summary["scope"] == scope]["strategy"]) == strategies
    agent = folds[folds["strategy"] == AGENT]
    assert (agent["n"] == 2).all() and agent["sharpe_std"].notna().all()
    # the CSV on disk is the same table
    disk = pd.read_csv(smoke["out"] / "summary.csv")
    assert len(disk) == len(summary) and set(disk["strategy"]) == strategies
    # baselines are valid under the engine on the sliced test windows
    base = folds[folds["strategy"].isin(list(BASELINES))]
    assert (base["invalid_actions_mean"] == 0).all()
    assert (folds["invalid_actions_mean"] == 0).all()  # the agent's too: its policies are masked
    assert (folds["bars_mean"] == 225).all()  # 3 sessions of 75 five-minute bars


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_verdicts_overfitting_and_outputs(smoke):
    from tradebot.envs.baselines import BASELINES

    result, out = smoke["result"], smoke["out"]
    assert [v.baseline for v in result.verdicts] == list(BASELINES)
    for v in result.verdicts:
        assert ("agent beats" in v.line) != ("agent does NOT beat" in v.line)
        assert f"({v.folds_worse}/2 folds worse)" in v.line
        assert v.line in smoke["cli"]
    assert result.deflated_sharpe is not None and result.deflated_sharpe.n_trials == 2
    assert result.deflated_sharpe.n_obs == 6  # two test windows of three sessions
    assert result.pbo is not None and result.pbo.n_trials == 2
    payload = json.loads((out / "summary.json").read_text())
    assert len(payload["verdicts"]) == len(BASELINES) and payload["pbo"]["n_partitions"] == 4
    page = (out / "report.html").read_text()
    assert "Plotly.newPlot" in page and "Stitched out-of-sample equity" in page
    assert re.search(r"<script[^>]*\bsrc=", page) is None and len(page) > 3_000_000  # plotly.js inline, nothing fetched
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and runs.groupby("fold")["selected"].sum().tolist() == [1, 1]
    # the design's validation score (validation windows only) and the variant it would deploy
    sel = json.loads((out / SELECTION_FILE).read_text())
    assert len(sel["folds"]) == 2 and all(set(f["seeds"]) == {"0", "1"} for f in sel["folds"])
    assert sel["score"] == max(sel["agent_selected_validation_sharpe"], sel["agent_ensemble_validation_sharpe"])
    assert sel["variant"] == ("agent_ensemble" if sel["agent_ensemble_validation_sharpe"]
                              > sel["agent_selected_validation_sharpe"] else "agent_selected")


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_tests_only_test_dates_and_trains_on_fold_dates(smoke):
    result, out = smoke["result"], smoke["out"]
    for fold in result.folds:
        train_cfg = yaml.safe_load((out / f"fold_{fold.index:02d}" / "seed_0" / "config.yaml").read_text())
        assert train_cfg["data"]["train"] == {"start": fold.train[0].isoformat(),
                                              "end": (fold.train[-1] + dt.timedelta(days=1)).isoformat()}
        assert train_cfg["data"]["validation"]["start"] == fold.validation[0].isoformat()
        assert dt.date.fromisoformat(train_cfg["data"]["validation"]["end"]) <= fold.test[0]
    for run in result.runs:
        days = set(run.record.equity.index.tz_convert("Asia/Kolkata").date)
        assert days == set(result.folds[run.fold].test)
        saved = json.loads((run.output_dir / "test" / "metrics.json").read_text())
        assert saved["checkpoint"] == run.checkpoint and saved["metrics"]["bars"] == len(run.record.equity)


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_resume_reuses_fold_checkpoints(smoke):
    events, result = smoke["events"], smoke["result"]
    assert [e.stage for e in events if e.stage in ("train", "done")] == ["train", "done"]
    # the interrupted run's first fold/seed was not retrained: same checkpoint, untouched
    assert smoke["first_ckpt"].stat().st_mtime_ns == smoke["first_mtime"]
    assert "resumed: 1 of 4 fold/seed trainings loaded from checkpoints" in smoke["cli"]
    # the third run found everything on disk
    assert result.reused_trainings == 4 and all(r.reused_test for r in result.runs)
    state = json.loads((smoke["out"] / "evaluation.json").read_text())
    assert state["parent_run_id"] == smoke["state_after_interrupt"]["parent_run_id"]


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_mlflow_parent_and_nested_runs(smoke, mlflow_store):
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient(mlflow_store)
    result = smoke["result"]
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert "deflated_sharpe_ratio" in parent.data.metrics and "pbo" in parent.data.metrics
    assert set(parent.data.tags) >= {f"verdict.{v.baseline}" for v in result.verdicts}
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"summary.csv", "summary.json", "runs.csv", "report.html"} <= artifacts
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    assert sorted(r.info.run_name for r in children) == ["fold 0", "fold 1"]
    for fold_run in children:
        assert fold_run.info.status == "FINISHED" and "agent_sharpe_mean" in fold_run.data.metrics
        seeds = client.search_runs([exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{fold_run.info.run_id}'")
        assert sorted(r.data.tags["walkforward.seed"] for r in seeds) == ["0", "1"]
        for r in seeds:
            assert "test_sharpe" in r.data.metrics
            assert r.data.tags["walkforward.fold"] == fold_run.data.tags["walkforward.fold"]


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_changed_training_config_refuses_to_resume(smoke):
    raw = smoke["cfg"].dump()
    raw["training"]["run"]["iterations"] = 2
    changed = parse_config(WalkForwardConfig, raw)
    with pytest.raises(UserInputError, match="different config"):
        run_walkforward(changed, output_dir=smoke["out"])


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_parallel_trainings_as_ray_tasks_give_the_same_evaluation(smoke, tmp_path):
    """evaluation.parallel_trainings: the fold/seed trainings run as Ray tasks (here queued on the test's
    1-CPU Ray), then the driver tests them: the same policies and figures as the sequential run."""
    raw = smoke["cfg"].dump()
    raw["evaluation"]["parallel_trainings"] = 2
    cfg = parse_config(WalkForwardConfig, raw)
    events: list[EvaluationEvent] = []
    result = run_walkforward(cfg, output_dir=tmp_path / "parallel", on_event=events.append)
    assert sorted((e.fold, e.seed) for e in events if e.stage == "trained") == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert result.reused_trainings == 0
    sequential = {(r.fold, r.seed): r for r in smoke["result"].runs}
    for run in result.runs:
        ref = sequential[(run.fold, run.seed)]
        assert (run.iterations, run.best_validation_return) == (ref.iterations, ref.best_validation_return)
        assert run.metrics == ref.metrics
    bad = smoke["cfg"].dump()
    bad["evaluation"]["parallel_trainings"] = 0
    with pytest.raises(UserInputError, match="parallel_trainings must be >= 1"):
        parse_config(WalkForwardConfig, bad)
