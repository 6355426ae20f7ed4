"""Instruments of the simulator: Fyers symbol names, fytokens, HSM topic names, tick sizes."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

_SYMBOL_RE = re.compile(r"^(NSE|BSE):([A-Z0-9&_ .-]+)-([A-Z0-9]+)$")

# exchange code, segment code, HSM segment name of the cash segments
_EXCHANGES = {"NSE": (10, 10, "nse_cm"), "BSE": (12, 10, "bse_cm")}

# Exchange tokens of well-known symbols (the tail of their fytoken); others get a stable made-up token.
_KNOWN_TOKENS = {
    "NSE:SBIN-EQ": "3045", "NSE:RELIANCE-EQ": "2885", "NSE:INFY-EQ": "1594", "NSE:TCS-EQ": "11536",
    "NSE:HDFCBANK-EQ": "1333", "NSE:ICICIBANK-EQ": "4963", "NSE:IDEA-EQ": "14366",
    "NSE:NIFTY50-INDEX": "26000", "NSE:NIFTYBANK-INDEX": "26009", "NSE:FINNIFTY-INDEX": "26037",
    "NSE:INDIAVIX-INDEX": "26017", "BSE:SENSEX-INDEX": "1",
}

# The name the HSM feed uses for an index (``if|nse_cm|<name>``), as in the SDK's map.json.
INDEX_HSM_NAMES = {
    "NSE:NIFTY50-INDEX": "Nifty 50", "NSE:NIFTYBANK-INDEX": "Nifty Bank",
    "NSE:FINNIFTY-INDEX": "Nifty Fin Service", "NSE:MIDCPNIFTY-INDEX": "NIFTY MID SELECT",
    "NSE:NIFTYNXT50-INDEX": "Nifty Next 50", "NSE:INDIAVIX-INDEX": "India VIX",
    "NSE:NIFTYIT-INDEX": "Nifty IT", "BSE:SENSEX-INDEX": "SENSEX", "BSE:BANKEX-INDEX": "BANKEX",
}


def normalise_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_symbol(symbol: str) -> tuple[str, str, str] | None:
    """``NSE:SBIN-EQ`` -> ("NSE", "SBIN", "EQ"); None when it is not a cash or index symbol."""
    m = _SYMBOL_RE.match(symbol)
    return (m.group(1), m.group(2), m.group(3)) if m else None


@dataclass(frozen=True)
class Instrument:
    symbol: str  # NSE:SBIN-EQ
    exchange: int  # 10 NSE, 12 BSE
    segment: int  # 10 capital market
    hsm_segment: str  # nse_cm
    token: str  # exchange token, e.g. 3045
    is_index: bool
    tick_size: float = 0.05
    lot_size: int = 1

    @property
    def fytoken(self) -> str:
        """exchange (2) + segment (2) + expiry (6 zeros for cash) + exchange token."""
        return f"{self.exchange}{self.segment}000000{self.token}"

    @property
    def name(self) -> str:
        return self.symbol.split(":", 1)[1].rsplit("-", 1)[0]

    @property
    def instrument_type(self) -> int:
        return 10 if self.is_index else 0

    @property
    def hsm_index_name(self) -> str:
        return INDEX_HSM_NAMES.get(self.symbol, self.name)

    def topics(self) -> dict[str, str]:
        """HSM topic names of this instrument -> kind ("sf", "if" or "dp")."""
        if self.is_index:
            return {f"if|{self.hsm_segment}|{self.hsm_index_name}": "if"}
        return {f"sf|{self.hsm_segment}|{self.token}": "sf", f"dp|{self.hsm_segment}|{self.token}": "dp"}

    def round_price(self, price: float) -> float:
        return round(round(price / self.tick_size) * self.tick_size, 2)

    def on_tick(self, price: float) -> bool:
        return abs(price / self.tick_size - round(price / self.tick_size)) < 1e-6


def make_instrument(symbol: str) -> Instrument:
    parsed = parse_symbol(symbol)
    if parsed is None:
        raise ValueError(f"{symbol!r} is not a Fyers cash or index symbol (e.g. NSE:SBIN-EQ, NSE:NIFTY50-INDEX)")
    exch, _, series = parsed
    exchange, segment, hsm_segment = _EXCHANGES[exch]
    token = _KNOWN_TOKENS.get(symbol) or str(90000 + zlib.crc32(symbol.encode()) % 9000)
    return Instrument(symbol=symbol, exchange=exchange, segment=segment, hsm_segment=hsm_segment, token=token,
                      is_index=series == "INDEX")
