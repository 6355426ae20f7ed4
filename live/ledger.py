"""What a broker account's risk limits need beyond one journal: the drawdown peak and the session's
starting equity.

A journal keeps the risk engine's state, but a new journal (a new run name, a lost file) on the same
account would start with a fresh daily loss budget and a fresh peak, as if the losses of the day and
the drawdown so far had not happened. The ledger is one small JSON file per machine, keyed by the
execution client's ``account_id``; the loop reads it when it starts a journal and writes it after
each bar:

```python
ledger = AccountLedger(Path("~/.local/state/tradebot/ledger.json").expanduser())
known = ledger.read("fyers:XS00001")   # {"day": 19000, "day_start_equity": 1e6, "peak_equity": 1.02e6} or None
ledger.write("fyers:XS00001", day=19000, day_start_equity=1e6, peak_equity=1.02e6)
```

Writes are atomic and serialised with a lock file, so several runs on one machine can share it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any

from tradebot.core.files import atomic_writer


class AccountLedger:
    """See the module docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._last: dict[str, tuple[int | None, float, float]] = {}

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def read(self, account_id: str | None) -> dict[str, Any] | None:
        """The account's last known ``day`` (IST day number), ``day_start_equity`` and ``peak_equity``."""
        if not account_id:
            return None
        entry = self._load().get(account_id)
        if not isinstance(entry, dict):
            return None
        try:
            return {"day": None if entry.get("day") is None else int(entry["day"]),
                    "day_start_equity": float(entry.get("day_start_equity", math.nan)),
                    "peak_equity": float(entry.get("peak_equity", math.nan))}
        except (TypeError, ValueError):
            return None

    def write(self, account_id: str | None, *, day: int | None, day_start_equity: float, peak_equity: float) -> None:
        """Record the account's figures (nothing is written when they did not change)."""
        if not account_id:
            return
        values = (day, float(day_start_equity), float(peak_equity))
        if self._last.get(account_id) == values:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._load()
            data[account_id] = {"day": day, "day_start_equity": values[1] if math.isfinite(values[1]) else None,
                                "peak_equity": values[2] if math.isfinite(values[2]) else None}
            with atomic_writer(self.path, mode=0o600, text=True) as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
        finally:
            os.close(fd)
        self._last[account_id] = values


__all__ = ["AccountLedger"]
