"""The chaos soak's invariants, checked against the simulator's own books (``tradebot.live.chaos``).

``check_invariants(journal, sim_state, out, tokens, risk, run)`` returns, per invariant, ``{"ok", "checked",
"detail"}``:

* ``one_broker_order_per_id``: no client order id (order tag) is at the broker more than once;
* ``journal_equals_broker``: after settling, every order the broker has is in the journal with the
  broker's status, every order the journal sent is at the broker (or was proven never sent), the fills
  are the broker's trades (id, side, quantity, price), the positions are the broker's, and the cash the
  fills moved agrees with the broker's trades within 1 rupee;
* ``position_within_cap_at_every_fill``: replaying the broker's trades, no position ever exceeds
  ``max_position``;
* ``no_entry_unless_active_and_fresh``: every entry sent went out in the ACTIVE state on a bar at most
  ``stale_entry_s`` old, and every order at the broker is one the journal wrote before sending it;
* ``token_never_in_output``: no access token issued during the run appears in any file the run wrote
  (the loops' output, the SDK's logs, the journal), the token file excepted.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

NOT_SENT = ("PENDING_SUBMIT", "EXPIRED")  # (an UNKNOWN order left after settling is a breach)


def _result(problems: list[str], checked: int) -> dict[str, Any]:
    return {"ok": not problems, "checked": checked, "detail": "; ".join(problems[:5])
            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")}


def _rows(db: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    cur = db.execute(sql)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def check_invariants(journal: Path, state: Mapping[str, Any], out: Path, tokens: Sequence[str],
                     risk: Mapping[str, Any], run: str) -> dict[str, dict[str, Any]]:
    from tradebot.live.adapters.fyers.client import fyers_status, tag_of

    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        orders = {o["client_order_id"]: o for o in _rows(db, "SELECT * FROM orders")}
        fills = {f["fill_id"]: f for f in _rows(db, "SELECT * FROM fills")}
        positions = {p["symbol"]: p["qty"] for p in _rows(db, "SELECT symbol, qty FROM positions")}
        bar_end = {(b["symbol"], b["ts"]): b["end_ts"] for b in _rows(db, "SELECT symbol, ts, end_ts FROM bars")}
    finally:
        db.close()
    sim_orders = state["orders"]
    trades = state["trades"]
    tagged = [o for o in sim_orders if tag_of(o.get("orderTag"))]
    out_: dict[str, dict[str, Any]] = {}

    counts = Counter(tag_of(o["orderTag"]) for o in tagged)
    out_["one_broker_order_per_id"] = _result([f"{t} at the broker {n} times" for t, n in counts.items() if n > 1],
                                              len(counts))

    problems: list[str] = []
    by_tag = {tag_of(o["orderTag"]): o for o in tagged}
    for tag, o in by_tag.items():
        row = orders.get(tag)
        if row is None:
            continue  # reported below (an order the journal never wrote)
        if row["status"] != fyers_status(o["status"]).value:
            problems.append(f"order {tag}: journal {row['status']}, broker {fyers_status(o['status']).value}")
    for coid, row in orders.items():
        if coid not in by_tag and row["status"] not in NOT_SENT and not (
                row["status"] == "REJECTED" and str(row["reason"]).startswith("not sent")):
            problems.append(f"order {coid}: journal {row['status']} ({row['reason']}), not at the broker")
    trade_ids = {str(t["tradeNumber"]) for t in trades}
    for fid in set(fills) ^ trade_ids:
        problems.append(f"fill {fid}: {'journal only' if fid in fills else 'broker only'}")
    for t in trades:
        f = fills.get(str(t["tradeNumber"]))
        if f is not None and (f["qty"] != t["tradedQty"] or f["price"] != t["tradePrice"]
                              or (f["side"] == "BUY") != (t["side"] == 1)):
            problems.append(f"fill {t['tradeNumber']}: journal {f['side']} {f['qty']} @ {f['price']}, broker "
                            f"{t['side']} {t['tradedQty']} @ {t['tradePrice']}")
    broker_pos = {p["symbol"]: float(p["netQty"]) for p in state["positions"]["netPositions"] if p["netQty"]}
    if {s: float(q) for s, q in positions.items() if q} != broker_pos:
        problems.append(f"positions: journal {positions}, broker {broker_pos}")
    cash_j = sum((-1 if f["side"] == "BUY" else 1) * f["qty"] * f["price"] for f in fills.values())
    cash_b = sum(-t["side"] * t["tradedQty"] * t["tradePrice"] for t in trades)
    if abs(cash_j - cash_b) > 1.0:
        problems.append(f"cash from fills: journal {cash_j:,.2f}, broker {cash_b:,.2f}")
    out_["journal_equals_broker"] = _result(problems, len(sim_orders) + len(trades))
    out_["journal_equals_broker"]["cash_difference"] = round(abs(cash_j - cash_b), 4)

    cap = float(risk["max_position"])
    net: dict[str, float] = {}
    problems = []
    for t in trades:
        sym = t["symbol"]
        net[sym] = net.get(sym, 0.0) + t["side"] * float(t["tradedQty"])
        if abs(net[sym]) > cap:
            problems.append(f"{sym} at {net[sym]:+g} after trade {t['tradeNumber']} (cap {cap:g})")
    out_["position_within_cap_at_every_fill"] = _result(problems, len(trades))

    problems = [f"broker order {tag} is not in the journal (sent without being written first)" for tag in by_tag
                if tag not in orders]
    stale_ns = float(risk["stale_entry_s"]) * 1e9
    entries = [o for o in orders.values() if o["intent"] == "entry" and o["submit_attempts"]]
    for o in entries:
        if o["sent_state"] != "ACTIVE":
            problems.append(f"entry {o['client_order_id']} sent in state {o['sent_state']}")
        end = bar_end.get((o["symbol"], o["bar_ts"]))
        if end is None or o["sent_ns"] is None or o["sent_ns"] - end > stale_ns:
            age = "?" if end is None or o["sent_ns"] is None else f"{(o['sent_ns'] - end) / 1e9:.0f}s"
            problems.append(f"entry {o['client_order_id']} sent on a bar {age} old")
    out_["no_entry_unless_active_and_fresh"] = _result(problems, len(entries) + len(by_tag))

    problems = []
    secrets = [t for t in tokens if t] + [t.split(".")[-1] for t in tokens if t.count(".") == 2]
    scanned = 0
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.name == "token.json":
            continue
        scanned += 1
        data = path.read_bytes()
        for secret in secrets:
            if secret.encode() in data:
                problems.append(f"{path.relative_to(out)} contains an access token")
                break
    out_["token_never_in_output"] = _result(problems, scanned)
    return out_


__all__ = ["check_invariants"]
