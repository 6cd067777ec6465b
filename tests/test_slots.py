"""The shared kernel infrastructure: the per-instrument slot table, the numba options, and the
kernel-backed stage lifecycle (``KernelStage``), checked on the real kernels and stages."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import hftagg
from hftagg.builtins.core.book.stages import Book
from hftagg.builtins.core.indicators.stages import INDICATORS, STAGES, Ema, Sma
from hftagg.kernels.slots import SlotTable, slot_of
from hftagg.records import BOOK_UPDATE, TRADE
from hftagg.stages import KernelStage, StageContext

PACKAGE = Path(hftagg.__file__).parent


def insert(table: SlotTable, ids) -> list[int]:
    """What a kernel does per record: find or insert the id, grow the table when it is full."""
    slots = []
    for key in ids:
        slot = slot_of(np.int64(key), table.table, table.shift, table.ids, table.count)
        if slot < 0:
            table.grow()
            slot = slot_of(np.int64(key), table.table, table.shift, table.ids, table.count)
        if slot == table.count:
            table.meta[table.count_at] += 1
        slots.append(int(slot))
    return slots


# --------------------------------------------------------------------------- slot table


def test_slot_table_finds_every_uint32_id_and_keeps_rows_while_growing():
    table = SlotTable({"x": ((), np.int64), "ring": ((3,), np.float64)}, capacity=4, name="t")
    ids = [0, 0xFFFFFFFF, *range(7, 7 + 300, 3)]

    slots = insert(table, ids)
    table["x"][slots] = np.arange(len(ids)) * 10
    table["ring"][slots, 2] = np.arange(len(ids)) + 0.5
    insert(table, range(10_000, 10_200))  # grows several more times

    assert table.capacity >= 500 and table.count == len(ids) + 200
    assert [table.lookup(i) for i in ids] == list(range(len(ids)))
    assert table["x"][: len(ids)].tolist() == [10 * k for k in range(len(ids))]
    assert table["ring"][: len(ids), 2].tolist() == [k + 0.5 for k in range(len(ids))]
    assert table.lookup(5) == -1
    with pytest.raises(ValueError, match=r"t: instrument_id must be a uint32.*got -1"):
        table.lookup(-1)


def test_slot_table_snapshot_loads_into_a_new_table_with_the_same_lookups():
    table = SlotTable({"x": ((2,), np.int64)}, name="t")
    insert(table, [42, 7, 99])
    table["x"][:3] = [[1, 2], [3, 4], [5, 6]]

    ids, rows = table.snapshot()
    other = SlotTable({"x": ((2,), np.int64)}, name="t")
    other.load(ids, rows)

    assert other.count == 3 and other.lookup(7) == 1
    assert other["x"][other.lookup(99)].tolist() == [5, 6]
    assert insert(other, [1000]) == [3]  # continues after the loaded rows


@pytest.mark.parametrize(
    ("ids", "rows", "message"),
    [
        (np.array([1, 1], np.uint32), {"x": np.zeros((2, 2))}, "distinct uint32 ids"),
        (np.array([1, 2], np.int64), {"x": np.zeros((2, 2))}, "distinct uint32 ids"),
        (np.array([1, 2], np.uint32), {}, "missing state 'x'"),
        (np.array([1, 2], np.uint32), {"x": np.zeros((3, 2))}, r"'x' has shape \(3, 2\)"),
    ],
)
def test_slot_table_refuses_a_bad_snapshot_naming_the_kernel_and_key_and_keeps_its_state(
    ids, rows, message
):
    table = SlotTable({"x": ((2,), np.int64)}, name="EMA")
    insert(table, [5])

    with pytest.raises(ValueError, match=f"EMA snapshot.*{message}"):
        table.load(ids, rows)

    assert table.count == 1 and table.lookup(5) == 0


def test_slot_table_reshape_keeps_what_fits_of_each_row():
    table = SlotTable({"levels": ((2, 3), np.int64)})
    insert(table, [1, 2])
    table["levels"][:2] = np.arange(12).reshape(2, 2, 3)

    wider = table.reshape("levels", (2, 6))

    assert wider.shape == (table.capacity, 2, 6)
    assert wider[1, 1].tolist() == [9, 10, 11, 0, 0, 0]
    assert table.row_shape("levels") == (2, 6)


# --------------------------------------------------------------------------- one place each


def _sources():
    return [(p, p.read_text()) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]


def test_numba_options_are_written_in_one_module():
    """Every ``numba.njit`` takes its options from ``hftagg.kernels.options`` (11 copies before)."""
    offenders = []
    for path, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.keyword) and node.arg in ("cache", "nogil", "error_model"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value == "cache" for k in node.keys
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert [o for o in offenders if not o.startswith("kernels/options.py")] == []


def test_hftagg_warm_registers_every_module_that_has_a_warm_up():
    """``hftagg warm`` must compile every kernel, the decimal parsers in records.fixed included
    (the warm-up plugin used to list hftagg.kernels only, so they compiled in a running pipeline)."""
    from hftagg.plugins.manager import load_plugins

    with_warm = [
        ".".join(("hftagg", *p.relative_to(PACKAGE).with_suffix("").parts))
        for p, text in _sources()
        if "\ndef warm() -> None:" in text or "\ndef warm():" in text
    ]
    host = load_plugins([], entry_points=False)

    assert "hftagg.records.fixed" in with_warm and len(with_warm) >= 10
    assert sorted(host.kernel_warmups) == sorted(with_warm)


def test_no_stage_asks_whether_its_kernel_exists():
    offenders = [str(p) for p, text in _sources() if 'hasattr(self, "kernel")' in text]
    assert offenders == []


# --------------------------------------------------------------------------- kernel stages


def trades(ids, prices) -> np.ndarray:
    batch = TRADE.empty(len(ids))
    batch["instrument_id"] = ids
    batch["price"] = np.asarray(prices, dtype=np.int64) * 1_000_000_000
    batch["size"] = 1
    return batch


def test_ema_rebuilt_with_a_new_seed_uses_it_after_taking_the_old_state():
    """A ``seed`` change rebuilds the stage; the snapshot it restores must not undo the change."""
    old = Ema(window=3, seed="first")
    old.open(StageContext())
    old.process(trades([1, 1], [10, 11]))

    new = Ema(window=5, seed="sma")
    new.restore(old.snapshot())
    new.open(StageContext())
    out = new.process(trades([1, 2, 2], [12, 20, 21]))

    assert (new.kernel.seed, new.kernel.window) == ("sma", 5)
    assert np.isfinite(out["value"][0])  # instrument 1 keeps its EMA
    assert np.isnan(out["value"][1:]).all()  # instrument 2 warms up the TA-Lib way


@pytest.mark.parametrize("stage_type", [Book, Sma, Ema])
def test_a_kernel_stage_restored_before_it_opens_keeps_the_state(stage_type):
    first, second = stage_type(), stage_type()
    if stage_type is Book:  # a clear of instrument 3's book
        batch = BOOK_UPDATE.empty(1)
        batch["instrument_id"], batch["action"], batch["side"] = 3, ord("R"), ord("N")
    else:
        batch = trades([3], [100])
    first.open(StageContext())
    first.process(batch)

    second.restore(first.snapshot())
    second.open(StageContext())

    assert isinstance(second, KernelStage)
    assert second.kernel.instrument_count == 1


def test_every_indicator_row_is_a_registered_stage_with_live_window():
    assert [s.type_name for s in STAGES] == [row.type_name for row in INDICATORS]
    for stage_type in STAGES:
        params = stage_type.Params()
        assert stage_type.__module__ == "hftagg.builtins.core.indicators.stages"
        assert stage_type.Params.__name__ == f"{stage_type.__name__}Params"
        assert isinstance(stage_type(params).kernel, object)
        if "window" in stage_type.Params.model_fields:
            assert stage_type.Params.is_live("window")
