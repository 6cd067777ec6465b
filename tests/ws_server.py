"""A local WebSocket server for the tests (real sockets on loopback, its own thread and loop).

``handler(ws, server)`` is a coroutine run for each connection (``ws``: a ``websockets``
server connection); after it returns the connection stays open, and everything the client
sends is kept in ``server.received``, until the client or ``stop()`` closes it. ``stop()``
and ``start()`` again on the same port simulate a venue going away and coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from websockets.asyncio.server import serve

from tests.conftest import free_port


class WsServer:
    def __init__(self, handler=None, port: int | None = None) -> None:
        self.handler = handler
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.received: list[str | bytes] = []
        self.connections = 0
        self.pongs: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    async def _serve_one(self, ws) -> None:
        self.connections += 1
        if self.handler is not None:
            await self.handler(ws, self)
        with contextlib.suppress(Exception):
            async for message in ws:
                self.received.append(message)

    async def _main(self, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        async with serve(self._serve_one, "127.0.0.1", self.port, ping_interval=None,
                         compression=None, max_size=None) as server:  # fmt: skip
            ready.set()
            await self._stopped.wait()
            server.close()  # closes every connection (1001 going away)
            await server.wait_closed()

    def start(self) -> WsServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(ready),), daemon=True
        )
        self._thread.start()
        assert ready.wait(5), "test WebSocket server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(5)
            self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> WsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
