"""Train a walk-forward's fold/seed policies side by side as Ray tasks (``evaluation.parallel_trainings``).

Each training is ``tradebot.rl.train.train`` run inside a Ray task, so the trainings spread over the
cluster's nodes (``tradebot evaluate --address``) or over a machine's cores: one training samples and
learns in one process, on one thread, so on N cores N of them run at once. Every task reserves
``1 + run.num_env_runners x run.num_cpus_per_env_runner`` CPUs and, when ``run.num_gpus_per_learner``
asks for one, its share of a GPU. Nothing else changes: the tasks write the same checkpoints, state
files and MLflow runs as the sequential path, whose ``train`` calls then find them finished and
return at once; tests, baselines and the summary stay in the driver, fold by fold. A failed task
stops the evaluation with its error; re-running resumes from whatever finished.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from tradebot.rl.walkforward.evaluation_config import WalkForwardConfig
from tradebot.rl.walkforward.folds import Fold
from tradebot.rl.walkforward.results import EvaluationEvent


def cpus_per_training(cfg: WalkForwardConfig) -> float:
    run = cfg.training.run
    return 1.0 + run.num_env_runners * run.num_cpus_per_env_runner


def trainings_at_once(cfg: WalkForwardConfig) -> int:
    """``evaluation.parallel_trainings`` as a number (``auto``: as many as the connected cluster has CPUs
    for). Needs Ray initialised for ``auto``."""
    value = cfg.evaluation.parallel_trainings
    if value != "auto":
        return int(value)
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1.0) // cpus_per_training(cfg)))


def local_cpus(cfg: WalkForwardConfig) -> int:
    """CPUs for a private local Ray instance: enough for the trainings that run at once."""
    value = cfg.evaluation.parallel_trainings
    if value == "auto":
        return os.cpu_count() or 1
    return int(math.ceil(cpus_per_training(cfg) * int(value)))


def _train_task(train_cfg, tracking_uri: str, workdir: str) -> str:
    """One fold/seed training inside a Ray worker (relative paths resolve as in the driver)."""
    from tradebot.rl.moe.training import train_any

    if os.path.isdir(workdir):
        os.chdir(workdir)
    return train_any(train_cfg, tracking_uri=tracking_uri).mlflow_run_id


def train_in_parallel(cfg: WalkForwardConfig, folds: list[Fold], out: Path, tracking_uri: str,
                      emit: Callable[[EvaluationEvent], None]) -> set[tuple[int, int]]:
    """Train every fold/seed not finished yet, ``trainings_at_once(cfg)`` at a time; returns the
    (fold, seed) pairs trained here. Does nothing when one at a time is asked for."""
    import ray

    from tradebot.rl.train import TrainState, STATE_FILE, resolve_gpus_per_learner

    at_once = trainings_at_once(cfg)
    if at_once <= 1:
        return set()
    todo = []
    for fold in folds:
        for seed in cfg.evaluation.seeds:
            seed_dir = out / f"fold_{fold.index:02d}" / f"seed_{seed}"
            train_cfg = cfg.train_config(fold, seed, seed_dir)
            state = TrainState.read(seed_dir / STATE_FILE)
            finished = state is not None and state.model_uri and (
                state.stopped_early or state.iteration >= train_cfg.run.iterations)
            if getattr(train_cfg, "moe", None) is not None:  # a mixture keeps its own state file
                finished = (seed_dir / "moe_state.json").is_file() and '"model_uri"' in (
                    seed_dir / "moe_state.json").read_text()
            if not finished:
                todo.append((fold, seed, train_cfg))
    gpus = resolve_gpus_per_learner(cfg.training.run.num_gpus_per_learner, share=at_once)
    task = ray.remote(_train_task).options(num_cpus=cpus_per_training(cfg), num_gpus=gpus, max_retries=0)
    pending: dict = {}
    trained: set[tuple[int, int]] = set()
    workdir = str(Path.cwd())
    n_folds = len(folds)
    while todo or pending:
        while todo and len(pending) < at_once:
            fold, seed, train_cfg = todo.pop(0)
            pending[task.remote(train_cfg, tracking_uri, workdir)] = (fold, seed)
            emit(EvaluationEvent("train", fold.index, n_folds, seed,
                                 message=f"training seed {seed} ({len(pending)} trainings at once)"))
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            fold, seed = pending.pop(ref)
            ray.get(ref)  # a failed training raises here
            trained.add((fold.index, seed))
            emit(EvaluationEvent("trained", fold.index, n_folds, seed, message=f"seed {seed} trained"))
    return trained
