#!/usr/bin/env bash
# GPU learner check: `run.num_gpus_per_learner: auto` puts the PPO learner on the GPU when torch sees
# one. Trains a few iterations of experiments/intraday_nifty5m.yaml (the former demo) exactly as `tradebot train` builds them
# (batched env runner on the CPU, learner on the GPU), with no MLflow, checkpoints or validation,
# and prints the torch/CUDA setup, the learner's device and the env steps/s of every iteration.
#
# How to run (from the repository root, on a machine with the project's .venv; well under 5 minutes):
#   bash bench/gpu_check.sh                 # 6 iterations of 20,480 env steps
#   bash bench/gpu_check.sh 3               # fewer iterations
#   PY=/path/to/python bash bench/gpu_check.sh
# Exit codes: 0 the learner ran on a GPU; 1 torch sees a GPU but the learner did not use it;
# 2 no GPU visible to torch (the CPU run is still timed and printed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
ITERATIONS="${1:-6}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"   # a private, short-lived local instance
export RAY_TMPDIR="${RAY_TMPDIR:-$(mktemp -d /tmp/tradebot-gpu-check-XXXXXX)}"
export PYTHONUNBUFFERED=1
exec "$PY" - "$ITERATIONS" <<'PYTHON'
import logging
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
for name in ("ray", "ray.rllib", "ray.tune"):
    logging.getLogger(name).setLevel(logging.ERROR)

import ray
import torch

from tradebot.rl import metric_names
from tradebot.rl.train import (build_algorithm, init_ray, learner_device, resolve_gpus_per_learner,
                               torch_threads, training_metrics)
from tradebot.rl.train_config import load_train_config

iterations = int(sys.argv[1])
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available: {cuda}, "
      f"devices: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
cfg = load_train_config("experiments/intraday_nifty5m.yaml")
cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"num_gpus_per_learner": "auto"})})
t0 = time.perf_counter()
init_ray(None, num_cpus=1, logging_level=logging.ERROR, log_to_driver=False)
try:
    gpus = resolve_gpus_per_learner(cfg.run.num_gpus_per_learner)
    print(f"ray sees {ray.cluster_resources().get('GPU', 0):g} GPU(s); num_gpus_per_learner auto -> {gpus:g}; "
          f"torch threads {torch_threads()}")
    algo = build_algorithm(cfg, num_gpus_per_learner=gpus)
    device = learner_device(algo)
    print(f"learner device: {device}; sub-envs {cfg.envs_per_runner}, batch {cfg.ppo.train_batch_size}, "
          f"minibatch {cfg.ppo.minibatch_size}, epochs {cfg.ppo.num_epochs} (built in {time.perf_counter() - t0:.1f} s)")
    rates = []
    for i in range(1, iterations + 1):
        values = training_metrics(algo.train())
        rates.append(values[metric_names.ENV_STEPS_PER_S])
        print(f"iteration {i}: {values[metric_names.ENV_STEPS_PER_S]:,.0f} env steps/s "
              f"({values[metric_names.ITERATION_TIME_S]:.2f} s)")
    algo.stop()
finally:
    ray.shutdown()
timed = rates[1:] or rates
print(f"learner on {device}: median {sorted(timed)[len(timed) // 2]:,.0f} env steps/s over iterations "
      f"2..{iterations} (the first one warms up); total {time.perf_counter() - t0:.0f} s")
sys.exit(0 if device.startswith("cuda") else (1 if cuda else 2))
PYTHON
