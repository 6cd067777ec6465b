"""DBN decoding: records/s of hftagg's decoder against databento-dbn, same bytes, one run.

The records of a shared test file (``../shared/data/dbn``) are repeated in memory to a large
stream (mbp-10: 1 M records, 368 MB; mbo: 3 M records; --quick: a tenth) behind the file's
metadata, with increasing ``ts_recv``/``sequence``. Each rate is the best of a few runs.

- hftagg: ``DbnDecoder.feed`` of the whole stream (framing in compiled code) and ``take`` in
  batches of 65536 records into hftagg batches (mbp-10: ``book_update`` + ``mbp10`` + trades;
  mbo: ``mbo``), i.e. everything the replay source does except pacing and I/O.
- databento-dbn ``DBNDecoder.write`` + ``decode``: the reference, to one Python object per record.
- ``numpy.frombuffer`` with databento-dbn's record ``_dtypes`` then ``.copy()``: what the
  ``databento`` client's ``DBNStore.to_ndarray`` does (databento-dbn itself has no ndarray
  path); raw DBN layout only, no mapping and no framing, so an upper bound for a single schema.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.harness import Result, best_rate
from hftagg.builtins.protocols.dbn import DbnDecoder, RType
from hftagg.builtins.protocols.dbn.kernels import warm
from hftagg.builtins.protocols.dbn.layouts import LAYOUTS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dbn"
BATCH = 65536


def _stream(name: str, rtype: int, n: int) -> tuple[bytes, int]:
    import zstandard

    raw = zstandard.ZstdDecompressor().stream_reader((DATA / name).open("rb")).read()
    dtype = LAYOUTS[(rtype, 3)]
    count = 0
    while (
        len(raw) - (count + 1) * dtype.itemsize >= 0
        and raw[-(count + 1) * dtype.itemsize :][1] == rtype
    ):
        count += 1
    body = len(raw) - count * dtype.itemsize
    recs = np.frombuffer(raw, dtype=dtype, count=count, offset=body)
    out = np.resize(recs, n)
    out["ts_recv"] = recs["ts_recv"][0] + np.arange(n, dtype=np.uint64) * np.uint64(1000)
    out["sequence"] = np.arange(n, dtype=np.uint32)
    return raw[:body] + out.tobytes(), body


def _hftagg(data: bytes) -> int:
    decoder = DbnDecoder()
    decoder.feed(data)
    decoder.finish()
    n = 0
    while decoder.available:
        take = min(BATCH, decoder.available)
        decoder.take(take)
        n += take
    return n


def _reference(data: bytes) -> int:
    import databento_dbn

    decoder = databento_dbn.DBNDecoder()
    decoder.write(data)
    return len(decoder.decode()) - 1


def _ndarray(data: bytes, body: int, cls_name: str) -> int:
    import databento_dbn

    dtype = np.dtype([tuple(f) for f in getattr(databento_dbn, cls_name)._dtypes])
    return len(np.frombuffer(data, dtype=dtype, offset=body).copy())


def bench(name: str, file: str, rtype: int, cls_name: str, n: int, repeat: int) -> list[Result]:
    data, body = _stream(file, rtype, n)
    assert _hftagg(data) == n == _reference(data)
    ours = best_rate(lambda: _hftagg(data), repeat)
    theirs = best_rate(lambda: _reference(data), max(repeat - 2, 1))
    ndarray = best_rate(lambda: _ndarray(data, body, cls_name), repeat)
    extra = {"records": n, "bytes": len(data)}
    return [
        Result(
            name=f"dbn-decode-{name}",
            hftagg=ours,
            baseline=theirs,
            baseline_name="databento-dbn DBNDecoder (Python records)",
            unit="rec/s",
            extra=extra,
        ),
        Result(
            name=f"dbn-decode-{name}-ndarray",
            hftagg=ours,
            baseline=ndarray,
            baseline_name="np.frombuffer(_dtypes).copy() (to_ndarray-style, no mapping)",
            unit="rec/s",
            extra=extra,
        ),
    ]


def run(quick: bool = False) -> list[Result]:
    warm()
    scale = 10 if quick else 1
    repeat = 3 if quick else 5
    return bench(
        "mbp-10",
        "test_data.mbp-10.v3.dbn.zst",
        RType.MBP_10,
        "MBP10Msg",
        1_000_000 // scale,
        repeat,
    ) + bench("mbo", "test_data.mbo.v3.dbn.zst", RType.MBO, "MBOMsg", 3_000_000 // scale, repeat)
