"""The journal: one SQLite file (WAL mode) holding everything a live or paper run did and decided.

Tables: ``bars`` (every bar the loop received, and whether it finished processing it), ``decisions``
(one per symbol and bar: time, model version, features hash, the policy's action, the risk verdict and
its reasons; for a mixture of experts also its ``gate``, JSON ``{"expert", "weights": {name: w}}``),
``orders`` (keyed by the deterministic client order id: a UNIQUE key, so an order decided twice is
stored once), ``fills`` (keyed by fill id), ``positions`` (the broker's positions after the
last reconciliation or bar), ``equity`` (one row per bar), ``risk_events`` (every veto, resize,
override, state change and reconciliation finding, de-duplicated by key), ``control`` (manual
``halt`` / ``reduce`` / ``resume`` requests, written by ``tradebot live halt`` from another process)
and ``state`` (the risk engine's state and feature-stream checkpoints).

Write-ahead for orders: the order row is written (``PENDING_SUBMIT``) in the same transaction as its
decision, before the broker sees it; the submit attempt is counted before the call, the broker's
answer after it. After a crash, an order still ``PENDING_SUBMIT`` is looked up at the broker by its
id before anything is sent again, so a retry never duplicates an order.

Several processes may use one journal (the loop writes; ``tradebot live halt`` and ``status`` read and
write control rows): WAL mode and a busy timeout make that safe, and the loop never holds the write
lock across a call to the policy or the broker, so a ``halt`` always gets through. Only one loop may
run on a journal: ``lock_run`` takes an exclusive lock (``JOURNAL.lock``, released when the process
ends, a crash included) and refuses a second one. Commits are ``synchronous=FULL``: an order row
written ahead is on disk before the order is sent.

One journal belongs to one run: the ``run`` name is stored in ``meta`` (journals written before the
rename store it under ``session``; both are read), and client order ids derive from it. Every SQL
statement on a journal is in this module.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from tradebot.live.ports import (
    NO_OP_VETO_CODES,
    AccountReport,
    Bar,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    PositionReport,
    RiskDecision,
    RiskEvent,
    Side,
    decision_event_key,
    to_ist,
)
from tradebot.core.errors import UserInputError

SCHEMA_VERSION = "1"
CONTROL_COMMANDS = ("halt", "reduce", "resume")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (
    symbol TEXT NOT NULL, ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, timeframe TEXT NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
    last_of_session INTEGER NOT NULL, final INTEGER NOT NULL, received_ns INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (symbol, ts));
CREATE TABLE IF NOT EXISTS decisions (
    symbol TEXT NOT NULL, bar_ts INTEGER NOT NULL, decided_ns INTEGER NOT NULL, model_version TEXT,
    features_hash TEXT, action INTEGER NOT NULL, final_action INTEGER NOT NULL, verdict TEXT NOT NULL,
    reasons TEXT NOT NULL, risk_state TEXT NOT NULL, client_order_id TEXT, loss_budget REAL, gate TEXT,
    PRIMARY KEY (symbol, bar_ts));
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, bar_ts INTEGER NOT NULL, intent TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, reduce_only INTEGER NOT NULL, stop_loss REAL, take_profit REAL,
    status TEXT NOT NULL, filled_qty REAL NOT NULL DEFAULT 0, avg_price REAL, broker_order_id TEXT,
    reason TEXT NOT NULL DEFAULT '', created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
    submit_attempts INTEGER NOT NULL DEFAULT 0, request TEXT NOT NULL, sent_ns INTEGER, sent_state TEXT);
CREATE TABLE IF NOT EXISTS fills (
    fill_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, position_id TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, costs REAL NOT NULL, ts INTEGER NOT NULL,
    kind TEXT NOT NULL, stop_price REAL, take_profit_price REAL, realized_pnl REAL, recorded_ns INTEGER NOT NULL,
    costs_estimated INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_price REAL, stop_price REAL, take_profit_price REAL,
    opened_ts INTEGER NOT NULL, position_id TEXT NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS equity (
    ts INTEGER PRIMARY KEY, equity REAL NOT NULL, cash REAL NOT NULL, realized_pnl REAL NOT NULL,
    costs REAL NOT NULL, day_pnl REAL NOT NULL, drawdown REAL NOT NULL, risk_state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS risk_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, symbol TEXT NOT NULL, kind TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL, key TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, command TEXT NOT NULL, reason TEXT NOT NULL,
    source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS bars_done ON bars (done, end_ts);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
"""
# columns added after schema 1 was first written: (table, column, definition)
_ADDED_COLUMNS = (("orders", "sent_ns", "INTEGER"), ("orders", "sent_state", "TEXT"),
                  ("fills", "costs_estimated", "INTEGER NOT NULL DEFAULT 0"), ("decisions", "gate", "TEXT"))


def _nan(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _now_ns() -> int:
    return time.time_ns()


class Journal:
    """A run's journal; ``path=":memory:"`` for a throw-away one (tests). ``run``: the run it belongs to
    (checked against the stored name; stored when new)."""

    def __init__(self, path: str | Path = ":memory:", run: str | None = None, *, create: bool = True):
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if not create and not p.is_file():
                raise UserInputError(f"{p}: journal not found (check the path; `tradebot live --paper ...` or "
                                     "`tradebot live --live ...` creates it)")
            if p.is_dir():
                raise UserInputError(f"{p}: is a directory; give the journal's file path")
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
            if self.path != ":memory:":
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=10000")
            if self.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='orders'").fetchone()[0] == 0:
                self.db.executescript(_SCHEMA)
            self._add_columns()
        except sqlite3.DatabaseError as err:
            raise UserInputError(f"{self.path}: not a tradebot journal ({err})") from None
        self._depth = 0
        self._lock_fd: int | None = None
        version = self.get_meta("schema")
        if version is None:
            self.set_meta("schema", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise UserInputError(f"{self.path}: journal schema {version}, this tradebot writes {SCHEMA_VERSION}")
        if run is not None:
            self.bind_run(run)

    @property
    def run(self) -> str | None:
        """The name of the run this journal belongs to (None: not bound yet)."""
        return self.get_meta("run") or self.get_meta("session")

    def bind_run(self, run: str) -> None:
        """Store ``run`` as this journal's run, or refuse a journal of another run."""
        stored = self.run
        if stored is None:
            self.set_meta("run", run)
        elif stored != run:
            raise UserInputError(f"{self.path}: journal of run {stored!r}, not {run!r}; use one journal file per "
                                 "run (client order ids derive from the run name)")

    def check_setup(self, **setup: str) -> None:
        """Store the run's set-up (``timeframe=``, ``symbols=``), or refuse one that differs from the stored."""
        for key, value in setup.items():
            stored = self.get_meta(key)
            if stored is None:
                self.set_meta(key, value)
            elif stored != value:
                raise UserInputError(f"{self.path}: journal was written for {key} {stored}, not {value}; "
                                     "use a new journal for another set-up")

    def _add_columns(self) -> None:
        for table, column, definition in _ADDED_COLUMNS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def lock_run(self) -> None:
        """Take the journal for one running loop (an exclusive lock on ``JOURNAL.lock``, held until
        ``close`` or the process ends); a second loop on the same journal is refused (``UserInputError``)."""
        if self.path == ":memory:" or self._lock_fd is not None:
            return
        lock = f"{self.path}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserInputError(f"{self.path}: a loop is already running on this journal ({holder}); stop it "
                                 "first (Ctrl-C, or `tradebot live halt` to stop trading) or use another --journal") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the run lock
            self._lock_fd = None

    # -------------------------------------------------------------------- plumbing
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write (nested uses join the outer transaction)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def save_state(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, json.dumps(value), _now_ns()))

    def load_state(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # ------------------------------------------------------------------------- bars
    def record_bar(self, bar: Bar, received_ns: int) -> bool:
        """Store a received bar (not done yet); False when it was stored before."""
        cur = self.db.execute("INSERT OR IGNORE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                              (bar.symbol, bar.ts, bar.end, bar.timeframe, bar.open, bar.high, bar.low, bar.close,
                               bar.volume, int(bar.last_of_session), int(bar.final), received_ns))
        return bool(cur.rowcount)

    def mark_bar_done(self, symbol: str, ts: int) -> None:
        self.db.execute("UPDATE bars SET done=1 WHERE symbol=? AND ts=?", (symbol, ts))

    @staticmethod
    def _bar(row: Sequence[Any]) -> Bar:
        sym, ts, end, tf, o, h, lo, c, v, last, final = row
        return Bar(symbol=sym, ts=int(ts), end=int(end), open=o, high=h, low=lo, close=c, volume=v, timeframe=tf,
                   last_of_session=bool(last), final=bool(final))

    _BAR_COLS = "symbol, ts, end_ts, timeframe, open, high, low, close, volume, last_of_session, final"

    def bars(self, symbol: str, *, done: bool | None = None, after_ts: int | None = None) -> list[Bar]:
        sql = f"SELECT {self._BAR_COLS} FROM bars WHERE symbol=?"
        args: list[Any] = [symbol]
        if done is not None:
            sql += " AND done=?"
            args.append(int(done))
        if after_ts is not None:
            sql += " AND ts>?"
            args.append(after_ts)
        return [self._bar(r) for r in self.db.execute(sql + " ORDER BY ts", args)]

    def undone_bars(self) -> list[Bar]:
        return [self._bar(r) for r in self.db.execute(
            f"SELECT {self._BAR_COLS} FROM bars WHERE done=0 ORDER BY end_ts, symbol")]

    def last_bar_ts(self, symbol: str, *, done_only: bool = False) -> int | None:
        sql = "SELECT MAX(ts) FROM bars WHERE symbol=?" + (" AND done=1" if done_only else "")
        row = self.db.execute(sql, (symbol,)).fetchone()
        return None if row[0] is None else int(row[0])

    def bar_times(self, symbol: str) -> list[int]:
        return [int(t) for (t,) in self.db.execute("SELECT ts FROM bars WHERE symbol=? ORDER BY ts", (symbol,))]

    # ---------------------------------------------------------- decisions & orders
    def decision(self, symbol: str, bar_ts: int) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM decisions WHERE symbol=? AND bar_ts=?", (symbol, bar_ts))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def record_decision(self, d: RiskDecision, *, decided_ns: int, model_version: str | None,
                        features_hash: str | None, gate: Mapping[str, Any] | None = None) -> bool:
        """Store a decision (and write-ahead its order); False when this bar was decided before. ``gate``: a
        mixture of experts' gate of this decision (``GateDecision.as_dict()``: the chosen expert, the weights)."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO decisions (symbol, bar_ts, decided_ns, model_version, features_hash, action, "
                "final_action, verdict, reasons, risk_state, client_order_id, loss_budget, gate) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (d.symbol, d.bar_ts, decided_ns, model_version, features_hash, d.proposed, d.final, d.verdict.value,
                 json.dumps(list(d.reasons)), d.state.value, d.order.client_order_id if d.order else None,
                 _nan(d.loss_budget), json.dumps(dict(gate)) if gate is not None else None))
            if cur.rowcount and d.order is not None:
                self.insert_order(d.order)
            return bool(cur.rowcount)

    def gates(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """The decisions that carry a gate (a mixture of experts'), in bar order: ``symbol``, ``bar_ts``,
        ``action`` (the policy's), ``expert`` (chosen) and ``weights`` (per expert)."""
        only = " AND symbol=?" if symbol else ""
        rows = self.db.execute(f"SELECT symbol, bar_ts, action, gate FROM decisions WHERE gate IS NOT NULL{only} "
                               "ORDER BY bar_ts, symbol", (symbol,) if symbol else ()).fetchall()
        return [{"symbol": s, "bar_ts": int(ts), "action": int(a), **json.loads(g)} for s, ts, a, g in rows]

    def insert_order(self, o: OrderRequest) -> bool:
        """Write-ahead an order as ``PENDING_SUBMIT``; False when the id exists (never twice)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO orders (client_order_id, symbol, bar_ts, intent, side, qty, reduce_only, stop_loss, "
            "take_profit, status, created_ns, updated_ns, request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (o.client_order_id, o.symbol, o.bar_ts, o.intent.value, o.side.value, o.qty, int(o.reduce_only),
             o.stop_loss, o.take_profit, OrderStatus.PENDING_SUBMIT.value, o.created_ns, o.created_ns,
             json.dumps(o.to_dict())))
        return bool(cur.rowcount)

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def order_requests(self) -> list[OrderRequest]:
        """Every order request of the run, oldest first."""
        return [OrderRequest.from_dict(json.loads(r)) for (r,) in
                self.db.execute("SELECT request FROM orders ORDER BY created_ns, client_order_id")]

    def order_request(self, client_order_id: str) -> OrderRequest | None:
        row = self.db.execute("SELECT request FROM orders WHERE client_order_id=?", (client_order_id,)).fetchone()
        return OrderRequest.from_dict(json.loads(row[0])) if row else None

    def orders(self, statuses: Iterable[OrderStatus] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM orders"
        args: list[Any] = []
        if statuses is not None:
            st = [s.value for s in statuses]
            sql += f" WHERE status IN ({','.join('?' * len(st))})"
            args = st
        cur = self.db.execute(sql + " ORDER BY created_ns, client_order_id", args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def note_submit(self, client_order_id: str, now: int | None = None, state: str | None = None) -> None:
        """Count a submit attempt, before the call (a crash after it leaves the trace), with the time and the
        risk state it was sent in."""
        self.db.execute("UPDATE orders SET submit_attempts = submit_attempts + 1, sent_ns=COALESCE(?, sent_ns), "
                        "sent_state=COALESCE(?, sent_state) WHERE client_order_id=?", (now, state, client_order_id))

    def orders_of(self, symbol: str, bar_ts: int, intent: str) -> list[dict[str, Any]]:
        """The orders of ``intent`` decided for ``symbol`` at bar ``bar_ts`` (a flatten and its retries), oldest first."""
        cur = self.db.execute("SELECT * FROM orders WHERE symbol=? AND bar_ts=? AND intent=? ORDER BY created_ns, "
                              "rowid", (symbol, int(bar_ts), intent))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def update_order(self, u: OrderUpdate) -> bool:
        """Apply a broker status; a terminal status is never replaced by a working one. True if changed."""
        row = self.db.execute("SELECT status, filled_qty, avg_price FROM orders WHERE client_order_id=?",
                              (u.client_order_id,)).fetchone()
        if row is None:
            return False
        current = OrderStatus(row[0])
        if current.terminal and (not u.status.terminal or u.status == current):
            return False
        if current == u.status and row[1] == u.filled_qty:
            return False
        self.db.execute("UPDATE orders SET status=?, filled_qty=?, avg_price=?, broker_order_id=COALESCE(?, "
                        "broker_order_id), reason=?, updated_ns=? WHERE client_order_id=?",
                        (u.status.value, u.filled_qty, _nan(u.avg_price), u.broker_order_id, u.reason, u.ts,
                         u.client_order_id))
        return True

    def force_order_status(self, u: OrderUpdate) -> bool:
        """Take the broker's status whatever the journal has, a terminal one included (reconciliation:
        the broker is authoritative). True if it changed."""
        row = self.db.execute("SELECT status FROM orders WHERE client_order_id=?", (u.client_order_id,)).fetchone()
        if row is None or row[0] == u.status.value:
            return False
        self.db.execute("UPDATE orders SET status=?, filled_qty=?, avg_price=?, reason=?, updated_ns=?, "
                        "broker_order_id=COALESCE(?, broker_order_id) WHERE client_order_id=?",
                        (u.status.value, u.filled_qty, _nan(u.avg_price), u.reason, u.ts, u.broker_order_id,
                         u.client_order_id))
        return True

    def expire_order(self, client_order_id: str, reason: str, now: int) -> None:
        self.db.execute("UPDATE orders SET status=?, reason=?, updated_ns=? WHERE client_order_id=?",
                        (OrderStatus.EXPIRED.value, reason, now, client_order_id))

    # ---------------------------------------------------------- fills & positions
    def record_fill(self, f: Fill, recorded_ns: int) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO fills (fill_id, client_order_id, position_id, symbol, side, qty, price, costs, ts, "
            "kind, stop_price, take_profit_price, realized_pnl, recorded_ns, costs_estimated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f.fill_id, f.client_order_id, f.position_id, f.symbol, f.side.value, f.qty, f.price, f.costs, f.ts, f.kind,
             _nan(f.stop_price), _nan(f.take_profit_price), _nan(f.realized_pnl), recorded_ns, int(f.costs_estimated)))
        return bool(cur.rowcount)

    def net_fills(self) -> dict[str, float]:
        """Per symbol, the signed quantity of every journaled fill added up (buys +, sells -)."""
        return {sym: float(q) for sym, q in self.db.execute(
            "SELECT symbol, SUM(CASE side WHEN 'BUY' THEN qty ELSE -qty END) FROM fills GROUP BY symbol")}

    def fill_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT fill_id FROM fills")}

    def fills(self) -> list[Fill]:
        out = []
        for r in self.db.execute("SELECT fill_id, client_order_id, position_id, symbol, side, qty, price, costs, ts, "
                                 "kind, stop_price, take_profit_price, realized_pnl, costs_estimated FROM fills "
                                 "ORDER BY ts, rowid"):
            out.append(Fill(fill_id=r[0], client_order_id=r[1], position_id=r[2], symbol=r[3], side=Side(r[4]),
                            qty=r[5], price=r[6], costs=r[7], ts=int(r[8]), kind=r[9], stop_price=_num(r[10]),
                            take_profit_price=_num(r[11]), realized_pnl=_num(r[12]), costs_estimated=bool(r[13])))
        return out

    def set_positions(self, reports: Iterable[PositionReport], now: int) -> None:
        self.db.execute("DELETE FROM positions")
        for p in reports:
            if p.qty != 0.0:
                self.db.execute("INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                (p.symbol, p.qty, _nan(p.avg_price), _nan(p.stop_price), _nan(p.take_profit_price),
                                 p.opened_ts, p.position_id, now))

    def positions(self) -> dict[str, PositionReport]:
        return {r[0]: PositionReport(symbol=r[0], qty=r[1], avg_price=_num(r[2]), stop_price=_num(r[3]),
                                     take_profit_price=_num(r[4]), opened_ts=int(r[5]), position_id=r[6])
                for r in self.db.execute("SELECT symbol, qty, avg_price, stop_price, take_profit_price, opened_ts, "
                                         "position_id FROM positions ORDER BY symbol")}

    def record_equity(self, ts: int, account: AccountReport, day_pnl: float, drawdown: float, state: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO equity VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (ts, account.equity, account.cash, account.realized_pnl, account.costs, day_pnl, drawdown,
                         state))

    def equity(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM equity ORDER BY ts", self.db)
        df.index = pd.to_datetime(df.pop("ts"), utc=True).dt.tz_convert("Asia/Kolkata")
        return df

    # ----------------------------------------------------------------- risk events
    def record_risk_events(self, events: Iterable[RiskEvent]) -> int:
        n = 0
        for e in events:
            cur = self.db.execute("INSERT OR IGNORE INTO risk_events (ts, symbol, kind, state, reason, details, key) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  (e.ts, e.symbol, e.kind, e.state.value, e.reason, json.dumps(dict(e.details)),
                                   e.key or None))
            n += cur.rowcount
        return n

    def risk_events(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, ts, symbol, kind, state, reason, details FROM risk_events ORDER BY id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY id"
        cur = self.db.execute(sql)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def notable_risk_events(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` risk events, without the vetoes of actions that would have done nothing
        anyway (closing a position that is not there, entering on top of one)."""
        rows = self.db.execute("SELECT id, ts, symbol, kind, state, reason, details FROM risk_events "
                               "WHERE NOT (kind = 'veto' AND json_extract(details, '$.code') IN (?, ?)) "
                               "ORDER BY id DESC LIMIT ?", (*NO_OP_VETO_CODES, int(limit))).fetchall()
        cols = ("id", "ts", "symbol", "kind", "state", "reason", "details")
        return [dict(zip(cols, r)) for r in reversed(rows)]

    def intervening_decisions(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Decisions with a ``veto``, ``resize`` or ``override`` verdict (of ``symbol``), in bar order, each
        with ``code``: the reason code its risk event recorded (None when there is none)."""
        kinds = ("veto", "resize", "override")
        only = " AND symbol=?" if symbol else ""
        args: tuple[Any, ...] = (*kinds, symbol) if symbol else kinds
        rows = self.db.execute("SELECT symbol, bar_ts, action, final_action, verdict, reasons FROM decisions "
                               f"WHERE verdict IN (?, ?, ?){only} ORDER BY bar_ts", args).fetchall()
        codes = dict(self.db.execute("SELECT key, json_extract(details, '$.code') FROM risk_events "
                                     f"WHERE kind IN (?, ?, ?){only}", args).fetchall())
        return [{"symbol": s, "bar_ts": int(ts), "action": int(a), "final_action": int(f), "verdict": v,
                 "reasons": r, "code": codes.get(decision_event_key(v, s, ts))} for s, ts, a, f, v, r in rows]

    # ---------------------------------------------------------------------- control
    def request(self, command: str, reason: str = "", source: str = "cli", now: int | None = None) -> int:
        """Queue a manual command for the running (or next) loop; returns its id."""
        if command not in CONTROL_COMMANDS:
            raise UserInputError(f"unknown command {command!r}; use one of {', '.join(CONTROL_COMMANDS)}")
        cur = self.db.execute("INSERT INTO control (ts, command, reason, source) VALUES (?, ?, ?, ?)",
                              (now if now is not None else _now_ns(), command, reason, source))
        return int(cur.lastrowid)

    def controls_after(self, after_id: int) -> list[tuple[int, str, str]]:
        return [(int(i), c, r) for i, c, r in
                self.db.execute("SELECT id, command, reason FROM control WHERE id>? ORDER BY id", (after_id,))]

    # ---------------------------------------------------------------------- reading
    def trades(self) -> pd.DataFrame:
        """Closed trades, one row per exit fill, in exit order. A position entered in several fills (partial
        fills) counts as one entry: their quantities added, the volume-weighted price, the costs added; an
        exit fill that closes part of it gets that part of the entry's quantity and costs."""
        fills = self.fills()
        entries: dict[str, list[Fill]] = {}
        for f in fills:
            if f.kind == "entry":
                entries.setdefault(f.position_id, []).append(f)
        rows = []
        for f in fills:
            if f.kind == "entry" or f.position_id not in entries:
                continue
            parts = entries[f.position_id]
            e = parts[0]
            qty = sum(p.qty for p in parts)
            price = e.price if len(parts) == 1 else sum(p.qty * p.price for p in parts) / qty
            share = min(1.0, f.qty / qty) if qty and f.qty < qty else 1.0
            rows.append({"symbol": f.symbol, "entry_time": to_ist(e.ts), "exit_time": to_ist(f.ts),
                         "side": "long" if e.side is Side.BUY else "short", "qty": f.qty, "entry_price": price,
                         "exit_price": f.price, "stop_price": e.stop_price, "take_profit_price": e.take_profit_price,
                         "entry_costs": sum(p.costs for p in parts) * share, "exit_costs": f.costs,
                         "pnl": f.realized_pnl, "exit_reason": f.kind, "position_id": f.position_id})
        cols = ["symbol", "entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "stop_price",
                "take_profit_price", "entry_costs", "exit_costs", "pnl", "exit_reason", "position_id"]
        return pd.DataFrame(rows, columns=cols)

    def status(self) -> dict[str, Any]:
        """What ``tradebot live status`` shows: risk state, positions, equity, orders, recent events."""
        risk = self.load_state("risk") or {}
        conditions = risk.get("conditions", {})
        state = max((s for s, _ in conditions.values()), key=lambda s: {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}[s],
                    default="ACTIVE")
        last_eq = self.db.execute("SELECT ts, equity, day_pnl, drawdown FROM equity ORDER BY ts DESC LIMIT 1").fetchone()
        counts = dict(self.db.execute("SELECT status, COUNT(*) FROM orders GROUP BY status").fetchall())
        last_bar = self.db.execute("SELECT symbol, ts FROM bars WHERE done=1 ORDER BY end_ts DESC LIMIT 1").fetchone()
        applied = int(self.get_meta("control_applied") or 0)
        pending = self.controls_after(applied)
        return {
            "journal": self.path,
            "run": self.run,
            "risk_state": state,
            "conditions": {k: {"state": s, "reason": r} for k, (s, r) in conditions.items()},
            "pending_commands": [{"id": i, "command": c, "reason": r} for i, c, r in pending],
            "last_bar": None if last_bar is None else {"symbol": last_bar[0], "time": to_ist(last_bar[1]).isoformat()},
            "equity": None if last_eq is None else {"time": to_ist(last_eq[0]).isoformat(), "equity": last_eq[1],
                                                    "day_pnl": last_eq[2], "drawdown": last_eq[3]},
            "positions": [{"symbol": p.symbol, "qty": p.qty, "avg_price": p.avg_price, "stop": p.stop_price,
                           "take_profit": p.take_profit_price} for p in self.positions().values()],
            "orders": counts,
            "fills": self.db.execute("SELECT COUNT(*) FROM fills").fetchone()[0],
            "decisions": self.db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0],
            "risk_events": [{"time": to_ist(e["ts"]).isoformat(), "symbol": e["symbol"], "kind": e["kind"],
                             "state": e["state"], "reason": e["reason"]} for e in self.notable_risk_events(10)],
            "control_applied": applied,
            "drift": (self.load_state("drift") or {}).get("snapshot", {}),  # per symbol, each monitor's state
        }


def request_control(path: str | Path, command: str, reason: str = "", source: str = "cli",
                    patience_s: float = 60.0) -> int:
    """Write a ``halt`` / ``reduce`` / ``resume`` request into an existing journal (what
    ``tradebot live halt`` runs); the loop applies it at its next bar or heartbeat. A journal that stays
    locked by a writer for ``patience_s`` is reported in one line, never as a raw SQLite error."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            j = Journal(path, create=False)
            try:
                return j.request(command, reason, source)
            finally:
                j.close()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise UserInputError(f"{path}: cannot write the {command} request ({err})") from None
            if time.monotonic() >= deadline:
                raise UserInputError(f"{path}: the journal stayed locked for {patience_s:.0f} s; the {command} "
                                     "was not written: try again (is a process stuck writing it?)") from None
            time.sleep(0.2)


def journal_status(path: str | Path) -> dict[str, Any]:
    j = Journal(path, create=False)
    try:
        return j.status()
    finally:
        j.close()
