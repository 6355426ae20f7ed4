"""Token file (0600, refused when looser), JWT expiry, server verification, and the token never leaking:
not in logs, not in reprs, not in the live metrics text, not in MLflow params."""

from __future__ import annotations

import subprocess
import sys

import base64
import io
import json
import logging
import os
import time

import pytest

from tradebot.live.adapters.fyers import fakes
from tradebot.live.adapters.fyers.auth import (
    AuthSettings,
    FyersToken,
    auth_code_from,
    install_redaction,
    jwt_payload,
    load_token,
    save_token,
    verify_token,
)
from tradebot.live.adapters.fyers.client import FyersExecutionClient, describe
from tradebot.live.adapters.fyers.error_translation import ReauthRequired, RetryPolicy
from tradebot.live.adapters.fyers.ratelimit import RateLimiter
from tradebot.live.adapters.fyers.rest import FyersRest
from tradebot.live.logs import configure_json_logging, get_logger, log_event
from tradebot.live.prometheus import LiveMetrics
from tradebot.core.errors import UserInputError


def make_jwt(exp: float, extra: dict | None = None) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'HS256'})}.{b64({'exp': int(exp), 'hsm_key': 'k' * 32, **(extra or {})})}.c2lnbmF0dXJl"


def test_save_writes_0600_and_load_roundtrips(tmp_path) -> None:
    tok = FyersToken.from_access_token("ABCDEFGH12-100", make_jwt(time.time() + 3600))
    p = save_token(tok, tmp_path / "t.json")
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    back = load_token(p)
    assert back.secret() == tok.secret() and back.app_id == "ABCDEFGH12-100"
    assert back.expires_at == jwt_payload(tok.secret())["exp"]


def test_env_var_overrides_the_token_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRADEBOT_FYERS_TOKEN_FILE", str(tmp_path / "env.json"))
    tok = FyersToken.from_access_token("ABCDEFGH12-100", make_jwt(time.time() + 3600))
    assert save_token(tok) == tmp_path / "env.json"
    assert load_token().secret() == tok.secret()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_looser_permissions_are_refused_with_the_chmod_fix(tmp_path, mode) -> None:
    p = save_token(FyersToken.from_access_token("A-100", make_jwt(time.time() + 3600)), tmp_path / "t.json")
    os.chmod(p, mode)
    with pytest.raises(UserInputError) as info:
        load_token(p)
    msg = str(info.value)
    assert f"chmod 600 {p}" in msg and "\n" not in msg


def test_expired_jwt_is_refused_at_start(tmp_path) -> None:
    p = save_token(FyersToken.from_access_token("A-100", make_jwt(time.time() - 60)), tmp_path / "t.json")
    with pytest.raises(ReauthRequired, match="tradebot fyers login"):
        load_token(p)
    assert load_token(p, allow_expired=True).expires_at < time.time()


def test_missing_file_says_log_in(tmp_path) -> None:
    with pytest.raises(ReauthRequired, match="tradebot fyers login"):
        load_token(tmp_path / "none.json")


def test_locally_valid_jwt_dead_on_the_server_is_caught_by_the_profile_call() -> None:
    tok = FyersToken.from_access_token("A-100", make_jwt(time.time() + 3600))
    model = fakes.FakeFyersModel().script("get_profile", fakes.TOKEN_INVALID)
    rest = FyersRest(model, limiter=RateLimiter(), retry_policy=RetryPolicy(retries=3), sleep=lambda s: None,
                     http_info=model.http)
    with pytest.raises(ReauthRequired):
        verify_token(tok, rest=rest)
    assert model.count("get_profile") == 1  # not retried
    ok = fakes.FakeFyersModel()
    assert verify_token(tok, rest=FyersRest(ok, limiter=RateLimiter(), http_info=ok.http))["fy_id"] == "XS00001"


def test_auth_code_from_redirect_url_or_bare_code() -> None:
    assert auth_code_from("https://127.0.0.1/cb?s=ok&code=200&auth_code=eyJabc.def.ghi&state=tradebot") == "eyJabc.def.ghi"
    assert auth_code_from("  eyJabc.def.ghi ") == "eyJabc.def.ghi"
    with pytest.raises(UserInputError, match="auth_code"):
        auth_code_from("https://127.0.0.1/cb?state=x")


def test_settings_from_env_name_the_missing_variable(monkeypatch) -> None:
    monkeypatch.delenv("FYERS_APP_ID", raising=False)
    with pytest.raises(UserInputError, match="FYERS_APP_ID"):
        AuthSettings.from_env()
    monkeypatch.setenv("FYERS_APP_ID", "A-100")
    monkeypatch.delenv("FYERS_SECRET_KEY", raising=False)
    with pytest.raises(UserInputError, match="FYERS_SECRET_KEY"):
        AuthSettings.from_env()
    monkeypatch.setenv("FYERS_SECRET_KEY", "topsecret99")
    s = AuthSettings.from_env()
    assert "topsecret99" not in repr(s)


def test_token_never_in_reprs_logs_metrics_or_mlflow_params(tmp_path) -> None:
    secret = make_jwt(time.time() + 3600, {"marker": "ZZSECRETZZ"})
    tok = FyersToken.from_access_token("ABCDEFGH12-100", secret)
    install_redaction(tok.secret())
    # reprs
    model = fakes.FakeFyersModel()
    rest = FyersRest(model, limiter=RateLimiter(), http_info=model.http)
    client = FyersExecutionClient(rest, access_token=tok.socket_token(), order_socket=False)
    for obj in (tok, client, rest):
        assert secret not in repr(obj) and secret not in str(obj)
    # logs: the live JSON logger, the root logger, the SDK's logger names, exceptions
    buf = io.StringIO()
    handler = configure_json_logging(buf, level=logging.DEBUG)
    root_buf = io.StringIO()
    root_handler = logging.StreamHandler(root_buf)
    logging.getLogger().addHandler(root_handler)
    install_redaction(tok.secret())  # handlers added after the first install get the filter now
    try:
        log_event(get_logger(), logging.INFO, "login", token=secret, header=f"A-100:{secret}")
        get_logger().warning("header %s", tok.socket_token())
        logging.getLogger("FyersAPI").error({"API": "/profile", "header": tok.socket_token()})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            logging.getLogger("tradebot.fyers").exception("failed")
    finally:
        get_logger().removeHandler(handler)
        logging.getLogger().removeHandler(root_handler)
    out = buf.getvalue() + root_buf.getvalue()
    assert "login" in out and "***" in out
    assert secret not in out and "ZZSECRETZZ" not in out.replace("***", "")
    # metrics text of a live loop's registry
    metrics = LiveMetrics()
    metrics.orders.labels("submitted").inc()
    assert secret.encode() not in metrics.exposition()
    # MLflow params: what a run would log about the broker (describe) goes through MLflow and back
    mlflow = pytest.importorskip("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        mlflow.log_params(describe(client))
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["broker"] == "fyers"
    assert all(secret not in str(v) and "ZZSECRETZZ" not in str(v) for v in params.values())


_LEAK_SCRIPT = r'''
import io, logging, sys
from tradebot.live.adapters.fyers.auth import install_redaction
from tradebot.live.logs import configure_json_logging, get_logger
secret = sys.argv[1]
plain = logging.StreamHandler(sys.stdout)           # an ordinary handler on the root logger, set up before
logging.getLogger().addHandler(plain)
install_redaction("APP-100:" + secret)
configure_json_logging(sys.stdout)                   # the live loop's JSON lines
later = logging.StreamHandler(sys.stdout)            # and one added after the install
logging.getLogger("tradebot.fyers").addHandler(later)
try:
    raise RuntimeError("order refused for header APP-100:" + secret)
except RuntimeError:
    get_logger().error("policy failed", exc_info=True)
    logging.getLogger("tradebot.fyers").exception("submit failed")
print("DONE")
'''


def test_a_token_in_an_exception_never_reaches_a_log_line_without_pytests_logging_plugin(tmp_path) -> None:
    """Defect 9: the JSON formatter formatted ``exc_info`` after the record was redacted, so a traceback
    carried the token; the old test passed only because pytest's logging plugin formatted the record
    first. This runs the logging in a plain interpreter (no pytest), with the JSON handler, a root handler
    and a handler added later."""
    secret = make_jwt(time.time() + 3600, {"marker": "QQLEAKQQ"})
    out = subprocess.run([sys.executable, "-c", _LEAK_SCRIPT, secret], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "DONE" in out.stdout, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert secret not in text and "QQLEAKQQ" not in text
    assert "order refused for header ***" in text and "Traceback" in text and '"exc"' in text
