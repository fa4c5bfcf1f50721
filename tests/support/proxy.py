"""A fault-injecting TCP proxy for link tests: forward, cut, freeze, block.

- cut(): close every open connection at once (the peer sees a reset/EOF);
- freeze(): keep connections open but stop moving bytes (a silent, half-dead link);
- block(): refuse new connections (closed on accept) until unblock().
Listens on 127.0.0.1 on a free port; forwards to one target on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.blocked = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        if self.blocked:  # block() came while this connection was being made: refuse it too
            writer.close()
            up_writer.close()
            return
        self.connections += 1
        moving = asyncio.Event()
        moving.set()
        self._pairs.append((writer, up_writer, moving))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, moving))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, moving: asyncio.Event
    ) -> None:
        try:
            while data := await src.read(65536):
                await moving.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    def cut(self) -> None:
        """Close every open connection."""
        for down, up, moving in self._pairs:
            moving.set()
            for w in (down, up):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self._pairs.clear()

    def freeze(self) -> None:
        """Stop forwarding bytes on the open connections, keeping them open."""
        for _, _, moving in self._pairs:
            moving.clear()

    def block(self) -> None:
        self.blocked = True
        self.cut()

    def unblock(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
