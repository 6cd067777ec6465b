"""Built-in plugin: market-data validation stages, ``validate_trades`` and ``validate_quotes``.

Each stage checks every record per instrument in compiled code
(:class:`hftagg.builtins.core.validation.kernels.ValidationKernel`, whose docstring states every rule exactly)
and splits its input three ways; nothing is dropped silently:

- ``output`` (``md.trades_clean`` / ``md.quotes_clean``): the records that passed, unchanged and
  in input order;
- ``dead_letters`` (``dead_letters.validate_trades`` / ``dead_letters.validate_quotes``, ``dead_letter``):
  one per rejected record, its header copied, ``reason`` a :class:`ValidationReason` code,
  ``detail`` a short text, ``raw_offset`` its index in the stage's input stream;
- ``alerts`` (``alerts.validate_trades`` / ``alerts.validate_quotes``, ``alert``): rejections (throttled
  per instrument and reason by ``alert_interval_ms``), stale instruments (once per episode) and
  their recovery, and jump re-baselining.

Rules, in the order they are checked (the first broken one is the reason):

- ``UNDEFINED_PRICE``: price is ``UNDEF_PRICE`` (the fixed-point "non-finite"); for quotes an
  empty side is allowed when ``allow_one_sided``;
- ``NON_POSITIVE_PRICE``: price <= 0;
- ``ZERO_SIZE``: size 0 or negative (of a present quote side);
- ``CROSSED`` / ``LOCKED``: quotes with bid > ask / bid == ask (unless ``allow_locked``);
- ``OUT_OF_ORDER``: ts_event more than ``out_of_order_tolerance_us`` before the instrument's
  newest accepted ts_event;
- ``PRICE_JUMP``: |log return| > max(``jump_sigmas`` x the std of the instrument's last
  ``jump_window`` returns, ``jump_min_bps``); no check until the window is full (warm-up);
  after ``jump_rebase_after`` consecutive jumps the next one is accepted as the new level
  (``JUMP_REBASED`` alert; the warm-up starts again);
- ``STALE`` (alert only, never a rejection): no accepted update for more than
  ``stale_after_ms`` of event time behind the newest accepted ts_event of the stream; one alert
  per episode, ended by the instrument's next accepted record (``STALE_RECOVERED``).

Every parameter is live (applied from the next batch by ``reconfigure``). ``counts`` is a dict
of records passed and rejected per reason, alert-only events and alerts emitted / suppressed.
State (per-instrument times, returns, flags, counters) is carried by ``snapshot``/``restore``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hftagg.builtins.core.validation.kernels import (
    ValidationKernel,
    ValidationReason,
    ValidationRules,
)
from hftagg.hookspecs import hookimpl
from hftagg.stages import KernelStage, Params, Port, live

__all__ = [
    "ValidateQuotes",
    "ValidateQuotesParams",
    "ValidateTrades",
    "ValidateTradesParams",
    "ValidationReason",
]

_MS = 1_000_000
_DAY_MS = 86_400_000


class ValidateTradesParams(Params):
    check_prices: bool = live(True, description="reject undefined, zero and negative prices")
    check_sizes: bool = live(True, description="reject zero sizes")
    check_order: bool = live(True, description="reject ts_event going back per instrument")
    out_of_order_tolerance_us: int = live(
        0, ge=0, le=3_600_000_000, description="how far ts_event may go back before rejection"
    )
    check_jumps: bool = live(True, description="reject price jumps beyond k sigma")
    jump_sigmas: float = live(10.0, ge=0.0, le=1e6, description="k: jump threshold in sigmas")
    jump_window: int = live(50, ge=2, le=100_000, description="returns in the rolling sigma")
    jump_min_bps: float = live(
        1.0, ge=0.0, le=1e6, description="least jump threshold in basis points (floor on k sigma)"
    )
    jump_rebase_after: int = live(
        5, ge=1, le=1_000_000, description="consecutive jumps after which the next is the new level"
    )
    stale_after_ms: int = live(
        5000, ge=0, le=_DAY_MS, description="event time without update before a stale alert; 0 off"
    )
    alert_interval_ms: int = live(
        1000, ge=0, le=_DAY_MS,
        description="least ts_recv time between alerts per instrument and reason; 0 = every one",
    )  # fmt: skip


class ValidateQuotesParams(ValidateTradesParams):
    check_crossed: bool = live(True, description="reject crossed quotes (bid > ask)")
    allow_locked: bool = live(False, description="accept locked quotes (bid == ask)")
    allow_one_sided: bool = live(True, description="accept quotes with an empty side")


def _rules(params: ValidateTradesParams) -> ValidationRules:
    return ValidationRules(
        check_prices=params.check_prices,
        check_sizes=params.check_sizes,
        allow_one_sided=getattr(params, "allow_one_sided", True),
        check_crossed=getattr(params, "check_crossed", False),
        allow_locked=getattr(params, "allow_locked", False),
        check_order=params.check_order,
        tolerance_ns=params.out_of_order_tolerance_us * 1000,
        check_jumps=params.check_jumps,
        jump_sigmas=float(params.jump_sigmas),
        jump_window=params.jump_window,
        jump_min_bps=float(params.jump_min_bps),
        jump_rebase_after=params.jump_rebase_after,
        stale_after_ns=params.stale_after_ms * _MS,
        alert_interval_ns=params.alert_interval_ms * _MS,
    )


class ValidateTrades(KernelStage):
    type_name = "validate_trades"
    Params = ValidateTradesParams
    inputs = {"input": Port("trade", "md.trades", "trades to validate")}
    outputs = {
        "output": Port("trade", "md.trades_clean", "trades that passed every rule, unchanged"),
        "dead_letters": Port("dead_letter", "dead_letters.validate_trades", "rejected trades"),
        "alerts": Port("alert", "alerts.validate_trades", "rejections, stale instruments, rebases"),
    }
    _QUOTE: ClassVar[bool] = False

    def make_kernel(self, params: ValidateTradesParams) -> ValidationKernel:
        return ValidationKernel(self._QUOTE, _rules(params))

    def configure_kernel(self, kernel: ValidationKernel, params: ValidateTradesParams) -> None:
        kernel.configure(_rules(params))

    @property
    def counts(self) -> dict[str, int]:
        """Records passed and rejected per reason, alert-only events, alerts emitted/suppressed."""
        return self.kernel.counts

    def process(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        clean, dead, alerts = self.kernel.update(batch)
        return {"output": clean, "dead_letters": dead, "alerts": alerts}


class ValidateQuotes(ValidateTrades):
    type_name = "validate_quotes"
    Params = ValidateQuotesParams
    inputs = {"input": Port("quote", "md.quotes", "best bid/offer records to validate")}
    outputs = {
        "output": Port("quote", "md.quotes_clean", "quotes that passed every rule, unchanged"),
        "dead_letters": Port("dead_letter", "dead_letters.validate_quotes", "rejected quotes"),
        "alerts": Port("alert", "alerts.validate_quotes", "rejections, stale instruments, rebases"),
    }
    _QUOTE = True


@hookimpl
def hftagg_register_stage_types(register):
    register(ValidateTrades)
    register(ValidateQuotes)
