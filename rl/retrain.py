"""Champion / challenger retraining: train challengers on the newest data, promote one only when it proves
better on the same latest held-back window, keep the old champion one command away.

```yaml
retrain:                                   # experiments/retrain.yaml; `tradebot retrain --config FILE`
  registered_model: tradebot-ppo-lstm-demo # its @champion alias is the model live runs load
  data: data/sample/NSE_NIFTY50-INDEX_5m.csv.gz
  windows: {train_sessions: 60, validation_sessions: 10, test_sessions: 10}
  challengers: [scratch, finetune]
  promotion: {metric: sharpe, margin: 0.25, max_worst_30d_drawdown: 0.10, min_trades: 3}
```

1. The newest sessions of ``data`` are cut into train, validation and test windows (in that order;
   the test window is the latest ``test_sessions`` and no challenger sees it).
2. Challengers are trained with the champion's own training config (features, engine, reward,
   network), only the dates changed: ``scratch`` from fresh weights with its iterations,
   ``finetune`` from the champion's weights and normaliser (``run.init_from``) for
   ``finetune_iterations`` at ``finetune_lr_scale`` times its learning rate: the practical form of
   continuous adaptation. Each is registered as a new version of the model, without an alias.
3. Champion and challengers are backtested on the test window through the same wrapper, engine and
   costs, and compared on ``promotion.metric``.
4. The best challenger is promoted (alias ``@champion``; the old champion keeps ``@previous``) only if
   it beats the champion by ``margin`` and passes the risk checks (worst 30-day drawdown, trade
   count). Without a champion yet, the best challenger that passes the risk checks becomes one.
5. ``rollback`` moves ``@champion`` back to ``@previous`` (and ``@previous`` to the model it replaced).

Everything is in MLflow: a parent run in ``mlflow_experiment`` with the decision, every candidate's
test metrics and the windows; the challengers' training runs are nested under it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.errors import UserInputError

CHAMPION, PREVIOUS = "champion", "previous"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows a run under its parent


class Windows(FrozenConfig):
    """How many of the newest sessions each window gets (train, then validation, then test: the latest)."""

    train_sessions: int = Field(60, ge=5)
    validation_sessions: int = Field(10, ge=1)
    test_sessions: int = Field(10, ge=1, description="the held-back window champion and challengers are judged on")


class Promotion(FrozenConfig):
    """When a challenger replaces the champion."""

    metric: Literal["sharpe", "sortino", "total_return", "calmar"] = "sharpe"
    margin: float = Field(0.25, description="the challenger's metric must exceed the champion's by this much")
    max_worst_30d_drawdown: float = Field(0.10, gt=0, le=1, description="risk check: worst 30-day drawdown at most this")
    min_trades: int = Field(1, ge=0, description="risk check: at least this many closed trades in the test window")


class RetrainConfig(FrozenConfig):
    """``tradebot retrain --config FILE`` (YAML section ``retrain``)."""

    registered_model: str = Field(min_length=1, description="the MLflow model whose @champion is retrained")
    data: str = Field(description="bar file with the newest bars of the champion's instrument")
    symbol: str | None = None
    extra_data: list[str] = Field(default_factory=list, description="bar files of the champion's other "
                                  "instruments: the challengers train on them too, over the same date windows "
                                  "(champion and challengers are judged on `data`)")
    windows: Windows = Windows()
    challengers: list[Literal["scratch", "finetune"]] = Field(default_factory=lambda: ["scratch", "finetune"])
    iterations: int | None = Field(None, ge=1, description="scratch challenger's iterations; null: the champion's config")
    finetune_iterations: int = Field(10, ge=1)
    finetune_lr_scale: float = Field(0.3, gt=0, le=1)
    base_config: str | None = Field(None, description="training YAML to use instead of the champion's own")
    promotion: Promotion = Promotion()
    output_dir: str = "runs/retrain"
    mlflow_experiment: str = "tradebot-retrain"

    @model_validator(mode="after")
    def _some_challenger(self) -> RetrainConfig:
        if not self.challengers:
            raise ValueError("name at least one challenger (scratch, finetune)")
        if len(set(self.challengers)) != len(self.challengers):
            raise ValueError("each challenger kind once")
        return self


def load_retrain_config(path: str | Path) -> RetrainConfig:
    return load_config(RetrainConfig, path, "retrain")


@dataclass
class Candidate:
    name: str  # champion, scratch, finetune
    model_uri: str
    version: int
    metrics: dict[str, float]
    passes_risk: bool = True
    risk_notes: list[str] = field(default_factory=list)


@dataclass
class RetrainResult:
    windows: dict[str, tuple[str, str]]
    champion: Candidate | None
    challengers: list[Candidate]
    promoted: Candidate | None
    reason: str
    parent_run_id: str


def session_windows(bars, windows: Windows) -> dict[str, tuple[dt.date, dt.date]]:
    """Train / validation / test date ranges (half-open) over the newest sessions of ``bars``."""
    days = sorted({t.date() for t in bars.index})
    need = windows.validation_sessions + windows.test_sessions + 5
    if len(days) < need:
        raise UserInputError(f"the data has {len(days)} sessions; retraining needs at least {need} "
                             "(validation + test + 5 for training)")
    after = days[-1] + dt.timedelta(days=1)
    test0 = days[-windows.test_sessions]
    val0 = days[-(windows.test_sessions + windows.validation_sessions)]
    train0 = days[max(0, len(days) - windows.test_sessions - windows.validation_sessions - windows.train_sessions)]
    return {"train": (train0, val0), "validation": (val0, test0), "test": (test0, after)}


def risk_checks(metrics: dict[str, float], promotion: Promotion) -> list[str]:
    """What keeps a candidate from promotion (empty: it passes)."""
    from tradebot.envs.performance import M

    notes = []
    worst = abs(float(metrics.get(M.WORST_30D_DRAWDOWN, 0.0)))
    if worst > promotion.max_worst_30d_drawdown:
        notes.append(f"worst 30-day drawdown {worst:.2%} > {promotion.max_worst_30d_drawdown:.2%}")
    trades = int(metrics.get(M.TRADES, 0))
    if trades < promotion.min_trades:
        notes.append(f"{trades} trade(s) < {promotion.min_trades}")
    return notes


def decide(champion: Candidate | None, challengers: list[Candidate], promotion: Promotion) -> tuple[Candidate | None, str]:
    """The challenger to promote (or None) and why, in one line."""
    key = promotion.metric
    passing = [c for c in challengers if c.passes_risk and math.isfinite(c.metrics.get(key, math.nan))]
    if not passing:
        return None, "no challenger passes the risk checks: " + "; ".join(
            f"{c.name}: {', '.join(c.risk_notes) or 'no ' + key}" for c in challengers)
    best = max(passing, key=lambda c: c.metrics[key])
    if champion is None:
        return best, f"no champion yet: {best.name} ({key} {best.metrics[key]:.3f}) passes the risk checks"
    base = champion.metrics.get(key, math.nan)
    if not math.isfinite(base) or best.metrics[key] >= base + promotion.margin:
        return best, (f"{best.name} {key} {best.metrics[key]:.3f} beats the champion's {base:.3f} by at least "
                      f"{promotion.margin:g} and passes the risk checks")
    return None, (f"best challenger {best.name} {key} {best.metrics[key]:.3f} does not beat the champion's "
                  f"{base:.3f} by {promotion.margin:g}: the champion stays")


def use_tracking(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (default: the project's, ``tradebot.rl.tracking.default_tracking_uri``)."""
    import mlflow

    from tradebot.rl.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def alias_version(name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(name: str, version: int) -> int | None:
    """``@champion`` -> ``version``; the old champion becomes ``@previous``. Returns the old champion's version."""
    client = _client()
    old = alias_version(name, CHAMPION)
    if old is not None and old != version:
        client.set_registered_model_alias(name, PREVIOUS, str(old))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return old


def rollback(name: str) -> tuple[int, int]:
    """``@champion`` back to ``@previous``; ``@previous`` then names the version rolled back from.
    Returns ``(champion now, previous now)``."""
    current, previous = alias_version(name, CHAMPION), alias_version(name, PREVIOUS)
    if previous is None:
        raise UserInputError(f"model {name} has no @{PREVIOUS} version to roll back to")
    client = _client()
    client.set_registered_model_alias(name, CHAMPION, str(previous))
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current))
    return previous, current if current is not None else previous


def _evaluate(model_uri: str, bars, start: dt.date, end: dt.date, engine=None) -> dict[str, float]:
    from tradebot.envs.performance import metrics_from_result
    from tradebot.rl.backtest_policy import backtest_policy, load_policy_setup, policy_env_config

    setup = load_policy_setup(model_uri)
    env_config = setup.env_config if engine is None else policy_env_config(setup.train_config, engine)
    run = backtest_policy(setup.policy, bars, env_config, start=start.isoformat(), end=end.isoformat())
    return dict(metrics_from_result(run.result, bars.timeframe).values)


def run_retrain(cfg: RetrainConfig, tracking_uri: str | None = None, on_step=lambda message: None) -> RetrainResult:
    """Train the challengers, judge everyone on the test window, promote or not (see the module docstring)."""

    from tradebot.features.bars import load_bars
    from tradebot.rl.backtest_policy import saved_train_config
    from tradebot.rl.tracking import flatten_params, open_experiment
    from tradebot.rl.train import train
    from tradebot.rl.train_config import DateRange, load_train_config

    experiment = open_experiment(cfg.mlflow_experiment, tracking_uri)
    bars = load_bars(cfg.data, symbol=cfg.symbol)
    wins = session_windows(bars, cfg.windows)
    champ_version = alias_version(cfg.registered_model, CHAMPION)
    champ_uri = f"models:/{cfg.registered_model}@{CHAMPION}" if champ_version is not None else None
    if cfg.base_config is not None:
        base = load_train_config(cfg.base_config)
    elif champ_uri is not None:
        saved = saved_train_config(champ_uri)
        if saved is None:
            raise UserInputError(f"{champ_uri} carries no training config; give retrain.base_config")
        base = saved.config
    else:
        raise UserInputError(f"model {cfg.registered_model} has no @{CHAMPION} yet; give retrain.base_config "
                             f"(a training YAML) to train the first one, or set the alias on a version")
    kinds = [k for k in cfg.challengers if k != "finetune" or champ_uri is not None]
    if not kinds:
        raise UserInputError(f"a finetune challenger needs a champion to start from; model {cfg.registered_model} "
                             f"has no @{CHAMPION}: add scratch to retrain.challengers for the first one")
    if len(kinds) < len(cfg.challengers):
        on_step(f"no @{CHAMPION} yet: the finetune challenger is skipped")

    out = Path(cfg.output_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    client = _client()
    # the parent run is driven through the client, not as the active run: each challenger's `train` opens
    # its own active run, which the nesting tag then puts under this one
    parent = client.create_run(experiment.experiment_id, run_name=f"retrain-{stamp}")
    parent_id = parent.info.run_id
    status = "FAILED"
    try:
        params = flatten_params({"retrain": cfg.model_dump(mode="json"),
                                 "windows": {k: [str(a), str(b)] for k, (a, b) in wins.items()}})
        for key, value in params.items():
            client.log_param(parent_id, key, value)
        if champ_version is not None:
            client.set_tag(parent_id, "champion_version", str(champ_version))
        data = base.data.model_copy(update={
            "path": cfg.data, "symbol": cfg.symbol or base.data.symbol, "extra_paths": list(cfg.extra_data),
            "train": DateRange(start=wins["train"][0], end=wins["train"][1]),
            "validation": DateRange(start=wins["validation"][0], end=wins["validation"][1])})
        candidates: list[Candidate] = []
        for kind in kinds:
            run_update: dict[str, Any] = {"output_dir": str(out / stamp / kind), "registered_model": cfg.registered_model,
                                          "mlflow_experiment": cfg.mlflow_experiment, "init_from": None}
            ppo = base.ppo
            if kind == "finetune":
                run_update.update(init_from=champ_uri, iterations=cfg.finetune_iterations)
                ppo = ppo.model_copy(update={"lr": ppo.lr * cfg.finetune_lr_scale})
            elif cfg.iterations is not None:
                run_update["iterations"] = cfg.iterations
            train_cfg = base.model_copy(update={"data": data, "ppo": ppo, "run": base.run.model_copy(update=run_update)})
            on_step(f"training the {kind} challenger ({train_cfg.run.iterations} iteration(s))")
            done = train(type(base).model_validate(train_cfg.model_dump()), tracking_uri=tracking_uri)
            client.set_tag(done.mlflow_run_id, PARENT_TAG, parent_id)
            client.set_model_version_tag(cfg.registered_model, str(done.model_version), "challenger",
                                         f"{kind} (retrain {parent_id})")
            candidates.append(Candidate(kind, done.model_uri, done.model_version, {}))
        champion = (Candidate(CHAMPION, f"models:/{cfg.registered_model}/{champ_version}", champ_version, {})
                    if champ_version is not None else None)
        test0, test1 = wins["test"]
        for cand in ([champion] if champion else []) + candidates:
            on_step(f"backtesting {cand.name} (version {cand.version}) on the test window {test0} .. {test1}")
            cand.metrics = _evaluate(cand.model_uri, bars, test0, test1)
            cand.risk_notes = risk_checks(cand.metrics, cfg.promotion)
            cand.passes_risk = not cand.risk_notes
            for key, value in cand.metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    client.log_metric(parent_id, f"{cand.name}_{key}", float(value))
        promoted, reason = decide(champion, candidates, cfg.promotion)
        if promoted is not None:
            promote(cfg.registered_model, promoted.version)
        for key, value in {"decision": "promoted" if promoted else "kept", "reason": reason[:4000],
                           "promoted_version": str(promoted.version) if promoted else ""}.items():
            client.set_tag(parent_id, key, value)
        status = "FINISHED"
    finally:
        client.set_terminated(parent_id, status)
    return RetrainResult(windows={k: (str(a), str(b)) for k, (a, b) in wins.items()}, champion=champion,
                         challengers=candidates, promoted=promoted, reason=reason, parent_run_id=parent_id)
