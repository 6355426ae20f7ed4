"""The binary "HSM" protocol of the Fyers data socket (doc section 4.1): client frame decoder, server frame encoders.

Every frame: ``u16 length, u8 type, u8 field_count``, then fields ``u8 id, u16 len, bytes`` (big-endian).
The SDK's declared lengths are wrong in several client frames, so the decoder parses by fields only.
Topic ids are written big-endian; the SDK reads them in native order, which is harmless because it
only uses them as keys that the snapshot and the updates share.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

AUTH, ACK, SUBSCRIBE, UNSUBSCRIBE, DATA, PAUSE, RESUME, PING, MODE, CUSTOM = 1, 3, 4, 5, 6, 7, 8, 11, 12, 51
SNAPSHOT, UPDATE, LITE = 83, 85, 76  # 'S', 'U', 'L' entries of a DATA frame
ABSENT = -2147483648  # "no value / unchanged" in an update

SF_FIELDS = ("ltp", "vol_traded_today", "last_traded_time", "exch_feed_time", "bid_size", "ask_size", "bid_price",
             "ask_price", "last_traded_qty", "tot_buy_qty", "tot_sell_qty", "avg_trade_price", "OI", "low_price",
             "high_price", "Yhigh", "Ylow", "lower_ckt", "upper_ckt", "open_price", "prev_close_price")
IF_FIELDS = ("ltp", "prev_close_price", "exch_feed_time", "high_price", "low_price", "open_price")
DP_FIELDS = tuple(f"{side}_{kind}{i}" for side, kind in (("bid", "price"), ("ask", "price"), ("bid", "size"),
                                                          ("ask", "size"), ("bid", "order"), ("ask", "order"))
                  for i in range(1, 6))
FIELDS = {"sf": SF_FIELDS, "if": IF_FIELDS, "dp": DP_FIELDS}


class ProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class Request:
    type: int
    fields: dict[int, bytes]

    def topics(self) -> list[str]:
        """The topic list of a SUBSCRIBE / UNSUBSCRIBE (field 1)."""
        blob = self.fields.get(1, b"")
        if len(blob) < 2:
            raise ProtocolError("subscription without topics")
        count, offset, out = struct.unpack(">H", blob[:2])[0], 2, []
        for _ in range(count):
            if offset >= len(blob):
                raise ProtocolError("truncated topic list")
            n = blob[offset]
            out.append(blob[offset + 1:offset + 1 + n].decode("ascii", errors="replace"))
            offset += 1 + n
        return out

    def channel(self) -> int:
        raw = self.fields.get(2, b"\x0b")
        return raw[0] if raw else 11

    def channel_mask(self) -> int:
        raw = self.fields.get(1, b"")
        return struct.unpack(">Q", raw)[0] if len(raw) == 8 else 0

    def mode(self) -> str:
        """'L' lite or 'F' full (MODE frame field 2)."""
        raw = self.fields.get(2, b"F")
        return chr(raw[0]) if raw else "F"


def decode(data: bytes) -> Request:
    if len(data) < 3:
        raise ProtocolError(f"frame too short ({len(data)} bytes)")
    ftype = data[2]
    if len(data) == 3:  # ping: 00 01 0B
        return Request(ftype, {})
    count, offset, fields = data[3], 4, {}
    for _ in range(count):
        if offset + 3 > len(data):
            raise ProtocolError("truncated field header")
        fid = data[offset]
        flen = struct.unpack(">H", data[offset + 1:offset + 3])[0]
        offset += 3
        fields[fid] = bytes(data[offset:offset + flen])
        offset += flen
    return Request(ftype, fields)


def _frame(ftype: int, fields: list[tuple[int, bytes]]) -> bytes:
    body = bytearray([ftype, len(fields)])
    for fid, value in fields:
        body += bytes([fid]) + struct.pack(">H", len(value)) + value
    return struct.pack(">H", len(body)) + bytes(body)


def auth_reply(ok: bool) -> bytes:
    """f1 "K" (or an error text), f2 u32 ack_count = 0 (the client then never sends acks)."""
    return _frame(AUTH, [(1, b"K" if ok else b"E"), (2, struct.pack(">I", 0))])


def simple_reply(ftype: int, ok: bool = True) -> bytes:
    """The "K" reply the SDK expects to MODE, SUBSCRIBE, UNSUBSCRIBE, PAUSE and RESUME."""
    return _frame(ftype, [(1, b"K" if ok else b"E")])


def custom_error(code: int, message: str, ref_type: int) -> bytes:
    return _frame(CUSTOM, [(1, struct.pack(">i", code)), (2, message.encode()), (3, bytes([ref_type]))])


def _ints(values: list[int]) -> bytes:
    return b"".join(struct.pack(">i", max(-2**31, min(2**31 - 1, int(v)))) for v in values)


def snapshot_entry(topic_id: int, topic: str, values: list[int], exchange: str, token: str, symbol: str,
                   multiplier: int = 1, precision: int = 2) -> bytes:
    name = topic.encode()
    out = bytearray([SNAPSHOT]) + struct.pack(">H", topic_id) + bytes([len(name)]) + name
    out += bytes([len(values)]) + _ints(values) + b"\x00\x00"
    out += struct.pack(">H", multiplier) + bytes([precision])
    for text in (exchange, token, symbol):
        raw = text.encode()[:255]
        out += bytes([len(raw)]) + raw
    return bytes(out)


def update_entry(topic_id: int, values: list[int]) -> bytes:
    return bytes([UPDATE]) + struct.pack(">H", topic_id) + bytes([len(values)]) + _ints(values)


def lite_entry(topic_id: int, ltp: int) -> bytes:
    return bytes([LITE]) + struct.pack(">H", topic_id) + _ints([ltp])


def data_frame(msg_no: int, entries: list[bytes]) -> bytes:
    body = bytes([DATA]) + struct.pack(">I", msg_no & 0xFFFFFFFF) + struct.pack(">H", len(entries)) + b"".join(entries)
    return struct.pack(">H", min(len(body), 0xFFFF)) + body
