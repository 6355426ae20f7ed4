"""Cluster options of the training and tune configs (no Ray started): resources, storage, typos."""

from __future__ import annotations

import pytest

from tradebot.rl.train_config import TrainConfig
from tradebot.rl.train import RESUMABLE_CHANGES, build_algo_config, resolve_gpus_per_learner
from tradebot.rl.tune import TuneFileConfig, base_train_config, storage_location
from rl_helpers import tiny_config
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError


def test_run_section_takes_resources_and_still_rejects_unknown_keys(tmp_path):
    raw = tiny_config(tmp_path)
    raw["run"].update(num_env_runners=2, num_cpus_per_env_runner=0.5, num_gpus_per_learner="auto",
                      num_envs_per_env_runner="auto")
    cfg = parse_config(TrainConfig, raw)
    assert cfg.run.num_gpus_per_learner == "auto" and cfg.run.num_cpus_per_env_runner == 0.5
    algo = build_algo_config(cfg)  # auto without a cluster: no GPU
    assert algo.num_gpus_per_learner == 0 and algo.num_cpus_per_env_runner == 0.5 and algo.num_env_runners == 2
    # each runner samples the batched vector env (auto: 200 steps / (2 runners x sequences of 10) = 10 sub-envs)
    from tradebot.rl.batched_runner import BatchedEnvRunner

    assert algo.env_runner_cls is BatchedEnvRunner and algo.num_envs_per_env_runner == 10
    assert algo.gym_env_vectorize_mode.value == "vector_entry_point"
    assert resolve_gpus_per_learner(0.5) == 0.5
    for bad in ({"num_gpus_per_learner": 2}, {"num_cpus_per_env_runner": 0}, {"num_gpu_per_learner": 1}):
        broken = tiny_config(tmp_path)
        broken["run"].update(bad)
        with pytest.raises(UserInputError, match=next(iter(bad))):
            parse_config(TrainConfig, broken)
    # resources may change between an interrupted run and its resumption on another cluster
    assert {"run.num_cpus_per_env_runner", "run.num_gpus_per_learner"} <= set(RESUMABLE_CHANGES)


def test_tune_resources_override_the_base_config_and_default_to_it(tmp_path):
    base = tiny_config(tmp_path)
    base["run"]["num_gpus_per_learner"] = 0.25
    cfg = parse_config(TuneFileConfig, {"train": base, "search": {"ppo.lr": {"choice": [1e-4]}}})
    data = base_train_config(cfg)
    assert data["run"]["num_gpus_per_learner"] == 0.25 and data["run"]["num_cpus_per_env_runner"] == 1.0
    cfg = parse_config(TuneFileConfig, {"train": base, "search": {"ppo.lr": {"choice": [1e-4]}},
                                        "resources": {"cpus_per_env_runner": 2, "num_gpus_per_learner": "auto"}})
    data = base_train_config(cfg)
    assert data["run"]["num_gpus_per_learner"] == "auto" and data["run"]["num_cpus_per_env_runner"] == 2


def test_tune_storage_keeps_uris_and_makes_folders_absolute(tmp_path, monkeypatch):
    assert storage_location("s3://bucket/tradebot/tune/") == "s3://bucket/tradebot/tune"
    assert storage_location("gs://b/p") == "gs://b/p"
    monkeypatch.chdir(tmp_path)
    assert storage_location("runs/tune") == str(tmp_path / "runs" / "tune")


def test_training_uses_one_torch_thread_per_process_unless_omp_num_threads_says_otherwise(monkeypatch):
    from tradebot.rl.train import torch_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert torch_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert torch_threads() == 1
