"""The service's supervision files: the Kubernetes manifest and the systemd unit say what the service needs
(a restart policy, the probes on the service's own endpoints, secrets outside the config, a stop grace longer
than the service's 10 s exit). No Kubernetes cluster runs here: the manifest is parsed; the unit is parsed and
checked by `systemd-analyze verify` where it is installed."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from tradebot.core.config import parse_config
from tradebot.live.runner import LiveConfig
from tradebot.live.service.service_config import ServiceConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_kubernetes_deployment_restarts_probes_and_keeps_one_trader():
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy/k8s/tradebot-service.yaml").read_text())}
    assert set(docs) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    embedded = yaml.safe_load(docs["ConfigMap"]["data"]["service.yaml"])
    config = parse_config(ServiceConfig, embedded["service"], "the ConfigMap's service.yaml")
    parse_config(LiveConfig, embedded["live"], "the ConfigMap's live section")
    dep = docs["Deployment"]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"]["type"] == "Recreate"
    pod = dep["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["terminationGracePeriodSeconds"] > 10
    (container,) = pod["containers"]
    assert container["args"][:3] == ["tradebot", "service", "--config"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {e["name"]: e for e in container["env"]}
    for secret in ("FYERS_APP_ID", "FYERS_SECRET_KEY", "TRADEBOT_TELEGRAM_TOKEN"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "tradebot-service-secrets"
    state_mount = next(m for m in container["volumeMounts"] if m["name"] == "state")
    assert config.state_dir == state_mount["mountPath"]
    assert env["TRADEBOT_FYERS_TOKEN_FILE"]["value"].startswith(state_mount["mountPath"] + "/")
    assert "token" not in docs["ConfigMap"]["data"]["service.yaml"].lower().replace("token_recheck", "")


def test_the_systemd_unit_restarts_on_failure_and_stops_gracefully():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((ROOT / "deploy/systemd/tradebot-service.service").read_text())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"].split()[1:4] == ["service", "--config", "/etc/tradebot/service.yaml"]
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 10
    assert service["UMask"] == "0077"  # the token file and the state are the owner's only
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_example_config_loads():
    config = ServiceConfig.from_yaml(ROOT / "experiments/service.yaml")
    assert config.host == "127.0.0.1" and config.policy.model.endswith("@champion")
    LiveConfig.from_yaml(ROOT / "experiments/service.yaml")


def test_systemd_analyze_verifies_the_unit(tmp_path):
    import shutil
    import subprocess
    import sys

    import pytest

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "deploy/systemd/tradebot-service.service").read_text()
    unit = tmp_path / "tradebot-service.service"  # the ExecStart binary must exist: this venv's tradebot
    unit.write_text(text.replace("/opt/tradebot/.venv/bin/tradebot", str(Path(sys.executable).with_name("tradebot"))))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Unknown key" not in out.stderr, out.stderr
