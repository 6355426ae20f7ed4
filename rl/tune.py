"""Hyper-parameter search for the PPO-LSTM on Ray Tune (ASHA), every trial tracked in MLflow.

How to run
----------
``tradebot tune --config experiments/tune.yaml [--samples N] [--address ray://... | RAY_ADDRESS]
[--output DIR-or-URI] [--tracking-uri URI | MLFLOW_TRACKING_URI]`` or
``tradebot.rl.tune.tune_search(load_tune_config(path))``. Without ``--address`` / ``RAY_ADDRESS`` a private
local Ray instance is started, sized to ``max_concurrent_trials`` trials; with one (``auto`` on a
cluster node, ``HOST:6379``, ``ray://HOST:10001``) the trials are spread over that cluster's nodes.

On a cluster
------------
Tune's storage (``tune.output_dir`` / ``--output``, passed to ``RunConfig(storage_path=...)``) must
be reachable from every node: an ``s3://bucket/prefix`` (or ``gs://``) URI, or a shared file system
mounted at the same path everywhere. Each trial trains in a local scratch folder on its node and
Tune persists its reported (best) checkpoints to the storage. Data paths are made absolute on the
driver, so the bar files must sit at the same path on every node (the cluster configs in
``ray_cluster.yaml`` and ``deploy/kuberay/`` do that). Every trial's MLflow run is tagged with the
Ray node id and IP it ran on (``ray_node_id``, ``ray_node_ip``).

What a search does
------------------
* Each trial is a training run of the base config (``train:``, a training YAML such as
  ``experiments/demo.yaml`` or an inline mapping) with the ``search:`` values applied to it (dotted
  keys into that config: ``ppo.lr``, ``model.lstm_cell_size``, ``env.reward.name`` ...) and
  ``tune.iterations`` iterations at most. It runs through the same code as ``tradebot train``
  (``tradebot.rl.train.build_algorithm`` and ``tradebot.rl.train.train_loop``): same env, model, normaliser,
  validation and checkpoints, in the trial's folder (laid out like a ``tradebot train`` output).
* Every iteration reports the training metrics (``tradebot.rl.metric_names``) plus ``validation_return`` (the
  latest deterministic pass over the validation dates; validated at the first iteration and then
  every ``run.validate_every``) and ``best_validation_return``. ASHA (``scheduler:``) stops the
  trials that fall behind at its rungs on ``tune.metric``.
* Each new best checkpoint of a trial is reported to Tune, which keeps it under the trial's storage
  folder (``<tune.output_dir>/<name>/``).
* MLflow (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db`` in the working directory,
  experiment ``tune.mlflow_experiment``): one parent run per search (the search space and the
  outcome) and one child run per trial, logged from the driver: the trial's full training config
  as params and as ``config.yaml``, its metrics at every iteration, and its status at the end.
* At the end the best trial (highest ``best_validation_return``) has its best checkpoint logged to
  its MLflow run and registered as a new version of ``tune.registered_model`` (linked to that run).

Resources (``resources:``): each trial takes one CPU for the algorithm (sampling and learning
happen there when ``num_env_runners`` is 0) plus ``cpus_per_env_runner`` per env runner;
``num_gpus_per_learner`` puts the learner on a GPU (``auto``: a share of the cluster's GPUs when it
has any, else none).

Results to expect
-----------------
See ``experiments/tune.yaml``.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator
from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from tradebot.core.config import FrozenConfig, load_config, parse_config
from tradebot.core.errors import TradebotError, UserInputError
from tradebot.core.files import write_text_atomic
from tradebot.rl import metric_names
from tradebot.rl.tracking import (
    PARENT_RUN_TAG,
    finite_metrics,
    flatten_params,
    is_finite_number,
    log_params,
    open_experiment,
    register_policy,
)
from tradebot.rl.train_config import CONFIG_FILE, DEFAULT_ENV_ID, TrainConfig, load_train_config

TRIAL_SCORE = "trial_score"  # tune.metric at the trial's best checkpoint (what ranks the trials)
TRIAL_ID_TAG = "trial_id"
NODE_ID_KEY = "ray_node_id"  # in every trial result, and a tag of the trial's MLflow run (with ray_node_ip)
NODE_IP_TAG = "ray_node_ip"
SEARCH_TAG = "tune_search"
_TRIAL_METRICS = (*metric_names.TRAINING_METRICS, metric_names.VALIDATION_RETURN, metric_names.VALIDATION_EQUITY_CHANGE, metric_names.VALIDATION_STEPS,
                  metric_names.BEST_VALIDATION_RETURN, TRIAL_SCORE)
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


# ---- configuration ---------------------------------------------------------------------------

class Dimension(FrozenConfig):
    """One searched value: exactly one of ``choice``, ``grid``, ``uniform``, ``loguniform``, ``randint``."""

    choice: list[Any] | None = Field(None, description="sample one of these values")
    grid: list[Any] | None = Field(None, description="every one of these values (multiplies the trials)")
    uniform: tuple[float, float] | None = Field(None, description="[low, high) uniformly")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high) uniformly in log space")
    randint: tuple[int, int] | None = Field(None, description="an integer in [low, high)")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Dimension":
        given = [k for k in ("choice", "grid", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, grid, uniform, loguniform, randint"
                             + (f" (got {', '.join(given)})" if given else ""))
        kind = given[0]
        value = getattr(self, kind)
        if kind in ("choice", "grid") and not value:
            raise ValueError(f"{kind} needs at least one value")
        if kind in ("uniform", "loguniform", "randint") and not value[0] < value[1]:
            raise ValueError(f"{kind} needs low < high, got {list(value)}")
        if kind == "loguniform" and value[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {value[0]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "grid", "uniform", "loguniform", "randint") if getattr(self, k) is not None)

    def examples(self) -> list[Any]:
        """Values that stand for the whole range (to check them against the training config early)."""
        value = getattr(self, self.kind)
        if self.kind == "randint":
            return [int(value[0]), int(value[1]) - 1]
        return list(value)

    def domain(self) -> Any:
        from ray import tune

        value = getattr(self, self.kind)
        return {"choice": lambda: tune.choice(list(value)), "grid": lambda: tune.grid_search(list(value)),
                "uniform": lambda: tune.uniform(*value), "loguniform": lambda: tune.loguniform(*value),
                "randint": lambda: tune.randint(*value)}[self.kind]()

    def describe(self) -> str:
        return f"{self.kind} {list(getattr(self, self.kind))}"


class SchedulerSection(FrozenConfig):
    """ASHA (asynchronous successive halving) over training iterations."""

    grace_period: int = Field(4, ge=1, description="iterations every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="keep the top 1/reduction_factor at each rung")


class ResourcesSection(FrozenConfig):
    """What one trial takes."""

    num_env_runners: int | None = Field(None, ge=0, description="remote sampling workers per trial; null: run.num_env_runners")
    cpus_per_env_runner: float | None = Field(None, gt=0, description="CPUs per env runner; "
                                              "null: run.num_cpus_per_env_runner of the base config (1)")
    num_gpus_per_learner: float | Literal["auto"] | None = Field(
        None, description="GPU share of the learner (0: CPU); auto: the cluster's GPUs shared by the "
        "concurrent trials; null: run.num_gpus_per_learner of the base config (0)")

    @model_validator(mode="after")
    def _gpu_share(self) -> "ResourcesSection":
        if self.num_gpus_per_learner not in ("auto", None) and not 0 <= float(self.num_gpus_per_learner) <= 1:
            raise ValueError("num_gpus_per_learner must be in [0, 1] or 'auto'")
        return self


class TuneSection(FrozenConfig):
    """The search itself: how many trials, how long each, what to maximise, where things go."""

    num_samples: int = Field(8, ge=1, description="trials drawn from the search space (x each grid value)")
    iterations: int = Field(20, ge=1, description="training iterations per trial at most (ASHA's max_t)")
    metric: Literal["validation_return", "validation_equity_change"] = Field(
        "validation_equity_change", description="what ASHA compares at its rungs and what ranks the trials "
        "(at each trial's best checkpoint); validation_return sums the trial's own reward, so it compares "
        "trials only when they share one reward")
    max_concurrent_trials: int = Field(2, ge=1, description="trials running at once")
    seed: int | None = Field(0, description="seed of the search's random draws; null: unseeded")
    output_dir: str = Field("runs/tune", description="Tune's storage (RunConfig.storage_path): a folder or a "
                            "URI such as s3://bucket/prefix; results go to <output_dir>/<name>/<trial>/")
    name: str | None = Field(None, description="search name; null: tune-<date>-<time>")
    mlflow_experiment: str = Field("tradebot-tune", description="MLflow experiment of the search and its trials")
    registered_model: str = Field("tradebot-ppo-lstm-tuned", description="registered model for the best trial's policy")


class TuneFileConfig(FrozenConfig):
    """``tradebot tune --config FILE``: see experiments/tune.yaml."""

    train: str | dict[str, Any] = Field("experiments/demo.yaml",
                                        description="base training config: a YAML path or an inline mapping")
    search: dict[str, Dimension] = Field(default_factory=dict, description="dotted config key -> dimension")
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    tune: TuneSection = Field(default_factory=TuneSection)

    def trial_count(self, num_samples: int | None = None) -> int:
        """Trials the search runs: ``num_samples`` (default ``tune.num_samples``) x the values of every grid."""
        samples = num_samples if num_samples is not None else self.tune.num_samples
        grid = 1
        for dim in self.search.values():
            grid *= len(dim.grid) if dim.grid is not None else 1
        return max(1, samples) * grid


def load_tune_config(path: str | Path) -> TuneFileConfig:
    return load_config(TuneFileConfig, path)


# ---- trial configs ---------------------------------------------------------------------------

def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def trial_config(base: dict[str, Any], values: dict[str, Any], where: str = "trial config") -> TrainConfig:
    """The base training config (a ``TrainConfig.model_dump(mode='json')`` mapping) with ``values`` set."""
    data = copy.deepcopy(base)
    for key, value in values.items():
        _set_dotted(data, key, value)
    return parse_config(TrainConfig, data, where)


def base_train_config(cfg: TuneFileConfig, config_path: str | Path | None = None) -> dict[str, Any]:
    """The base training config as a mapping, with absolute data paths (trials run in their own folders)
    and ``tune.iterations`` iterations."""
    if isinstance(cfg.train, str):
        path = Path(cfg.train)
        if not path.is_file():
            where = f"{config_path}: " if config_path else ""
            raise UserInputError(f"{where}train: {cfg.train} not found; give the training YAML "
                                 "(e.g. experiments/demo.yaml) or an inline mapping")
        train = load_train_config(path)
    else:
        train = parse_config(TrainConfig, cfg.train, f"{config_path or 'tune config'}: train")
    if train.data.validation is None:
        raise UserInputError(f"{config_path or 'tune config'}: the base training config has no data.validation "
                             "dates; trials are scored on them, so give some")
    data = train.model_dump(mode="json")
    data["data"]["path"] = str(Path(train.data.path).resolve())
    data["run"]["iterations"] = cfg.tune.iterations
    if cfg.resources.num_env_runners is not None:
        data["run"]["num_env_runners"] = cfg.resources.num_env_runners
    if cfg.resources.cpus_per_env_runner is not None:
        data["run"]["num_cpus_per_env_runner"] = cfg.resources.cpus_per_env_runner
    if cfg.resources.num_gpus_per_learner is not None:
        data["run"]["num_gpus_per_learner"] = cfg.resources.num_gpus_per_learner
    return data


def check_search_space(cfg: TuneFileConfig, base: dict[str, Any], config_path: str | Path | None = None) -> None:
    """Every searched key must be a dotted key of the training config that accepts its values."""
    where = f"{config_path}: " if config_path else ""
    if not cfg.search:
        raise UserInputError(f"{where}search: empty; give at least one key to search, e.g. ppo.lr: "
                             "{loguniform: [1.0e-5, 1.0e-3]}")
    for key, dim in cfg.search.items():
        if not _DOTTED.match(key):
            raise UserInputError(f"{where}search.{key}: not a dotted training-config key (e.g. ppo.lr, "
                                 "model.lstm_cell_size, env.reward.name)")
        for value in dim.examples():
            try:
                trial = trial_config(base, {key: value}, f"search.{key}={value!r}")
                if key.startswith("env.") and trial.run.env_id == DEFAULT_ENV_ID:  # the env section is a
                    from tradebot.envs.trading_env import EnvConfig  # plain mapping in TrainConfig: check it here

                    parse_config(EnvConfig, trial.env, f"search.{key}={value!r}: env")
            except UserInputError as err:
                raise UserInputError(f"{where}{err}") from None


# ---- the trainable (runs in a Tune worker) ---------------------------------------------------

def _trainable(overrides: dict[str, Any], *, base: dict[str, Any], resources: dict[str, float], metric: str) -> None:
    """One trial: the training loop of ``tradebot.rl.train`` in the trial's folder, reporting to Tune.

    Its best checkpoint is the one ``tradebot train`` would register (best ``validation_return``,
    the trial's own reward); ``trial_score`` is ``metric`` at that checkpoint.
    """
    from ray import tune

    from tradebot.rl.train import (
        CHECKPOINTS_DIR,
        IterationReport,
        TrainState,
        build_algorithm,
        train_loop,
        validation_env,
    )

    for name in ("ray", "ray.rllib", "ray.tune", "ray.train"):  # the trial's progress goes through Tune
        logging.getLogger(name).setLevel(logging.ERROR)
    out = Path(tune.get_context().get_trial_dir())
    cfg = trial_config(base, {**overrides, "run.output_dir": str(out)})
    (out / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG_FILE, cfg.to_yaml())
    val_env, val_start = validation_env(cfg, cfg.run.seed)
    state = TrainState()
    latest: dict[str, float] = {}
    score: list[float] = []
    import ray

    where = {NODE_ID_KEY: ray.get_runtime_context().get_node_id()}

    def report(r: IterationReport) -> None:
        values = dict(r.metrics)
        for key in (metric_names.VALIDATION_RETURN, metric_names.VALIDATION_EQUITY_CHANGE):
            if key in values:
                latest[key] = values[key]
            elif key in latest:  # between validations: the latest score, so every result has the metric
                values[key] = latest[key]
        if r.best_validation_return is not None:
            values[metric_names.BEST_VALIDATION_RETURN] = r.best_validation_return
        # A new best (strictly better, as train_loop decides) was checkpointed at this iteration.
        best_now = r.validation_return is not None and r.checkpoint is not None and r.checkpoint == state.best_checkpoint
        if best_now and metric in values:
            score[:] = [values[metric]]
        if score:
            values[TRIAL_SCORE] = score[0]
        checkpoint = tune.Checkpoint.from_directory(str(out / r.checkpoint)) if best_now else None
        tune.report({**values, **where}, checkpoint=checkpoint)

    algo = build_algorithm(cfg, **resources)
    try:
        train_loop(algo, cfg, out, state, val_env, val_start, report, validate_first=True)
    finally:
        algo.stop()
        val_env.close()


# ---- MLflow and progress callbacks (run in the driver) ---------------------------------------

class _MlflowTrials(LoggerCallback):
    """One MLflow child run per trial, logged from the driver (no MLflow inside the trials).

    Does what ``ray.air.integrations.mlflow.MLflowLoggerCallback`` does (params at the start,
    metrics per result, status at the end), plus the trial's whole training config as params and
    ``config.yaml``, the parent run, and one batched write per result.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, search_name: str,
                 base: dict[str, Any], searched: tuple[str, ...]):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.search_name = search_name
        self.base = base
        self.searched = searched
        self.run_ids: dict[str, str] = {}
        self.last_iteration: dict[str, int] = {}

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def log_trial_start(self, trial) -> None:
        if trial.trial_id in self.run_ids:
            return
        client = self._client()
        values = {k: trial.config[k] for k in self.searched if k in trial.config}
        cfg = trial_config(self.base, values)
        run = client.create_run(self.experiment_id, run_name=f"{self.search_name}/{trial.trial_id}",
                                tags={PARENT_RUN_TAG: self.parent_run_id, SEARCH_TAG: self.search_name,
                                      TRIAL_ID_TAG: trial.trial_id, "trial_name": str(trial)})
        self.run_ids[trial.trial_id] = run.info.run_id
        params = {k: v for k, v in flatten_params(cfg.model_dump(mode="json")).items() if k != "run.output_dir"}
        log_params(client, run.info.run_id, params)
        client.log_text(run.info.run_id, cfg.to_yaml(), "config.yaml")

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            return
        step = int(result.get("training_iteration") or 0)
        if trial.trial_id not in self.last_iteration and result.get(NODE_ID_KEY):
            client = self._client()
            client.set_tag(run_id, NODE_ID_KEY, str(result[NODE_ID_KEY]))
            client.set_tag(run_id, NODE_IP_TAG, str(result.get("node_ip", "")))
        self.last_iteration[trial.trial_id] = step
        metrics = finite_metrics({k: result.get(k) for k in (*_TRIAL_METRICS, "time_total_s")}, step)
        if metrics:
            self._client().log_batch(run_id, metrics=metrics)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            return
        client = self._client()
        client.set_tag(run_id, "iterations_trained", str(self.last_iteration.get(trial.trial_id, 0)))
        client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


@dataclass(frozen=True)
class TrialUpdate:
    """What ``tune_search`` tells its ``on_update`` callback (after every trial result or end)."""

    trial_id: str
    iteration: int
    metrics: dict[str, float]
    finished: bool  # the trial ended (its last iteration, stopped by ASHA or early stopping, or failed)
    failed: bool
    trials_finished: int
    best_score: float | None  # the highest trial_score so far


class _Progress(Callback):
    """Turns Tune's trial events into ``TrialUpdate``s for a progress display."""

    def __init__(self, on_update: Callable[[TrialUpdate], None]) -> None:
        self.on_update: Callable[[TrialUpdate], None] | None = on_update
        self.finished: set[str] = set()
        self.best: float | None = None
        self.last: dict[str, tuple[int, dict[str, float]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config (callbacks included) into its experiment folder; a progress
        # display (locks, a console) is not picklable and has no use in a restored experiment.
        return {**self.__dict__, "on_update": None}

    def _emit(self, trial, finished: bool, failed: bool) -> None:
        iteration, values = self.last.get(trial.trial_id, (0, {}))
        if finished:
            self.finished.add(trial.trial_id)
        if self.on_update is not None:
            self.on_update(TrialUpdate(trial.trial_id, iteration, values, finished, failed, len(self.finished),
                                       self.best))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        values = {k: float(result[k]) for k in _TRIAL_METRICS if is_finite_number(result.get(k))}
        best = values.get(TRIAL_SCORE)
        if best is not None and (self.best is None or best > self.best):
            self.best = best
        self.last[trial.trial_id] = (int(result.get("training_iteration") or 0), values)
        self._emit(trial, False, False)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._emit(trial, True, False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._emit(trial, True, True)


# ---- the entry point -------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    iterations: int
    score: float | None  # trial_score: tune.metric at the trial's best checkpoint
    best_validation_return: float | None
    status: str  # "finished" | "failed"
    mlflow_run_id: str | None
    error: str | None = None


@dataclass(frozen=True)
class TuneResult:
    name: str
    storage_dir: str  # a folder or a URI (s3://...)
    trials: list[TrialSummary]
    best_trial_id: str
    best_params: dict[str, Any]
    best_score: float  # ``metric`` at the best trial's best checkpoint
    metric: str
    best_checkpoint: str
    mlflow_experiment: str
    parent_run_id: str
    best_run_id: str
    model_uri: str
    model_version: int


def storage_location(value: str | Path) -> str:
    """Tune's ``storage_path``: a URI (``s3://bucket/prefix``) as given, a folder made absolute."""
    text = str(value)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def _join(storage: str, name: str) -> str:
    return f"{storage}/{name}" if "://" in storage else str(Path(storage) / name)


def _storage_exists(location: str) -> bool:
    if "://" not in location:
        return Path(location).exists()
    try:  # a bucket we cannot read yet: Tune reports the real error when it writes there
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound
    except Exception:
        return False


def tune_search(cfg: TuneFileConfig, *, config_path: str | Path | None = None, address: str | None = None,
                num_samples: int | None = None, output_dir: str | Path | None = None,
                tracking_uri: str | None = None,
                on_update: Callable[[TrialUpdate], None] | None = None) -> TuneResult:
    """Run the search, track every trial in MLflow and register the best trial's best checkpoint.

    ``address``: a Ray cluster to run the trials on (default ``RAY_ADDRESS``, else a private local
    instance); ``output_dir``: Tune's storage, a folder or URI (default ``tune.output_dir``);
    ``tracking_uri``: the MLflow server or store (default ``tradebot.rl.tracking.default_tracking_uri()``).
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from tradebot.rl.train import build_algo_config, init_ray, make_env, resolve_gpus_per_learner, train_env_config

    t = cfg.tune
    samples = num_samples if num_samples is not None else t.num_samples
    if samples < 1:
        raise UserInputError(f"--samples must be at least 1, got {samples}")
    base = base_train_config(cfg, config_path)
    check_search_space(cfg, base, config_path)
    base_cfg = parse_config(TrainConfig, base, "base training config")
    make_env(train_env_config(base_cfg)).close()  # fail fast on data and env config, before Ray starts
    name = t.name or f"tune-{dt.datetime.now():%Y%m%d-%H%M%S}"
    storage = storage_location(output_dir or t.output_dir)
    if _storage_exists(_join(storage, name)):
        raise UserInputError(f"{_join(storage, name)} exists already; set tune.name to a new name or leave it null")
    searched = tuple(cfg.search)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    experiment = open_experiment(t.mlflow_experiment, tracking_uri)
    client = experiment.client()

    started_ray = False
    concurrent = t.max_concurrent_trials
    runners = int(base_cfg.run.num_env_runners)
    cpus_per_trial = 1.0 + runners * base_cfg.run.num_cpus_per_env_runner
    if not ray.is_initialized():
        cpus = max(cpus_per_trial, min(float(os.cpu_count() or 1), cpus_per_trial * concurrent))
        # Trial output stays in Ray's log folder; failures show in the summary and in each
        # trial folder's error.txt.
        init_ray(address, num_cpus=cpus, logging_level=logging.ERROR, log_to_driver=False)
        started_ray = True
    parent = None
    try:
        resources = {"num_cpus_per_env_runner": base_cfg.run.num_cpus_per_env_runner,
                     "num_gpus_per_learner": resolve_gpus_per_learner(base_cfg.run.num_gpus_per_learner, concurrent)}
        algo_config = build_algo_config(base_cfg, **resources)
        placement = algo_config.algo_class.default_resource_request(algo_config)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, base=base, resources=resources, metric=t.metric), placement)

        parent = client.create_run(experiment.experiment_id, run_name=name,
                                   tags={SEARCH_TAG: name, "storage_dir": _join(storage, name),
                                         "ray_address": address or os.environ.get("RAY_ADDRESS") or "local"})
        parent_id = parent.info.run_id
        summary = {"tune.num_samples": str(samples), "tune.iterations": str(t.iterations), "tune.metric": t.metric,
                   "scheduler": f"ASHA grace_period={cfg.scheduler.grace_period} "
                                f"reduction_factor={cfg.scheduler.reduction_factor}",
                   **{f"search.{k}": d.describe() for k, d in cfg.search.items()}}
        log_params(client, parent_id, summary)
        client.log_text(parent_id, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "tune.yaml")

        tracker = _MlflowTrials(experiment.tracking_uri, experiment.experiment_id, parent_id, name, base,
                                searched)
        callbacks: list[Any] = [tracker]
        if on_update is not None:
            callbacks.append(_Progress(on_update))
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=t.iterations,
                                  grace_period=min(cfg.scheduler.grace_period, t.iterations),
                                  reduction_factor=cfg.scheduler.reduction_factor)
        tuner = tune.Tuner(
            trainable,
            param_space={k: d.domain() for k, d in cfg.search.items()},
            tune_config=tune.TuneConfig(
                metric=t.metric, mode="max", scheduler=scheduler, num_samples=samples,
                max_concurrent_trials=concurrent,
                search_alg=BasicVariantGenerator(random_state=t.seed),
                trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, callbacks=callbacks, verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # only new bests are reported
                failure_config=tune.FailureConfig(max_failures=0)),
        )
        grid = tuner.fit()
        result = _finish(grid, cfg, name, storage, tracker, parent_id, client, experiment.tracking_uri)
        client.set_terminated(parent_id, "FINISHED")
        return result
    except BaseException:
        if parent is not None:
            client.set_terminated(parent.info.run_id, "FAILED")
        raise
    finally:
        if started_ray:
            ray.shutdown()


def _finish(grid, cfg: TuneFileConfig, name: str, storage: str, tracker: _MlflowTrials, parent_id: str,
            client, tracking_uri: str) -> TuneResult:
    import mlflow

    trials: list[TrialSummary] = []
    best = None
    for res in grid:
        metrics = res.metrics or {}
        trial_id = metrics.get("trial_id") or Path(res.path).name.removeprefix("trial_")
        score = metrics.get(TRIAL_SCORE)
        score = float(score) if is_finite_number(score) else None
        best_return = metrics.get(metric_names.BEST_VALIDATION_RETURN)
        error = None if res.error is None else (str(res.error).strip().splitlines() or [type(res.error).__name__])[-1]
        summary = TrialSummary(trial_id=trial_id, params={k: res.config.get(k) for k in cfg.search},
                               iterations=int(metrics.get("training_iteration") or 0), score=score,
                               best_validation_return=float(best_return) if is_finite_number(best_return) else None,
                               status="failed" if res.error is not None else "finished",
                               mlflow_run_id=tracker.run_ids.get(trial_id), error=error)
        trials.append(summary)
        if res.error is None and score is not None and res.best_checkpoints and (
                best is None or score > best[0].score):
            best = (summary, res)
    if best is None:
        first = next((s.error for s in trials if s.error), "no trial reported a validation score")
        raise TradebotError(f"tune {name}: no trial finished with a validation score ({first})")
    summary, res = best
    checkpoint, _ = max(res.best_checkpoints, key=lambda pair: int(pair[1].get("training_iteration", 0)))  # the latest best
    if summary.mlflow_run_id is None:
        raise TradebotError(f"tune {name}: the best trial {summary.trial_id} has no MLflow run")
    mlflow.set_tracking_uri(tracking_uri)
    with checkpoint.as_directory() as local:
        with mlflow.start_run(run_id=summary.mlflow_run_id):
            model_uri, version = register_policy(Path(local), cfg.tune.registered_model)
            mlflow.set_tags({"best_trial": "true", "registered_model_uri": model_uri})
    client.set_tag(parent_id, "best_trial", summary.trial_id)
    client.set_tag(parent_id, "best_run_id", summary.mlflow_run_id)
    client.set_tag(parent_id, "registered_model_uri", model_uri)
    client.log_metric(parent_id, TRIAL_SCORE, float(summary.score))
    return TuneResult(name=name, storage_dir=_join(storage, name), trials=trials, best_trial_id=summary.trial_id,
                      best_params=summary.params, best_score=float(summary.score), metric=cfg.tune.metric,
                      best_checkpoint=str(checkpoint.path), mlflow_experiment=cfg.tune.mlflow_experiment,
                      parent_run_id=parent_id, best_run_id=summary.mlflow_run_id, model_uri=model_uri,
                      model_version=version)
