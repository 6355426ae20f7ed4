"""What the service remembers across restarts: each day's phase, its process lives (uptime) and its events.

One SQLite file (``STATE_DIR/service.db``, WAL). A phase change is one transaction, so a crash leaves the
day either in its old phase or in its new one, and a restarted service carries on from there:

```python
state = ServiceState(Path("state/service.db"))
life = state.process_started(now_ns)              # a row per process: started, last seen, how it ended
state.enter(day, Phase.TRADING, now_ns)           # persisted before the phase's work begins
state.seen(life, now_ns)                          # the heartbeat (every few seconds)
state.process_ended(life, now_ns, clean=True)     # SIGTERM / the end; a crash leaves it open
uptime = uptime_report(state, until_ns=now_ns)    # per day and per month, restarts
```

Uptime counts market hours only (09:15-15:30 IST of NSE trading days from the first start on): a process
is *up* from its start to its last heartbeat; what no process covered is *down* (listed per day as IST
``[from, to]`` intervals). A restart is a process
start after one that did not end cleanly.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from tradebot.core.nse_calendar import trading_days
from tradebot.core.nse_time import DAY_NS, IST_OFFSET_NS

SESSION_OPEN_MIN, SESSION_CLOSE_MIN = 9 * 60 + 15, 15 * 60 + 30
_MIN_NS = 60 * 1_000_000_000


class Phase(str, Enum):
    """A trading day's phases, in order. ``DONE``: the report is written; ``SKIPPED``: no session could run."""

    PRE_OPEN = "pre_open"
    WARM_UP = "warm_up"
    TRADING = "trading"
    SQUARE_OFF = "square_off"
    REPORT = "report"
    DONE = "done"
    SKIPPED = "skipped"


ACTIVE_PHASES = (Phase.PRE_OPEN, Phase.WARM_UP, Phase.TRADING, Phase.SQUARE_OFF, Phase.REPORT)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS days (day TEXT PRIMARY KEY, phase TEXT NOT NULL, entered_ns INTEGER NOT NULL,
                                 attempts INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS phases (id INTEGER PRIMARY KEY, day TEXT, phase TEXT, ts_ns INTEGER, pid INTEGER);
CREATE TABLE IF NOT EXISTS lives (id INTEGER PRIMARY KEY, pid INTEGER, started_ns INTEGER NOT NULL,
                                  seen_ns INTEGER NOT NULL, ended TEXT);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts_ns INTEGER, kind TEXT, day TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def ist_date(ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=(int(ns) + IST_OFFSET_NS) // DAY_NS)


def ist_ns(day: dt.date, minute: int) -> int:
    """Epoch ns of ``minute`` (after midnight, IST) on ``day``."""
    return (day - dt.date(1970, 1, 1)).days * DAY_NS - IST_OFFSET_NS + minute * _MIN_NS


class ServiceState:
    """See the module docstring. Thread-safe (the heartbeat runs in its own thread)."""

    def __init__(self, path: str | Path, *, read_only: bool = False):
        self.path = Path(path)
        if read_only:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ days and phases
    def day(self, day: dt.date) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT phase, entered_ns, attempts, detail FROM days WHERE day=?",
                                  (day.isoformat(),)).fetchone()
        if row is None:
            return None
        return {"day": day, "phase": Phase(row[0]), "entered_ns": row[1], "attempts": row[2],
                "detail": json.loads(row[3])}

    def enter(self, day: dt.date, phase: Phase, now_ns: int, pid: int = 0, **detail: Any) -> None:
        """Record that ``day`` is now in ``phase`` (with ``detail`` merged into the day's), in one transaction."""
        key = day.isoformat()
        with self._tx() as db:
            row = db.execute("SELECT phase, detail, attempts FROM days WHERE day=?", (key,)).fetchone()
            merged = {**(json.loads(row[1]) if row else {}), **detail}
            attempts = (row[2] if row else 0) + (1 if row is None or row[0] != phase.value else 0)
            db.execute("INSERT INTO days(day, phase, entered_ns, attempts, detail) VALUES (?,?,?,?,?) "
                       "ON CONFLICT(day) DO UPDATE SET phase=excluded.phase, entered_ns=excluded.entered_ns, "
                       "attempts=excluded.attempts, detail=excluded.detail",
                       (key, phase.value, int(now_ns), attempts, json.dumps(merged, sort_keys=True)))
            db.execute("INSERT INTO phases(day, phase, ts_ns, pid) VALUES (?,?,?,?)", (key, phase.value, int(now_ns), pid))

    def note(self, day: dt.date, **detail: Any) -> None:
        """Merge ``detail`` into the day's record (its phase unchanged)."""
        with self._tx() as db:
            row = db.execute("SELECT detail FROM days WHERE day=?", (day.isoformat(),)).fetchone()
            if row is None:
                raise KeyError(f"{day}: no such day in the service state")
            merged = {**json.loads(row[0]), **detail}
            db.execute("UPDATE days SET detail=? WHERE day=?", (json.dumps(merged, sort_keys=True), day.isoformat()))

    def days(self) -> list[dict[str, Any]]:
        with self._lock:
            keys = [r[0] for r in self.db.execute("SELECT day FROM days ORDER BY day")]
        return [d for k in keys if (d := self.day(dt.date.fromisoformat(k))) is not None]

    def phase_history(self, day: dt.date | None = None) -> list[tuple[str, str, int, int]]:
        sql, args = "SELECT day, phase, ts_ns, pid FROM phases", ()
        if day is not None:
            sql, args = sql + " WHERE day=?", (day.isoformat(),)
        with self._lock:
            return [tuple(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def last_phase(self) -> tuple[str, str, int, int] | None:
        """The latest phase entered: (day, phase, ts_ns, pid), or None before the first."""
        with self._lock:
            try:
                row = self.db.execute("SELECT day, phase, ts_ns, pid FROM phases ORDER BY id DESC LIMIT 1").fetchone()
            except sqlite3.OperationalError:  # a reader opened the file before the service created its tables
                return None
        return None if row is None else tuple(row)

    # ------------------------------------------------------------------ process lives
    def process_started(self, now_ns: int, pid: int = 0) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO lives(pid, started_ns, seen_ns) VALUES (?,?,?)", (pid, int(now_ns), int(now_ns)))
            return int(cur.lastrowid)

    def seen(self, life: int, now_ns: int) -> None:
        with self._lock:
            self.db.execute("UPDATE lives SET seen_ns=MAX(seen_ns, ?) WHERE id=?", (int(now_ns), life))

    def process_ended(self, life: int, now_ns: int, how: str = "clean") -> None:
        with self._tx() as db:
            db.execute("UPDATE lives SET seen_ns=MAX(seen_ns, ?), ended=? WHERE id=?", (int(now_ns), how, life))

    def lives(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute("SELECT id, pid, started_ns, seen_ns, ended FROM lives ORDER BY id").fetchall()
        return [{"id": r[0], "pid": r[1], "started_ns": r[2], "seen_ns": r[3], "ended": r[4]} for r in rows]

    def restarts(self) -> int:
        """Process starts that followed a process that did not end cleanly (a crash, a kill)."""
        lives = self.lives()
        return sum(1 for prev in lives[:-1] if prev["ended"] != "clean") if lives else 0

    # ------------------------------------------------------------------ events and settings
    def event(self, kind: str, now_ns: int, day: dt.date | None = None, **detail: Any) -> None:
        with self._lock:
            self.db.execute("INSERT INTO events(ts_ns, kind, day, detail) VALUES (?,?,?,?)",
                            (int(now_ns), kind, day.isoformat() if day else None, json.dumps(detail, sort_keys=True)))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT ts_ns, kind, day, detail FROM events", ()
        if kind is not None:
            sql, args = sql + " WHERE kind=?", (kind,)
        with self._lock:
            rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
        return [{"ts_ns": r[0], "kind": r[1], "day": r[2], **json.loads(r[3])} for r in rows]

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self.db.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                            (key, value))


def _gaps(intervals: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) that no interval covers (the down intervals)."""
    gaps, reach = [], lo
    for a, b in sorted(intervals):
        if a > reach and reach < hi:
            gaps.append((reach, min(a, hi)))
        reach = max(reach, b)
    if reach < hi:
        gaps.append((reach, hi))
    return gaps


def _ist_text(ns: int) -> str:
    return dt.datetime.fromtimestamp((ns + IST_OFFSET_NS) / 1e9, dt.timezone.utc).strftime("%H:%M:%S")


def uptime_report(state: ServiceState, until_ns: int) -> dict[str, Any]:
    """Uptime during market hours per trading day and per month, from the first process start to
    ``until_ns``; plus the process starts and restarts."""
    lives = state.lives()
    if not lives:
        return {"days": [], "months": [], "restarts": 0, "starts": 0}
    up = [(lv["started_ns"], lv["seen_ns"]) for lv in lives]
    first = min(a for a, _ in up)
    days = []
    for day in trading_days(ist_date(first), ist_date(until_ns)):
        lo, hi = ist_ns(day, SESSION_OPEN_MIN), ist_ns(day, SESSION_CLOSE_MIN)
        lo, hi = max(lo, first), min(hi, until_ns)
        if hi <= lo:
            continue
        down = _gaps(up, lo, hi)
        covered = hi - lo - sum(b - a for a, b in down)
        starts = [lv for lv in lives if lo <= lv["started_ns"] < hi]
        days.append({"day": day.isoformat(), "market_s": round((hi - lo) / 1e9, 3), "up_s": round(covered / 1e9, 3),
                     "down_s": round((hi - lo - covered) / 1e9, 3), "uptime": covered / (hi - lo),
                     "down": [[_ist_text(a), _ist_text(b)] for a, b in down],
                     "starts_in_market_hours": len(starts)})
    months: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for d in days:
        m = months[d["day"][:7]]
        m[0] += d["market_s"]
        m[1] += d["up_s"]
    return {"days": days,
            "months": [{"month": k, "market_s": round(v[0], 3), "up_s": round(v[1], 3),
                        "uptime": v[1] / v[0] if v[0] else 1.0} for k, v in sorted(months.items())],
            "restarts": state.restarts(), "starts": len(lives)}


__all__ = ["ACTIVE_PHASES", "Phase", "ServiceState", "ist_date", "ist_ns", "uptime_report"]
