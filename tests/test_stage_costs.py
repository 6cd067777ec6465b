"""The cheaper paths of the default pipeline's stages give exactly what the plain ones gave.

The simulator draws book depths in compiled code from numpy's own doubles; the SBE encoder
copies byte runs over a template frame instead of assigning fields one by one. Both must be
bit-for-bit what numpy's geometric and a field-by-field encoding produce.
"""

from __future__ import annotations

import numpy as np

from hftagg.builtins.protocols import find_definition
from hftagg.builtins.protocols.sbe import SbeCodec, parse_schema
from hftagg.builtins.protocols.sbe.records import RecordEncoder
from hftagg.builtins.sources.simulator.kernels import geometric_levels, geometric_matches_numpy
from hftagg.builtins.sources.simulator.stages import DEPTH_CAP, DEPTH_P, Simulator
from hftagg.records.catalog import TRADE


def test_compiled_depth_draws_are_numpys_geometric_exactly():
    seed = np.random.SeedSequence(7)
    expected = np.random.Generator(np.random.PCG64(seed)).geometric(DEPTH_P, 200_000)
    got = np.empty(200_000, dtype=np.int64)
    geometric_levels(
        np.random.Generator(np.random.PCG64(seed)).random(200_000), DEPTH_P, np.int64(9), got
    )
    assert np.array_equal(got, np.minimum(expected - 1, DEPTH_CAP))
    assert geometric_matches_numpy(DEPTH_P) and not geometric_matches_numpy(0.2)  # inversion


def sim_batches(n: int) -> dict:
    sim = Simulator(rate=0, batch_records=n, seed=3, trade_probability=0.3)
    sim.open(None)
    return sim.next_batch()


def field_by_field(encoder: RecordEncoder, record: str, batch: np.ndarray) -> np.ndarray:
    """What the encoder did before: null body, then each field assigned by name."""
    codec = encoder.codec
    msg = encoder.messages[record]
    frames = codec.frame_array(msg, len(batch), encoder.framing)
    body = frames["body"].view(codec.root_dtype(msg.id))
    node = codec.nodes[codec.slot_root[codec.slot_of[msg.id]]]
    body[...] = node.null.view(body.dtype)[0]
    for name in body.dtype.names:
        if name in batch.dtype.names:
            body[name] = batch[name]
    return frames.view(np.uint8)


def test_encoding_by_byte_runs_matches_field_by_field_for_both_framings():
    codec = SbeCodec(parse_schema(find_definition("sbe/hftagg-md.xml")))
    batches = sim_batches(2000)
    for framing in ("length2", "sofh"):
        encoder = RecordEncoder(codec, framing)
        for record, key in (("trade", "trades"), ("book_update", "book")):
            batch = batches[key]
            assert len(batch) > 100
            reused = np.full(len(batch) * 200, 0xAB, dtype=np.uint8)  # stale bytes everywhere
            for out in (None, reused):
                got = encoder.encode(record, batch, out=out)
                assert np.array_equal(got, field_by_field(encoder, record, batch)), (
                    framing,
                    record,
                )


def test_a_record_missing_fields_encodes_their_null_values():
    codec = SbeCodec(parse_schema(find_definition("sbe/hftagg-md.xml")))
    encoder = RecordEncoder(codec)
    full = sim_batches(50)["trades"]
    names = [n for n in TRADE.dtype.names if n != "seq"]  # a dtype without one body field
    partial = np.empty(len(full), dtype=[(n, full.dtype[n]) for n in names])
    for name in names:
        partial[name] = full[name]
    got = encoder.encode("trade", partial)
    assert np.array_equal(got, field_by_field(encoder, "trade", partial))
