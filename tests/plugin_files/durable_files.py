"""Test plugin: a small durable sink that takes part in the write-ahead log's offset commit.

Each input topic goes to ``<path>/<topic>.bin``: the raw records, dense from offset 0 (record
``k`` of the topic at byte ``k * itemsize``). ``committed()`` reports what is fsynced (synced
every ``sync_ms``); at open, what the file holds counts as held (a process crash keeps written
pages, so bytes written but not yet fsynced survive ``kill -9``; a partial record is cut).
Idempotent: offsets it holds are skipped; an offset beyond what it holds (a gap: records lost)
raises, naming topic and offsets. ``log`` (optional) records every write's (topic, offset, n).
"""

import os
import time

from hftagg import Params, Port, SinkStage, hookimpl, restart


class DurableFilesParams(Params):
    path: str = restart("kept")
    topics: list[str] = restart(["md.trades"])
    sync_ms: float = restart(5.0)
    log: str = restart("")


class DurableFiles(SinkStage):
    kind = "storage"
    type_name = "durable_files"
    Params = DurableFilesParams

    @classmethod
    def ports(cls, params):
        return {t.replace(".", "_"): Port(None, t) for t in params.topics}, {}

    def open(self, ctx):
        os.makedirs(self.params.path, exist_ok=True)
        self.durable = ctx.durable_offsets
        self.fds, self.held, self.synced, self.itemsize = {}, {}, {}, {}
        for port, topic in self.input_topics.items():
            size = ctx.topic_schemas[topic].dtype.itemsize
            file = os.path.join(self.params.path, f"{topic}.bin")
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
            length = os.fstat(fd).st_size
            os.ftruncate(fd, length - length % size)  # a partial record is cut
            os.lseek(fd, 0, os.SEEK_END)
            self.fds[port], self.itemsize[port] = fd, size
            self.held[port] = self.synced[port] = length // size
        self.last_sync = time.monotonic()
        self.writes = open(self.params.log, "a") if self.params.log else None

    def committed(self):
        return dict(self.synced)

    def write(self, batch, port, offset):
        if self.writes is not None:
            self.writes.write(f"{port} {offset} {len(batch)}\n")
        held = self.held[port]
        if offset + len(batch) <= held:
            return
        if offset > held:
            raise RuntimeError(
                f"durable_files: {self.input_topics[port]} holds offsets below {held} and was "
                f"handed offset {offset}: {offset - held} records lost"
            )
        batch = batch[held - offset :]
        os.write(self.fds[port], batch.tobytes())
        self.held[port] = held + len(batch)
        if time.monotonic() - self.last_sync >= self.params.sync_ms / 1000:
            self.flush()

    def flush(self):
        for port, fd in self.fds.items():
            os.fdatasync(fd)
            self.synced[port] = self.held[port]
        self.last_sync = time.monotonic()

    def close(self):
        self.flush()
        for fd in self.fds.values():
            os.close(fd)
        if self.writes is not None:
            self.writes.close()


@hookimpl
def hftagg_register_stage_types(register):
    register(DurableFiles)
