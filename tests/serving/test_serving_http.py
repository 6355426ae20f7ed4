"""The served policy acts exactly like the in-process ``Policy``, over HTTP and through a handle.

Real Ray Serve on loopback, a tiny trained PPO-LSTM. Two symbols are interleaved so a symbol's
recurrent state must not leak into another's; the reference is ``tradebot.rl.policy.Policy`` loaded in the
test process and stepped over the same observations.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tradebot.rl.policy import Policy

pytestmark = [pytest.mark.integration]

STEPS = 40  # per symbol: past the LSTM's max_seq_len, so the carried state matters


@pytest.fixture(scope="module")
def sequences(random_walk):
    return {"NSE:A": random_walk(600, 1, STEPS), "NSE:B": random_walk(2000, 2, STEPS)}


@pytest.fixture(scope="module")
def reference(trained, sequences):
    """The in-process policy's actions and probabilities, the two symbols interleaved."""
    policy = Policy.load(trained["path"])
    ref = {s: ([], []) for s in sequences}
    for t in range(STEPS):
        for s, obs in sequences.items():
            a, p = policy.act(s, obs[t])
            ref[s][0].append(a)
            ref[s][1].append(p)
    return {s: (np.array(a), np.array(p)) for s, (a, p) in ref.items()}


def _auth(served) -> dict:
    return {"Authorization": f"Bearer {served['token']}"}


def test_serving_http_act_interleaved_symbols_equals_in_process_policy(served, sequences, reference):
    session = requests.Session()
    session.headers.update(_auth(served))
    session.post(f"{served['url']}/reset", json={}).raise_for_status()
    got = {s: ([], []) for s in sequences}
    for t in range(STEPS):
        for s, obs in sequences.items():
            r = session.post(f"{served['url']}/act", json={"symbol": s, "obs": obs[t].tolist()})
            assert r.status_code == 200, r.text
            body = r.json()
            got[s][0].append(body["action"])
            got[s][1].append(body["probs"])
            assert body["symbol"] == s and body["model_version"].endswith("checkpoint")
            assert body["action_name"] in {"HOLD", "BUY_LONG", "SELL_SHORT", "CLOSE_LONG", "CLOSE_SHORT"}
    for s in sequences:
        np.testing.assert_array_equal(np.array(got[s][0]), reference[s][0])
        np.testing.assert_allclose(np.array(got[s][1]), reference[s][1], rtol=1e-6, atol=1e-9)


def test_serving_handle_act_interleaved_symbols_equals_in_process_policy(served, sequences, reference):
    handle = served["handle"]
    handle.reset.remote(None).result()
    got = {s: ([], []) for s in sequences}
    for t in range(STEPS):
        for s, obs in sequences.items():
            body = handle.act.remote(s, obs[t].tolist()).result()
            got[s][0].append(body["action"])
            got[s][1].append(body["probs"])
    for s in sequences:
        np.testing.assert_array_equal(np.array(got[s][0]), reference[s][0])
        np.testing.assert_allclose(np.array(got[s][1]), reference[s][1], rtol=1e-6, atol=1e-9)


def test_serving_reset_one_symbol_restarts_only_its_state(served, sequences, reference):
    url, h = served["url"], _auth(served)
    requests.post(f"{url}/reset", json={}, headers=h).raise_for_status()
    a, b = sequences["NSE:A"], sequences["NSE:B"]
    for t in range(5):
        requests.post(f"{url}/act", json={"symbol": "NSE:A", "obs": a[t].tolist()}, headers=h).raise_for_status()
        requests.post(f"{url}/act", json={"symbol": "NSE:B", "obs": b[t].tolist()}, headers=h).raise_for_status()
    r = requests.post(f"{url}/reset", json={"symbol": "NSE:A"}, headers=h)
    assert r.json() == {"reset": "NSE:A", "streams": 1}
    first = requests.post(f"{url}/act", json={"symbol": "NSE:A", "obs": a[0].tolist()}, headers=h).json()
    np.testing.assert_allclose(first["probs"], reference["NSE:A"][1][0], rtol=1e-6, atol=1e-9)
    b5 = requests.post(f"{url}/act", json={"symbol": "NSE:B", "obs": b[5].tolist()}, headers=h).json()
    np.testing.assert_allclose(b5["probs"], reference["NSE:B"][1][5], rtol=1e-6, atol=1e-9)  # B kept its state
    assert requests.post(f"{url}/reset", headers=h).json() == {"reset": "all", "streams": 0}
    assert requests.get(f"{url}/health", headers=h).json()["streams"] == 0


def test_serving_streams_are_per_client_so_another_caller_cannot_reset_a_live_symbol(served, sequences, reference):
    """Defect 12: streams were keyed by symbol alone, so any caller could reset (or advance) a live symbol's
    LSTM state. Two clients on one symbol: B's calls and resets leave A's state alone."""
    url, h = served["url"], _auth(served)
    a, b = sequences["NSE:A"], sequences["NSE:B"]
    requests.post(f"{url}/reset", json={"client": "A"}, headers=h).raise_for_status()
    for t in range(10):
        r = requests.post(f"{url}/act", json={"symbol": "NSE:A", "client": "A", "obs": a[t].tolist()}, headers=h)
        np.testing.assert_allclose(r.json()["probs"], reference["NSE:A"][1][t], rtol=1e-6, atol=1e-9)
        requests.post(f"{url}/act", json={"symbol": "NSE:A", "client": "B", "obs": b[t].tolist()},
                      headers=h).raise_for_status()
        requests.post(f"{url}/reset", json={"symbol": "NSE:A", "client": "B"}, headers=h).raise_for_status()
        requests.post(f"{url}/reset", json={"symbol": "NSE:A"}, headers=h).raise_for_status()  # no client: its own


def test_serving_always_needs_a_token_and_refuses_an_open_host_without_one(monkeypatch, tmp_path):
    """Defect 12: without TRADEBOT_SERVE_TOKEN the app had no auth, and --host 0.0.0.0 only warned."""
    from tradebot.cli import main
    from tradebot.serving.app import build_app, check_bind

    monkeypatch.delenv("TRADEBOT_SERVE_TOKEN", raising=False)
    digest = build_app(str(tmp_path / "model"))._bound_deployment.init_args[1]
    assert digest is not None and len(digest) == 64  # a generated token's SHA-256: never an open server
    with pytest.raises(Exception, match="TRADEBOT_SERVE_TOKEN"):
        check_bind("0.0.0.0", None)
    check_bind("127.0.0.1", None)
    result = CliRunner().invoke(main, ["serve", "--model", str(tmp_path / "missing"), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "TRADEBOT_SERVE_TOKEN" in result.output  # refused before the model loads
    monkeypatch.setenv("TRADEBOT_SERVE_TOKEN", "a-long-random-token-for-the-test")
    check_bind("0.0.0.0", None)


def test_serving_without_or_with_wrong_token_is_401(served):
    url = served["url"]
    for method, path in (("post", "/act"), ("post", "/reset"), ("get", "/health"), ("get", "/metrics")):
        kw = {"json": {"symbol": "NSE:A", "obs": [0.0]}} if path == "/act" else {}
        assert getattr(requests, method)(f"{url}{path}", **kw).status_code == 401
        bad = getattr(requests, method)(f"{url}{path}", headers={"Authorization": "Bearer nope"}, **kw)
        assert bad.status_code == 401
        assert served["token"] not in bad.text


def test_serving_bad_observation_is_422_and_keeps_serving(served, sequences):
    url, h = served["url"], _auth(served)
    r = requests.post(f"{url}/act", json={"symbol": "NSE:A", "obs": [0.0, 1.0]}, headers=h)
    assert r.status_code == 422 and "expects" in r.text
    nan = sequences["NSE:A"][0].tolist()
    nan[0] = "NaN"
    r = requests.post(f"{url}/act", json={"symbol": "NSE:A", "obs": nan}, headers=h)
    assert r.status_code == 422
    assert requests.get(f"{url}/health", headers=h).json()["status"] == "ok"


def test_serving_metrics_scraped_over_http_count_acts(served, sequences):
    url, h = served["url"], _auth(served)

    def scrape() -> dict:
        text = requests.get(f"{url}/metrics", headers=h).text
        out = {}
        for fam in text_string_to_metric_families(text):
            for sample in fam.samples:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value if sample.name.endswith("_bucket") \
                    is False else out.get(sample.name, 0.0)
        return out

    requests.post(f"{url}/reset", json={}, headers=h).raise_for_status()
    before = scrape()
    for t in range(7):
        requests.post(f"{url}/act", json={"symbol": f"NSE:M{t % 3}", "obs": sequences["NSE:A"][t].tolist()},
                      headers=h).raise_for_status()
    after = scrape()
    assert after["tradebot_serve_acts_total"] - before["tradebot_serve_acts_total"] == 7
    assert after["tradebot_serve_act_latency_seconds_count"] - before["tradebot_serve_act_latency_seconds_count"] == 7
    assert after["tradebot_serve_act_latency_seconds_sum"] > before["tradebot_serve_act_latency_seconds_sum"]
    assert after["tradebot_serve_streams"] - before["tradebot_serve_streams"] == 3  # (other clients' streams stay)


def test_serve_cli_bad_model_uri_exits_2_with_one_line(tmp_path):
    from tradebot.cli import main

    result = CliRunner().invoke(main, ["serve", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]



@pytest.mark.slow
def test_serve_cli_serves_until_sigterm_then_shuts_down(trained, tmp_path):
    """`tradebot serve` in its own process: answers /health, and SIGTERM stops it cleanly (exit 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ray_tmp = Path(tempfile.mkdtemp(prefix="tbserve-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TRADEBOT_SERVE_TOKEN")}
    token_file = tmp_path / "serve_token"
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1",
               TRADEBOT_SERVE_TOKEN_FILE=str(token_file))
    exe = Path(sys.executable).with_name("tradebot")
    proc = subprocess.Popen([str(exe), "serve", "--model", str(trained["path"]), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("Ctrl-C stops" in line for line in err) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert any("Ctrl-C stops" in line for line in err), "not serving within 180 s:\n" + "".join(err)
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 401  # a token always
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        info = requests.get(f"http://127.0.0.1:{port}/health", timeout=10,
                            headers={"Authorization": f"Bearer {token_file.read_text()}"}).json()
        assert info["obs_dim"] == Policy.load(trained["path"]).obs_dim
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    err_text = "".join(err)
    assert proc.returncode == 0, err_text
    assert f"on http://127.0.0.1:{port} (/act /reset /health /metrics; bearer token generated into {token_file}" \
        in err_text
    assert token_file.read_text() not in err_text
    assert "stopping" in err_text
