"""Market-data validation per instrument: trades or quotes in, clean / dead-letter / alert out.

``ValidationKernel.update(batch)`` runs every record of a ``trade`` or ``quote`` batch through
the rules below, in this order; the first rule a record breaks is its reason. A record that
breaks none is *accepted* (passed through unchanged); one that breaks a rule is *rejected*: it
becomes a ``dead_letter`` (header copied, ``reason``, ``raw_offset`` = its index in the stream
the kernel has seen since it started, ``raw_length`` = the record size, ``source_id`` = the input
schema's id, ``detail`` = short text) and an ``alert``. Only accepted records change the
per-instrument state (time, price, returns), so a bad record never moves a reference.

1. ``UNDEFINED_PRICE``: a price equal to ``UNDEF_PRICE`` (int64 max, DBN's "no price": the
   fixed-point form of a non-finite price). For quotes a side with ``UNDEF_PRICE`` is an empty
   side, allowed when ``allow_one_sided`` (its size is then not checked).
2. ``NON_POSITIVE_PRICE``: a (present) price <= 0.
3. ``ZERO_SIZE``: a (present) size of 0 or below (sizes are int64 1e-8 fixed-point
   quantities; the alert value is the size in units).
4. ``CROSSED`` / ``LOCKED`` (quotes with both sides): bid > ask, or bid == ask unless
   ``allow_locked``. Alert value: ask - bid in price units.
5. ``OUT_OF_ORDER``: ``ts_event`` more than ``tolerance_ns`` before the newest accepted
   ``ts_event`` of the instrument (equal to it minus the tolerance passes). Value: the step back
   in microseconds.
6. ``PRICE_JUMP``: the log return ``r = ln(p / p_prev)`` from the instrument's last accepted
   price (trade price; quote mid ``(bid + ask) / 2``, both sides needed) against ``sigma``, the
   sample standard deviation (ddof 1) of its last ``jump_window`` accepted returns:
   rejected when ``|r| > max(jump_sigmas * sigma, jump_min_bps * 1e-4)``. Warm-up: no check
   until the instrument holds ``jump_window`` returns (``jump_window + 1`` accepted prices).
   Recovery from a real level shift: after ``jump_rebase_after`` consecutive rejected jumps of
   an instrument the next jump is accepted as the new level, its return history is cleared (the
   warm-up starts again) and a ``JUMP_REBASED`` alert is raised. Value: ``r`` in basis points.

Alerts for rejected records are throttled per instrument and reason: at most one per
``alert_interval_ns`` of ``ts_recv`` (0: every one); the dead letter is always written.

Staleness (alerts only; records are never rejected for it): after every accepted record, every
instrument with at least one accepted record, not already stale, whose newest accepted
``ts_event`` is more than ``stale_after_ns`` (0: off) behind the newest accepted ``ts_event`` of
the whole stream, becomes stale: one ``STALE`` alert per episode (value: its age in ms; header
time from the record that revealed it; instruments in first-seen order). Its next accepted record
ends the episode with a ``STALE_RECOVERED`` alert (value: the gap in ms). The scan is exact at
every record but runs only when the stream time passes the earliest deadline of any instrument.

Prices that cannot be logged (<= 0, or a one-sided quote) never enter the return history. Live
changes (``configure``) apply from the next record; a new ``jump_window`` keeps each instrument's
newest ``min(held, window)`` returns (a larger window re-enters warm-up until it is full).
Every alert ``seq`` counts that instrument's alerts from 0. At one accepted record the alerts
come in this order: its ``STALE_RECOVERED``, the ``STALE`` alerts it revealed, its
``JUMP_REBASED``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum

import numba
import numpy as np

from hftagg.builtins.core.indicators.rolling import moment_sums, resize_ring, set_held
from hftagg.kernels.options import NJIT as _NJIT
from hftagg.kernels.slots import SlotTable, find_slot
from hftagg.records.catalog import ALERT, DEAD_LETTER, QUOTE, TRADE
from hftagg.records.reasons import register_reason_table
from hftagg.records.schema import PRICE_SCALE

__all__ = [
    "UNDEF_PRICE",
    "ValidationKernel",
    "ValidationReason",
    "ValidationRules",
    "warm",
]


#: DBN's "no price" (int64 max): an undefined price, or an empty side of a quote.
UNDEF_PRICE = np.iinfo(np.int64).max
_NO_TIME = np.iinfo(np.int64).min
_MAX_TIME = np.iinfo(np.int64).max


class ValidationReason(IntEnum):
    """``dead_letter.reason`` and ``alert.code`` of the validation stages (100..199)."""

    UNDEFINED_PRICE = 101
    NON_POSITIVE_PRICE = 102
    ZERO_SIZE = 103
    CROSSED = 104
    LOCKED = 105
    OUT_OF_ORDER = 106
    PRICE_JUMP = 107
    STALE = 108  # alert only
    STALE_RECOVERED = 109  # alert only
    JUMP_REBASED = 110  # alert only


_BASE = 100
_QTY = 1e8  # raw quantity units per unit (QTY_UNITS); divided, so whole units come out exact
_NCODES = 16
#: code -> (severity 0 info / 1 warning / 2 error, text); the text is the dead-letter detail too.
REASON_TEXT = {
    ValidationReason.UNDEFINED_PRICE: (2, b"undefined price (UNDEF_PRICE / non-finite)"),
    ValidationReason.NON_POSITIVE_PRICE: (2, b"price is zero or negative"),
    ValidationReason.ZERO_SIZE: (2, b"size is zero or negative"),
    ValidationReason.CROSSED: (2, b"crossed quote: bid above ask"),
    ValidationReason.LOCKED: (1, b"locked quote: bid equals ask"),
    ValidationReason.OUT_OF_ORDER: (1, b"ts_event went back beyond the tolerance"),
    ValidationReason.PRICE_JUMP: (2, b"price jump beyond k sigma of recent returns"),
    ValidationReason.STALE: (1, b"instrument stale: no update within stale_after"),
    ValidationReason.STALE_RECOVERED: (0, b"stale instrument updated again"),
    ValidationReason.JUMP_REBASED: (1, b"repeated jumps accepted as the new price level"),
}
_SEVERITY, _TEXT = register_reason_table("validation", REASON_TEXT, _BASE, _NCODES)
_DETAIL = _TEXT  # the dead letter's detail is the same text
_PASSED = 0  # counts[0]: accepted records; counts[code - 100] per reason
_ALERTS, _SUPPRESSED = 14, 15  # alerts emitted, rejection alerts throttled away

_UNDEF, _NONPOS, _ZERO, _CROSS, _LOCK, _ORDER, _JUMP, _STALE, _RECOV, _REBASE = range(1, 11)

# per-instrument int64 columns (1 and 2 are the ring's held/head, as rolling's helpers expect)
_COUNT, _HELD, _HEAD, _LAST_TS, _FLAGS, _JUMPS, _ASEQ, _LAST_ALERT = 0, 1, 2, 3, 4, 5, 6, 7
_NINT = _LAST_ALERT + _JUMP  # one last-alert time per rejection reason 1.._JUMP
# per-instrument float64 columns: last accepted log price, return ref, sum and sum of squares
_LOGP, _REF, _SUM, _SQ = 0, 1, 2, 3
_NFLOAT = 4
_F_STALE, _F_PRICE = 1, 2  # flags

# int params / float params
(_P_PRICES, _P_SIZES, _P_ONE_SIDED, _P_CROSSED, _P_LOCKED, _P_ORDER, _P_TOL, _P_JUMPS,
 _P_REBASE, _P_STALE, _P_ALERT_NS) = range(11)  # fmt: skip
_P_SIGMAS, _P_MIN_RET = 0, 1
# meta: slots in use, newest accepted ts_event, next stale deadline, stop reason, stream offset
_M_SLOTS, _M_NEWEST, _M_NEXT, _M_STOP, _M_OFFSET = 0, 1, 2, 3, 4
_DONE, _NEED_SLOTS, _NEED_OUT = 0, 1, 2


@dataclass(frozen=True)
class ValidationRules:
    """The live rule settings (see the module docstring)."""

    check_prices: bool = True
    check_sizes: bool = True
    allow_one_sided: bool = True
    check_crossed: bool = True
    allow_locked: bool = False
    check_order: bool = True
    tolerance_ns: int = 0
    check_jumps: bool = True
    jump_sigmas: float = 10.0
    jump_window: int = 50
    jump_min_bps: float = 1.0
    jump_rebase_after: int = 5
    stale_after_ns: int = 5_000_000_000
    alert_interval_ns: int = 0

    def __post_init__(self) -> None:
        for name in ("tolerance_ns", "stale_after_ns", "alert_interval_ns", "jump_min_bps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.jump_sigmas >= 0 or not math.isfinite(self.jump_sigmas):
            raise ValueError(f"jump_sigmas must be a finite number >= 0, got {self.jump_sigmas}")
        if self.jump_window < 2:
            raise ValueError(f"jump_window must be >= 2, got {self.jump_window}")
        if self.jump_rebase_after < 1:
            raise ValueError(f"jump_rebase_after must be >= 1, got {self.jump_rebase_after}")


# --------------------------------------------------------------------------- compiled loop


@numba.njit(**_NJIT)
def _alert(alerts, nout, ints, s, iid, ts, tr, code, value, counts):
    a = alerts[nout[2]]
    a["ts_event"] = ts
    a["ts_recv"] = tr
    a["seq"] = ints[s, _ASEQ]
    a["instrument_id"] = iid
    a["code"] = _BASE + code
    a["value"] = value
    ints[s, _ASEQ] += 1
    nout[2] += 1
    counts[_ALERTS] += 1


@numba.njit(inline="always", **_NJIT)
def _price_reason(p1, p2, s1, s2, quote, ip):
    """(reason, value) of the price, size and crossed rules; reason 0 when they all pass."""
    has1 = p1 != UNDEF_PRICE
    has2 = (p2 != UNDEF_PRICE) if quote else has1
    if ip[_P_PRICES]:
        if (not has1 or not has2) and not (quote and ip[_P_ONE_SIDED]):
            return _UNDEF, np.nan
        if has1 and p1 <= 0:
            return _NONPOS, p1 * PRICE_SCALE
        if has2 and p2 <= 0:
            return _NONPOS, p2 * PRICE_SCALE
    if ip[_P_SIZES]:
        if has1 and s1 <= 0:
            return _ZERO, s1 / _QTY
        if has2 and s2 <= 0:
            return _ZERO, s2 / _QTY
    if quote and ip[_P_CROSSED] and has1 and has2:
        if p1 > p2:
            return _CROSS, (p2 - p1) * PRICE_SCALE
        if p1 == p2 and not ip[_P_LOCKED]:
            return _LOCK, 0.0
    return 0, 0.0


@numba.njit(inline="always", **_NJIT)
def _sigma(fstate, s, w):
    total = fstate[s, _SUM]
    var = (fstate[s, _SQ] - total * total / w) / (w - 1)
    return math.sqrt(var) if var > 0 else 0.0


@numba.njit(inline="always", **_NJIT)
def _push_return(ring, fstate, ints, s, r):
    w = ring.shape[1]
    held, head = ints[s, _HELD], ints[s, _HEAD]
    if held == 0:
        fstate[s, _REF] = r
    ref = fstate[s, _REF]
    total, squares = fstate[s, _SUM], fstate[s, _SQ]
    if held == w:
        d = ring[s, head] - ref
        total -= d
        squares -= d * d
    else:
        held += 1
    d = r - ref
    total += d
    squares += d * d
    ring[s, head] = r
    head += 1
    if head == w:
        head = 0
        if held == w:
            fstate[s, _REF] = r
            total, squares = moment_sums(ring, s, w, r)
    fstate[s, _SUM], fstate[s, _SQ] = total, squares
    ints[s, _HELD], ints[s, _HEAD] = held, head


@numba.njit(**_NJIT)
def _stale_scan(ints, slot_ids, meta, ip, alerts, nout, counts, ts, tr):
    newest = meta[_M_NEWEST]
    nearest = _MAX_TIME
    for t in range(meta[_M_SLOTS]):
        if ints[t, _COUNT] == 0 or ints[t, _FLAGS] & _F_STALE:
            continue
        deadline = ints[t, _LAST_TS] + ip[_P_STALE]
        if newest > deadline:
            ints[t, _FLAGS] |= _F_STALE
            counts[_STALE] += 1
            age = (newest - ints[t, _LAST_TS]) / 1e6
            _alert(alerts, nout, ints, t, slot_ids[t], ts, tr, _STALE, age, counts)
        elif deadline < nearest:
            nearest = deadline
    meta[_M_NEXT] = nearest


@numba.njit(inline="always", **_NJIT)
def _reject(i, s, code, value, ids, ts, tr, seq, ints, ip, dead, alerts, nout, counts, meta):
    counts[code] += 1
    d = dead[nout[1]]
    d["ts_event"] = ts[i]
    d["ts_recv"] = tr[i]
    d["seq"] = seq[i]
    d["instrument_id"] = ids[i]
    d["reason"] = _BASE + code
    d["raw_offset"] = meta[_M_OFFSET] + i
    nout[1] += 1
    col = _LAST_ALERT + code - 1
    last = ints[s, col]
    if ip[_P_ALERT_NS] == 0 or last == _NO_TIME or tr[i] - last >= ip[_P_ALERT_NS]:
        ints[s, col] = tr[i]
        _alert(alerts, nout, ints, s, ids[i], ts[i], tr[i], code, value, counts)
    else:
        counts[_SUPPRESSED] += 1


@numba.njit(inline="always", **_NJIT)
def _log_price(p1, p2, quote):
    """(usable, log of the real price): the trade price or the quote mid, when positive."""
    if p1 == UNDEF_PRICE or p1 <= 0:
        return False, 0.0
    if not quote:
        return True, math.log(np.float64(p1) * PRICE_SCALE)
    if p2 == UNDEF_PRICE or p2 <= 0:
        return False, 0.0
    return True, math.log((np.float64(p1) + np.float64(p2)) * 0.5 * PRICE_SCALE)


@numba.njit(inline="always", **_NJIT)
def _jump_reason(s, r, ring, fstate, ints, fp, ip):
    """(reason, value, rebase) of the jump rule for return ``r``."""
    w = ring.shape[1]
    if not ip[_P_JUMPS] or ints[s, _HELD] != w:
        return 0, 0.0, False
    limit = max(fp[_P_SIGMAS] * _sigma(fstate, s, w), fp[_P_MIN_RET])
    if abs(r) <= limit:
        return 0, 0.0, False
    if ints[s, _JUMPS] >= ip[_P_REBASE]:
        return 0, 0.0, True
    return _JUMP, r * 1e4, False


@numba.njit(inline="always", **_NJIT)
def _update_price(s, iid, t, tr, priced, logx, r, rebase, ring, fstate, ints, alerts, nout,
                  counts):  # fmt: skip
    if not priced:
        return
    if rebase:
        ints[s, _HELD] = 0
        ints[s, _HEAD] = 0
        fstate[s, _SUM] = 0.0
        fstate[s, _SQ] = 0.0
        counts[_REBASE] += 1
        _alert(alerts, nout, ints, s, iid, t, tr, _REBASE, r * 1e4, counts)
    elif ints[s, _FLAGS] & _F_PRICE:
        _push_return(ring, fstate, ints, s, r)
    fstate[s, _LOGP] = logx
    ints[s, _FLAGS] |= _F_PRICE


@numba.njit(inline="always", **_NJIT)
def _accept(i, s, iid, t, tr, ints, meta, ip, slot_ids, good, alerts, nout, counts):
    """Book-keeping of an accepted record: output, stale episode end, times, stale scan."""
    good[nout[0]] = i
    nout[0] += 1
    counts[_PASSED] += 1
    if ints[s, _FLAGS] & _F_STALE:
        ints[s, _FLAGS] &= ~_F_STALE
        counts[_RECOV] += 1
        _alert(alerts, nout, ints, s, iid, t, tr, _RECOV, (t - ints[s, _LAST_TS]) / 1e6, counts)
    if ints[s, _COUNT] == 0 or t > ints[s, _LAST_TS]:
        ints[s, _LAST_TS] = t
    ints[s, _COUNT] += 1
    ints[s, _JUMPS] = 0
    if t > meta[_M_NEWEST]:
        meta[_M_NEWEST] = t
    if ip[_P_STALE] > 0:
        deadline = ints[s, _LAST_TS] + ip[_P_STALE]
        if deadline < meta[_M_NEXT]:
            meta[_M_NEXT] = deadline
        if meta[_M_NEWEST] > meta[_M_NEXT]:
            _stale_scan(ints, slot_ids, meta, ip, alerts, nout, counts, t, tr)


@numba.njit(**_NJIT)
def _validate(ids, ts, tr, seq, p1s, p2s, s1s, s2s, quote, start, table, shift, slot_ids, meta,
              ring, fstate, ints, ip, fp, good, dead, alerts, nout, counts):  # fmt: skip
    """Records ``start..``; return where it stopped (``meta[_M_STOP]`` says why)."""
    meta[_M_STOP] = _DONE
    for i in range(start, ids.shape[0]):
        if alerts.shape[0] - nout[2] < meta[_M_SLOTS] + 4:
            meta[_M_STOP] = _NEED_OUT
            return i
        n_before = meta[_M_SLOTS]
        s = find_slot(np.int64(ids[i]), table, shift, slot_ids, meta)
        if s < 0:
            meta[_M_STOP] = _NEED_SLOTS
            return i
        if s == n_before:
            ints[s, _LAST_ALERT : _LAST_ALERT + _JUMP] = _NO_TIME
        t = ts[i]
        code, value = _price_reason(p1s[i], p2s[i], s1s[i], s2s[i], quote, ip)
        if (
            code == 0
            and ip[_P_ORDER]
            and ints[s, _COUNT] > 0
            and t < ints[s, _LAST_TS] - ip[_P_TOL]
        ):
            code, value = _ORDER, (ints[s, _LAST_TS] - t) / 1e3
        priced, logx = _log_price(p1s[i], p2s[i], quote)
        has_ref = priced and (ints[s, _FLAGS] & _F_PRICE) != 0
        r = logx - fstate[s, _LOGP] if has_ref else 0.0
        rebase = False
        if code == 0 and has_ref:
            code, value, rebase = _jump_reason(s, r, ring, fstate, ints, fp, ip)
        if code:
            _reject(i, s, code, value, ids, ts, tr, seq, ints, ip, dead, alerts, nout, counts,
                    meta)  # fmt: skip
            if code == _JUMP:
                ints[s, _JUMPS] += 1
            continue
        _accept(i, s, ids[i], t, tr[i], ints, meta, ip, slot_ids, good, alerts, nout, counts)
        _update_price(s, ids[i], t, tr[i], priced, logx, r, rebase, ring, fstate, ints, alerts,
                      nout, counts)  # fmt: skip
    return ids.shape[0]


@numba.njit(**_NJIT)
def _rebuild(ring, fstate, ints, n_slots):
    for s in range(n_slots):
        held = ints[s, _HELD]
        ref = ring[s, held - 1] if held > 0 else 0.0
        fstate[s, _REF] = ref
        fstate[s, _SUM], fstate[s, _SQ] = moment_sums(ring, s, held, ref)


# --------------------------------------------------------------------------- Python side

_SNAPSHOT_KEYS = ("instrument_id", "returns", "real", "state", "meta", "counts")


class ValidationKernel:
    """Validation state for any number of instruments; ``update(batch)`` once per batch.

    ``quote=False`` validates ``trade`` batches, ``quote=True`` ``quote`` batches. ``update``
    returns ``(clean, dead_letters, alerts)``: ``clean`` is the batch itself when every record
    passed, else the passing records (a new array); the other two are views into buffers this
    kernel owns, valid until the next call. Not thread-safe; the compiled loop releases the GIL.
    """

    def __init__(self, quote: bool = False, rules: ValidationRules | None = None,
                 capacity: int = 1024) -> None:  # fmt: skip
        self.quote = bool(quote)
        self.schema = QUOTE if self.quote else TRADE
        self._meta = np.zeros(5, dtype=np.int64)
        self._meta[_M_NEWEST] = self._meta[_M_NEXT] = _NO_TIME
        self._nout = np.zeros(3, dtype=np.int64)
        self._counts = np.zeros(_NCODES, dtype=np.int64)
        self._ip = np.zeros(11, dtype=np.int64)
        self._fp = np.zeros(2, dtype=np.float64)
        self.rules = rules or ValidationRules()
        self._slots = self._table(self.rules.jump_window)
        self.configure(self.rules)
        self._buffers(max(int(capacity), 16))

    def _table(self, jump_window: int) -> SlotTable:
        """Per-instrument rows: the ring of recent log returns, float and int state."""
        columns = {
            "returns": ((jump_window,), np.float64),
            "real": ((_NFLOAT,), np.float64),
            "state": ((_NINT,), np.int64),
        }
        return SlotTable(columns, meta=self._meta, name="validation")

    # ----------------------------------------------------------------- configuration

    def configure(self, rules: ValidationRules) -> None:
        """Apply new rules from the next record on (see the module docstring)."""
        old = self.rules
        self.rules = rules
        r = rules
        self._ip[:] = (r.check_prices, r.check_sizes, r.allow_one_sided, r.check_crossed,
                       r.allow_locked, r.check_order, r.tolerance_ns, r.check_jumps,
                       r.jump_rebase_after, r.stale_after_ns, r.alert_interval_ns)  # fmt: skip
        self._fp[:] = (r.jump_sigmas, r.jump_min_bps * 1e-4)
        if r.stale_after_ns != old.stale_after_ns:
            self._meta[_M_NEXT] = _NO_TIME  # rescan at the next accepted record
        slots = self._slots
        ring = slots["returns"]
        if ring.shape[1] != r.jump_window:
            n, ints = slots.count, slots["state"]
            new = slots.reshape("returns", (r.jump_window,), keep=False)
            resize_ring(ring, new, ints, n)
            set_held(ints, n, r.jump_window)
            _rebuild(new, slots["real"], ints, n)

    # ----------------------------------------------------------------- hot path

    def _buffers(self, capacity: int) -> None:
        self._good = np.zeros(capacity, dtype=np.int64)
        self._dead = DEAD_LETTER.empty(capacity)
        self._alerts = ALERT.empty(capacity)

    def update(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate one batch; return ``(clean, dead_letters, alerts)``."""
        if batch.dtype != self.schema.dtype:
            raise ValueError(f"validation kernel for {self.schema.key} records got {batch.dtype}")
        n = len(batch)
        if n > self._good.shape[0]:
            self._buffers(n)
        if self.quote:
            prices = batch["bid_px"], batch["ask_px"], batch["bid_sz"], batch["ask_sz"]
        else:
            prices = batch["price"], batch["price"], batch["size"], batch["size"]
        self._nout[:] = 0
        done = 0
        while True:
            done = _validate(
                batch["instrument_id"], batch["ts_event"], batch["ts_recv"], batch["seq"],
                *prices, self.quote, done, self._slots.table, self._slots.shift,
                self._slots.ids, self._meta, *self._slots.arrays, self._ip, self._fp,
                self._good, self._dead, self._alerts, self._nout, self._counts,
            )  # fmt: skip
            stop = self._meta[_M_STOP]
            if stop == _DONE:
                break
            if stop == _NEED_SLOTS:
                self._slots.grow()
            else:
                old, k = self._alerts, int(self._nout[2])
                self._alerts = ALERT.empty(2 * old.shape[0] + int(self._meta[_M_SLOTS]))
                self._alerts[:k] = old[:k]
        self._meta[_M_OFFSET] += n
        return self._results(batch)

    def _results(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ng, nd, na = (int(k) for k in self._nout)
        clean = batch if ng == len(batch) else batch[self._good[:ng]]
        dead = self._dead[:nd]
        if nd:
            index = dead["reason"] - _BASE
            dead["raw_length"] = self.schema.itemsize
            dead["source_id"] = self.schema.schema_id
            dead["detail"] = _DETAIL[index]
        alerts = self._alerts[:na]
        if na:
            index = alerts["code"] - _BASE
            alerts["severity"] = _SEVERITY[index]
            alerts["text"] = _TEXT[index]
        return clean, dead, alerts

    # ----------------------------------------------------------------- inspection and state

    @property
    def counts(self) -> dict[str, int]:
        """Records passed, per reason (rejections; alert-only reasons count alerts), alerts."""
        out = {"passed": int(self._counts[_PASSED])}
        for reason in ValidationReason:
            out[reason.name.lower()] = int(self._counts[reason - _BASE])
        out["alerts"] = int(self._counts[_ALERTS])
        out["alerts_suppressed"] = int(self._counts[_SUPPRESSED])
        return out

    @property
    def instrument_count(self) -> int:
        return self._slots.count

    def snapshot(self) -> dict:
        """Everything needed to continue exactly: numpy copies and the rules as a dict."""
        ids, rows = self._slots.snapshot()
        return {"quote": self.quote, "rules": asdict(self.rules), "instrument_id": ids, **rows,
                "meta": self._meta.copy(), "counts": self._counts.copy()}  # fmt: skip

    def restore(self, state: dict) -> None:
        """Replace the state with a ``snapshot()``; this kernel's rules then apply (live)."""
        missing = [key for key in _SNAPSHOT_KEYS if key not in state]
        if missing:
            raise ValueError(f"validation snapshot is missing key {missing[0]!r}")
        if bool(state.get("quote", self.quote)) != self.quote:
            raise ValueError("validation snapshot is of the other record kind (trade/quote)")
        rules, saved = self.rules, ValidationRules(**state["rules"])
        slots = self._table(saved.jump_window)
        slots.load(state["instrument_id"], {k: state[k] for k in ("returns", "real", "state")})
        self._slots, self.rules = slots, saved
        self._meta[1:] = state["meta"][1:]
        self._counts[:] = state["counts"]
        self.configure(rules)


# --------------------------------------------------------------------------- warm-up


def warm() -> None:
    """Compile the validation loop for trade and quote batches (fields are strided views)."""
    trades = TRADE.empty(6)
    trades["instrument_id"] = [1, 2, 1, 1, 2, 1]
    trades["ts_event"] = [1, 2, 3, 0, 10**10, 5]
    trades["price"] = [10**9, 2 * 10**9, 0, 10**9, 2 * 10**9, 5 * 10**9]
    trades["size"] = [1, 1, 1, 1, 0, -1]
    quotes = QUOTE.empty(4)
    quotes["instrument_id"] = [1, 1, 2, 2]
    quotes["bid_px"] = [10**9, 2 * 10**9, UNDEF_PRICE, 10**9]
    quotes["ask_px"] = [2 * 10**9, 10**9, 10**9, 2 * 10**9]
    quotes["bid_sz"] = quotes["ask_sz"] = 1
    rules = ValidationRules(jump_window=2, stale_after_ns=5)
    for kernel, batch in ((ValidationKernel(False, rules), trades),
                          (ValidationKernel(True, rules), quotes)):  # fmt: skip
        kernel.update(batch)
        kernel.configure(ValidationRules(jump_window=3))
        kernel.restore(kernel.snapshot())
