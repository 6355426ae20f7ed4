"""PPO-LSTM training on RLlib's new API stack, tracked in MLflow, resumable from its output folder.

How to run
----------
``tradebot train --config experiments/demo.yaml [--output DIR] [--address ray://... | RAY_ADDRESS]
[--tracking-uri URI | MLFLOW_TRACKING_URI]`` or ``tradebot.rl.train.train(load_train_config(path))``.
Re-running the same command continues from the latest checkpoint in the output folder (same MLflow
run); raising ``run.iterations`` extends a finished run. Without ``--address`` / ``RAY_ADDRESS`` a
private local Ray instance is started, sized to the job; with one (``auto`` on a cluster node,
``HOST:6379``, ``ray://HOST:10001``) the run joins that cluster: env runners
(``run.num_env_runners`` x ``run.num_cpus_per_env_runner`` CPUs) and the learner
(``run.num_gpus_per_learner``: a GPU share, or ``auto``: one GPU when the cluster has any) are
placed by Ray on any node; the driver, its checkpoints and the validation stay where it runs.

What a run does
---------------
* Env: ``run.env_id`` (``tradebot/Trading-v0``) built with ``data=`` the training bars
  (``data.train`` dates; ``data.extra_paths`` adds more instruments) and ``config=`` the ``env``
  section, as a ``gymnasium.vector.VectorEnv`` of ``run.num_envs_per_env_runner`` sub-envs (the
  id's vector entry point, ``BatchedTradingEnv``; ``gym_env_vectorize_mode=VECTOR_ENTRY_POINT``),
  sampled by ``tradebot.rl.batched_runner.BatchedEnvRunner`` (RLlib's runner, as whole arrays).
* Threads and devices: torch runs ``torch_threads()`` threads per process (1 unless
  ``OMP_NUM_THREADS`` says otherwise); the learner runs on a GPU when ``run.num_gpus_per_learner``
  is a share or ``auto`` and one is there (``learner_device`` says where; MLflow tags it).
* Model: ``DefaultModelConfig(use_lstm=True)``: MLP ``model.fcnet_hiddens`` -> LSTM
  ``model.lstm_cell_size`` -> policy / value heads, trained on ``model.max_seq_len`` windows.
* Actions are masked (``model.action_masking``, default on; ``tradebot.rl.masking``): the module puts no
  probability on an action the engine would ignore, reading the mask at the end of each observation.
* Observations pass through RLlib's ``MeanStdFilter`` connector (``MaskKeepingMeanStdFilter``: the mask
  columns pass raw); its running statistics are part of
  every algorithm checkpoint, and ``tradebot.rl.policy.Policy`` restores and freezes them.
* Validation (``data.validation`` dates, every ``run.validate_every`` iterations): one deterministic
  pass of ``tradebot.rl.policy.Policy`` over the validation dates of every instrument (the bars before them are fed to the env
  for the feature warm-up only). The best score's checkpoint is kept; ``run.patience`` validations
  without improvement stop the run.
* Checkpoints: ``<output>/checkpoints/iter_NNNNNN`` every ``run.checkpoint_every`` iterations, at
  each new best and at the end (written to a temp folder, then renamed); ``<output>/state.json``
  says which is the latest, which the best, and the MLflow run.
* MLflow (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db`` in the working directory): the
  whole config as params, per-iteration metrics (``tradebot.rl.metric_names``), the config and the final
  checkpoint as artifacts, and the final policy (the best on validation, else the last) logged as a
  pyfunc model ``policy`` and registered as a new version of ``run.registered_model``.

Results to expect
-----------------
``experiments/demo.yaml`` (the daily overlay on five NSE stocks, 2020-10..2024-09 train, 2024-10..2025-03
validate, 1,003,520 env steps) runs in about a minute on 2 CPU cores; ``experiments/intraday_nifty5m.yaml``
(NIFTY 50 5-minute bars, intraday) in a few; see those files for the figures measured.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic
from tradebot.rl import metric_names
from tradebot.rl.policy import NORMALISER_SUBDIR, ObsNormaliser, Policy
from tradebot.rl.tracking import flatten_params, open_experiment, register_policy
from tradebot.rl.train_config import CONFIG_FILE, TrainConfig

RLLIB_ENV_NAME = "tradebot_train_env"
STATE_FILE = "state.json"
CHECKPOINTS_DIR = "checkpoints"
VALIDATION_STREAM = "validation"
_CKPT_RE = re.compile(r"^iter_(\d{6})$")
# Keys of the config that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("run.iterations", "run.output_dir", "run.patience", "run.checkpoint_every",
                     "run.keep_checkpoints", "run.num_env_runners", "run.num_cpus_per_env_runner",
                     "run.num_gpus_per_learner", "run.num_envs_per_env_runner")


@dataclass(frozen=True)
class IterationReport:
    """What ``train`` tells its ``on_iteration`` callback after each training iteration."""

    iteration: int
    iterations: int
    metrics: dict[str, float]
    validation_return: float | None
    best_validation_return: float | None
    checkpoint: str | None


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    iterations: int  # iterations trained in total (across resumptions)
    stopped_early: bool
    final_checkpoint: Path  # the registered policy's checkpoint: the best on validation, else the last
    last_checkpoint: Path
    best_validation_return: float | None
    mlflow_run_id: str
    model_uri: str  # models:/<name>/<version>
    model_version: int
    resumed: bool
    already_complete: bool = False


@dataclass
class TrainState:
    """``<output>/state.json``: everything needed to continue a run after an interruption (``train`` and
    the Tune trainable of ``tradebot.rl.tune`` both keep one)."""

    mlflow_run_id: str | None = None
    iteration: int = 0
    checkpoint: str | None = None  # relative to the output folder
    best_checkpoint: str | None = None
    best_validation_return: float | None = None
    bad_validations: int = 0
    stopped_early: bool = False
    model_uri: str | None = None
    model_version: int | None = None
    final_checkpoint: str | None = None

    @classmethod
    def read(cls, path: Path) -> "TrainState | None":
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (ValueError, TypeError) as err:
            raise UserInputError(f"{path}: unreadable training state ({err}); delete the output folder "
                                 "or use another --output") from None

    def write(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.__dict__, indent=2, sort_keys=True))


# ---- env construction (runs in the driver and in every EnvRunner) -----------------------------

@functools.lru_cache(maxsize=4)
def _load_bars(path: str, symbol: str | None):
    from tradebot.features.bars import load_bars

    return load_bars(path, symbol=symbol)


def make_env(env_config: dict[str, Any]):
    """Build the env from a plain dict (what RLlib passes to every EnvRunner).

    Keys: ``env_id``, ``path``, ``symbol``, ``start``, ``end`` (ISO dates; bars in [start, end)),
    ``config`` (the env's own config); ``num_envs`` (RLlib adds it when it asks for the vector env):
    a ``gymnasium.vector.VectorEnv`` of that many sub-envs (the env id's vector entry point, e.g.
    ``BatchedTradingEnv``), which also runs on ``extra_paths`` (more instruments, same dates).
    """
    import gymnasium as gym

    def bars_of(path: str, symbol: str | None):
        bars = _load_bars(path, symbol).between(env_config.get("start"), env_config.get("end"))
        if len(bars) == 0:
            raise UserInputError(f"{path}: no bars between {env_config.get('start')} and "
                                 f"{env_config.get('end')}; check the data dates in the config")
        return bars

    bars = bars_of(env_config["path"], env_config.get("symbol"))
    env_id, config = env_config["env_id"], env_config.get("config") or None
    num_envs = env_config.get("num_envs")
    extra = [bars_of(path, None) for path in env_config.get("extra_paths") or ()]
    try:
        if num_envs is None:
            return gym.make(env_id, data=bars, config=config)
        module, _, name = env_id.rpartition(":")
        if module:  # 'module:id': importing the module registers the id (what gym.make does)
            importlib.import_module(module)
        spec = gym.spec(name)
        if spec.vector_entry_point is None:
            if extra:
                raise UserInputError(f"run.env_id {env_id!r} has no vector entry point: it cannot run "
                                     "data.extra_paths; drop them or use tradebot/Trading-v0")
            return gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="sync", data=bars, config=config)
        return gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point",
                            data=[bars, *extra] if extra else bars, config=config)
    except gym.error.Error as err:
        raise UserInputError(f"run.env_id {env_id!r}: {err}") from None


def train_env_config(cfg: TrainConfig) -> dict[str, Any]:
    """The ``make_env`` dict of the training dates (an absolute data path: EnvRunner processes need
    not share the driver's working directory)."""
    return {"env_id": cfg.run.env_id, "path": str(Path(cfg.data.path).resolve()), "symbol": cfg.data.symbol,
            "extra_paths": [str(Path(p).resolve()) for p in cfg.data.extra_paths],
            "start": cfg.data.train.start.isoformat(), "end": cfg.data.train.end.isoformat(),
            "config": dict(cfg.env)}


class ValidationPasses:
    """The validation dates of every instrument the run trains on (``data.path`` and ``data.extra_paths``):
    one env per instrument and the bar its deterministic pass starts at."""

    def __init__(self, passes: list[tuple[Any, int]]):
        self.passes = passes

    def close(self) -> None:
        for env, _ in self.passes:
            env.close()


def validation_env(cfg: TrainConfig, seed: int):
    """(``ValidationPasses``, None) for one deterministic pass per instrument over the validation dates,
    or (None, None) without validation dates.

    Each env gets every bar before the validation end (earlier bars only warm the features up) and
    one episode that starts at the first validation bar and runs to the last.
    """
    import pandas as pd

    if cfg.data.validation is None:
        return None, None
    env_cfg = {**dict(cfg.env), "episode": {"mode": "window", "length": None}}
    passes = []
    for path, symbol in [(cfg.data.path, cfg.data.symbol), *((p, None) for p in cfg.data.extra_paths)]:
        env = make_env({"env_id": cfg.run.env_id, "path": path, "symbol": symbol,
                        "start": None, "end": cfg.data.validation.end.isoformat(), "config": env_cfg})
        index = _load_bars(path, symbol).between(None, cfg.data.validation.end.isoformat()).index
        start = int(index.searchsorted(pd.Timestamp(cfg.data.validation.start.isoformat(), tz=index.tz)))
        if start >= len(index) - 1:
            raise UserInputError(f"{path}: fewer than 2 bars in the validation dates "
                                 f"{cfg.data.validation.start}..{cfg.data.validation.end}")
        env.reset(seed=seed)
        passes.append((env, start))
    return ValidationPasses(passes), None


def validate_policy(policy: Policy, env, start: int | None, seed: int) -> dict[str, float]:
    """One deterministic pass per instrument: total reward, steps, and (when the env reports equity) the
    mean equity change over the instruments."""
    runs = env.passes if isinstance(env, ValidationPasses) else [(env, start)]
    total, steps, changes = 0.0, 0, []
    for e, first in runs:
        policy.reset(VALIDATION_STREAM)
        obs, info = e.reset(seed=seed, options={"start": first} if first is not None else None)
        equity0 = info.get("equity")
        while True:
            action, _ = policy.act(VALIDATION_STREAM, obs)
            obs, reward, terminated, truncated, info = e.step(action)
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
        policy.reset(VALIDATION_STREAM)
        if equity0 and "equity" in info:
            changes.append(float(info["equity"]) / float(equity0) - 1.0)
    out = {metric_names.VALIDATION_RETURN: total, metric_names.VALIDATION_STEPS: float(steps)}
    if changes:
        out[metric_names.VALIDATION_EQUITY_CHANGE] = float(np.mean(changes))
    return out


# ---- the algorithm ----------------------------------------------------------------------------

def _obs_filter(env, spaces, device):
    from tradebot.rl.masking import MaskKeepingMeanStdFilter

    return MaskKeepingMeanStdFilter()


def build_algo_config(cfg: TrainConfig, *, num_cpus_per_env_runner: float | None = None,
                      num_gpus_per_learner: float | None = None):
    """The RLlib ``PPOConfig`` for ``cfg`` (env registered as ``RLLIB_ENV_NAME``).

    ``num_cpus_per_env_runner`` / ``num_gpus_per_learner``: resources (default: the ``run`` section's;
    ``auto`` GPUs count as none here, ``resolve_gpus_per_learner`` turns them into a number); the
    learner runs in the algorithm's own process, on a GPU when ``num_gpus_per_learner`` > 0.
    """
    import gymnasium as gym
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from tradebot.rl.masking import MaskedPPOTorchRLModule, UnmaskedPPOTorchRLModule

    from tradebot.rl.batched_runner import BatchedEnvRunner

    p, m, r = cfg.ppo, cfg.model, cfg.run
    if num_cpus_per_env_runner is None:
        num_cpus_per_env_runner = r.num_cpus_per_env_runner
    if num_gpus_per_learner is None:
        num_gpus_per_learner = 0.0 if r.num_gpus_per_learner == "auto" else float(r.num_gpus_per_learner)
    return (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(RLLIB_ENV_NAME, env_config=train_env_config(cfg))
        .framework("torch")
        .env_runners(env_runner_cls=BatchedEnvRunner, num_env_runners=r.num_env_runners,
                     num_envs_per_env_runner=cfg.envs_per_runner,
                     gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
                     num_cpus_per_env_runner=num_cpus_per_env_runner, env_to_module_connector=_obs_filter)
        .learners(num_learners=0, num_gpus_per_learner=num_gpus_per_learner)
        .training(lr=p.lr, gamma=p.gamma, lambda_=p.gae_lambda, entropy_coeff=p.entropy_coeff,
                  clip_param=p.clip_param, vf_loss_coeff=p.vf_loss_coeff,
                  train_batch_size_per_learner=p.train_batch_size, minibatch_size=p.minibatch_size,
                  num_epochs=p.num_epochs)
        .rl_module(model_config=DefaultModelConfig(
            use_lstm=True, lstm_cell_size=m.lstm_cell_size, max_seq_len=m.max_seq_len,
            fcnet_hiddens=list(m.fcnet_hiddens), fcnet_activation=m.fcnet_activation),
            rl_module_spec=RLModuleSpec(module_class=MaskedPPOTorchRLModule if m.action_masking
                                        else UnmaskedPPOTorchRLModule))
        .debugging(seed=r.seed, log_level="ERROR")
    )


def build_algorithm(cfg: TrainConfig, checkpoint: str | Path | None = None, **resources: float):
    """Register the env, seed numpy and torch, build the PPO algorithm (restored from ``checkpoint``).

    ``resources``: passed to ``build_algo_config``. Needs Ray initialised (``train`` and the Tune
    trainable of ``tradebot.rl.tune`` both call this).
    """
    import torch
    from ray.tune.registry import register_env

    register_env(RLLIB_ENV_NAME, make_env)
    torch.set_num_threads(torch_threads())
    np.random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    algo = build_algo_config(cfg, **resources).build_algo()
    if checkpoint is not None:
        algo.restore_from_path(str(Path(checkpoint).resolve()))
    return algo


def algorithm_checkpoint(source: str) -> Path:
    """The algorithm checkpoint folder of ``source``: a folder, or the checkpoint that the training run of a
    registered model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``) logged (``register_policy``)."""
    if not source.startswith("models:/"):
        path = Path(source)
        if not (path / "learner_group").is_dir():
            raise UserInputError(f"{source}: not an algorithm checkpoint (no learner_group/); give a checkpoint "
                                 "folder written by `tradebot train` or a models:/ URI")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run_id = mlflow.models.get_model_info(source).run_id
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint")
    except (MlflowException, OSError) as err:
        raise UserInputError(f"{source}: cannot fetch the checkpoint its training run logged ({err}); check the "
                             "model name, version or alias and MLFLOW_TRACKING_URI") from None
    return Path(local)


def start_from_policy(algo, source: str) -> None:
    """Fine-tuning: load ``source``'s network weights (not its optimizer) and observation normaliser into a
    freshly built ``algo``; the architecture and the observation size must be the same."""
    from ray.rllib.core import COMPONENT_ENV_RUNNER, COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

    path = algorithm_checkpoint(source)
    module = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
    try:
        algo.restore_from_path(path / module, component=module)
        runner_state = path / COMPONENT_ENV_RUNNER  # the observation normaliser (MeanStdFilter) lives here
        if runner_state.is_dir():
            if algo.env_runner is not None:
                algo.env_runner.restore_from_path(runner_state)
            if algo.env_runner_group.num_remote_env_runners() > 0:  # on a cluster: a folder every node sees
                algo.env_runner_group.foreach_env_runner(lambda r: r.restore_from_path(runner_state),
                                                         local_env_runner=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserInputError(f"run.init_from {source}: its network does not fit this config ({str(err)[:160]}); "
                             "fine-tune with the same model section and features as the policy was trained "
                             "with") from None


def train_and_save(cfg: TrainConfig, path: str | Path, iterations: int = 1) -> Path:
    """Train ``iterations`` PPO iterations and save the algorithm checkpoint, with its ``config.yaml``,
    to ``path`` (no validation, no MLflow): a quick model for tests and benchmarks. Needs Ray initialised."""
    path = Path(path)
    algo = build_algorithm(cfg)
    try:
        for _ in range(iterations):
            algo.train()
        algo.save_to_path(str(path.resolve()))
    finally:
        algo.stop()
    (path / CONFIG_FILE).write_text(cfg.to_yaml())
    return path


def learner_device(algo) -> str:
    """Where the algorithm's learner keeps its module: ``cpu`` or ``cuda:N``."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    def device(learner) -> str:
        return str(next(iter(learner.module[DEFAULT_MODULE_ID].parameters())).device)

    return next(iter(algo.learner_group.foreach_learner(device))).get()


def policy_from_algorithm(algo) -> Policy:
    """The algorithm's current module and normaliser as a ``Policy`` (in memory, no checkpoint)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    component = "env_to_module_connector"
    if algo.env_runner is not None:
        state = algo.env_runner.get_state(components=component)
    else:  # no local EnvRunner: ask a remote one (their states are synced after every iteration)
        state = algo.env_runner_group.foreach_env_runner(
            lambda runner: runner.get_state(components=component), local_env_runner=False)[0]
    module = algo.get_module(DEFAULT_MODULE_ID)
    if module is None:
        raise RuntimeError("the algorithm has no RLModule to validate")
    return Policy(module, ObsNormaliser.from_filter_state(state[component][NORMALISER_SUBDIR.name]))


def training_metrics(result: dict[str, Any]) -> dict[str, float]:
    from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_KL_KEY
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_LEN_MEAN,
        EPISODE_RETURN_MEAN,
        LEARNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    runners = result.get(ENV_RUNNER_RESULTS, {})
    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    seconds = float(result.get("time_this_iter_s") or float("nan"))
    steps = float(runners.get(NUM_ENV_STEPS_SAMPLED, float("nan")))
    raw = {
        metric_names.EPISODE_RETURN_MEAN: runners.get(EPISODE_RETURN_MEAN),
        metric_names.EPISODE_LEN_MEAN: runners.get(EPISODE_LEN_MEAN),
        metric_names.POLICY_LOSS: learner.get(POLICY_LOSS_KEY),
        metric_names.VALUE_LOSS: learner.get(VF_LOSS_KEY),
        metric_names.ENTROPY: learner.get(ENTROPY_KEY),
        metric_names.KL: learner.get(LEARNER_RESULTS_KL_KEY),
        metric_names.ENV_STEPS_PER_S: steps / seconds if seconds > 0 else None,
        metric_names.ENV_STEPS_TOTAL: result.get(NUM_ENV_STEPS_SAMPLED_LIFETIME),
        metric_names.ITERATION_TIME_S: seconds,
    }
    return {k: float(v) for k, v in raw.items() if v is not None and math.isfinite(float(v))}


# ---- checkpoints, state, config ---------------------------------------------------------------

def _save_checkpoint(algo, out: Path, iteration: int) -> str:
    """Save to a temp folder, then rename into place; returns the path relative to ``out``.

    The run's ``config.yaml`` is copied into the checkpoint, so a checkpoint says on its own which
    data, features and engine it was trained with (``tradebot.rl.backtest_policy`` reads it).
    """
    rel = f"{CHECKPOINTS_DIR}/iter_{iteration:06d}"
    final = out / rel
    tmp = Path(tempfile.mkdtemp(dir=out / CHECKPOINTS_DIR, prefix=f".iter_{iteration:06d}."))
    try:
        algo.save_to_path(str(tmp))
        if (out / CONFIG_FILE).is_file():
            shutil.copyfile(out / CONFIG_FILE, tmp / CONFIG_FILE)
        if final.exists():  # the same iteration again, after a resumption: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rel


def _prune_checkpoints(out: Path, keep: int, protect: set[str]) -> None:
    found = sorted(p.name for p in (out / CHECKPOINTS_DIR).iterdir() if _CKPT_RE.match(p.name))
    for name in found[:-keep]:
        rel = f"{CHECKPOINTS_DIR}/{name}"
        if rel not in protect:
            shutil.rmtree(out / rel, ignore_errors=True)


def _config_differences(old: TrainConfig, new: TrainConfig) -> list[tuple[str, str, str]]:
    a, b = flatten_params(old.model_dump(mode="json")), flatten_params(new.model_dump(mode="json"))
    return [(k, a.get(k, "<unset>"), b.get(k, "<unset>")) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]


def _check_resumable(out: Path, cfg: TrainConfig) -> None:
    saved = out / CONFIG_FILE
    if not saved.is_file():
        return
    import yaml

    old = parse_config(TrainConfig, yaml.safe_load(saved.read_text()), str(saved))
    diffs = _config_differences(old, cfg)
    if diffs:
        key, before, after = diffs[0]
        raise UserInputError(f"{out} holds a run with a different config ({key}: {before} -> {after}); "
                             "resume it with the same config (only run.iterations and run bookkeeping may "
                             "change) or pass another --output")


# ---- the entry point --------------------------------------------------------------------------

def train(cfg: TrainConfig, *, output_dir: str | Path | None = None, address: str | None = None,
          tracking_uri: str | None = None,
          on_iteration: Callable[[IterationReport], None] | None = None) -> TrainResult:
    """Train (or continue training) ``cfg`` into ``output_dir`` (default ``cfg.run.output_dir``).

    ``address``: a Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance);
    ``tracking_uri``: the MLflow server or store (default ``tradebot.rl.tracking.default_tracking_uri()``).
    """
    if output_dir is not None:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(output_dir)})})
    out = Path(cfg.run.output_dir)
    state_path = out / STATE_FILE
    state = TrainState.read(state_path)
    resumed = state is not None
    if resumed:
        _check_resumable(out, cfg)
        if state.model_uri and (state.stopped_early or state.iteration >= cfg.run.iterations):
            return _result(out, state, resumed=True, already_complete=True)

    # Fail fast, before Ray starts: data, dates and the env config are checked by building the envs.
    make_env(train_env_config(cfg)).close()
    val_env, val_start = validation_env(cfg, cfg.run.seed)
    try:
        (out / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
        if state is None:
            write_text_atomic(out / CONFIG_FILE, cfg.to_yaml())
            state = TrainState()
        return _run(cfg, out, state, val_env, val_start, address, tracking_uri, on_iteration, resumed)
    finally:
        if val_env is not None:
            val_env.close()


def resolve_gpus_per_learner(value: float | str, share: int = 1) -> float:
    """``num_gpus_per_learner`` as a number: ``auto`` is ``1/share`` of a GPU when the connected Ray
    cluster has GPUs (at most one each), else 0. Needs Ray initialised for ``auto``."""
    if value != "auto":
        return float(value)
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    return min(1.0, gpus / max(1, share)) if gpus > 0 else 0.0


def torch_threads() -> int:
    """Torch/BLAS threads per training process: ``OMP_NUM_THREADS`` when set, else 1.

    The networks are small and PPO samples and learns in turn: a second intra-op thread only
    contends with the env runners and other jobs for the cores (iterations up to 15x slower on 2
    busy cores). ``init_ray`` passes the same setting to Ray's worker processes.
    """
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def init_ray(address: str | None, *, num_cpus: float, **kwargs: Any) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``) or start a private local instance of
    ``num_cpus`` CPUs and every GPU torch sees. A cluster keeps its own resources: nothing but the
    address is passed to it. Worker processes get ``torch_threads()`` BLAS threads."""
    import ray
    import torch

    threads = str(torch_threads())
    os.environ.setdefault("OMP_NUM_THREADS", threads)  # inherited by a private instance's workers
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        ray.init(address=addr, **{k: v for k, v in kwargs.items() if k == "logging_level"})
    else:
        ray.init(address="local", num_cpus=int(math.ceil(num_cpus)), num_gpus=torch.cuda.device_count(),
                 include_dashboard=False, **kwargs)


def _run(cfg: TrainConfig, out: Path, state: TrainState, val_env, val_start, address: str | None,
         tracking_uri: str | None, on_iteration: Callable[[IterationReport], None] | None,
         resumed: bool) -> TrainResult:
    import mlflow
    import ray

    experiment = open_experiment(cfg.run.mlflow_experiment, tracking_uri)

    started_ray = False
    if not ray.is_initialized():
        # a private instance is sized to the job: the driver plus the EnvRunners' CPUs
        init_ray(address, num_cpus=1 + cfg.run.num_env_runners * cfg.run.num_cpus_per_env_runner,
                 logging_level=logging.WARNING)
        started_ray = True
    algo = None
    try:
        resources = {"num_cpus_per_env_runner": cfg.run.num_cpus_per_env_runner,
                     "num_gpus_per_learner": resolve_gpus_per_learner(cfg.run.num_gpus_per_learner)}
        algo = build_algorithm(cfg, out / state.checkpoint if state.checkpoint else None, **resources)
        if state.checkpoint is None and cfg.run.init_from:
            start_from_policy(algo, cfg.run.init_from)
        run_kwargs = ({"run_id": state.mlflow_run_id} if state.mlflow_run_id
                      else {"experiment_id": experiment.experiment_id, "run_name": out.resolve().name})
        with mlflow.start_run(**run_kwargs) as run:
            if not state.mlflow_run_id:
                state.mlflow_run_id = run.info.run_id
                mlflow.log_params(flatten_params(cfg.model_dump(mode="json")))
                mlflow.set_tags({"output_dir": str(out.resolve()), "env_id": cfg.run.env_id,
                                 "ray_address": address or os.environ.get("RAY_ADDRESS") or "local",
                                 "num_gpus_per_learner": str(resources["num_gpus_per_learner"]),
                                 "learner_device": learner_device(algo),
                                 "num_envs_per_env_runner": str(cfg.envs_per_runner),
                                 "torch_threads": str(torch_threads())})
                mlflow.log_artifact(str(out / CONFIG_FILE))
                state.write(out / STATE_FILE)
            else:
                mlflow.set_tag("resumed_at_iteration", str(state.iteration))
            train_loop(algo, cfg, out, state, val_env, val_start, on_iteration, log_metrics=_log_mlflow_metrics)
            if state.stopped_early:
                mlflow.set_tag("stopped_early", f"iteration {state.iteration}")
            _register(cfg, out, state)
        return _result(out, state, resumed=resumed)
    finally:
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()


def _log_mlflow_metrics(values: dict[str, float], step: int) -> None:
    import mlflow

    mlflow.log_metrics(values, step=step)


def train_loop(algo, cfg: TrainConfig, out: Path, state: TrainState, val_env, val_start,
               on_iteration: Callable[[IterationReport], None] | None, *,
               log_metrics: Callable[[dict[str, float], int], None] | None = None,
               validate_first: bool = False) -> None:
    """Train ``algo`` until ``cfg.run.iterations`` (or early stopping), validating and checkpointing.

    Shared by ``train`` (which logs to MLflow through ``log_metrics``) and the Tune trainable of
    ``tradebot.rl.tune`` (which reports each ``IterationReport`` to Tune). ``state`` is updated and written
    to ``out/state.json`` at every checkpoint. ``validate_first``: also validate at the first
    iteration, so that every report carries a validation score (Tune's schedulers need one).
    """
    run = cfg.run
    state_path = out / STATE_FILE
    while algo.iteration < run.iterations and not state.stopped_early:
        result = algo.train()
        it = int(algo.iteration)
        values = training_metrics(result)
        validation, improved = None, False
        due = it % run.validate_every == 0 or it >= run.iterations
        if val_env is not None and (due or (validate_first and state.best_validation_return is None)):
            scores = validate_policy(policy_from_algorithm(algo), val_env, val_start, run.seed)
            validation = scores[metric_names.VALIDATION_RETURN]
            eligible = it >= run.select_after
            improved = eligible and (state.best_validation_return is None
                                     or validation > state.best_validation_return)
            if improved:
                state.best_validation_return = validation
                state.bad_validations = 0
            elif eligible:
                state.bad_validations += 1
            values.update(scores)
            if state.best_validation_return is not None:  # None until run.select_after
                values[metric_names.BEST_VALIDATION_RETURN] = state.best_validation_return
            if run.patience is not None and state.bad_validations >= run.patience:
                state.stopped_early = True
        if log_metrics is not None:
            log_metrics(values, it)
        last = it >= run.iterations or state.stopped_early
        saved = None
        if last or improved or it % run.checkpoint_every == 0:
            saved = _save_checkpoint(algo, out, it)
            state.iteration, state.checkpoint = it, saved
            if improved:
                state.best_checkpoint = saved
            state.write(state_path)
            _prune_checkpoints(out, run.keep_checkpoints, {saved, state.best_checkpoint or ""})
        if on_iteration is not None:
            on_iteration(IterationReport(it, run.iterations, values, validation, state.best_validation_return, saved))


def _register(cfg: TrainConfig, out: Path, state: TrainState) -> None:
    """Log the final checkpoint and register its policy (the best on validation, else the last)."""
    import mlflow

    final_rel = state.best_checkpoint or state.checkpoint
    state.model_uri, state.model_version = register_policy(out / final_rel, cfg.run.registered_model,
                                                           config_file=out / CONFIG_FILE)
    state.final_checkpoint = final_rel
    mlflow.set_tags({"final_checkpoint": final_rel, "registered_model_uri": state.model_uri})
    state.write(out / STATE_FILE)


def _result(out: Path, state: TrainState, *, resumed: bool, already_complete: bool = False) -> TrainResult:
    return TrainResult(
        output_dir=out, iterations=state.iteration, stopped_early=state.stopped_early,
        final_checkpoint=out / (state.final_checkpoint or state.checkpoint or ""),
        last_checkpoint=out / (state.checkpoint or ""), best_validation_return=state.best_validation_return,
        mlflow_run_id=state.mlflow_run_id or "", model_uri=state.model_uri or "",
        model_version=int(state.model_version or 0), resumed=resumed, already_complete=already_complete)
