"""Reading DBN files in bounded pieces: plain DBN or zstd-compressed (``.dbn.zst``).

The compression is recognised from the first bytes (zstd's magic ``28 b5 2f fd`` or a skippable
frame), not from the file name. Several concatenated zstd frames are read one after the other.
``zstandard`` is needed for compressed files only.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from hftagg.builtins.protocols.dbn.decoder import DbnDecoder
from hftagg.builtins.protocols.dbn.mapping import Counters
from hftagg.builtins.protocols.dbn.metadata import DbnFormatError, metadata_size, parse_metadata
from hftagg.builtins.protocols.dbn.reasons import Reason

__all__ = ["DbnFile", "decode_file", "expand_paths", "is_zstd", "read_metadata"]

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_zstd(head: bytes) -> bool:
    """Whether ``head`` starts a zstd stream (a frame or a skippable frame)."""
    if head[:4] == _ZSTD_MAGIC:
        return True
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and (head[0] & 0xF0) == 0x50


def expand_paths(path: str | os.PathLike) -> list[str]:
    """The files ``path`` names: itself, or the sorted matches of a glob pattern."""
    text = os.fspath(path)
    if glob.has_magic(text):
        return sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
    return [text]


class DbnFile:
    """One file's decompressed bytes, ``chunk_bytes`` of input at a time (never all at once)."""

    def __init__(self, path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> None:
        self.path = os.fspath(path)
        self.chunk_bytes = chunk_bytes
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        head = self._file.read(4)
        self._file.seek(0)
        self.compressed = is_zstd(head)
        self.truncated_frame = False  # set at the end when a zstd frame was cut short
        self._zstd = None
        self._dobj = None
        if self.compressed:
            try:
                import zstandard
            except ImportError as exc:
                raise DbnFormatError(
                    Reason.DECOMPRESS,
                    f"{self.path} is zstd-compressed: install 'zstandard' (pip install zstandard)",
                ) from exc
            self._zstd = zstandard
            self._dobj = zstandard.ZstdDecompressor().decompressobj()

    def read(self) -> bytes | None:
        """The next piece of decompressed bytes (may be empty); ``None`` at the end of the file.

        Raises :class:`DbnFormatError` (``DECOMPRESS``) on a corrupt zstd stream.
        """
        data = self._file.read(self.chunk_bytes)
        if not self.compressed:
            return data or None
        if not data:
            self.truncated_frame = not self._dobj.eof and self._started
            return None
        self._started = True
        out = []
        try:
            while data:
                out.append(self._dobj.decompress(data))
                if not self._dobj.eof:
                    break
                data = self._dobj.unused_data  # the next frame, if any
                self._dobj = self._zstd.ZstdDecompressor().decompressobj()
                self._started = bool(data)
        except self._zstd.ZstdError as exc:
            raise DbnFormatError(Reason.DECOMPRESS, f"corrupt zstd data: {exc}") from exc
        return b"".join(out)

    _started = False

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DbnFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metadata(path: str | os.PathLike, max_bytes: int = 1 << 24):
    """The metadata of a DBN file (plain or zstd), reading no more than it needs."""
    buf = b""
    with DbnFile(path, chunk_bytes=1 << 16) as f:
        while True:
            size = metadata_size(buf[:8])
            if size is not None and len(buf) >= size:
                return parse_metadata(buf[:size])
            if len(buf) > max_bytes:
                raise DbnFormatError(
                    Reason.BAD_METADATA, f"{path}: metadata over {max_bytes} bytes"
                )
            piece = f.read()
            if piece is None:
                raise DbnFormatError(Reason.TRUNCATED, f"{path}: ends inside the metadata")
            buf += piece


def decode_file(
    path: str | os.PathLike,
    batch_records: int = 1 << 16,
    *,
    source_id: int = 0,
    counters: Counters | None = None,
) -> Iterator[dict]:
    """Decode a whole DBN file: yields ``{port: batch}`` dicts in file order (a convenience for
    tools and tests; the replay source paces the same decoder)."""
    decoder = DbnDecoder(source_id=source_id, name=str(Path(path).name), counters=counters)
    try:
        f = DbnFile(path)
    except OSError as exc:
        decoder.fail(Reason.IO_ERROR, str(exc))
        decoder.finish()
        yield decoder.take(0)
        return
    with f:
        while not decoder.done:
            try:
                piece = f.read()
            except DbnFormatError as exc:
                decoder.fail(exc.reason, str(exc))
                piece = None
            if piece is None:
                decoder.finish(f.truncated_frame)
            else:
                decoder.feed(piece)
            while decoder.available or decoder.has_dead_letters:
                yield decoder.take(batch_records)
