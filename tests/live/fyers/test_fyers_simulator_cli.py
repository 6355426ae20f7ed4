"""``tradebot fyers simulate``: help, bad input, and a real process serving the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests
from click.testing import CliRunner

from tradebot.cli import main

pytestmark = pytest.mark.timeout(90)


def test_help():
    res = CliRunner().invoke(main, ["fyers", "--help"])
    assert res.exit_code == 0 and "Fyers broker: offline simulator, login." in res.output
    res = CliRunner().invoke(main, ["fyers", "simulate", "--help"])
    assert res.exit_code == 0
    for flag in ("--port", "--data", "--speed", "--token-ttl", "--host"):
        assert flag in res.output


@pytest.mark.parametrize("args, needle", [
    (["--data", "no/such/file.csv"], "no such bar file"),
    (["--port", "70000"], "--port 70000"),
    (["--speed", "-1"], "--speed"),
    (["--token-ttl", "0"], "--token-ttl"),
    (["--start", "2030-01-01"], "after the last bar"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, needle):
    res = CliRunner().invoke(main, ["fyers", "simulate", *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_port_in_use_is_bad_input():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        res = CliRunner().invoke(main, ["fyers", "simulate", "--port", str(taken.getsockname()[1])])
    assert res.exit_code == 2 and res.output.startswith("error: ")


def test_cli_process_serves_the_api():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", "from tradebot.cli import main; main()", "fyers", "simulate", "--port", "0",
           "--speed", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", first)
        assert match, first
        base = f"http://127.0.0.1:{match.group(1)}"
        redirect = requests.get(f"{base}/api/v3/generate-authcode", allow_redirects=False, timeout=5, params={
            "client_id": "CLI-100", "redirect_uri": "http://localhost/cb", "response_type": "code", "state": "s"})
        code = re.search(r"auth_code=([^&]+)", redirect.headers["Location"]).group(1)
        token = requests.post(f"{base}/api/v3/validate-authcode", timeout=5, json={
            "grant_type": "authorization_code", "appIdHash": "x" * 64, "code": code}).json()["access_token"]
        profile = requests.get(f"{base}/api/v3/profile", headers={"Authorization": f"CLI-100:{token}"}, timeout=5)
        assert profile.status_code == 200 and profile.json()["s"] == "ok"
        assert requests.get(f"{base}/api/v3/profile", timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
