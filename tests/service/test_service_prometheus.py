"""Alerting with the real parts: Debian's Prometheus scrapes a running service process and the service's metrics
endpoint (with an injected stale feed) on 127.0.0.1, its alert rules
(deploy/prometheus/alerts.yml) load and an injected stale feed fires TradebotFeedStale, and a real Alertmanager
delivers the notification to a local webhook receiver. Each server is started here and stopped here; the test
is skipped only when a binary is missing (`.ci/run` installs them)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tradebot.live.prometheus import LiveMetrics
from tradebot.live.service.service_metrics import SERVICE_METRICS, ServiceHealth, ServiceMetrics, serve_endpoints

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install prometheus prometheus-alertmanager; .ci/run does)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(what: str, check, timeout: float = 40.0, every: float = 0.25):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
        except OSError as err:  # not listening yet
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_promtool_accepts_the_alert_rules_and_the_prometheus_config():
    promtool = _need("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    n_rules = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {n_rules} rules found" in out.stdout
    out = subprocess.run([promtool, "check", "config", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def test_the_alert_rules_name_only_metrics_the_code_exports():
    from tradebot.live import prometheus as live_metrics

    exported = set(SERVICE_METRICS) | {getattr(live_metrics, k) for k in dir(live_metrics)
                                       if k.isupper() and isinstance(getattr(live_metrics, k), str)}
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = set()
    for rule in rules:
        for name in re.findall(r"\btradebot_[a-z_]+", rule["expr"]):
            base = next((name[: -len(s)] for s in ("_total", "_bucket", "_count", "_sum")
                         if name.endswith(s) and name[: -len(s)] in exported), name)
            assert base in exported, f"{rule['alert']}: {name} is not exported"
            used.add(base)
    alerts = {r["alert"] for r in rules}
    assert {"TradebotFeedStale", "TradebotPolicyDown", "TradebotPolicySlow", "TradebotRiskNotActive",
            "TradebotDrawdownNearKillSwitch", "TradebotOrderRejections", "TradebotTokenExpiring",
            "TradebotLoginNeeded", "TradebotServiceRestarted", "TradebotDriftAlarm"} <= alerts
    assert 'tradebot_live_drift_state{state="ALARM"}' in next(r["expr"] for r in rules if r["alert"] == "TradebotDriftAlarm")


def test_the_dashboard_shows_every_service_metric():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tradebot-live.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    missing = [m for m in SERVICE_METRICS if not re.search(rf"\b{m}(_total)?\b", exprs)]
    assert not missing


class _Receiver:
    """A webhook receiver on 127.0.0.1 recording what Alertmanager posts."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"

    def alert_names(self, status: str = "firing", instance: str | None = None) -> set[str]:
        return {a["labels"]["alertname"] for p in self.posts for a in p["alerts"]
                if a["status"] == status and instance in (None, a["labels"].get("instance"))}


def _service_process(tmp: Path) -> subprocess.Popen:
    """``tradebot service`` (the same entry point) on a free port, with the wall clock and no token."""
    config = tmp / "service.yaml"
    config.write_text(yaml.safe_dump({"service": {
        "state_dir": str(tmp / "state"), "symbols": ["NSE:SBIN-EQ"], "port": 0,
        "policy": {"url": "http://127.0.0.1:1/policy"}, "token_file": str(tmp / "no-token.json")}}))
    return subprocess.Popen([sys.executable, "-m", "tradebot.live.service.service_process", str(config)],
                            stdout=open(tmp / "service.log", "w"), stderr=subprocess.STDOUT)


def _fast_rules(tmp: Path) -> Path:
    """The deployed rules with every `for:` cut to 0 s (the test's evaluation runs every second)."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    path = tmp / "alerts.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_stale_feed_fires_its_alert_in_prometheus_and_alertmanager_delivers_it(tmp_path):
    prometheus, alertmanager = _need("prometheus"), _need("prometheus-alertmanager")
    metrics = ServiceMetrics(LiveMetrics())
    health = ServiceHealth()
    metrics.phase("trading")
    metrics.live.staleness.labels("NSE:SBIN-EQ").set(20.0)  # fresh: a bar 20 s ago
    endpoint = serve_endpoints(metrics, health, "127.0.0.1", 0)
    receiver = _Receiver()
    am_port, prom_port = _free_port(), _free_port()
    (tmp_path / "am").mkdir()
    (tmp_path / "am.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": receiver.url, "send_resolved": True}]}]}))
    rules = _fast_rules(tmp_path)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "tradebot-service",
                            "static_configs": [{"targets": [f"127.0.0.1:{endpoint.server_port}"]}]},
                           {"job_name": "tradebot-service-process",
                            "static_configs": [{"targets": ["127.0.0.1:SERVICE_PORT"]}]}]}))
    procs = []
    try:
        procs.append(_service_process(tmp_path))  # the real service too, on its own port (idle or pre-open)
        service_port = _wait("the service's endpoints", lambda: re.search(
            r"endpoints: http://127\.0\.0\.1:(\d+)/healthz", (tmp_path / "service.log").read_text()))
        service_port = int(service_port.group(1))
        procs.append(subprocess.Popen([alertmanager, f"--config.file={tmp_path / 'am.yml'}",
                                       f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                       "--cluster.listen-address="],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.log", "w")))
        prom_yml = tmp_path / "prometheus.yml"
        prom_yml.write_text(prom_yml.read_text().replace("SERVICE_PORT", str(service_port)))
        procs.append(subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "w")))
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        # the scrape works: the service's and the loop's metrics are in Prometheus
        _wait("a scrape of the service", lambda: [r for r in _get(f"{api}/query?query=up")["data"]["result"]
                                                  if r["metric"]["job"] == "tradebot-service" and r["value"][1] == "1"])
        _wait("a scrape of the service process", lambda: [
            r for r in _get(f"{api}/query?query=tradebot_service_up")["data"]["result"]
            if r["metric"]["job"] == "tradebot-service-process" and r["value"][1] == "1"])
        phase = _get(f"{api}/query?query=tradebot_service_phase%7Bphase%3D%22trading%22%7D")["data"]["result"]
        assert [r["value"][1] for r in phase if r["metric"]["job"] == "tradebot-service"] == ["1"]
        _wait("the rules evaluated", lambda: [g for g in _get(f"{api}/rules")["data"]["groups"]
                                              if g["rules"] and g["rules"][0].get("lastEvaluation", "").startswith("20")])
        time.sleep(2.5)  # a few evaluations on a fresh feed: nothing fires
        firing = {a["labels"]["alertname"] for a in _get(f"{api}/alerts")["data"]["alerts"]}
        assert "TradebotFeedStale" not in firing, firing

        metrics.live.staleness.labels("NSE:SBIN-EQ").set(900.0)  # the injected stale feed: no bar for 15 minutes
        alert = _wait("TradebotFeedStale firing", lambda: [a for a in _get(f"{api}/alerts")["data"]["alerts"]
                                                           if a["labels"]["alertname"] == "TradebotFeedStale"
                                                           and a["state"] == "firing"])[0]
        assert alert["labels"]["symbol"] == "NSE:SBIN-EQ" and alert["labels"]["severity"] == "critical"
        _wait("Alertmanager's notification at the webhook", lambda: "TradebotFeedStale" in receiver.alert_names())
        post = next(p for p in receiver.posts if p["commonLabels"].get("alertname") == "TradebotFeedStale")
        assert post["status"] == "firing" and post["receiver"] == "hook"
        assert "no bar from the feed" in post["alerts"][0]["annotations"]["summary"]
        assert {"TradebotLoginNeeded", "TradebotRiskNotActive", "TradebotDriftAlarm"}.isdisjoint(
            receiver.alert_names(instance=f"127.0.0.1:{endpoint.server_port}"))  # only what the metrics say
    finally:
        for p in procs:
            p.terminate()  # the service: SIGTERM, a graceful stop
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        endpoint.shutdown()
        receiver.server.shutdown()
