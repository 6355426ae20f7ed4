"""Typed errors. Each class says what the caller must do.

* ``UserInputError``: the user's file, flag or config is wrong. The CLI prints its one-line
  message (which names the file, row or key and the fix) and exits with code 2.
* ``RetryableError``: a temporary failure (network, 5xx, rate limit); back off and retry, bounded.
* ``RejectedError``: the broker or risk engine refused an order; drop it, record and report.
* ``FatalError``: the process cannot go on safely (e.g. re-authentication needed); halt and alert.
"""

from __future__ import annotations


class TradebotError(Exception):
    """Base of every error this project raises on purpose."""


class UserInputError(TradebotError):
    """Bad user input: one clear line naming the file/row/key and the fix. CLI exit code 2."""

    exit_code = 2


class RetryableError(TradebotError):
    """Temporary failure; the operation may be retried after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(TradebotError):
    """An order or request was refused; record it, do not retry it blindly."""


class FatalError(TradebotError):
    """The process must stop trading (halt and alert)."""
