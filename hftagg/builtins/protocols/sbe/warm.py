"""Warm-up for the SBE kernels (they live in :mod:`hftagg.builtins.protocols.sbe.kernels`).

``warm()`` encodes and decodes a few messages of hftagg's market-data schema (scan, record
gather), of a schema with nested groups and var data (generic gather), in every framing, so the
on-disk numba cache holds every specialisation the stages use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["warm"]

_GROUPS_XML = """<?xml version="1.0"?>
<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="warm" id="9" version="0"
    byteOrder="littleEndian">
  <types>
    <composite name="messageHeader"><type name="blockLength" primitiveType="uint16"/>
      <type name="templateId" primitiveType="uint16"/><type name="schemaId" primitiveType="uint16"/>
      <type name="version" primitiveType="uint16"/></composite>
    <composite name="groupSizeEncoding"><type name="blockLength" primitiveType="uint16"/>
      <type name="numInGroup" primitiveType="uint16"/></composite>
    <composite name="varDataEncoding"><type name="length" primitiveType="uint32"/>
      <type name="varData" primitiveType="uint8" length="0"/></composite>
  </types>
  <sbe:message name="M" id="1">
    <field name="a" id="1" type="int64"/>
    <group name="g" id="2"><field name="b" id="3" type="int32"/>
      <group name="h" id="4"><field name="c" id="5" type="int8"/></group></group>
    <data name="d" id="6" type="varDataEncoding"/>
  </sbe:message>
</sbe:messageSchema>"""


def warm() -> None:
    from hftagg.builtins.protocols import BUILTIN_DEFINITIONS
    from hftagg.builtins.protocols.sbe import SbeCodec, frame, parse_schema
    from hftagg.builtins.protocols.sbe.kernels import compact_chunks
    from hftagg.builtins.protocols.sbe.records import RecordDecoder, RecordEncoder
    from hftagg.records.catalog import BOOK_UPDATE, MBP10, RAW_CHUNK, TRADE

    path = BUILTIN_DEFINITIONS / "sbe" / "hftagg-md.xml"
    codec = SbeCodec(parse_schema(path))
    decoder = RecordDecoder(codec, {s.name: s for s in (TRADE, BOOK_UPDATE, MBP10)})
    for framing in ("length2", "sofh"):
        buf = RecordEncoder(codec, framing).encode("trade", TRADE.empty(2))
        decoder.records(codec.scan(buf, framing))
        codec.scan(buf, framing, final=False)
        codec.decode(buf, framing, (np.array([0]), np.array([len(buf)])))
    generic = SbeCodec(parse_schema(_GROUPS_XML))
    msg = generic.encode("M", {"a": 1, "g": [{"b": 2, "h": [{"c": 3}]}], "d": b"x"})
    generic.decode(frame([msg, msg[:5]]))
    chunks = RAW_CHUNK.empty(1)
    compact_chunks(chunks["data"], chunks["length"].astype(np.int64),
                   np.zeros(16, dtype=np.uint8))  # fmt: skip
