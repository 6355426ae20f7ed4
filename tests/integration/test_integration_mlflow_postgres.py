"""The shared MLflow tracking server on PostgreSQL, for real: deploy/mlflow/start-postgres-mlflow.sh
initialises and starts a PostgreSQL cluster in a temp folder, then `mlflow server --workers 1` on
it; a tiny `tradebot train --tracking-uri http://...` logs to it, and the run is read back through
MlflowClient (params, metrics, artifacts, registered model) and straight from the database.

PostgreSQL's server binaries are required (`.ci/run` installs Debian's `postgresql` when missing);
without them, and without a way to install them, this test fails with a message saying so.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "deploy" / "mlflow" / "start-postgres-mlflow.sh"
SAMPLE_5M = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"
MODEL = "test-postgres-policy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return str(Path(found).resolve().parent)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return dirs[-1] if dirs and Path(dirs[-1], "initdb").exists() else None


def _ensure_postgres() -> str:
    found = _postgres_bin()
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, capture_output=True, timeout=900)
        found = _postgres_bin()
    if found is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found and could not be installed; "
                    "install Debian's `postgresql` package (.ci/run does) or put pg_ctl on PATH")
    return found


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"MLflow server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"MLflow server not healthy after {timeout} s: {log.read_text()[-3000:]}")


@pytest.fixture
def postgres_mlflow():
    _ensure_postgres()
    data = Path(tempfile.mkdtemp(prefix="tbpg-", dir="/tmp"))
    data.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach its folder
    port = _free_port()
    env = {**os.environ, "MLFLOW_DATA": str(data), "MLFLOW_PG_PORT": str(_free_port()), "MLFLOW_PORT": str(port),
           "MLFLOW_HOST": "127.0.0.1", "MLFLOW_BIN": str(BIN / "mlflow")}
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    log = data / "server.log"
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: MLflow and uvicorn stop together
    try:
        _wait_healthy(url, proc, log)
        print(f"PostgreSQL + MLflow server ready in {time.monotonic() - t0:.1f} s")
        yield {"url": url, "data": data, "env": env}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def test_train_logs_to_mlflow_server_on_postgres_and_reads_back(postgres_mlflow, tmp_path):
    from mlflow import MlflowClient

    url = postgres_mlflow["url"]
    out = tmp_path / "out"
    config = {
        "data": {"path": str(SAMPLE_5M), "train": {"start": "2021-01-01", "end": "2021-02-01"},
                 "validation": {"start": "2021-02-01", "end": "2021-02-08"}},
        "env": {"episode": {"length": 100}},
        "ppo": {"train_batch_size": 200, "minibatch_size": 100, "num_epochs": 1},
        "model": {"lstm_cell_size": 8, "max_seq_len": 10, "fcnet_hiddens": [8]},
        "run": {"seed": 7, "iterations": 2, "checkpoint_every": 1, "validate_every": 1, "patience": None,
                "output_dir": str(out), "mlflow_experiment": "tests-postgres", "registered_model": MODEL},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    ray_tmp = Path(tempfile.mkdtemp(prefix="tbpr-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    try:
        run = subprocess.run([str(BIN / "tradebot"), "train", "--config", str(path), "--tracking-uri", url],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local sqlite default

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("tests-postgres")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["model.lstm_cell_size"] == "8" and logged.data.params["run.iterations"] == "2"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "validation_return")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"config.yaml", "checkpoint"} <= artifacts
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == logged.info.run_id
    assert logged.info.run_id in run.stdout

    # the rows really are in PostgreSQL (not in a file store next to the server)
    import psycopg

    data, env_pg = postgres_mlflow["data"], postgres_mlflow["env"]
    password = (data / "pg-password").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=int(env_pg["MLFLOW_PG_PORT"]), user="mlflow", password=password,
                         dbname="mlflow") as conn:
        (count,) = conn.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (logged.info.run_id,)).fetchone()
        assert count == 1
    assert any((data / "artifacts").rglob("config.yaml"))  # proxied artifacts landed in the server's destination
