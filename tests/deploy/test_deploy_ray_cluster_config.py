"""Static checks of the deployment files: ray_cluster.yaml against Ray's own cluster-config schema,
the KubeRay manifests' required fields, the Dockerfiles' COPY sources and install steps, Prometheus.

Nothing here needs AWS, Kubernetes or Docker; the files must still be what those tools accept.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"


def _cluster() -> dict:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


# ---- ray_cluster.yaml -----------------------------------------------------------------------

def test_ray_cluster_yaml_validates_against_the_installed_ray_schema():
    import jsonschema
    import ray

    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    config = _cluster()
    jsonschema.validate(config, schema)  # raises with the offending key
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # Ray's own checks after filling in the AWS defaults, as `ray up` does


def test_ray_cluster_has_head_cpu_and_gpu_groups_with_sane_bounds():
    config = _cluster()
    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert set(workers) == {"cpu_worker", "gpu_worker"}
    for name, group in workers.items():
        assert 0 <= group["min_workers"] <= group["max_workers"], name
    assert sum(g["max_workers"] for g in workers.values()) <= config["max_workers"]
    assert types[config["head_node_type"]]["resources"].get("CPU") == 0  # trials go to the workers
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    for group in types.values():
        assert group["node_config"].get("ImageId"), "every node type names its AMI"


def test_ray_cluster_setup_installs_this_project_pinned_with_python_312_and_the_lock():
    config = _cluster()
    setup = "\n".join(config["setup_commands"])
    assert "python install 3.12" in setup and "--python 3.12" in setup
    install = next(c for c in config["setup_commands"] if "tradebot @ git+" in c)
    assert "-c ~/tradebot/requirements.lock" in install
    ref = re.search(r"tradebot @ git\+\S+?\.git@([^\"\s]+)", install)
    assert ref and ref.group(1), "the git install must pin a tag or commit"
    assert "fyers-apiv3==3.2.0" in setup and "--no-deps" in setup  # the Makefile's second step
    mounts = config["file_mounts"]
    assert any(v == "./experiments" for v in mounts.values())
    assert any(v == "./requirements.lock" for v in mounts.values())
    for remote, local in mounts.items():
        if local.startswith("./"):
            assert (ROOT / local).exists(), f"file_mounts {remote}: {local} missing"
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "tradebot-venv/bin" in cmd  # the project's Ray, not one from the AMI
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--metrics-export-port=8080" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head


# ---- KubeRay --------------------------------------------------------------------------------

def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def _check_cluster_spec(spec: dict, where: str) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), f"{where}: rayStartParams are strings"
    containers = head["template"]["spec"]["containers"]
    assert containers and all(c["image"] and c["name"] for c in containers), where
    for group in spec.get("workerGroupSpecs", []):
        assert group["groupName"], where
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{where}: {group['groupName']}"
        assert all(c["image"] for c in group["template"]["spec"]["containers"]), where
        assert all(isinstance(v, str) for v in group.get("rayStartParams", {}).values())


def test_kuberay_raycluster_has_head_and_cpu_gpu_worker_groups():
    (doc,) = _docs("raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"], "raycluster.yaml")
    groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1
    assert doc["spec"]["rayVersion"] == importlib.import_module("ray").__version__


def test_kuberay_rayjob_runs_tradebot_tune_on_the_cluster():
    (doc,) = _docs("rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    entry = doc["spec"]["entrypoint"]
    assert "tradebot tune --config experiments/tune.yaml" in entry and "--address auto" in entry
    inner = shlex.split(entry)[-1]  # sh -c '...'
    assert (ROOT / "experiments" / "tune.yaml").is_file() and "cd /home/ray/tradebot" in inner
    _check_cluster_spec(doc["spec"]["rayClusterSpec"], "rayjob.yaml")


def test_kuberay_retrain_rayjob_runs_tradebot_retrain_with_the_shared_mlflow():
    (doc,) = _docs("retrain-rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    entry = doc["spec"]["entrypoint"]
    assert "tradebot retrain --config experiments/retrain.yaml" in entry
    assert (ROOT / "experiments" / "retrain.yaml").is_file() and "cd /home/ray/tradebot" in shlex.split(entry)[-1]
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in head["env"]
    _check_cluster_spec(doc["spec"]["rayClusterSpec"], "retrain-rayjob.yaml")
    assert doc["spec"]["rayClusterSpec"]["rayVersion"] == importlib.import_module("ray").__version__


def test_kuberay_rayservice_serve_config_imports_this_projects_app():
    (doc,) = _docs("rayservice.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService" and doc["metadata"]["name"]
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    apps = serve["applications"]
    assert apps
    for app in apps:
        module, attr = app["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module), attr)), app["import_path"]
        if app["import_path"] == "tradebot.serving.app:app_builder":
            from tradebot.serving.app import APP_NAME, DEPLOYMENT_NAME

            assert set(app["args"]) <= {"model", "deterministic"} and app["args"]["model"]
            assert app["name"] == APP_NAME
            assert [d["name"] for d in app["deployments"]] == [DEPLOYMENT_NAME]
            assert app["deployments"][0]["num_replicas"] == 1  # the recurrent state lives in one replica
    # the same application as the repository's own serve config
    local = yaml.safe_load((ROOT / "serving" / "serve_config.yaml").read_text())["applications"][0]
    assert apps[0]["import_path"] == local["import_path"]
    _check_cluster_spec(doc["spec"]["rayClusterConfig"], "rayservice.yaml")


def test_kuberay_mlflow_manifest_runs_a_postgres_backed_server():
    docs = _docs("mlflow.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("Deployment", "mlflow-postgres")} <= kinds
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and "--workers" in container["command"]
    for name in ("raycluster.yaml", "rayjob.yaml", "rayservice.yaml"):  # the clusters talk to this service
        assert "http://mlflow:5000" in (KUBERAY / name).read_text(), name


# ---- Docker ---------------------------------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _dockerignored() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_copies_existing_sources_and_installs_with_the_lock(name):
    path = ROOT / "deploy" / "docker" / name
    steps = _instructions(path)
    froms = [rest for op, rest in steps if op == "FROM"]
    assert froms, name
    if name == "Dockerfile":
        assert froms[0].startswith("python:3.12-slim")
    else:
        arg = next(rest for op, rest in steps if op == "ARG" and rest.startswith("CUDA_IMAGE="))
        assert arg.split("=", 1)[1].startswith("nvidia/cuda:") and "python3.12" in path.read_text()
    ignored = _dockerignored()
    copied = []
    for op, rest in steps:
        if op in ("COPY", "ADD"):
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            for src in parts[:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
                top = src.rstrip("/").split("/")[0]
                assert top not in ignored and src.rstrip("/") not in ignored, f"{name}: {src} is in .dockerignore"
                copied.append(src.rstrip("/"))
    runs = " ".join(rest for op, rest in steps if op == "RUN")
    assert "-c requirements.lock ." in runs, "the project installs with the lock as constraints"
    assert "--no-deps -c requirements.lock fyers-apiv3==3.2.0" in runs
    assert "requirements.lock" in copied and "pyproject.toml" in copied
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for folder in set(setup["package-dir"].values()):  # every folder setuptools installs is copied in
        assert folder in copied, f"{name}: package folder {folder} not copied"
    assert "experiments" in copied and "data" in copied  # configs and the bars trials read


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = _dockerignored()
    for entry in (".venv", "mlruns", "out", "runs", "mlflow.db", ".git", "**/__pycache__"):
        assert entry in ignored, entry


# ---- Prometheus -----------------------------------------------------------------------------

def test_prometheus_scrapes_live_serve_and_ray_on_the_ports_the_code_uses():
    from tradebot.serving.app import DEFAULT_PORT

    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert {"tradebot-live", "tradebot-serve", "ray"} <= set(jobs)

    def ports(job):
        return {int(t.rsplit(":", 1)[1]) for sc in job.get("static_configs", []) for t in sc["targets"]}

    assert ports(jobs["tradebot-serve"]) == {DEFAULT_PORT} and jobs["tradebot-serve"]["metrics_path"] == "/metrics"
    cluster = (ROOT / "ray_cluster.yaml").read_text()
    ray_port = int(re.search(r"--metrics-export-port=(\d+)", cluster).group(1))
    assert ray_port in ports(jobs["ray"])
    for name in ("raycluster.yaml", "rayjob.yaml", "rayservice.yaml"):
        assert f"metrics-export-port: '{ray_port}'" in (KUBERAY / name).read_text(), name
    assert any("prom_metrics_service_discovery.json" in f for sd in jobs["ray"].get("file_sd_configs", [])
               for f in sd["files"])
    live_port = ports(jobs["tradebot-live"]).pop()
    assert f"--metrics-port {live_port}" in (ROOT / "docs" / "deploy.md").read_text()
    grafana = json.loads((ROOT / "deploy" / "grafana" / "tradebot-live.json").read_text())
    assert grafana["uid"] and "deploy/grafana/tradebot-live.json" in (ROOT / "docs" / "deploy.md").read_text()


def test_mlflow_postgres_script_is_valid_bash_and_keeps_the_server_small():
    import subprocess

    script = ROOT / "deploy" / "mlflow" / "start-postgres-mlflow.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--workers 1" in text and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in text
    assert "--artifacts-destination" in text
