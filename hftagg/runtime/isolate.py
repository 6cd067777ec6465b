"""``on_error = "isolate"``: a stage that raises is fenced off instead of stopping the pipeline.

By default a stage that raises stops the pipeline (crash-only: a broken invariant fails fast).
A stage configured with ``on_error = "isolate"`` (any ``[stages.<id>]``, ``[data_sources.<n>]``
or ``[delivery]``) is isolated instead:

- the input batch it raised on becomes dead letters on ``dead_letters.isolated.<stage id>``
  (a topic of the
  ``dead_letter`` schema the graph declares for it, so a sink can store or publish it): one
  record per input record, with the input's header (``ts_event``, ``ts_recv``, ``seq``,
  ``instrument_id``) when it has one, ``reason = RuntimeReason.STAGE_FAILED`` (0x0101, in the
  runtime's range of :mod:`hftagg.records.reasons`), ``raw_offset`` its stream
  offset in the input topic, ``raw_length`` its record size, ``source_id`` the CRC-32 of the input
  topic's name and ``detail`` the exception (``ValueError: ...``, cut to 64 bytes);
- the stage is marked failed from then on (status ``FAILED``, the summary's ``state``, the
  ``hftagg_stage_failed`` metric) with its count of failed batches and the last error; the
  first failure is logged with its traceback, later ones at most once a second per stage;
- it keeps receiving the batches that follow (a single poison batch does not take it out for
  good), and the rest of the pipeline runs on. A source that raises has no input batch: it is
  marked failed and its thread ends.

Replacing the stage by a live change (fixed plugin code, new parameters) clears the mark.
"""

from __future__ import annotations

import logging
import time
import zlib

import numpy as np

from hftagg.records.catalog import DEAD_LETTER
from hftagg.records.reasons import RuntimeReason
from hftagg.records.schema import HEADER_FIELDS

__all__ = ["STAGE_RAISED", "FailureLog", "dead_letters_for"]

log = logging.getLogger("hftagg.isolate")

#: ``dead_letter.reason`` for input an isolated stage raised on
STAGE_RAISED = RuntimeReason.STAGE_FAILED


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def dead_letters_for(batch: np.ndarray, offset: int, topic: str, exc: BaseException) -> np.ndarray:
    """One ``dead_letter`` record per record of ``batch`` (read at ``offset`` of ``topic``)."""
    n = len(batch)
    dead = DEAD_LETTER.empty(n)
    names = batch.dtype.names or ()
    for name, _ in HEADER_FIELDS:
        if name in names:
            dead[name] = batch[name]
    dead["reason"] = STAGE_RAISED
    dead["raw_offset"] = np.arange(offset, offset + n, dtype=np.uint64)
    dead["raw_length"] = batch.dtype.itemsize
    dead["source_id"] = zlib.crc32(topic.encode())
    dead["detail"] = describe(exc).encode("utf-8", "replace")[:64]
    return dead


class FailureLog:
    """Logs a stage's first failure with its traceback, then at most one line a second."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def failed(self, stage_id: str, exc: BaseException, failures: int, where: str) -> None:
        now = time.monotonic()
        last = self._last.get(stage_id)
        if last is None:
            log.error(
                'stage %r raised; on_error = "isolate": %s, the rest runs on',
                stage_id,
                where,
                exc_info=exc,
            )
        elif now - last >= 1.0:
            quiet = self._quiet.pop(stage_id, 0)
            log.warning(
                "stage %r raised again (%d failed batches so far%s): %s",
                stage_id,
                failures,
                f", {quiet} not logged" if quiet else "",
                describe(exc),
            )
        else:
            self._quiet[stage_id] = self._quiet.get(stage_id, 0) + 1
            return
        self._last[stage_id] = now
