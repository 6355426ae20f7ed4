"""The REST side of the SDK, made safe: endpoints, timeouts, HTTP status capture, pacing, translation.

* ``Endpoints``: where the API lives. Real Fyers by default; ``Endpoints.from_base(url)`` (or env
  ``TRADEBOT_FYERS_API_BASE=http://127.0.0.1:PORT``) points the whole SDK (REST, both sockets, the
  symbol-token call) at a simulator. The SDK has no option for that: ``apply()`` sets its class
  attributes (``fyersModel.Config.API`` / ``DATA_API``, read on every call), the sockets get their URLs
  set per instance (``tradebot.live.adapters.fyers.sockets``).
* **Timeouts.** The SDK sets none on any call. ``install_transport(session)`` mounts a
  ``requests`` adapter on the model's ``requests.Session`` (``model.service.session``) that gives every
  request a (connect, read) timeout unless one is set, and records, per thread, the HTTP status and
  headers (``Retry-After``) or the exception of the last request: the SDK swallows both. A timeout
  then reaches ``errors.check`` as ``HttpInfo(error="timeout")`` -> ``RetryableError``.
  ``SessionModel.generate_token`` uses bare ``requests.post`` (no session): ``auth`` runs it in a worker
  thread with a deadline instead.
* ``FyersRest``: one ``FyersModel`` plus the shared ``RateLimiter``; ``call(name, payload)`` paces,
  calls, translates (``errors.check``) and retries (``errors.retry``) -- the only way the adapter
  talks REST.
* The SDK writes ``fyersApi.log`` / ``fyersRequests.log`` into the CWD unless given ``log_path``:
  ``make_model`` always passes one (``state_dir()/logs``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter

from tradebot.live.adapters.fyers.error_translation import NO_RETRY, HttpInfo, RetryPolicy, check, retry
from tradebot.live.adapters.fyers.ratelimit import RateLimiter, shared_limiter
from tradebot.core.errors import UserInputError

API_BASE_ENV = "TRADEBOT_FYERS_API_BASE"
STATE_DIR_ENV = "TRADEBOT_FYERS_STATE_DIR"
DEFAULT_TIMEOUT = (5.0, 10.0)  # connect, read (seconds)

# the transactional calls (static-IP rule, order-rate limit; an unexplained error is a rejection)
ORDER_CALLS = frozenset({"place_order", "modify_order", "cancel_order", "exit_positions", "place_basket_orders",
                         "modify_basket_orders", "cancel_basket_orders", "place_multileg_order"})


def state_dir() -> Path:
    """Where the adapter keeps its SDK logs: ``$TRADEBOT_FYERS_STATE_DIR``, else ``~/.local/state/tradebot/fyers``."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path.home() / ".local" / "state" / "tradebot" / "fyers"


@dataclass(frozen=True)
class Endpoints:
    api: str = "https://api-t1.fyers.in/api/v3"
    data: str = "https://api-t1.fyers.in/data"
    data_ws: str = "wss://socket.fyers.in/hsm/v1-5/prod"
    order_ws: str = "wss://socket.fyers.in/trade/v3"
    symbol_token: str = "https://api-t1.fyers.in/data/symbol-token"
    simulated: bool = False

    @classmethod
    def from_base(cls, base: str) -> "Endpoints":
        """A simulator at ``base`` (``http://127.0.0.1:PORT``): its REST, ``/hsm/v1-5/prod`` and ``/trade/v3``."""
        u = urlparse(base.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.netloc:
            raise UserInputError(f"fyers API base {base!r}: give an http(s) URL, e.g. http://127.0.0.1:8765")
        root = f"{u.scheme}://{u.netloc}"
        ws = ("wss" if u.scheme == "https" else "ws") + f"://{u.netloc}"
        return cls(api=f"{root}/api/v3", data=f"{root}/data", data_ws=f"{ws}/hsm/v1-5/prod",
                   order_ws=f"{ws}/trade/v3", symbol_token=f"{root}/data/symbol-token", simulated=True)

    @classmethod
    def resolve(cls, base: str | None = None) -> "Endpoints":
        """``base``, else ``$TRADEBOT_FYERS_API_BASE``, else the real Fyers."""
        base = base or os.environ.get(API_BASE_ENV)
        return cls.from_base(base) if base else cls()

    def apply(self) -> None:
        """Point the SDK's REST layer (and the SessionModel) at these endpoints (process-wide)."""
        from fyers_apiv3 import fyersModel

        fyersModel.Config.API = self.api
        fyersModel.Config.DATA_API = self.data


# ------------------------------------------------------------------------------- transport

_last = threading.local()


def last_http() -> HttpInfo | None:
    """What the transport saw for this thread's last request (None: no request since ``reset_http``)."""
    return getattr(_last, "info", None)


def reset_http() -> None:
    _last.info = None


class TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout and records its status/headers or exception (per thread)."""

    def __init__(self, timeout: tuple[float, float] = DEFAULT_TIMEOUT, **kwargs: Any):
        self.timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        t0 = time.perf_counter()
        try:
            resp = super().send(request, **kwargs)
        except requests.ConnectTimeout:  # the connection never opened: nothing was sent
            _last.info = HttpInfo(error="connect", elapsed_s=time.perf_counter() - t0)
            raise
        except requests.Timeout:
            _last.info = HttpInfo(error="timeout", elapsed_s=time.perf_counter() - t0)
            raise
        except requests.ConnectionError as err:
            text = str(err).lower()
            kind = ("connect" if "newconnectionerror" in text or "connection refused" in text
                    else "timeout" if "timed out" in text else "connection")
            _last.info = HttpInfo(error=kind, elapsed_s=time.perf_counter() - t0)
            raise
        except Exception as err:
            _last.info = HttpInfo(error=type(err).__name__, elapsed_s=time.perf_counter() - t0)
            raise
        _last.info = HttpInfo(status=resp.status_code, headers=dict(resp.headers), elapsed_s=time.perf_counter() - t0)
        return resp


def install_transport(session: requests.Session, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> TimeoutAdapter:
    adapter = TimeoutAdapter(timeout)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return adapter


# ------------------------------------------------------------------------------------ model

def make_model(app_id: str, access_token: str, *, endpoints: Endpoints | None = None,
               log_path: str | Path | None = None, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
               log_level: str = "ERROR"):
    """A sync ``FyersModel`` with its logs under ``log_path`` (default ``state_dir()/logs``) and timeouts.

    ``access_token`` is the bare JWT (the SDK builds ``APPID:TOKEN`` itself).
    """
    from fyers_apiv3 import fyersModel

    (endpoints or Endpoints.resolve()).apply()
    path = Path(log_path) if log_path is not None else state_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    model = fyersModel.FyersModel(is_async=False, client_id=app_id, token=access_token, log_path=str(path),
                                  log_level=log_level)
    install_transport(model.service.session, timeout)
    return model


class FyersRest:
    """Paced, translated, retried REST calls on one SDK model (or a fake with the same methods)."""

    def __init__(self, model: Any, *, limiter: RateLimiter | None = None, retry_policy: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, http_info: Callable[[], HttpInfo | None] = last_http):
        self.model = model
        # one budget per app, shared by every process of this user (the account's REST limits are Fyers')
        app_id = getattr(model, "__dict__", {}).get("client_id")
        self.limiter = limiter if limiter is not None else shared_limiter(app_id=app_id if isinstance(app_id, str)
                                                                          else None)
        self.retry_policy = retry_policy
        self._sleep = sleep
        self._http_info = http_info
        self.calls: dict[str, int] = {}  # SDK calls made, by method (tests count retries with it)

    def __repr__(self) -> str:  # never the model (its header holds the token)
        return f"FyersRest(calls={sum(self.calls.values())})"

    def once(self, name: str, payload: Any = None) -> dict[str, Any]:
        """One paced call, translated; no retry."""
        fn = getattr(self.model, name)
        self.limiter.acquire()
        self.calls[name] = self.calls.get(name, 0) + 1
        reset_http()
        resp = fn() if payload is None else fn(payload)
        return check(resp, name, self._http_info(), order_call=name in ORDER_CALLS)

    def call(self, name: str, payload: Any = None, *, policy: RetryPolicy | None = None,
             before_retry: Callable[[int, Exception], Any] | None = None) -> dict[str, Any]:
        """``once`` with bounded retries of temporary failures (``policy``, default the client's)."""
        return retry(lambda: self.once(name, payload), policy or self.retry_policy, sleep=self._sleep,
                     before_retry=before_retry)

    def call_no_retry(self, name: str, payload: Any = None) -> dict[str, Any]:
        return self.call(name, payload, policy=NO_RETRY)


def payload_of(resp: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """``resp[key]`` as a list of dicts (Fyers returns null or omits empty lists)."""
    v = resp.get(key)
    return [dict(x) for x in v] if isinstance(v, list) else []
