"""Auth codes and access tokens: JWT-shaped, minted by the simulator, checked against its own registry.

Tokens are ``b64url(header).b64url(payload).b64url(hmac)``; the payload carries ``exp`` (wall clock,
as the SDK's data socket checks it) and ``hsm_key`` (the data socket's auth key). Codes of a refused
token (HTTP 401): -15 not a token of this shape, -16 unknown or revoked ("Could not authenticate the
user"; also every token after an injected expiry), -8 past its ``exp``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
FY_ID = "XS00001"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def app_id_hash(app_id: str, secret: str) -> str:
    return hashlib.sha256(f"{app_id}:{secret}".encode()).hexdigest()


def next_6am_ist(now: float) -> int:
    """Real Fyers tokens die at 06:00 IST the next morning."""
    local = dt.datetime.fromtimestamp(now, IST)
    target = local.replace(hour=6, minute=0, second=0, microsecond=0)
    if target <= local:
        target += dt.timedelta(days=1)
    return int(target.timestamp())


@dataclass
class TokenInfo:
    token: str
    app_id: str | None
    hsm_key: str
    exp: int
    revoked: bool = False


class AuthError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Auth:
    """Mints auth codes and tokens; by default any app id, secret hash and auth code are accepted."""

    def __init__(self, token_ttl_s: float | None = None, app_id: str | None = None, secret: str | None = None):
        self.token_ttl_s = token_ttl_s
        self.app_id = app_id
        self.secret = secret
        self._key = secrets.token_bytes(32)
        self.tokens: dict[str, TokenInfo] = {}
        self.by_hsm: dict[str, TokenInfo] = {}

    def _jwt(self, payload: dict) -> str:
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        body = b64url(json.dumps(payload, separators=(",", ":")).encode())
        sig = b64url(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}"

    def _exp(self, now: float) -> int:
        return math.ceil(now + self.token_ttl_s) if self.token_ttl_s is not None else next_6am_ist(now)

    def auth_code(self, client_id: str) -> str:
        now = int(time.time())
        return self._jwt({"iss": "api.login.fyers.in", "iat": now, "exp": now + 8 * 3600, "nbf": now,
                          "aud": "[\"x:0\", \"x:1\", \"x:2\", \"d:1\", \"d:2\"]", "sub": "auth_code",
                          "display_name": FY_ID, "app_id": client_id.split("-")[0] if client_id else "",
                          "client_id": client_id, "nonce": "", "isMtfEnabled": False})

    def app_of_code(self, code: str) -> str | None:
        try:
            return json.loads(b64url_decode(code.split(".")[1])).get("client_id") or None
        except (ValueError, IndexError, UnicodeDecodeError):
            return None

    def validate_authcode(self, body: dict) -> dict:
        if not isinstance(body, dict) or body.get("grant_type") != "authorization_code":
            raise AuthError(-441, "invalid grant type")
        if not body.get("appIdHash"):
            raise AuthError(-371, "Please provide sha256 hash of appId and app secret")
        if not body.get("code"):
            raise AuthError(-374, "Please provide auth code")
        app_id = self.app_of_code(str(body["code"])) or self.app_id
        if self.app_id and self.secret and body["appIdHash"] != app_id_hash(self.app_id, self.secret):
            raise AuthError(-371, "Please provide sha256 hash of appId and app secret")
        return {"s": "ok", "code": 200, "message": "", "access_token": self.mint(app_id),
                "refresh_token": self._jwt({"sub": "refresh_token", "iat": int(time.time()),
                                            "exp": int(time.time()) + 15 * DAY})}

    def mint(self, app_id: str | None = None) -> str:
        now = time.time()
        exp = self._exp(now)
        hsm_key = secrets.token_hex(24)
        token = self._jwt({"iss": "api.fyers.in", "iat": int(now), "exp": exp, "nbf": int(now),
                           "aud": ["x:0", "x:1", "x:2", "d:1", "d:2", "x:1", "x:0"], "sub": "access_token",
                           "at_hash": secrets.token_urlsafe(16), "display_name": "SIM USER", "oms": "K1",
                           "hsm_key": hsm_key, "isDdpiEnabled": "N", "isMtfEnabled": "N", "fy_id": FY_ID,
                           "appType": 100, "poa_flag": "N"})
        info = TokenInfo(token=token, app_id=app_id, hsm_key=hsm_key, exp=exp)
        self.tokens[token] = info
        self.by_hsm[hsm_key] = info
        return token

    def check(self, header: str | None, bare_ok: bool = False) -> TokenInfo:
        """``Authorization: APPID:TOKEN`` (or a bare token where the API takes one) -> its TokenInfo."""
        if not header:
            raise AuthError(-16, "Could not authenticate the user")
        app_id, sep, token = header.rpartition(":")
        if not sep:
            if not bare_ok:
                raise AuthError(-16, "Could not authenticate the user")
            app_id, token = "", header
        if token.count(".") != 2:
            raise AuthError(-15, "Invalid token")
        info = self.tokens.get(token)
        if info is None or info.revoked:
            raise AuthError(-16, "Could not authenticate the user")
        if info.exp <= time.time():
            raise AuthError(-8, "Your token has expired. Please generate a token")
        if app_id and info.app_id and app_id != info.app_id:
            raise AuthError(-352, "Invalid app id")
        return info

    def check_hsm_key(self, key: str) -> bool:
        info = self.by_hsm.get(key)
        return info is not None and not info.revoked and info.exp > time.time()

    def revoke_all(self) -> int:
        n = 0
        for info in self.tokens.values():
            if not info.revoked:
                info.revoked, n = True, n + 1
        return n


DAY = 86_400
