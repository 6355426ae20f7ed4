"""Training configuration: one frozen, typed section per concern, loaded from YAML.

```yaml
data:  {path: data/sample/NSE_NIFTY50-INDEX_5m.csv.gz,
        train: {start: 2021-01-01, end: 2021-05-01}, validation: {start: 2021-05-01, end: 2021-06-01}}
env:   {...}            # passed through to the env as its config (TradingEnv: envs.EnvConfig)
ppo:   {lr: 3.0e-4, gamma: 0.99, gae_lambda: 0.95, ...}
model: {lstm_cell_size: 64, max_seq_len: 20, fcnet_hiddens: [64]}
run:   {seed: 0, iterations: 50, checkpoint_every: 5, patience: 10, output_dir: runs/demo, ...}
```

Date ranges are half-open, ``start <= bar < end``, in IST. An unknown key anywhere is a one-line
``UserInputError`` naming the key (``tradebot.core.config``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig, load_config

DEFAULT_ENV_ID = "tradebot.envs.trading_env:tradebot/Trading-v0"
MAX_ENVS_PER_RUNNER = 4096
AUTO_ENVS_PER_RUNNER = 256  # the most sub-envs `auto` gives a runner
CONFIG_FILE = "config.yaml"  # a run's TrainConfig: in its output folder, every checkpoint and every registered policy


class DateRange(FrozenConfig):
    """Bars with ``start <= timestamp < end`` (dates in IST)."""

    start: dt.date = Field(description="first day included")
    end: dt.date = Field(description="first day excluded")

    @model_validator(mode="after")
    def _ordered(self) -> "DateRange":
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self


class DataSection(FrozenConfig):
    """Where the bars come from and which dates train and validate. Anything later is held back."""

    path: str = Field("data/sample/NSE_NIFTY50-INDEX_5m.csv.gz", description="bar file (CSV, CSV.gz or Parquet)")
    symbol: str | None = Field(None, description="Fyers symbol; null: taken from the file name")
    extra_paths: list[str] = Field(default_factory=list, description="more bar files (other instruments, same "
                                   "feature set) that training also samples, on the same dates; validation uses path")
    train: DateRange = Field(DateRange(start=dt.date(2021, 1, 1), end=dt.date(2021, 5, 1)),
                             description="training dates")
    validation: DateRange | None = Field(DateRange(start=dt.date(2021, 5, 1), end=dt.date(2021, 6, 1)),
                                         description="validation dates (early stopping, best checkpoint); null: none")

    @model_validator(mode="after")
    def _no_overlap(self) -> "DataSection":
        if self.validation is not None and self.validation.start < self.train.end:
            raise ValueError(f"validation starts {self.validation.start}, before the training range ends "
                             f"({self.train.end}); validation must come after training")
        return self


class PPOSection(FrozenConfig):
    """PPO hyper-parameters (RLlib new API stack)."""

    lr: float = Field(3e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.99, gt=0, le=1, description="discount factor")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    entropy_coeff: float = Field(0.01, ge=0, description="entropy bonus coefficient")
    clip_param: float = Field(0.2, gt=0, description="PPO surrogate clip")
    vf_loss_coeff: float = Field(0.5, ge=0, description="value-loss coefficient")
    train_batch_size: int = Field(4000, ge=1, description="env steps per training iteration")
    minibatch_size: int = Field(500, ge=1, description="env steps per SGD minibatch")
    num_epochs: int = Field(5, ge=1, description="SGD passes over each train batch")

    @model_validator(mode="after")
    def _minibatch_fits(self) -> "PPOSection":
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size {self.minibatch_size} exceeds train_batch_size {self.train_batch_size}")
        return self


class ModelSection(FrozenConfig):
    """The PPO-LSTM network: an MLP tokenizer, one LSTM layer, linear policy and value heads."""

    lstm_cell_size: int = Field(64, ge=1, description="LSTM hidden size")
    max_seq_len: int = Field(20, ge=1, description="training sequence length (BPTT window)")
    fcnet_hiddens: list[int] = Field(default_factory=lambda: [64], description="MLP layers before the LSTM")
    fcnet_activation: Literal["tanh", "relu", "silu", "linear"] = Field("tanh", description="MLP activation")
    action_masking: bool = Field(True, description="mask invalid actions in the policy (tradebot.rl.masking): no "
                                 "probability on an action the engine would ignore; false: the plain module, which "
                                 "must learn the rules itself (its invalid actions are counted no-ops)")


class RunSection(FrozenConfig):
    """How long to train, where to write, and what to call things."""

    seed: int = Field(0, description="seed for RLlib, torch, numpy and the validation env")
    iterations: int = Field(50, ge=1, description="training iterations (each samples ppo.train_batch_size steps)")
    checkpoint_every: int = Field(5, ge=1, description="save a checkpoint every N iterations (and at the end)")
    keep_checkpoints: int = Field(3, ge=1, description="periodic checkpoints kept on disk (the best one is kept apart)")
    validate_every: int = Field(1, ge=1, description="score the policy on the validation dates every N iterations")
    patience: int | None = Field(10, ge=1, description="stop after N validations without improvement; null: never")
    select_after: int = Field(0, ge=0, description="validations before this iteration are logged but neither pick "
                              "the registered checkpoint nor count towards patience (a short validation window "
                              "tends to favour a barely trained policy that stays out of the market)")
    num_env_runners: int = Field(0, ge=0, description="remote sampling workers (0: sample in the driver)")
    num_envs_per_env_runner: int | Literal["auto"] = Field(
        "auto", description="sub-envs of each runner's vector env (stepped as one batch, one forward pass per "
        "step), 1..4096; auto: as many as leave each sub-env model.max_seq_len steps per iteration, at most 256")
    num_cpus_per_env_runner: float = Field(1.0, gt=0, description="CPUs each env runner reserves on the cluster")
    num_gpus_per_learner: float | Literal["auto"] = Field(
        0.0, description="GPU share of the learner (0: CPU; 1: a whole GPU); auto: one GPU when the cluster has any")
    output_dir: str = Field("runs/demo", description="checkpoints, state and logs; re-running resumes from here")
    env_id: str = Field(DEFAULT_ENV_ID, description="gymnasium id ('module:id' imports the module first); "
                        "the env must take data= and config= like TradingEnv")
    mlflow_experiment: str = Field("tradebot-train", description="MLflow experiment name")
    registered_model: str = Field("tradebot-ppo-lstm", description="MLflow registered-model name for the final policy")
    init_from: str | None = Field(None, description="fine-tune: start from this policy's weights and observation "
                                  "normaliser (an algorithm checkpoint folder, or models:/NAME@ALIAS or "
                                  "models:/NAME/VERSION registered by tradebot train); null: fresh weights")


    @model_validator(mode="after")
    def _gpu_share(self) -> "RunSection":
        if self.num_gpus_per_learner != "auto" and not 0 <= float(self.num_gpus_per_learner) <= 1:
            raise ValueError("num_gpus_per_learner must be in [0, 1] or 'auto'")
        if self.num_envs_per_env_runner != "auto" and not 1 <= self.num_envs_per_env_runner <= MAX_ENVS_PER_RUNNER:
            raise ValueError(f"num_envs_per_env_runner must be in [1, {MAX_ENVS_PER_RUNNER}] or 'auto'")
        return self


class TrainConfig(FrozenConfig):
    """Everything ``tradebot train`` needs; see the module docstring for the YAML layout."""

    data: DataSection = Field(default_factory=DataSection)
    env: dict[str, Any] = Field(default_factory=dict, description="the env's config (TradingEnv: envs.EnvConfig)")
    ppo: PPOSection = Field(default_factory=PPOSection)
    model: ModelSection = Field(default_factory=ModelSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="after")
    def _sub_envs_fill_a_sequence(self) -> "TrainConfig":
        check_sub_envs(self.ppo, self.model, self.run)
        check_agent_rules(self.env, self.model)
        return self

    @property
    def envs_per_runner(self) -> int:
        """``run.num_envs_per_env_runner`` as a number (``auto`` resolved)."""
        n = self.run.num_envs_per_env_runner
        if n != "auto":
            return int(n)
        fit = self.ppo.train_batch_size // (self.model.max_seq_len * max(1, self.run.num_env_runners))
        return max(1, min(AUTO_ENVS_PER_RUNNER, fit))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def check_sub_envs(ppo: PPOSection, model: ModelSection, run: RunSection) -> None:
    """Each sub-env must sample at least one LSTM sequence (``model.max_seq_len`` steps) per iteration."""
    n = run.num_envs_per_env_runner
    if n == "auto" or n == 1:
        return
    steps = ppo.train_batch_size // (n * max(1, run.num_env_runners))
    if steps < model.max_seq_len:
        need = n * max(1, run.num_env_runners) * model.max_seq_len
        raise ValueError(f"run.num_envs_per_env_runner {n} leaves each sub-env {steps} steps of "
                         f"ppo.train_batch_size {ppo.train_batch_size} per iteration, fewer than "
                         f"model.max_seq_len {model.max_seq_len}: raise ppo.train_batch_size to {need} "
                         "or more, or lower run.num_envs_per_env_runner (auto picks one that fits)")


def check_agent_rules(env: dict[str, Any], model: ModelSection) -> None:
    """A minimum holding time is enforced by the action mask: it needs the masked module."""
    if int(env.get("min_hold_bars") or 0) > 0 and not model.action_masking and "gate" not in env:
        # (a mixture's rl gate picks experts, never trade actions: its experts' masks enforce the hold)
        raise ValueError("env.min_hold_bars is enforced by masking the closes: set model.action_masking: true "
                         "or drop min_hold_bars")


def load_train_config(path: str | Path | None) -> TrainConfig:
    """Load a ``TrainConfig`` from YAML (defaults when ``path`` is None)."""
    return load_config(TrainConfig, path)
