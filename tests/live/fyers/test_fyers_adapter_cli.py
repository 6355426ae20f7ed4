"""``tradebot fyers login`` and ``tradebot data fetch --broker fyers`` against the simulator (real SDK)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from tradebot.cli import main

sim_mod = pytest.importorskip("tradebot.live.adapters.fyers.simulator")
pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[3]
SBIN_1D = str(ROOT / "data" / "sample" / "NSE_SBIN-EQ_1d.csv.gz")


def _cli():
    import tradebot.cli.commands  # noqa: F401  (registers the command groups)

    return main


def test_login_then_fetch_through_the_cli(tmp_path, monkeypatch) -> None:
    with sim_mod.FyersSimulator(data=[SBIN_1D]) as sim:
        monkeypatch.setenv("FYERS_APP_ID", "SIMAPP-100")
        monkeypatch.setenv("FYERS_SECRET_KEY", "sim-secret-key")
        monkeypatch.setenv("FYERS_REDIRECT_URI", "https://127.0.0.1/cb")
        monkeypatch.setenv("TRADEBOT_FYERS_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.chdir(tmp_path)
        tok = tmp_path / "cfg" / "fyers_token.json"
        runner = CliRunner()
        # the user opens the printed URL; the simulator approves at once and redirects with the code
        from tradebot.live.adapters.fyers.auth import AuthSettings, login_url

        url = login_url(AuthSettings.from_env(api_base=sim.base_url))
        redirect = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
        res = runner.invoke(_cli(), ["fyers", "login", "--api-base", sim.base_url, "--token-file", str(tok)],
                            input=redirect + "\n")
        assert res.exit_code == 0, res.output
        assert "generate-authcode" in res.output and "Logged in as" in res.output
        assert oct(tok.stat().st_mode & 0o777) == "0o600"
        token_text = tok.read_text()
        secret = __import__("json").loads(token_text)["access_token"]
        assert secret not in res.output
        assert not any(p.name.startswith("fyers") and p.suffix == ".log" for p in tmp_path.iterdir())  # not in CWD
        # a looser mode is refused with the fix
        os.chmod(tok, 0o644)
        res = runner.invoke(_cli(), ["data", "fetch", "--symbol", "NSE:SBIN-EQ", "--timeframe", "1d", "--start",
                                     "2022-01-01", "--end", "2023-12-31", "--token-file", str(tok)])
        assert res.exit_code == 2 and f"chmod 600 {tok}" in res.output
        os.chmod(tok, 0o600)
        res = runner.invoke(_cli(), ["data", "fetch", "--broker", "fyers", "--symbol", "NSE:SBIN-EQ", "--timeframe",
                                     "1d", "--start", "2022-01-01", "--end", "2023-12-31", "--store",
                                     str(tmp_path / "store"), "--token-file", str(tok)])
        assert res.exit_code == 0, res.output
        assert "2 request(s)" in res.output
        assert (tmp_path / "store" / "NSE_SBIN-EQ" / "1d.parquet").is_file()
