"""Built-in plugin: the pre-trade risk check stage, ``risk_checks``.

Inputs: ``orders`` (``orders.new``, ``order``), ``quotes`` (``md.quotes``, ``quote``: the mid
for the price band, market orders and the P&L marks) and, with ``position_source = "fills"``,
``fills`` (``orders.fills``, ``fill``). Outputs, per order batch:

- ``accepted`` (``orders.accepted``, ``order``): orders that passed, ``status = ACCEPTED`` (1);
- ``rejected`` (``orders.rejected``, ``order``): the others, ``status`` = the
  :class:`RiskReason` code of the first check they failed;
- ``alerts`` (``alerts.risk_checks``, ``alert``): one per rejected order (code = reason, text,
  value), and one per ignored bad fill.

Checks, in order (:mod:`hftagg.builtins.core.risk.kernels` states them exactly): ``INVALID_ORDER`` (side,
type ``L``/``M``, size, price), ``MAX_ORDER_SIZE``, ``NO_MARKET_DATA`` (no two-sided quote
yet, for a market order or a limit order under the price band), ``PRICE_BAND`` (limit price more
than ``price_band_bps`` from the mid), ``MAX_NOTIONAL`` (price times size, in units),
``MAX_POSITION`` (position after the order, if filled), ``DAILY_LOSS`` (account P&L since the
trading day began below ``-max_daily_loss``: only orders that reduce a position pass). A limit
of 0 turns its check off; every limit is live.

Position source (``position_source``, restart): ``"orders"`` (default; needs no fill feed)
counts every accepted order as filled at once at its price (market orders at the mid);
``"fills"`` moves positions and cash only on ``fill`` records, so orders accepted but not yet
filled do not count against ``max_position``. Either way the P&L for the daily loss limit is
cash plus positions marked at the last quote mid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import field_validator

from hftagg.builtins.core.risk.kernels import (
    OrderStatus,
    OrderType,
    RiskKernel,
    RiskLimits,
    RiskReason,
)
from hftagg.hookspecs import hookimpl
from hftagg.records.fixed import QTY_DECIMALS, FixedPointError, to_fixed
from hftagg.stages import KernelStage, Params, Port, live, restart

__all__ = ["OrderStatus", "OrderType", "RiskChecks", "RiskChecksParams", "RiskReason"]

_SECS = 1_000_000_000


class RiskChecksParams(Params):
    max_order_size: float = live(
        10_000.0, ge=0, le=9.2e10, description="largest order size in units (<= 8 decimals); 0 off"
    )
    max_position: float = live(
        50_000.0, ge=0, le=9.2e10, description="largest absolute position per instrument in "
        "units (<= 8 decimals); 0 off",
    )  # fmt: skip
    max_notional: float = live(
        1_000_000.0, ge=0.0, le=1e18, description="largest price * size (units) per order; 0 off"
    )
    price_band_bps: float = live(
        500.0, ge=0.0, le=1e6, description="largest limit price distance from the mid; 0 off"
    )
    max_daily_loss: float = live(
        100_000.0, ge=0.0, le=1e18, description="account loss since the day start that stops "
        "position-increasing orders; 0 off",
    )  # fmt: skip
    trading_day_offset_secs: int = live(
        0, gt=-86_400, lt=86_400, description="trading day starts at UTC midnight + this"
    )
    position_source: Literal["orders", "fills"] = restart(
        "orders", description="positions from accepted orders (assumed filled) or from fills"
    )

    @field_validator("max_order_size", "max_position")
    @classmethod
    def _a_quantity(cls, value: float, info) -> float:
        try:
            to_fixed(repr(float(value)), QTY_DECIMALS, field=info.field_name)
        except FixedPointError as exc:
            raise ValueError(str(exc)) from None
        return value


def _limits(params: RiskChecksParams) -> RiskLimits:
    return RiskLimits(
        max_order_size=params.max_order_size,
        max_position=params.max_position,
        max_notional=float(params.max_notional),
        price_band_bps=float(params.price_band_bps),
        max_daily_loss=float(params.max_daily_loss),
        day_offset_ns=params.trading_day_offset_secs * _SECS,
        position_from_orders=params.position_source == "orders",
    )


class RiskChecks(KernelStage):
    type_name = "risk_checks"
    Params = RiskChecksParams
    inputs = {
        "orders": Port("order", "orders.new", "orders to check"),
        "quotes": Port("quote", "md.quotes", "best bid/offer: price band, market orders, marks"),
    }
    outputs = {
        "accepted": Port("order", "orders.accepted", "orders that passed, status ACCEPTED"),
        "rejected": Port("order", "orders.rejected", "orders that failed, status = reason code"),
        "alerts": Port("alert", "alerts.risk_checks", "one per rejected order or bad fill"),
    }

    @classmethod
    def ports(cls, params: RiskChecksParams):
        inputs, outputs = super().ports(params)
        if params.position_source == "fills":
            inputs["fills"] = Port("fill", "orders.fills", "executions: positions and cash")
        return inputs, outputs

    def make_kernel(self, params: RiskChecksParams) -> RiskKernel:
        return RiskKernel(_limits(params))

    def configure_kernel(self, kernel: RiskKernel, params: RiskChecksParams) -> None:
        kernel.configure(_limits(params))

    @property
    def counts(self) -> dict[str, int]:
        """Orders accepted and rejected per reason, fills applied, bad fills, quotes seen."""
        return self.kernel.counts

    def process(self, batch: np.ndarray, port: str) -> dict[str, np.ndarray] | None:
        if port == "orders":
            accepted, rejected, alerts = self.kernel.orders(batch)
            return {"accepted": accepted, "rejected": rejected, "alerts": alerts}
        if port == "fills":
            return {"alerts": self.kernel.fills(batch)}
        self.kernel.quotes(batch)
        return None


@hookimpl
def hftagg_register_stage_types(register):
    register(RiskChecks)
