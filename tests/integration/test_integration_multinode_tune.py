"""`tradebot tune --address` on a real two-node Ray cluster (two `ray start` nodes on loopback).

Starts a head and a second node with the venv's `ray` CLI (1 CPU each, the second with a custom
resource), runs `tradebot tune` against the head's address as a subprocess with 4 tiny trials, and
checks that trials ran on both nodes (each trial's MLflow run is tagged with its Ray node id) and
that every trial landed in the MLflow store given by --tracking-uri. Only this test's Ray processes
are stopped (found by the test's own temp folder), never the machine's other Ray instances.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SAMPLE_5M = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"
EXPERIMENT = "tests-multinode"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tune_yaml(tmp: Path) -> dict:
    train = {
        "data": {"path": str(SAMPLE_5M), "train": {"start": "2021-01-01", "end": "2021-02-01"},
                 "validation": {"start": "2021-02-01", "end": "2021-02-08"}},
        "env": {"episode": {"length": 100}},
        "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
        "model": {"lstm_cell_size": 8, "max_seq_len": 10, "fcnet_hiddens": [8]},
        "run": {"seed": 7, "iterations": 1, "checkpoint_every": 1, "validate_every": 1, "patience": None,
                "output_dir": str(tmp / "unused"), "mlflow_experiment": EXPERIMENT,
                "registered_model": "test-multinode-policy"},
    }
    return {"train": train,
            "search": {"ppo.lr": {"grid": [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]}},
            "scheduler": {"grace_period": 1, "reduction_factor": 2},
            "resources": {"num_env_runners": 0},
            "tune": {"num_samples": 1, "iterations": 1, "max_concurrent_trials": 2, "seed": 0,
                     "output_dir": str(tmp / "tune"), "name": "multinode", "mlflow_experiment": EXPERIMENT,
                     "registered_model": "test-multinode-policy"}}


def _our_ray_processes(marker: str):
    """This test's Ray processes: those whose command line names its temp folder, and their children."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _stop_our_ray(marker: str) -> None:
    import psutil

    procs = _our_ray_processes(marker)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def two_node_cluster():
    tmp = Path(tempfile.mkdtemp(prefix="tbmn-", dir="/tmp"))  # short: AF_UNIX socket paths stay < 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(tmp),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={port}", f"--temp-dir={tmp}",
                        "--include-dashboard=false", f"--ray-client-server-port={_free_port()}",
                        f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                        *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}",
                        f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                        '--resources={"second_node": 1}', *common],
                       env=env, check=True, capture_output=True, timeout=120)
        yield {"address": f"127.0.0.1:{port}", "env": env, "tmp": tmp}
    except subprocess.CalledProcessError as err:
        pytest.fail(f"ray start failed: {err.stdout.decode()[-2000:]} {err.stderr.decode()[-2000:]}")
    finally:
        _stop_our_ray(str(tmp))
        leftover = _our_ray_processes(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        assert not leftover, f"Ray processes left behind: {[p.pid for p in leftover]}"


def test_tune_spreads_trials_over_two_ray_nodes_and_tracks_them_in_mlflow(two_node_cluster, tmp_path):
    from mlflow import MlflowClient

    from tradebot.rl.tune import NODE_ID_KEY, PARENT_RUN_TAG

    cluster = two_node_cluster
    check = subprocess.run(
        [sys.executable, "-c", "import ray, json; ray.init(address=%r, logging_level='ERROR'); "
         "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % cluster["address"]],
        env=cluster["env"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-2000:]
    node_ids = set(json.loads(check.stdout.strip().splitlines()[-1]))
    assert len(node_ids) == 2

    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(_tune_yaml(tmp_path), sort_keys=False))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t0 = time.monotonic()
    run = subprocess.run([str(BIN / "tradebot"), "tune", "--config", str(config), "--address", cluster["address"],
                          "--tracking-uri", tracking],
                         cwd=tmp_path, env={**cluster["env"], "MLFLOW_TRACKING_URI": ""}, capture_output=True,
                         text=True, timeout=600)
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"tradebot tune, 4 trials on 2 nodes: {elapsed:.1f} s")

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if PARENT_RUN_TAG in r.data.tags]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    used = {r.data.tags[NODE_ID_KEY] for r in trials}
    assert used == node_ids, f"trials ran on {used}, cluster nodes {node_ids}"
    parent = next(r for r in runs if PARENT_RUN_TAG not in r.data.tags)
    assert parent.data.tags["ray_address"] == cluster["address"] and "best_run_id" in parent.data.tags
    assert {r.data.params["ppo.lr"] for r in trials} == {"0.0001", "0.0003", "0.001", "0.003"}
