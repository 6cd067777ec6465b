"""The write-ahead log (``[durability] wal = true``): the on-disk format and its reader/writer.

The runtime side (append before stages see a batch, offset commit, replay) lives in
:mod:`hftagg.runtime.durability`; this package is the log itself (:mod:`.log`).
"""

from hftagg.builtins.storage.wal.log import (
    FSYNC_POLICIES,
    Cut,
    Recovery,
    StreamInfo,
    WriteAheadLog,
)

__all__ = ["FSYNC_POLICIES", "Cut", "Recovery", "StreamInfo", "WriteAheadLog"]
