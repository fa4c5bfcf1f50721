"""One edge node's stream on cloudhub: its reader, its writer, its keepalive watchdog.

The servicer creates a NodeSession per Connect call. Reading and writing run concurrently;
the writer drains the node's LinkFeeder (control messages, then the durable outbox), the
reader hands each received frame to the hub. A session ends when the node goes silent for
`keepalive_timeout`, when the stream breaks, when a newer stream for the same node
replaces it, or when its client certificate expires or is revoked; the outbox keeps
everything un-acked for the next session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from cryptography import x509
from kubeedge.hub.v1 import hub_pb2

from cloud.metrics import CloudMetrics
from common.envelope import Message
from common.link import LinkFeeder

log = logging.getLogger(__name__)

MAX_CANCELLED = 1024  # stream ids remembered per session, so a node is told once per stream
FrameHandler = Callable[["NodeSession", list[Message]], Awaitable[None]]


class NodeSession:
    def __init__(
        self,
        node: str,
        feeder: LinkFeeder,
        keepalive_timeout: float,
        metrics: CloudMetrics | None = None,
        cert: x509.Certificate | None = None,
    ) -> None:
        self.node = node
        self.cert = cert  # the client certificate (None: --insecure-hub)
        self.metrics = metrics
        self.feeder = feeder
        self.keepalive_timeout = keepalive_timeout
        self.last_seen = time.monotonic()
        self.connected_at = time.time()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.frames_in = 0
        self.frames_out = 0
        self.messages_out = 0
        self._cancelled: OrderedDict[str, None] = OrderedDict()  # streams told to stop

    def cancelled(self, stream_id: str) -> None:
        """Remember that the node was told to stop `stream_id` (the newest MAX_CANCELLED)."""
        self._cancelled[stream_id] = None
        while len(self._cancelled) > MAX_CANCELLED:
            self._cancelled.popitem(last=False)

    def was_cancelled(self, stream_id: str) -> bool:
        return stream_id in self._cancelled

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()

    async def serve(self, context: Any, on_frame: FrameHandler) -> None:
        """Run reader, writer and watchdog until one of them ends the session."""
        tasks = [
            asyncio.create_task(self._read(context, on_frame), name=f"hub-read:{self.node}"),
            asyncio.create_task(self._write(context), name=f"hub-write:{self.node}"),
            asyncio.create_task(self._watchdog(), name=f"hub-watchdog:{self.node}"),
        ]
        if self.cert is not None:
            tasks.append(asyncio.create_task(self._expiry(self.cert), name=f"hub-cert:{self.node}"))
        ended = asyncio.create_task(self.ended.wait(), name=f"hub-ended:{self.node}")
        try:
            done, _ = await asyncio.wait([*tasks, ended], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not ended and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, ended]:
                task.cancel()
            await asyncio.gather(*tasks, ended, return_exceptions=True)

    async def _read(self, context: Any, on_frame: FrameHandler) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                self.end("node closed the stream")
                return
            self.last_seen = time.monotonic()
            self.frames_in += 1
            await on_frame(self, list(request.messages))

    async def _write(self, context: Any) -> None:
        while True:
            batch = await self.feeder.next_frame()
            await context.write(hub_pb2.ConnectResponse(messages=batch))
            self.frames_out += 1
            self.messages_out += len(batch)
            if self.metrics is not None:
                self.metrics.hub_sent.labels(self.node).inc(len(batch))

    async def _expiry(self, cert: x509.Certificate) -> None:
        """TLS checks the certificate once, at the handshake: the stream ends when it expires
        (the node reconnects with the one it renewed before)."""
        left = (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, left))
        self.end(f"certificate expired at {cert.not_valid_after_utc}")

    async def _watchdog(self) -> None:
        while True:
            silent = time.monotonic() - self.last_seen
            if silent >= self.keepalive_timeout:
                self.end(f"no message for {silent:.1f}s (keepalive timeout)")
                return
            await asyncio.sleep(self.keepalive_timeout - silent)
