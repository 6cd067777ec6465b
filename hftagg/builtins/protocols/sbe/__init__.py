"""Simple Binary Encoding (FIX SBE 1.0): schemas, runtime codecs, compiled decoding, encoding.

codec = SbeCodec(parse_schema("protocols/sbe/hftagg-md.xml"))
decoded = codec.decode(buffer, framing="length2")   # per-template structured arrays
"""

from hftagg.builtins.protocols.sbe.codec import FRAMINGS, Decoded, SbeCodec, TemplateBatch, frame
from hftagg.builtins.protocols.sbe.kernels import Reason
from hftagg.builtins.protocols.sbe.schema import MessageSchema, parse_schema

__all__ = [
    "FRAMINGS",
    "Decoded",
    "MessageSchema",
    "Reason",
    "SbeCodec",
    "TemplateBatch",
    "frame",
    "parse_schema",
]
