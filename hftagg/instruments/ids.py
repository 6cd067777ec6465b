"""Canonical symbols, venue names and the stable ``instrument_id`` hash.

An instrument is a canonical symbol on a venue: ``BTCUSD`` on ``binance``, ``ESZ6`` on
``cme``, ``AAPL`` on ``xnas``. Its ``instrument_id`` (the uint32 in every record header) is a
pure function of that pair, so every process, every run and every machine computes the same id
without talking to anyone::

    canonical = b"hftagg-instrument-v1\\x00" + venue.encode() + b"\\x00" + symbol.encode()
    digest    = blake2b(canonical, digest_size=8)
    id        = int.from_bytes(digest[0:4], "little")    # 0 is reserved: "no instrument"
    if id == 0: id = int.from_bytes(digest[4:8], "little")

``venue`` is lower-cased first (``Binance`` and ``binance`` are one venue); ``symbol`` is kept
exactly as written (``BRK.B`` and ``brk.b`` differ, as they do on every venue we know).

With 2**32 ids a collision is unlikely but not impossible: by the birthday bound, a registry of
10,000 instruments holds one with a chance of about 1.2 %, of 77,000 with 50 %. The registry
therefore checks every new id against the ones it holds and refuses a collision with an error
naming both instruments; the fix is to pin one of them to another id (``instrument_id = N`` in
``instruments.toml``), which is then stored and used forever.

Ids assigned by a venue or a data vendor (Databento's ``instrument_id``, the simulator's
``1..N``) are pinned the same way: the registry holds them next to the hashed ones and checks
them for collisions too.
"""

from __future__ import annotations

import hashlib
import re

from hftagg.errors import InstrumentError

__all__ = [
    "ID_SCHEME",
    "MAX_SYMBOL_LEN",
    "first_sight_symbol",
    "hash_id",
    "normalize_symbol",
    "normalize_venue",
]

ID_SCHEME = b"hftagg-instrument-v1"
MAX_SYMBOL_LEN = 71  # DBN's raw_symbol width (v2/v3), the longest venue symbol we carry
_VENUE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,31}$")


def normalize_venue(venue: str) -> str:
    """``venue`` lower-cased and checked: letters, digits, ``_.-``, at most 32 characters."""
    if not isinstance(venue, str):
        raise InstrumentError(f"venue {venue!r}: expected a string such as 'binance'")
    name = venue.strip().lower()
    if not _VENUE.match(name):
        raise InstrumentError(
            f"venue {venue!r}: use letters, digits, '_', '.' or '-' (at most 32 characters), "
            f"e.g. 'binance', 'cme', 'glbx.mdp3'"
        )
    return name


def normalize_symbol(symbol: str | bytes, what: str = "symbol") -> str:
    """``symbol`` checked: printable ASCII, no leading or trailing space, 1..71 characters.

    Inner spaces are allowed (OCC option symbols such as ``AAPL  261218C00150000`` have them).
    """
    if isinstance(symbol, bytes | bytearray):
        symbol = bytes(symbol).rstrip(b"\x00").decode("ascii", "replace")
    if not isinstance(symbol, str):
        raise InstrumentError(f"{what} {symbol!r}: expected a string such as 'BTCUSD'")
    if (
        not symbol
        or symbol != symbol.strip()
        or len(symbol) > MAX_SYMBOL_LEN
        or not all(" " <= c <= "~" for c in symbol)
    ):
        raise InstrumentError(
            f"{what} {symbol!r}: use 1 to {MAX_SYMBOL_LEN} printable ASCII characters with no "
            f"leading or trailing space, e.g. 'BTCUSD', 'ESZ6', 'XBT/USD'"
        )
    return symbol


def hash_id(symbol: str, venue: str, bits: int = 32) -> int:
    """The stable ``instrument_id`` of ``symbol`` on ``venue`` (see the module docstring).

    ``bits`` < 32 keeps only the low bits (tests use it to find real collisions quickly); the
    result is never 0.
    """
    text = ID_SCHEME + b"\x00" + normalize_venue(venue).encode() + b"\x00" + symbol.encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    mask = (1 << bits) - 1
    for start in (0, 4):
        value = int.from_bytes(digest[start : start + 4], "little") & mask
        if value:
            return value
    raise InstrumentError(  # 2**-64 for 32 bits: a changed hash, not bad luck
        f"symbol {symbol!r} on venue {venue!r} hashes to the reserved id 0; pin it to another "
        f"id with instrument_id = N in instruments.toml"
    )


#: Kraken's own asset codes for what every other venue calls BTC and DOGE
_KRAKEN_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}


def first_sight_symbol(venue: str, spelling: str) -> str:
    """The canonical symbol given to a venue spelling the registry has never seen, by rules
    that cannot merge two instruments: ``BTC-USD`` on coinbase -> ``BTCUSD``; ``XBT/USD`` on
    kraken -> ``BTCUSD`` (Kraken's XBT and XDG are BTC and DOGE). Anything else keeps its
    spelling: ``BTCUSDT`` on binance stays ``BTCUSDT`` (USDT is not USD; to call it BTCUSD,
    define it: ``hftagg symbols add BTCUSD --venue binance --venue-symbol BTCUSDT``).
    Pure functions of (venue, spelling), so every process gives the same id."""
    if venue == "coinbase" and spelling.count("-") == 1:
        return spelling.replace("-", "").upper()
    if venue == "kraken" and spelling.count("/") == 1:
        base, quote = spelling.upper().split("/")
        return _KRAKEN_ASSETS.get(base, base) + _KRAKEN_ASSETS.get(quote, quote)
    return spelling
