"""The bodies of the Fyers CLI commands (``tradebot fyers login``, ``tradebot data fetch --broker fyers``);
the click wrappers in ``tradebot/`` only parse flags and call these."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradebot.live.adapters.fyers.auth import (
    AuthSettings,
    exchange,
    load_token,
    login_url,
    save_token,
    token_path,
    verify_token,
)
from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest, make_model, state_dir
from tradebot.core.errors import UserInputError


def run_login(*, auth_code: str | None, redirect_url: str | None, api_base: str | None, token_file: Path | None,
              app_id: str | None, redirect_uri: str | None, echo: Callable[[str], None],
              prompt: Callable[[str], str]) -> Path:
    """Print the login URL, read the redirect URL / auth code, exchange it, store the token (0600), and
    check it with the profile call. Returns the token file."""
    if auth_code and redirect_url:
        raise UserInputError("give --auth-code or --redirect-url, not both")
    settings = AuthSettings.from_env(app_id=app_id, redirect_uri=redirect_uri, api_base=api_base)
    where = f" (simulator at {settings.api_base})" if settings.api_base else ""
    echo(f"1. Open this URL in a browser and log in to Fyers{where}:")
    echo(f"   {login_url(settings)}")
    echo(f"2. Fyers redirects to {settings.redirect_uri}?...auth_code=...; copy that whole address.")
    given = auth_code or redirect_url
    if not given:
        given = prompt("Paste the redirect URL (or the auth_code)")
    token = exchange(settings, given)
    path = save_token(token, token_file or token_path())
    profile = verify_token(token, endpoints=settings.endpoints(), log_path=state_dir() / "logs")
    who = profile.get("fy_id") or profile.get("name") or "?"
    echo(f"Logged in as {who}; token saved to {path} (mode 600), valid until "
         f"{_when(token.expires_at)}. Fyers tokens last one day: log in again tomorrow.")
    return path


def _when(epoch: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch)) if epoch else "unknown"


def run_fetch(*, symbol: str, timeframe: str, start: str, end: str, store_dir: Path | None, api_base: str | None,
              token_file: Path | None, echo: Callable[[str], None], progress: Any = None) -> Any:
    """``tradebot data fetch --broker fyers``: history into the store, chunked and resumable."""
    from tradebot.features.store import Store
    from tradebot.live.adapters.fyers.data import FetchReport, fetch_history

    token = load_token(token_file)
    endpoints = Endpoints.resolve(api_base or token.api_base)
    rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=endpoints, log_path=state_dir() / "logs"))
    store = Store(store_dir)
    report = FetchReport(symbol, timeframe)
    bars = fetch_history(rest, symbol, timeframe, start, end, store=store, progress=progress, report=report)
    if bars is None:
        echo(f"no {timeframe} bars of {symbol} between {start} and {end} (market closed, or before the data starts)")
    else:
        echo(f"fetched {symbol} {report.timeframe}: {report.bars:,} bar(s) in {report.requests} request(s) "
             f"({report.skipped_chunks} chunk(s) already in the store) -> {store.path(symbol, report.timeframe)}; "
             f"{len(bars):,} bar(s) from {bars.index[0]} to {bars.index[-1]}")
    return report
