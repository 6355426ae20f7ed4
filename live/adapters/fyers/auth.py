"""Fyers login (OAuth, daily) and the token file.

```python
settings = AuthSettings.from_env()                # FYERS_APP_ID, FYERS_SECRET_KEY, FYERS_REDIRECT_URI
print(login_url(settings))                        # the user logs in there (2FA) and is redirected
token = exchange(settings, redirect_url_or_code)  # POST /validate-authcode through SessionModel
save_token(token)                                 # ~/.config/tradebot/fyers_token.json, mode 0600
token = load_token()                              # refuses a group/world-readable file; checks the JWT exp
```

The token file (``$TRADEBOT_FYERS_TOKEN_FILE``, default ``~/.config/tradebot/fyers_token.json``) holds
``{"app_id", "access_token", "expires_at", "created_at", "api_base"}`` and is written 0600 (created with
that mode, then renamed into place). A file others can read is refused with the ``chmod 600`` fix.
Fyers tokens die every day (the JWT ``exp``, about 06:00 IST); ``load_token`` refuses an expired one,
and ``verify_token`` asks the server (``get_profile``): a JWT that decodes fine can be dead there.

The token never reaches a log, a repr or an exception message: ``FyersToken`` shows only its app id
and expiry, and ``install_redaction(secret)`` adds a record factory plus a handler filter that replace
it with ``***`` wherever it would appear (the SDK's loggers propagate to the root logger).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tradebot.core.files import atomic_writer
from tradebot.live.adapters.fyers.error_translation import ReauthRequired
from tradebot.live.adapters.fyers.rest import API_BASE_ENV, Endpoints
from tradebot.core.errors import FatalError, RetryableError, UserInputError
from tradebot.live.logs import JsonFormatter, RedactingFormatter, redact, register_secret

TOKEN_FILE_ENV = "TRADEBOT_FYERS_TOKEN_FILE"
APP_ID_ENV = "FYERS_APP_ID"
SECRET_ENV = "FYERS_SECRET_KEY"
REDIRECT_ENV = "FYERS_REDIRECT_URI"
DEFAULT_REDIRECT = "https://127.0.0.1/fyers/callback"
EXCHANGE_TIMEOUT_S = 15.0


def token_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get(TOKEN_FILE_ENV)
    return Path(env) if env else Path.home() / ".config" / "tradebot" / "fyers_token.json"


# ------------------------------------------------------------------------------ redaction

_factory_installed = False
_factory_lock = threading.Lock()


def _redact_value(v: Any) -> Any:
    if isinstance(v, str):
        return redact(v)
    if isinstance(v, dict):
        return {k: _redact_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_redact_value(x) for x in v)
    return v


def _redact_record(record: logging.LogRecord) -> None:
    try:
        msg = record.getMessage()
    except Exception:  # a broken format string is the logging module's problem, not ours
        return
    clean = redact(msg)
    if clean != msg:
        record.msg, record.args = clean, None
    for key in ("fields", "exc_text", "stack_info"):
        v = record.__dict__.get(key)
        if v:
            record.__dict__[key] = _redact_value(v)
    if record.exc_info and not record.exc_text:  # formatted now, redacted: every formatter reuses exc_text
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


class RedactingFilter(logging.Filter):
    """Replaces every registered secret with ``***`` in the message, ``fields`` and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_FILTER = RedactingFilter()


def install_redaction(secret: str, loggers: tuple[str, ...] = ("", "tradebot", "tradebot.live", "tradebot.fyers",
                                                                 "FyersAPI", "FyersAPIRequest", "FyersDataSocket")
                      ) -> None:
    """Never log ``secret``: it is registered with ``tradebot.live.logs`` (whose formatters redact the whole
    line, traceback included); a record factory redacts every record made from now on (its message,
    fields and formatted traceback); the handlers of ``loggers`` get the filter and a redacting formatter."""
    global _factory_installed
    register_secret(secret)
    with _factory_lock:
        if not _factory_installed:
            old = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                rec = old(*args, **kwargs)
                _redact_record(rec)
                return rec

            logging.setLogRecordFactory(factory)
            _factory_installed = True
    for name in loggers:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
        for h in lg.handlers:
            if _FILTER not in h.filters:
                h.addFilter(_FILTER)
            if not isinstance(h.formatter, (RedactingFormatter, JsonFormatter)):
                h.setFormatter(RedactingFormatter(h.formatter))


# ---------------------------------------------------------------------------------- tokens

def jwt_payload(token: str) -> dict[str, Any]:
    """The (unverified) payload of a JWT; {} when it is not one."""
    try:
        part = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}


@dataclass(frozen=True)
class FyersToken:
    """An access token for one app. ``repr``/``str`` never show it; ``secret()`` does, for the SDK only."""

    app_id: str
    _access_token: str = field(repr=False)
    expires_at: int = 0  # epoch seconds (the JWT exp), 0 unknown
    created_at: int = 0
    api_base: str | None = None

    def __repr__(self) -> str:
        return f"FyersToken(app_id={self.app_id!r}, expires_at={self.expires_at}, api_base={self.api_base!r})"

    __str__ = __repr__

    def secret(self) -> str:
        return self._access_token

    def socket_token(self) -> str:
        """``APPID:TOKEN``, as both sockets want it."""
        return f"{self.app_id}:{self._access_token}"

    def seconds_left(self, now: float | None = None) -> float:
        return (self.expires_at or 0) - (time.time() if now is None else now)

    def check_not_expired(self, now: float | None = None) -> None:
        if self.expires_at and self.seconds_left(now) <= 0:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.expires_at))
            raise ReauthRequired(f"the Fyers access token expired at {when} (tokens last one day): "
                                 "log in again with: tradebot fyers login")

    @classmethod
    def from_access_token(cls, app_id: str, access_token: str, api_base: str | None = None) -> "FyersToken":
        exp = jwt_payload(access_token).get("exp")
        return cls(app_id, access_token, int(exp) if isinstance(exp, (int, float)) else 0, int(time.time()), api_base)


def save_token(token: FyersToken, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the token file with mode 0600 (atomically); returns its path."""
    p = token_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"app_id": token.app_id, "access_token": token.secret(), "expires_at": token.expires_at,
            "created_at": token.created_at, "api_base": token.api_base}
    with atomic_writer(p, mode=0o600, text=True) as fh:  # the secret is never readable by others
        json.dump(data, fh)
    return p


def load_token(path: str | os.PathLike[str] | None = None, *, allow_expired: bool = False,
               now: float | None = None) -> FyersToken:
    """Read the token file: refuses a missing, unreadable, too-open or (unless allowed) expired one."""
    p = token_path(path)
    if not p.is_file():
        raise ReauthRequired(f"{p}: no Fyers token; log in first with: tradebot fyers login")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise UserInputError(f"{p}: token file is readable by others (mode {mode:o}); run: chmod 600 {p}")
    try:
        data = json.loads(p.read_text())
        token = FyersToken(str(data["app_id"]), str(data["access_token"]), int(data.get("expires_at") or 0),
                           int(data.get("created_at") or 0), data.get("api_base"))
    except (ValueError, KeyError, TypeError):
        raise UserInputError(f"{p}: not a tradebot Fyers token file; log in again with: tradebot fyers login") \
            from None
    install_redaction(token.secret())
    if not allow_expired:
        token.check_not_expired(now)
    return token


# ----------------------------------------------------------------------------------- login

@dataclass(frozen=True)
class AuthSettings:
    app_id: str
    secret_key: str = field(repr=False)
    redirect_uri: str = DEFAULT_REDIRECT
    api_base: str | None = None

    def __repr__(self) -> str:
        return f"AuthSettings(app_id={self.app_id!r}, redirect_uri={self.redirect_uri!r}, api_base={self.api_base!r})"

    @classmethod
    def from_env(cls, app_id: str | None = None, secret_key: str | None = None, redirect_uri: str | None = None,
                 api_base: str | None = None) -> "AuthSettings":
        app_id = app_id or os.environ.get(APP_ID_ENV)
        secret_key = secret_key or os.environ.get(SECRET_ENV)
        if not app_id:
            raise UserInputError(f"no Fyers app id: set {APP_ID_ENV} (e.g. XXXXXXXXXX-100, from myapi.fyers.in)")
        if not secret_key:
            raise UserInputError(f"no Fyers app secret: set {SECRET_ENV} (from the app's page on myapi.fyers.in)")
        return cls(app_id, secret_key, redirect_uri or os.environ.get(REDIRECT_ENV) or DEFAULT_REDIRECT,
                   api_base or os.environ.get(API_BASE_ENV))

    def endpoints(self) -> Endpoints:
        return Endpoints.resolve(self.api_base)


def _session_model(settings: AuthSettings, state: str = "tradebot"):
    from fyers_apiv3 import fyersModel

    settings.endpoints().apply()
    return fyersModel.SessionModel(client_id=settings.app_id, redirect_uri=settings.redirect_uri,
                                   response_type="code", state=state, secret_key=settings.secret_key,
                                   grant_type="authorization_code")


def login_url(settings: AuthSettings, state: str = "tradebot") -> str:
    """The Fyers login page for this app (open it, log in; Fyers redirects with ``auth_code``)."""
    return _session_model(settings, state).generate_authcode()


def auth_code_from(text: str) -> str:
    """The auth code from a pasted redirect URL (``...?auth_code=...&state=...``) or the bare code."""
    text = text.strip()
    if "auth_code=" in text or text.startswith(("http://", "https://")):
        qs = parse_qs(urlparse(text).query)
        code = (qs.get("auth_code") or [""])[0]
        if not code:
            raise UserInputError("the redirect URL has no auth_code parameter; paste the whole address Fyers "
                                 "redirected to after the login (it contains auth_code=...)")
        return code
    if not text:
        raise UserInputError("no auth code given; paste the redirect URL or the auth_code value")
    return text


def exchange(settings: AuthSettings, redirect_or_code: str, timeout_s: float = EXCHANGE_TIMEOUT_S) -> FyersToken:
    """Trade the auth code for an access token (POST /validate-authcode via ``SessionModel.generate_token``).

    The SDK's call has no timeout: it runs in a worker thread and is abandoned after ``timeout_s``.
    """
    code = auth_code_from(redirect_or_code)
    session = _session_model(settings)
    session.set_token(code)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fyers-login")
    try:
        resp = pool.submit(session.generate_token).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise RetryableError(f"fyers login: no answer from {settings.endpoints().api} within {timeout_s:.0f} s; "
                             "try again") from None
    except Exception as err:  # requests' connection errors, a non-JSON answer
        raise RetryableError(f"fyers login: {type(err).__name__} talking to {settings.endpoints().api}; "
                             "check the network and try again") from None
    finally:
        pool.shutdown(wait=False)
    resp = dict(resp) if isinstance(resp, dict) else {}
    token = resp.get("access_token")
    if resp.get("s") != "ok" or not token:
        code_n, msg = resp.get("code"), resp.get("message") or "no access token in the answer"
        hint = {-371: f"check {SECRET_ENV} and {APP_ID_ENV} (the app id hash is wrong)",
                -374: "the auth code is missing", -441: "invalid grant type",
                -413: "the auth code is invalid or already used: log in again for a fresh one",
                }.get(code_n, "log in again for a fresh auth code (they are single-use and short-lived)")
        raise UserInputError(f"fyers login refused: {msg} (code {code_n}); {hint}")
    install_redaction(token)
    return FyersToken.from_access_token(settings.app_id, token, settings.api_base)


def verify_token(token: FyersToken, *, rest: Any = None, endpoints: Endpoints | None = None,
                 log_path: Any = None) -> dict[str, Any]:
    """Check the token locally (exp), then on the server (``get_profile``); returns the profile data.

    Raises ``ReauthRequired`` (expired / refused) or ``RetryableError`` (the server did not answer)."""
    token.check_not_expired()
    if rest is None:
        from tradebot.live.adapters.fyers.rest import FyersRest, make_model

        model = make_model(token.app_id, token.secret(), endpoints=endpoints or Endpoints.resolve(token.api_base),
                           log_path=log_path)
        rest = FyersRest(model)
    try:
        return rest.call("get_profile").get("data") or {}
    except ReauthRequired:
        raise
    except FatalError:
        raise
    except RetryableError:
        raise
    except Exception as err:
        raise ReauthRequired(f"fyers profile check failed ({err}); log in again with: tradebot fyers login") from err


@dataclass(frozen=True)
class LoginResult:
    """A finished login: where the token was stored, who it belongs to, when it expires (epoch seconds)."""

    token_file: Path
    account: str
    expires_at: int


def complete_login(settings: AuthSettings, redirect_or_code: str, token_file: str | os.PathLike[str] | None = None,
                   ) -> LoginResult:
    """The login's second half (``tradebot fyers login``): exchange the redirect URL or auth code for a
    token, store it (0600, at ``token_path(token_file)``) and check it with the profile call."""
    from tradebot.live.adapters.fyers.rest import state_dir

    token = exchange(settings, redirect_or_code)
    path = save_token(token, token_path(token_file))
    profile = verify_token(token, endpoints=settings.endpoints(), log_path=state_dir() / "logs")
    return LoginResult(path, str(profile.get("fy_id") or profile.get("name") or "?"), token.expires_at)
