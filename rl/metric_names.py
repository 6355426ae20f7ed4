"""Metric names shared by training, MLflow and dashboards (one place, no string literals elsewhere)."""

from __future__ import annotations

EPISODE_RETURN_MEAN = "episode_return_mean"  # mean return of the training episodes finished this iteration
EPISODE_LEN_MEAN = "episode_len_mean"
POLICY_LOSS = "policy_loss"
VALUE_LOSS = "value_loss"
ENTROPY = "entropy"
KL = "kl"
ENV_STEPS_PER_S = "env_steps_per_s"  # env steps sampled this iteration / wall time of the iteration
ENV_STEPS_TOTAL = "env_steps_total"
ITERATION_TIME_S = "iteration_time_s"
VALIDATION_RETURN = "validation_return"  # mean total reward of the deterministic policy on the validation dates
VALIDATION_EQUITY_CHANGE = "validation_equity_change"  # final / initial equity - 1 over the validation pass
VALIDATION_STEPS = "validation_steps"
BEST_VALIDATION_RETURN = "best_validation_return"

TRAINING_METRICS = (EPISODE_RETURN_MEAN, EPISODE_LEN_MEAN, POLICY_LOSS, VALUE_LOSS, ENTROPY, KL,
                    ENV_STEPS_PER_S, ENV_STEPS_TOTAL, ITERATION_TIME_S)
