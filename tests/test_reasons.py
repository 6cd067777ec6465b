"""The reason-code registry: one range per owner, every code a stage emits registered once,
one topic convention (``dead_letters.<stage type>``, ``alerts.<stage type>``)."""

from __future__ import annotations

import numpy as np
import pytest

from hftagg.builtins.core.book import kernels as book
from hftagg.builtins.core.risk import kernels as risk
from hftagg.builtins.core.validation import kernels as validation
from hftagg.builtins.protocols import dbn, sbe
from hftagg.builtins.protocols.fix import kernels as fix
from hftagg.builtins.protocols.fix.stages import FixDecode
from hftagg.builtins.protocols.sbe.stages import SbeDecode
from hftagg.plugins import load_plugins
from hftagg.records.catalog import RAW_CHUNK
from hftagg.records.fixed import FixedReason
from hftagg.records.reasons import BUILTIN_RANGES, REASONS, ReasonRegistry, RuntimeReason
from hftagg.stages import StageContext

OWNERS = {"sbe", "fix", "dbn", "book", "validation", "risk", "runtime", "records"}


def _constants(cls) -> dict[str, int]:
    return {k: int(v) for k, v in vars(cls).items() if k.isupper() and isinstance(v, int)}


def test_every_owner_has_a_range_and_ranges_do_not_overlap():
    assert set(BUILTIN_RANGES) == OWNERS
    spans = sorted(BUILTIN_RANGES.values())
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(first > 0 for first, _ in spans)  # 0 is "no reason"


@pytest.mark.parametrize(
    ("owner", "codes"),
    [
        ("sbe", _constants(sbe.Reason)),
        ("dbn", _constants(dbn.Reason)),
        ("fix", {name: code for code, (name, _) in fix.REASONS.items()}),
        ("validation", {r.name: int(r) for r in validation.ValidationReason}),
        ("risk", {r.name: int(r) for r in risk.RiskReason}),
        ("book", {k: v for k, v in vars(book).items() if k.startswith("ALERT_") and k != "ALERT_TEXT"}),
        ("runtime", _constants(RuntimeReason)),
        ("records", {k: v for k, v in vars(FixedReason).items() if isinstance(v, int)}),
    ],
)  # fmt: skip
def test_every_code_an_owner_defines_is_registered_in_its_range(owner, codes):
    assert codes
    first, last = REASONS.range_of(owner)
    for name, code in codes.items():
        reason = REASONS.get(code)
        assert reason is not None, f"{owner} code {name} = {code:#x} is not registered"
        assert reason.owner == owner and first <= code <= last, (name, reason)
    assert {r.code for r in REASONS.codes(owner)} == set(codes.values())


def test_duplicates_out_of_range_codes_and_overlapping_claims_are_refused():
    reg = ReasonRegistry()
    reg.register("sbe", 0x0B01, "truncated", "cut short")
    reg.register("sbe", 0x0B01, "truncated", "cut short")  # the same meaning again: no-op
    with pytest.raises(ValueError, match="registered twice: 'sbe.truncated' and 'sbe.other'"):
        reg.register("sbe", 0x0B01, "other", "something else")
    with pytest.raises(ValueError, match="outside 'fix'"):
        reg.register("fix", 0x0B02, "bad", "not FIX's range")
    with pytest.raises(KeyError, match="no reason range claimed by 'nobody'"):
        reg.register("nobody", 0x2000, "x")
    reg.claim("venue_a", 0x1000, 0x10FF)
    with pytest.raises(ValueError, match="overlaps 'venue_a'"):
        reg.claim("venue_b", 0x10F0, 0x11FF)
    with pytest.raises(ValueError, match="belong to hftagg's own owners"):
        reg.claim("venue_c", 0x0E00, 0x0EFF)
    assert reg.name(0x0B01) == "sbe.truncated"
    assert reg.name(0x0B7F) == "sbe.code_0xb7f" and reg.name(0x0A00) == "unknown.code_0xa00"


def _raw(data: bytes) -> np.ndarray:
    chunks = RAW_CHUNK.empty(1)
    chunks["data"][0, : len(data)] = np.frombuffer(data, np.uint8)
    chunks["length"] = len(data)
    return chunks


def test_every_code_the_decoder_stages_emit_is_registered_to_them():
    rng = np.random.default_rng(3)
    garbage = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (5, 300, 3000)]
    fix_bad = b"8=FIX.4.4\x019=5\x0135=X\x0110=000\x01" + b"8=FIX.4.4\x019=x\x01"
    seen: dict[str, set[int]] = {"sbe": set(), "fix": set()}
    for owner, stage in (("sbe", SbeDecode()), ("fix", FixDecode())):
        stage.open(StageContext())
        outs = [stage.process(_raw(data)) for data in [*garbage, fix_bad]]
        outs.append(stage.flush_pending() if owner == "sbe" else {})
        for out in outs:
            if "dead_letters" in out:
                seen[owner] |= set(out["dead_letters"]["reason"].tolist())
    for owner, codes in seen.items():
        assert codes, owner
        assert {REASONS.get(c).owner for c in codes} == {owner}, codes


def test_dead_letter_and_alert_ports_are_named_after_their_stage_type():
    host = load_plugins([], entry_points=False)
    checked = 0
    for type_name, cls in host.stage_types.items():
        for port in cls.outputs.values():
            if port.schema == "dead_letter":
                assert port.topic == f"dead_letters.{type_name}", (type_name, port.topic)
                checked += 1
            elif port.schema == "alert":
                assert port.topic == f"alerts.{type_name}", (type_name, port.topic)
                checked += 1
    assert checked >= 10


def test_a_plugin_claims_a_range_and_registers_its_codes_at_import(tmp_path):
    (tmp_path / "venue_reasons.py").write_text(
        "from hftagg.records.reasons import REASONS\n"
        "REASONS.claim('venue_x', 0x5000, 0x50FF)\n"
        "BAD_TICK = REASONS.register('venue_x', 0x5001, 'bad_tick', 'price off the tick grid')\n"
    )
    host = load_plugins([tmp_path], entry_points=False)
    assert next(r for r in host.records if r.name == "venue_reasons").error is None
    assert REASONS.name(0x5001) == "venue_x.bad_tick"
    assert REASONS.owner_of(0x50FF) == "venue_x"


def test_dead_letter_metrics_are_labelled_with_the_reason_name():
    from hftagg.records.catalog import DEAD_LETTER
    from hftagg.telemetry.core import Telemetry

    batch = DEAD_LETTER.empty(3)
    batch["reason"] = [sbe.Reason.BAD_FRAME, sbe.Reason.BAD_FRAME, 0x0B7F]
    tel = Telemetry()
    tel.dead_lettered("dead_letters.sbe_decode", batch)
    assert tel.dead_letters == {
        ("dead_letters.sbe_decode", "sbe.bad_frame"): 2,
        ("dead_letters.sbe_decode", "sbe.code_0xb7f"): 1,  # unregistered: still counted
    }
