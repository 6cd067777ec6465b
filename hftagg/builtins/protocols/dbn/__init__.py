"""Databento Binary Encoding (DBN) versions 1, 2 and 3: metadata, record layouts, decoding.

- :mod:`~hftagg.builtins.protocols.dbn.metadata`: the metadata header (it differs per version);
- :mod:`~hftagg.builtins.protocols.dbn.layouts`: record dtypes per rtype and version;
- :mod:`~hftagg.builtins.protocols.dbn.decoder`: incremental, vectorised decoding to hftagg batches,
  bad input to dead letters (reasons in :mod:`~hftagg.builtins.protocols.dbn.reasons`);
- :mod:`~hftagg.builtins.protocols.dbn.mapping`: which hftagg record each DBN record becomes;
- :mod:`~hftagg.builtins.protocols.dbn.reader`: plain and zstd files, read in bounded pieces.

The ``dbn_replay`` source stage (``hftagg.builtins.protocols.dbn.replay``) replays files with it.
"""

from hftagg.builtins.protocols.dbn.decoder import DEAD_LETTER_PORT, DbnDecoder
from hftagg.builtins.protocols.dbn.layouts import LAYOUTS, RType, record_dtype
from hftagg.builtins.protocols.dbn.mapping import PORTS, SCHEMA_PORTS, Counters
from hftagg.builtins.protocols.dbn.metadata import DbnFormatError, DbnMetadata, parse_metadata
from hftagg.builtins.protocols.dbn.reader import DbnFile, decode_file, expand_paths, read_metadata
from hftagg.builtins.protocols.dbn.reasons import REASON_TEXT, Reason
from hftagg.builtins.protocols.dbn.records import (
    DBN_SCHEMAS,
    IMBALANCE,
    INSTRUMENT_DEFINITION,
    STATISTICS,
    STATUS,
)

__all__ = [
    "DBN_SCHEMAS",
    "DEAD_LETTER_PORT",
    "IMBALANCE",
    "INSTRUMENT_DEFINITION",
    "LAYOUTS",
    "PORTS",
    "REASON_TEXT",
    "SCHEMA_PORTS",
    "STATISTICS",
    "STATUS",
    "Counters",
    "DbnDecoder",
    "DbnFile",
    "DbnFormatError",
    "DbnMetadata",
    "RType",
    "Reason",
    "decode_file",
    "expand_paths",
    "parse_metadata",
    "read_metadata",
    "record_dtype",
]
