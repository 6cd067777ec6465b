"""FIX session message stores: next sequence numbers and sent application messages.

:class:`MemoryStore` keeps both in memory; :class:`FileStore` persists them in a directory, one
set of files per session id (``<id>.seqnums``: the two next sequence numbers, rewritten in
place; ``<id>.body``: appended ``seq, length, bytes`` frames of sent messages, read back for a
ResendRequest). A restarted session continues from the stored numbers, as FIX requires.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

__all__ = ["FileStore", "MemoryStore"]

_FRAME = struct.Struct("<QI")
_SEQNUMS = "{:020d} : {:020d}\n"


class MemoryStore:
    """Sequence numbers and sent messages, in memory (lost on restart)."""

    def __init__(self) -> None:
        self._sender = 1
        self._target = 1
        self._messages: dict[int, bytes] = {}

    @property
    def next_sender_seq(self) -> int:
        """MsgSeqNum of the next message this side sends."""
        return self._sender

    @next_sender_seq.setter
    def next_sender_seq(self, value: int) -> None:
        self._sender = int(value)
        self._save()

    @property
    def next_target_seq(self) -> int:
        """MsgSeqNum expected on the next message from the counterparty."""
        return self._target

    @next_target_seq.setter
    def next_target_seq(self, value: int) -> None:
        self._target = int(value)
        self._save()

    def store(self, seq: int, raw: bytes) -> None:
        """Keep a sent message for resending."""
        self._messages[seq] = raw

    def get(self, begin: int, end: int) -> dict[int, bytes]:
        """Stored messages with ``begin <= seq <= end``."""
        return {s: m for s, m in self._messages.items() if begin <= s <= end}

    def reset(self) -> None:
        """Both sequence numbers back to 1, stored messages dropped (a new FIX session)."""
        self._messages.clear()
        self._sender = self._target = 1
        self._save()

    def _save(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileStore(MemoryStore):
    """A :class:`MemoryStore` persisted under ``directory`` for session ``session_id``.

    ``fsync=True`` makes every change durable before the call returns (slower); otherwise the
    OS writes it back (it survives a crash of this process, not of the machine).
    """

    def __init__(self, directory: str | os.PathLike, session_id: str, fsync: bool = False) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", session_id)
        self._fsync = fsync
        self._seq_path = self.directory / f"{safe}.seqnums"
        self._body_path = self.directory / f"{safe}.body"
        self._load()
        self._seq_fd = os.open(self._seq_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._body = open(self._body_path, "ab")  # noqa: SIM115 - kept open for the session
        self._save()

    def _load(self) -> None:
        if self._seq_path.exists():
            text = self._seq_path.read_text().strip()
            match = re.fullmatch(r"(\d+) : (\d+)", text)
            if match is None:
                raise ValueError(
                    f"FIX store {self._seq_path}: unreadable sequence numbers {text!r}; "
                    f"delete the file to start the session from 1"
                )
            self._sender, self._target = int(match[1]), int(match[2])
        if self._body_path.exists():
            data = self._body_path.read_bytes()
            at = 0
            while at + _FRAME.size <= len(data):
                seq, length = _FRAME.unpack_from(data, at)
                end = at + _FRAME.size + length
                if end > len(data):
                    break  # a torn last write: ignore it
                self._messages[seq] = data[at + _FRAME.size : end]
                at = end

    def _save(self) -> None:
        if not hasattr(self, "_seq_fd"):
            return
        os.pwrite(self._seq_fd, _SEQNUMS.format(self._sender, self._target).encode(), 0)
        if self._fsync:
            os.fsync(self._seq_fd)

    def store(self, seq: int, raw: bytes) -> None:
        super().store(seq, raw)
        self._body.write(_FRAME.pack(seq, len(raw)) + raw)
        self._body.flush()
        if self._fsync:
            os.fsync(self._body.fileno())

    def reset(self) -> None:
        self._body.truncate(0)
        self._body.seek(0)
        super().reset()

    def close(self) -> None:
        if not self._body.closed:
            self._body.close()
            os.close(self._seq_fd)
