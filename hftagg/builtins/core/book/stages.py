"""Built-in plugin: order book stages, L2 (market-by-price) and L3 (market-by-order).

``book`` consumes ``book_update`` records (``md.book``) and keeps one book per instrument, of any
depth, in compiled code (:class:`hftagg.builtins.core.book.kernels.BookKernel`, whose docstring states the
semantics exactly). It publishes on three ports:

- ``bbo`` (``md.bbo``, ``quote``): the top of book after every update that changed it;
- ``mbp10`` (``md.mbp10``, ``mbp10``): the ten best levels per side, on every change to them
  (``mbp10_on = "change"``), at most once per ``interval_ms`` of event time
  (``"interval"``), or never (``"off"``);
- ``alerts`` (``alerts.book``; ``alerts.mbo_book`` for ``mbo_book``, ``alert``): sequence gaps, crossed/locked books, deletes of
  unknown levels, bad records.

Snapshots and recovery: a clear (``action = 'R'``) empties the book and makes it valid; with the
DBN ``F_SNAPSHOT`` flag (0x20) it starts a snapshot whose records (also flagged) are applied
silently until the one with ``F_LAST`` (0x80) or the first unflagged record, after which the
rebuilt top of book and levels are published. After a sequence gap the instrument's book is
invalid and nothing is published for it until such a clear arrives.

``mbo_book`` consumes ``mbo`` records (``md.mbo``; the schema is in the record catalog), keeps
every resting order by id (:class:`hftagg.builtins.core.book.mbo.MboBookKernel`, DBN MBO semantics),
aggregates them to price levels and publishes the same three outputs, its mbp10 records with order
counts.

Output records copy ``ts_event``/``ts_recv``/``instrument_id`` from the update that triggered
them; their ``seq`` counts that output per instrument from 0, without gaps.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from hftagg.builtins.core.book.kernels import BookKernel
from hftagg.builtins.core.book.mbo import MboBookKernel
from hftagg.hookspecs import hookimpl
from hftagg.stages import KernelStage, Params, Port, live

__all__ = ["Book", "BookParams", "MboBook"]

_MS = 1_000_000


class BookParams(Params):
    mbp10_on: Literal["change", "interval", "off"] = live(
        "change", description="publish mbp10 on every top-10 change, per interval, or never"
    )
    interval_ms: int = live(
        100, ge=1, le=86_400_000, description="least event time between mbp10s in interval mode"
    )
    alert_interval_ms: int = live(
        1000, ge=0, le=86_400_000,
        description="least time between unknown-level alerts per instrument; 0 = every one",
    )  # fmt: skip


class Book(KernelStage):
    type_name = "book"
    Params = BookParams
    inputs = {"input": Port("book_update", "md.book", "market-by-price incremental updates")}
    outputs = {
        "bbo": Port("quote", "md.bbo", "top of book after each change to it"),
        "mbp10": Port("mbp10", "md.mbp10", "ten levels per side, on change or per interval"),
        "alerts": Port("alert", "alerts.book", "gaps, crossed books, unknown levels"),
    }

    Kernel: ClassVar[type[BookKernel]] = BookKernel

    def make_kernel(self, params: BookParams) -> BookKernel:
        return self.Kernel(**self._kernel_args(params))

    def configure_kernel(self, kernel: BookKernel, params: BookParams) -> None:
        kernel.configure(**self._kernel_args(params))

    @staticmethod
    def _kernel_args(params: BookParams) -> dict:
        return {
            "mbp10_on": params.mbp10_on,
            "interval_ns": params.interval_ms * _MS,
            "alert_interval_ns": params.alert_interval_ms * _MS,
        }

    def process(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        quotes, mbp10, alerts = self.kernel.update(batch)
        return {"bbo": quotes, "mbp10": mbp10, "alerts": alerts}


class MboBook(Book):
    type_name = "mbo_book"
    inputs = {"input": Port("mbo", "md.mbo", "market-by-order events")}
    outputs = {**Book.outputs,
               "alerts": Port("alert", "alerts.mbo_book", "gaps, crossed books, unknown orders")}  # fmt: skip
    Kernel = MboBookKernel


@hookimpl
def hftagg_register_stage_types(register):
    register(Book)
    register(MboBook)
