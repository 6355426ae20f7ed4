"""Drift monitors over a bar file, offline (``tradebot drift check``), and the model's reference.

```python
reference = model_reference("models:/tradebot-ppo-lstm-demo/1")      # saved with the model, or rebuilt
check = drift_check("models:/tradebot-ppo-lstm-demo/1", "data/bars.csv.gz", start="2021-07-01")
check.transitions, check.final_states, check.reached_alarm
```

The policy is backtested over the bars exactly as ``tradebot backtest --policy`` does; the monitors
then see each evaluated bar's market features and the policy's action, in time order, and each
closed trade's net return at its exit bar: what the live loop feeds them, one bar at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.rl.drift.drift_config import DriftConfig
from tradebot.rl.drift.monitors import DriftMonitors, MonitorState, Transition
from tradebot.rl.drift.reference import REFERENCE_FILE, DriftReference, build_reference, trade_returns

MODEL_REFERENCE_PATH = f"artifacts/policy/{REFERENCE_FILE}"  # inside a registered model


@dataclass
class DriftCheck:
    """What the monitors said over a bar file."""

    bars: int
    trades: int
    transitions: list[Transition]
    final_states: dict[str, MonitorState]
    snapshot: dict[str, Any]
    reference_origin: str  # where the reference came from (the model, or rebuilt from its training config)
    notes: list[str] = field(default_factory=list)

    @property
    def reached_alarm(self) -> bool:
        return any(t.new is MonitorState.ALARM for t in self.transitions)

    @property
    def exit_code(self) -> int:
        """0: every monitor ends OK; 1: one reached ALARM; 3: no ALARM, but one ends in WARN."""
        if self.reached_alarm:
            return 1
        return 0 if all(s is MonitorState.OK for s in self.final_states.values()) else 3

    def to_dict(self) -> dict[str, Any]:
        return {"bars": self.bars, "trades": self.trades, "exit_code": self.exit_code,
                "final_states": {k: v.value for k, v in self.final_states.items()},
                "transitions": [t.to_dict() for t in self.transitions], "monitors": self.snapshot,
                "reference": self.reference_origin, "notes": list(self.notes)}


def saved_reference(source: str | Path) -> DriftReference | None:
    """The reference stored with a model (a policy folder, a checkpoint, or ``models:/``/``runs:/``), or None."""
    text = str(source)
    if text.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        base = text.rstrip("/")
        for candidate in (f"{base}/{MODEL_REFERENCE_PATH}", f"{base}/{REFERENCE_FILE}"):
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=candidate)
            except (MlflowException, OSError):
                continue
            return DriftReference.load(local)
        return None
    path = Path(text)
    for candidate in (path / REFERENCE_FILE, path.parent / REFERENCE_FILE):
        if candidate.is_file():
            return DriftReference.load(candidate)
    return None


def reference_for(policy, env_config, bars, train: tuple[Any, Any], validation: tuple[Any, Any],
                  source: dict[str, Any] | None = None) -> DriftReference:
    """The reference of ``policy`` for ``bars``: features over the ``train`` dates (start, end), actions and
    trades of a backtest over the ``validation`` dates."""
    from tradebot.features.pipeline import FeaturePipeline
    from tradebot.rl.backtest_policy import backtest_policy

    history = bars.between(None, str(train[1]))
    pipe = FeaturePipeline.for_bars(history, env_config.features)
    frame = pipe.transform(history)
    rows = frame.loc[frame.index >= _ts(train[0], frame.index.tz)]
    run = backtest_policy(policy, bars, env_config, start=validation[0], end=validation[1])
    return build_reference(rows.to_numpy(), pipe.feature_names, run.actions[:-1], trade_returns(run.result.trades),
                           source=source)


def reference_from_training(policy, train_config, env_config) -> DriftReference:
    """Build the reference a model should carry from its training config: the training bars' features,
    and the policy's actions and trades on its validation dates."""
    from tradebot.features.bars import load_bars

    data = train_config.data
    if data.validation is None:
        raise UserInputError("the model's training config has no validation dates: a drift reference needs "
                             "out-of-sample actions and trades (set data.validation and retrain)")
    train, val = (data.train.start, data.train.end), (data.validation.start, data.validation.end)
    return reference_for(policy, env_config, load_bars(data.path, symbol=data.symbol), train, val,
                         source={"data": data.path, "train": [str(d) for d in train],
                                 "validation": [str(d) for d in val]})


def model_reference(source: str, setup=None) -> tuple[DriftReference, str]:
    """``(reference, origin)``: the one saved with the model, else one rebuilt from its training config."""
    saved = saved_reference(source)
    if saved is not None:
        return saved, f"saved with {source}"
    if setup is None:
        from tradebot.rl.backtest_policy import load_policy_setup

        setup = load_policy_setup(source)
    if setup.train_config is None:
        raise UserInputError(f"{source}: no drift reference and no training config to build one from; "
                             "use a model trained by `tradebot train`")
    return (reference_from_training(setup.policy, setup.train_config, setup.env_config),
            f"rebuilt from the training config at {setup.config_location}")


def drift_check(model: str, data: str | Path, start: Any = None, end: Any = None,
                config: DriftConfig | None = None, symbol: str | None = None) -> DriftCheck:
    """Backtest ``model`` over the bars of ``data`` (``start <= bar < end``) and run the monitors over it."""
    from tradebot.features.bars import load_bars
    from tradebot.rl.backtest_policy import backtest_policy, load_policy_setup

    bars = load_bars(data, symbol=symbol)
    setup = load_policy_setup(model)
    reference, origin = model_reference(model, setup)
    run = backtest_policy(setup.policy, bars, setup.env_config, start=start, end=end)
    return monitor_run(reference, run, setup.env_config, config or DriftConfig(), origin)


def monitor_run(reference: DriftReference, run, env_config, config: DriftConfig, origin: str = "",
                trace: list[tuple[float, float, float]] | None = None) -> DriftCheck:
    """Feed a policy backtest (``tradebot.rl.backtest_policy.PolicyBacktest``) to fresh monitors;
    ``trace`` (a list) gets each bar's (features, actions, performance) statistics, for calibration."""
    from tradebot.features.pipeline import FeaturePipeline

    history = run.window.history
    pipe = FeaturePipeline.for_bars(history, env_config.features)
    if tuple(pipe.feature_names) != tuple(reference.feature_names):
        raise UserInputError("the bars give other features than the model's reference "
                             f"({len(pipe.feature_names)} vs {len(reference.feature_names)}: e.g. bars with volume "
                             "for a model trained on an index); check the data against the model")
    feats = pipe.transform(history).to_numpy()[run.window.first:]
    stamps = run.bars.index.as_unit("ns").asi8
    trades = run.result.trades
    returns = trade_returns(trades)
    exits = (pd.DatetimeIndex(trades["exit_time"]).as_unit("ns").asi8 if len(trades)
             else np.zeros(0, dtype=np.int64))
    order = np.argsort(exits, kind="stable")
    monitors = DriftMonitors(reference, config)
    transitions: list[Transition] = []
    k = 0
    for i, ts in enumerate(stamps):
        transitions += monitors.on_bar(int(ts), feats[i], int(run.actions[i]) if i < len(stamps) - 1 else None)
        while k < len(order) and exits[order[k]] <= ts:
            transitions += monitors.on_trade(int(exits[order[k]]), float(returns[order[k]]))
            k += 1
        if trace is not None:
            trace.append(tuple(m.value if m is not None else float("nan")
                               for m in (monitors.features, monitors.actions, monitors.performance)))
    notes = []
    if monitors.performance is not None and not monitors.performance.usable:
        notes.append(f"performance monitor idle: the reference has {reference.trades} validation trade(s)")
    return DriftCheck(bars=len(stamps), trades=len(trades), transitions=transitions,
                      final_states=monitors.states, snapshot=monitors.snapshot(), reference_origin=origin,
                      notes=notes)


def _ts(date, tz) -> pd.Timestamp:
    return pd.Timestamp(str(date), tz=tz)
