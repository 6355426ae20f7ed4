"""Fyers answers -> our typed errors, at the adapter edge, and the one retry helper.

The SDK never raises: it returns the response body as a dict, or (network failure, non-JSON body)
**one shared, mutable** ``{"s": "error", "code": <http status or -99>, "message": "Bad request"}``. Every
answer therefore goes through ``check(resp, call, http)``, which copies it and either returns the copy
(success) or raises what the caller must do (freqtrade's table, ``docs/fyers.md``):

==========================================================  ==========================================
Fyers answer                                                our error
==========================================================  ==========================================
code -8, -15, -16, -17, or HTTP 401                         ``ReauthRequired`` (a ``FatalError``): log
                                                            in again (``tradebot fyers login``); never
                                                            retried
HTTP 403, code -373 (app lacks a permission), -352 on a      ``FatalError``: fix the app on myapi.fyers.in
non-order call (invalid app id)
HTTP 429, code -429 / -353                                  ``RetryableError(retry_after=Retry-After``
                                                            or ``X-Retry-After-Ms``, else 1 s)
a connection that could not be opened (refused, connect    ``RetryableError`` with ``maybe_sent=False``
timeout)
a timeout, a dropped connection (SDK code -99 with no      ``RetryableError``
response), HTTP 5xx, codes -201/-202/-204/-205/-96
any other error on an order call (-50, -51, -53, -99 with   ``FyersRejected`` (a ``RejectedError``) with
a response, -300, -305 ... -399, -157 ... -164, 400)        ``code`` and ``message``; not retried
any other error on a data call                              ``FyersRejected`` (the caller may turn it into
                                                            a ``UserInputError``)
==========================================================  ==========================================

The HTTP status and headers (which the SDK throws away) and transport exceptions (timeouts) are
captured by ``tradebot.live.adapters.fyers.rest``'s transport adapter and passed in as ``HttpInfo``.

``maybe_sent``: whether the request may have reached Fyers and been acted on. A 429 and a connection
that never opened prove it did not; a timeout, a dropped connection, a 5xx (a gateway may have passed
it on) do not. An order whose place request may have been sent is never sent again
(``FyersExecutionClient.submit``).

``retry(fn, policy)`` retries only ``RetryableError``, at most ``policy.retries`` times, sleeping
``retry_after`` when the server said so, else an exponential back-off; ``FatalError`` and
``RejectedError`` go straight through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tradebot.core.errors import FatalError, RejectedError, RetryableError

T = TypeVar("T")

AUTH_CODES = frozenset({-8, -15, -16, -17})
RATE_CODES = frozenset({-429, -353})
TRANSIENT_CODES = frozenset({-201, -202, -204, -205, -96})
PERMISSION_CODES = frozenset({-373})
OK_CODES = frozenset({200, 201, 1101, 1102, 1103, 1605})
SDK_NETWORK_MESSAGES = frozenset({"Bad request"})  # the SDK's shared error dict when nothing came back
DEFAULT_RETRY_AFTER_S = 1.0

LOGIN_HINT = "log in again with: tradebot fyers login (Fyers tokens expire every day)"


class ReauthRequired(FatalError):
    """The access token is expired or invalid: a person must log in again. Never retried."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class FyersRejected(RejectedError):
    """Fyers refused the request (an order rejection, an invalid symbol, ...)."""

    def __init__(self, message: str, code: int | None = None, fyers_message: str = ""):
        super().__init__(message)
        self.code = code
        self.fyers_message = fyers_message


class FyersRetryable(RetryableError):
    """A temporary failure (network, timeout, 5xx, rate limit); ``code``/``http_status`` for the record;
    ``maybe_sent``: the request may have reached Fyers (see the module docstring)."""

    def __init__(self, message: str, retry_after: float | None = None, code: int | None = None,
                 http_status: int | None = None, maybe_sent: bool = True):
        super().__init__(message, retry_after=retry_after)
        self.code = code
        self.http_status = http_status
        self.maybe_sent = maybe_sent


@dataclass(frozen=True)
class HttpInfo:
    """What the transport saw for the last request: the HTTP status and headers, or the exception."""

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # "timeout" | "connect" (never opened) | "connection" | other exception class name
    elapsed_s: float = 0.0


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def retry_after_from(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds) or ``X-Retry-After-Ms`` (milliseconds)."""
    low = {str(k).lower(): v for k, v in (headers or {}).items()}
    ms = low.get("x-retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    sec = low.get("retry-after")
    if sec is not None:
        try:
            return max(0.0, float(sec))
        except ValueError:
            return None
    return None


def is_ok(resp: Mapping[str, Any]) -> bool:
    """Success: ``s`` ok (or ``no_data``: an empty history answer), or a success code without ``s``."""
    return resp.get("s") in ("ok", "no_data") or (resp.get("s") is None and _as_int(resp.get("code")) in OK_CODES)


def check(resp: Any, call: str, http: HttpInfo | None = None, *, order_call: bool = False) -> dict[str, Any]:
    """Copy ``resp`` (the SDK may hand back its shared error dict) and return it, or raise our error.

    ``call``: the SDK method name (goes in the message); ``order_call``: a transactional call, where
    an unexplained error is an order rejection.
    """
    http = http or HttpInfo()
    if not isinstance(resp, Mapping):
        if http.error == "timeout":
            raise FyersRetryable(f"fyers {call}: timed out", code=None)
        raise FyersRetryable(f"fyers {call}: unexpected answer {type(resp).__name__}", code=None,
                             http_status=http.status)
    data = dict(resp)  # a copy: never keep the SDK's shared mutable error dict
    status = http.status
    code = _as_int(data.get("code"))
    message = str(data.get("message") or "")
    if http.error == "timeout":
        raise FyersRetryable(f"fyers {call}: no answer within the timeout (code {code})", code=code)
    if http.error == "connect":
        raise FyersRetryable(f"fyers {call}: could not connect (nothing was sent)", code=code, maybe_sent=False)
    if http.error is not None and status is None:
        raise FyersRetryable(f"fyers {call}: network error ({http.error})", code=code)
    if is_ok(data) and (status is None or status < 400):
        return data
    where = f"fyers {call}: {message or 'error'} (code {code}" + (f", HTTP {status})" if status else ")")
    if status == 401 or code in AUTH_CODES:
        raise ReauthRequired(f"{where}; the access token is expired or invalid: {LOGIN_HINT}", code=code)
    if status == 429 or code in RATE_CODES or code == 429:
        after = retry_after_from(http.headers)
        raise FyersRetryable(f"{where}; rate limited", retry_after=after if after is not None else DEFAULT_RETRY_AFTER_S,
                             code=code, http_status=status, maybe_sent=False)
    if (status is not None and status >= 500) or (code is not None and 500 <= code <= 599):
        raise FyersRetryable(f"{where}; server error", code=code, http_status=status or code)
    if code in TRANSIENT_CODES:
        raise FyersRetryable(f"{where}; temporary error", code=code, http_status=status)
    if code == -99 and status is None and message in SDK_NETWORK_MESSAGES:
        raise FyersRetryable(f"{where}; no response (network error)", code=code)
    if status == 403 or code in PERMISSION_CODES or code == 403:
        raise FatalError(f"{where}; the app lacks a permission: enable it for the app on myapi.fyers.in")
    if code == -352 and not order_call:
        raise FatalError(f"{where}; check FYERS_APP_ID (the app id, e.g. XXXXXXXXXX-100)")
    raise FyersRejected(where, code=code, fyers_message=message)


# ----------------------------------------------------------------------------------- retries

@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of ``RetryableError``: ``retries`` more attempts, back-off ``backoff_s`` doubling up
    to ``max_sleep_s``; a server's ``retry_after`` is honoured (capped at ``max_retry_after_s``)."""

    retries: int = 3
    backoff_s: float = 0.5
    max_sleep_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, err: RetryableError) -> float:
        if err.retry_after is not None:
            return min(float(err.retry_after), self.max_retry_after_s)
        return min(self.backoff_s * (2 ** attempt), self.max_sleep_s)


NO_RETRY = RetryPolicy(retries=0)


def retry(fn: Callable[[], T], policy: RetryPolicy = RetryPolicy(), *, sleep: Callable[[float], None] = time.sleep,
          before_retry: Callable[[int, RetryableError], Any] | None = None) -> T:
    """Call ``fn``; on ``RetryableError`` sleep and call again, at most ``policy.retries`` more times.

    ``before_retry(attempt, err)`` runs before each retry (after the sleep); if it returns something
    other than None, that is returned instead of retrying (the order look-up: a submit that may have
    gone out is found, not sent again). ``FatalError``/``RejectedError`` are never retried.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except RetryableError as err:
            if attempt >= policy.retries:
                raise
            sleep(policy.delay(attempt, err))
            attempt += 1
            if before_retry is not None:
                found = before_retry(attempt, err)
                if found is not None:
                    return found


def retrying(policy: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep):
    """The decorator form of ``retry``."""

    def wrap(fn):
        def inner(*args, **kwargs):
            return retry(lambda: fn(*args, **kwargs), policy, sleep=sleep)

        inner.__name__ = getattr(fn, "__name__", "retrying")
        inner.__doc__ = fn.__doc__
        return inner

    return wrap
