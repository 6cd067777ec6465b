"""Dead-letter reason codes of the DBN decoder (the ``reason`` field of ``dead_letter`` records).

Codes 0x0D00..0x0DFF belong to DBN in :data:`hftagg.records.reasons.REASONS`.
"""

from __future__ import annotations

from hftagg.records.reasons import REASONS

__all__ = ["REASON_TEXT", "Reason"]


class Reason:
    """Why DBN input could not be used."""

    BAD_MAGIC = 0x0D01  # the file is neither DBN nor zstd-compressed DBN
    BAD_VERSION = 0x0D02  # a DBN version other than 1, 2, 3
    BAD_METADATA = 0x0D03  # the metadata block is inconsistent (records are still read)
    TRUNCATED = 0x0D04  # the data ends inside the metadata or a record
    BAD_LENGTH = 0x0D05  # a record length below the 16-byte header: the rest is unreadable
    SHORT_RECORD = 0x0D06  # a record shorter than its rtype's layout (skipped)
    UNKNOWN_RTYPE = 0x0D07  # an rtype DBN does not define (skipped by its length)
    UNMAPPED_RTYPE = 0x0D08  # a DBN rtype hftagg does not map (status, system, error, ...)
    DECOMPRESS = 0x0D09  # the zstd stream is corrupt
    IO_ERROR = 0x0D0A  # the file could not be opened or read


REASON_TEXT = {
    Reason.BAD_MAGIC: "bad magic",
    Reason.BAD_VERSION: "unsupported DBN version",
    Reason.BAD_METADATA: "bad metadata",
    Reason.TRUNCATED: "truncated",
    Reason.BAD_LENGTH: "bad record length",
    Reason.SHORT_RECORD: "record shorter than its layout",
    Reason.UNKNOWN_RTYPE: "unknown rtype",
    Reason.UNMAPPED_RTYPE: "rtype not mapped",
    Reason.DECOMPRESS: "corrupt zstd stream",
    Reason.IO_ERROR: "I/O error",
}

REASONS.register_all("dbn", {code: (name.lower(), REASON_TEXT[code])
                             for name, code in vars(Reason).items() if name.isupper()})  # fmt: skip
