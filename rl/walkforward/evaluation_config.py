"""The walk-forward config (``tradebot evaluate --config FILE``; an unknown key is a one-line error naming it)::

    data:       {path: ..., symbol: null, extra_paths: [], start: 2021-01-01, end: null}   # dates folds may use
    folds:      {unit: months, train: 6, validation: 1, test: 1, step: 2, purge: 2, embargo: 0,
                 anchored: false, max_folds: null}
    evaluation: {seeds: [0, 1, 2], baselines: null, baseline_seed: 0, configs_tried: 1,
                 pbo_partitions: 8, ensemble: true, parallel_trainings: 1, output_dir: runs/walkforward,
                 mlflow_experiment: ..., registered_model: ...}
    training:   {env: {...}, ppo: {...}, model: {...}, run: {...}}   # tradebot.rl.train_config sections, no data
                {..., moe: {...}}   # optional: each fold/seed builds a mixture of experts (tradebot.rl.moe.training);
                                    # the registered gate's mixture is the agent, the other gates' are tested too
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig, load_config, parse_config
from tradebot.rl.moe.training import MoEConfig, MoESection
from tradebot.rl.train_config import DataSection, ModelSection, PPOSection, RunSection, TrainConfig, check_sub_envs
from tradebot.rl.walkforward.folds import Fold, FoldSpec

if TYPE_CHECKING:
    from tradebot.envs.trading_env import EnvConfig

# Keys of the training template's run section that the evaluation sets per fold and seed.
RUN_KEYS_SET_PER_FOLD = {"seed": "evaluation.seeds", "output_dir": "evaluation.output_dir (or --out)",
                         "mlflow_experiment": "evaluation.mlflow_experiment",
                         "registered_model": "evaluation.registered_model"}


class WalkForwardData(FrozenConfig):
    """The bar file and the dates the folds may use (half-open, IST); earlier bars warm features up."""

    path: str = Field(description="bar file (CSV, CSV.gz or Parquet)")
    symbol: str | None = Field(None, description="Fyers symbol; null: taken from the file name")
    extra_paths: list[str] = Field(default_factory=list, description="more instruments (same bar size and feature "
                                   "set): one policy is trained on all of them, tested on each, and pooled")
    start: dt.date | None = Field(None, description="first day the folds may use; null: the first bar")
    end: dt.date | None = Field(None, description="first day excluded; null: after the last bar")

    @model_validator(mode="after")
    def _ordered(self) -> "WalkForwardData":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
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
    ensemble: bool = Field(True, description="also test agent_ensemble: per fold, the seeds' policies acting on "
                           "their averaged action probabilities")
    parallel_trainings: int | Literal["auto"] = Field(
        1, description="fold/seed trainings run at once as Ray tasks (over a cluster's nodes with --address, "
        "or a machine's cores); auto: as many as the cluster has CPUs for")
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
        if self.parallel_trainings != "auto" and self.parallel_trainings < 1:
            raise ValueError(f"parallel_trainings must be >= 1 or 'auto', got {self.parallel_trainings}")
        if self.baselines is not None:
            from tradebot.envs.baselines import BASELINES

            unknown = [b for b in self.baselines if b not in BASELINES]
            if unknown:
                raise ValueError(f"unknown baseline {unknown[0]!r}; valid: {', '.join(BASELINES)}")
        return self


class TrainingTemplate(FrozenConfig):
    """``tradebot.rl.train_config.TrainConfig`` without ``data``: the dates come from the folds."""

    env: dict[str, Any] = Field(default_factory=dict, description="the env's config (TradingEnv: envs.EnvConfig)")
    ppo: PPOSection = Field(default_factory=PPOSection)
    model: ModelSection = Field(default_factory=ModelSection)
    run: RunSection = Field(default_factory=RunSection)
    moe: MoESection | None = Field(None, description="build a mixture of experts per fold/seed (the agent is the "
                                   "mixture with moe.gate; the other gates' mixtures are tested as moe_<gate>)")

    @model_validator(mode="after")
    def _run_keys_not_set(self) -> "TrainingTemplate":
        for key, where in RUN_KEYS_SET_PER_FOLD.items():
            if key in self.run.model_fields_set:
                raise ValueError(f"run.{key} is set per fold by the evaluation; set {where} instead")
        check_sub_envs(self.ppo, self.model, self.run)
        return self


class WalkForwardConfig(FrozenConfig):
    """Everything ``tradebot evaluate`` needs; see the module docstring for the YAML layout."""

    data: WalkForwardData
    folds: FoldSpec = Field(default_factory=FoldSpec)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    training: TrainingTemplate = Field(default_factory=TrainingTemplate)

    def dump(self) -> dict[str, Any]:
        """Plain data (JSON types), without the training run keys the evaluation sets itself."""
        return self.model_dump(mode="json", exclude={"training": {"run": set(RUN_KEYS_SET_PER_FOLD)}})

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.dump(), sort_keys=False)

    @property
    def baseline_names(self) -> list[str]:
        from tradebot.envs.baselines import BASELINES

        return list(self.evaluation.baselines) if self.evaluation.baselines is not None else list(BASELINES)

    def env_config(self) -> EnvConfig:
        """The training env's config (``training.env`` parsed as the TradingEnv's ``EnvConfig``)."""
        from tradebot.envs.trading_env import EnvConfig

        return parse_config(EnvConfig, self.training.env, "training.env")

    def train_config(self, fold: Fold, seed: int, output_dir: Path) -> TrainConfig:
        """The ``TrainConfig`` of one fold and seed."""
        t = self.training
        run = t.run.model_copy(update={"seed": seed, "output_dir": str(output_dir),
                                       "mlflow_experiment": self.evaluation.mlflow_experiment,
                                       "registered_model": self.evaluation.registered_model})
        data = DataSection(path=self.data.path, symbol=self.data.symbol, extra_paths=list(self.data.extra_paths),
                           train=fold.train_range, validation=fold.validation_range)
        if t.moe is not None:
            return MoEConfig(data=data, env=dict(t.env), ppo=t.ppo, model=t.model, run=run, moe=t.moe)
        return TrainConfig(data=data, env=dict(t.env), ppo=t.ppo, model=t.model, run=run)


def load_walkforward_config(path: str | Path) -> WalkForwardConfig:
    """Load a ``WalkForwardConfig`` from YAML (a missing file or unknown key is a ``UserInputError``)."""
    return load_config(WalkForwardConfig, path)
