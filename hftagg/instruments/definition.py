"""One instrument: its canonical symbol, venue, id, venue spelling and definition.

Definitions are exact. Tick size, lot size and multiplier are kept as :class:`~decimal.Decimal`
(written to ``instruments.toml`` as decimal strings, never floats) and offered in the records'
fixed-point units (:mod:`hftagg.records.fixed`: prices at 1e-9, quantities at 1e-8), so a
kernel can check ``price % tick_size_fixed == 0`` with integers. A tick below 1e-9 or a lot
below 1e-8 cannot be represented in the records and is refused, never rounded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from hftagg.errors import InstrumentError
from hftagg.instruments.ids import normalize_symbol, normalize_venue
from hftagg.records.fixed import INT64_MAX, PRICE_DECIMALS, QTY_DECIMALS

__all__ = ["DEFINITION_FIELDS", "Instrument", "parse_expiry"]

#: the definition's optional fields, in the order files and ``symbols show`` list them
DEFINITION_FIELDS = (
    "asset_class",
    "tick_size",
    "lot_size",
    "price_precision",
    "size_precision",
    "multiplier",
    "currency",
    "expiry",
    "description",
)
ASSET_CLASSES = ("spot", "future", "option", "equity", "fx", "index", "other")


@dataclass(frozen=True)
class Instrument:
    """A canonical ``symbol`` on a ``venue``, with its ``instrument_id`` and definition.

    ``venue_symbol`` is how the venue spells it on the wire (``BTCUSDT`` on binance for
    ``BTCUSD``); ``pinned`` says the id was assigned (by a venue, a vendor, or to resolve a
    collision) rather than hashed. Every definition field is optional: ``None`` = unknown.
    """

    symbol: str
    venue: str
    instrument_id: int
    venue_symbol: str
    pinned: bool = False
    asset_class: str | None = None
    tick_size: Decimal | None = None
    lot_size: Decimal | None = None
    price_precision: int | None = None
    size_precision: int | None = None
    multiplier: Decimal | None = None
    currency: str | None = None
    expiry: str | None = None  # ISO 8601 date or UTC time, as given
    description: str | None = None

    # -- fixed-point views ---------------------------------------------------------------------

    @property
    def tick_size_fixed(self) -> int | None:
        """The tick in price units (1e-9), or None."""
        return None if self.tick_size is None else int(self.tick_size.scaleb(PRICE_DECIMALS))

    @property
    def lot_size_fixed(self) -> int | None:
        """The lot in quantity units (1e-8), or None."""
        return None if self.lot_size is None else int(self.lot_size.scaleb(QTY_DECIMALS))

    @property
    def expiry_ns(self) -> int | None:
        """Expiry as UNIX nanoseconds (a date alone means its 00:00 UTC), or None."""
        return None if self.expiry is None else parse_expiry(self.expiry)[1]

    def as_table(self) -> dict[str, Any]:
        """The instrument as a TOML table: decimals as strings, unknown fields left out."""
        out: dict[str, Any] = {"symbol": self.symbol, "venue": self.venue}
        if self.venue_symbol != self.symbol:
            out["venue_symbol"] = self.venue_symbol
        if self.pinned:
            out["instrument_id"] = self.instrument_id
        for name in DEFINITION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = format(value, "f") if isinstance(value, Decimal) else value
        return out

    def as_json(self) -> dict[str, Any]:
        """Every field, decimals as strings (for ``--json`` output)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Decimal):
                out[key] = format(value, "f")
        out["tick_size_fixed"] = self.tick_size_fixed
        out["lot_size_fixed"] = self.lot_size_fixed
        return out

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        symbol: str,
        venue: str,
        instrument_id: int,
        *,
        venue_symbol: str | None = None,
        pinned: bool = False,
        **definition: Any,
    ) -> Instrument:
        """A checked instrument: every value validated, decimals made exact. Raises
        :class:`~hftagg.errors.InstrumentError` naming the instrument, the field and the fix."""
        symbol = normalize_symbol(symbol)
        venue = normalize_venue(venue)
        where = f"instrument {symbol!r} on {venue!r}"
        unknown = sorted(set(definition) - set(DEFINITION_FIELDS))
        if unknown:
            raise InstrumentError(
                f"{where}: unknown field(s) {unknown}; known: {', '.join(DEFINITION_FIELDS)}"
            )
        if not isinstance(instrument_id, int) or not 0 < instrument_id <= 0xFFFFFFFF:
            raise InstrumentError(
                f"{where}: instrument_id = {instrument_id!r}: use 1..4294967295 (0 is reserved)"
            )
        values = {name: definition.get(name) for name in DEFINITION_FIELDS}
        values["tick_size"] = _step(where, "tick_size", values["tick_size"], PRICE_DECIMALS)
        values["lot_size"] = _step(where, "lot_size", values["lot_size"], QTY_DECIMALS)
        values["multiplier"] = _step(where, "multiplier", values["multiplier"], 9)
        values["price_precision"] = _precision(
            where, "price_precision", values["price_precision"], values["tick_size"], 9
        )
        values["size_precision"] = _precision(
            where, "size_precision", values["size_precision"], values["lot_size"], 8
        )
        values["asset_class"] = _choice(where, "asset_class", values["asset_class"])
        values["currency"] = _currency(where, values["currency"])
        if values["expiry"] is not None:
            values["expiry"] = parse_expiry(values["expiry"], where)[0]
        if values["description"] is not None:
            values["description"] = str(values["description"])
        return cls(
            symbol=symbol,
            venue=venue,
            instrument_id=instrument_id,
            venue_symbol=normalize_symbol(venue_symbol or symbol, "venue_symbol"),
            pinned=bool(pinned),
            **values,
        )


def _decimal(where: str, name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise InstrumentError(f'{where}: {name} = {value!r}: write a decimal such as "0.01"')
    try:  # a float becomes its shortest repr, i.e. what was written in the file
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InstrumentError(
            f'{where}: {name} = {value!r} is not a decimal number; write it like "0.01"'
        ) from exc
    if not number.is_finite():
        raise InstrumentError(f"{where}: {name} = {value!r}: must be a finite decimal")
    return number


def _step(where: str, name: str, value: Any, decimals: int) -> Decimal | None:
    """A positive decimal exact at ``decimals`` places and within int64 units."""
    if value is None:
        return None
    number = _decimal(where, name, value)
    units = number.scaleb(decimals)
    if number <= 0 or units != units.to_integral_value() or units > INT64_MAX:
        raise InstrumentError(
            f"{where}: {name} = {value!r}: must be positive, a multiple of 1e-{decimals} (the "
            f"records' fixed-point step) and at most {Decimal(INT64_MAX).scaleb(-decimals)}"
        )
    return number


def _precision(where: str, name: str, value: Any, step: Decimal | None, top: int) -> int | None:
    """Decimal places: given (0..top, and fine enough for the step) or derived from the step."""
    needed = None if step is None else max(0, -step.normalize().as_tuple().exponent)
    if value is None:
        return needed
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise InstrumentError(f"{where}: {name} = {value!r}: use an integer 0..{top}")
    if needed is not None and value < needed:
        raise InstrumentError(
            f"{where}: {name} = {value} is coarser than the step {step} ({needed} decimals); "
            f"raise {name} to {needed} or fix the step"
        )
    return value


def _choice(where: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if value not in ASSET_CLASSES:
        raise InstrumentError(f"{where}: {name} = {value!r}: use one of {', '.join(ASSET_CLASSES)}")
    return value


def _currency(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isalnum() or not 2 <= len(value) <= 12:
        raise InstrumentError(
            f"{where}: currency = {value!r}: use a code of 2-12 letters or digits, e.g. USD, USDT"
        )
    return value.upper()


def parse_expiry(value: Any, where: str = "instrument") -> tuple[str, int]:
    """``"2026-12-18"`` or ``"2026-12-18T13:30:00Z"`` (or a TOML date/time) -> (the ISO text,
    UNIX ns). Times without a zone are refused: an expiry must say which clock it means."""
    if isinstance(value, dt.datetime):
        moment, text = value, value.isoformat()
    elif isinstance(value, dt.date):
        moment, text = dt.datetime(value.year, value.month, value.day), value.isoformat()
        moment = moment.replace(tzinfo=dt.UTC)
    else:
        text = str(value).strip()
        try:
            if len(text) == 10:
                moment = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            else:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InstrumentError(
                f"{where}: expiry = {value!r}: write an ISO 8601 date (2026-12-18) or UTC time "
                f"(2026-12-18T13:30:00Z)"
            ) from exc
    if moment.tzinfo is None:
        raise InstrumentError(
            f"{where}: expiry = {value!r} has no time zone; add Z (UTC) or an offset"
        )
    ns = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    return text, ns
