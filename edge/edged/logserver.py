"""`kubectl logs` at the edge: each log query is a stream of StreamFrames, served by one task.

A stream ends in one of four ways, and each one releases its task and tells the cloud:
- its last frame (end=true): the whole log was sent, or, with follow, the container stopped
  (it exited, was replaced by a restart, or its pod was deleted);
- a StreamCancel for it: the cloud's client went away, or edgehub could not send its frames
  (no link, or the stream lane full) — nothing more is produced for it, and an error reply
  (503, with the reason) goes to the cloud, where a client may still be waiting;
- an error reply: the pod or container is not here (404), too many streams are open (429),
  or serving it failed (500);
- edged stopping.
The first frame goes out at once, even empty, so a client of a silent container is not left
waiting for the node's answer.
At most `max_streams` streams are open at once, so clients that never read cannot pile up
tasks on a small node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from common.envelope import Message, make_error, new_message
from common.names import Group, Module, Operation
from edge.edged import logs, paths, volumes
from edge.edged.worker import PodWorker

log = logging.getLogger(__name__)

FRAME_BYTES = 64 * 1024
SendUp = Callable[[Message], Awaitable[None]]
FindPod = Callable[[str, str], PodWorker | None]  # (namespace, name) -> its worker


class LogServer:
    def __init__(
        self, root: Path, find: FindPod, send_up: SendUp, *, max_streams: int, poll: float = 0.2
    ) -> None:
        self.root, self.find, self.send_up = root, find, send_up
        self.max_streams, self.poll = max_streams, poll
        self.streams: dict[str, asyncio.Task[None]] = {}

    async def open(self, query: Message) -> None:
        """Start serving a log query (its id is the stream's id)."""
        stream_id = query.header.id
        if stream_id in self.streams:
            return  # a resent query: its stream is being served already
        if len(self.streams) >= self.max_streams:
            reason = f"too many log streams open on this node (at most {self.max_streams})"
            await self._refuse(query, 429, reason)
            return
        task = asyncio.create_task(self._serve(query), name=f"edged-log:{stream_id}")
        self.streams[stream_id] = task
        task.add_done_callback(lambda t: self._done(stream_id, t))

    async def cancel(self, cancel: Message) -> None:
        """Stop producing a stream, and tell the cloud it ended (its client may be waiting)."""
        stream_id, reason = cancel.stream_cancel.stream_id, cancel.stream_cancel.reason
        task = self.streams.get(stream_id)
        if task is None:
            log.debug("edged: cancel of log stream %s, which is not open", stream_id)
            return
        log.info("edged: log stream %s cancelled: %s", stream_id, reason or "no reason given")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        err = make_error(
            cancel, source=Module.EDGED, code=503, reason=f"log stream ended: {reason}"
        )
        err.route.group = Group.RESOURCE
        err.header.parent_id = stream_id  # the answer to the query that opened the stream
        await self.send_up(err)

    async def close(self) -> None:
        tasks = list(self.streams.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, stream_id: str, task: asyncio.Task[None]) -> None:
        self.streams.pop(stream_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("edged: log stream %s failed", stream_id, exc_info=task.exception())

    async def _refuse(self, query: Message, code: int, reason: str) -> None:
        err = make_error(query, source=Module.EDGED, code=code, reason=reason)
        err.route.group = Group.RESOURCE
        await self.send_up(err)

    async def _serve(self, query: Message) -> None:
        """Serve one stream; a failure is answered (500), not left for the client to wait on."""
        try:
            await self._stream(query)
        except Exception as exc:
            log.exception("edged: log stream %s failed", query.header.id)
            await self._refuse(query, 500, f"serving the log failed: {type(exc).__name__}: {exc}")

    async def _stream(self, query: Message) -> None:
        q = query.log_query
        worker = self.find(q.namespace, q.pod)
        try:
            path = self.log_path(worker, q.container)
        except LookupError as exc:
            await self._refuse(query, 404, str(exc))
            return
        sender = _FrameSender(self.send_up, query)
        lines = logs.read(
            path,
            tail_lines=int(q.tail_lines),
            timestamps=q.timestamps,
            since_seconds=int(q.since_seconds),
        )
        await sender.send("".join(lines).encode())
        if q.follow and worker is not None:
            try:
                offset = path.stat().st_size
            except FileNotFoundError:  # removed since it was read: from the next file's start
                offset = 0
            writing = lambda: self._still_writing(worker, q.container, path)  # noqa: E731
            async for chunk in logs.follow(
                path, offset, writing, timestamps=q.timestamps, poll=self.poll
            ):
                await sender.send("".join(chunk).encode())
        await sender.send(b"", end=True)

    def _still_writing(self, worker: PodWorker, container: str, path: Path) -> bool:
        """Whether the followed container may still write to `path`: its pod is here, it is
        running, and it was not replaced by a restart (which writes to a new file)."""
        if worker.deleted or self.find(worker.namespace, worker.name) is not worker:
            return False
        try:
            current = self.log_path(worker, container)
        except LookupError:  # its folder is gone: the pod was removed
            return False
        return current == path and worker.container_running(current.parent.name)

    def log_path(self, worker: PodWorker | None, container: str) -> Path:
        """The newest log file of a container of the pod (init containers included)."""
        if worker is None:
            raise LookupError("pod is not running on this node")
        spec = worker.pod.get("spec", {})
        names = [c["name"] for c in spec.get("containers") or []]
        if not container:
            if len(names) != 1:
                raise LookupError(f"a container name must be given: one of {', '.join(names)}")
            container = names[0]
        init = [c["name"] for c in spec.get("initContainers") or []]
        if container not in names + init or not paths.DNS_LABEL.match(container):
            raise LookupError(f"container {container} is not valid for pod {worker.key}")
        folder = volumes.pod_dir(self.root, worker.uid) / "logs" / container
        files = sorted(folder.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        if not files:
            raise LookupError(f"container {container} has not started yet")
        return files[-1]


class _FrameSender:
    """Sends a log as StreamFrames (replies to the query: control messages, never stored)."""

    def __init__(self, send_up: SendUp, query: Message) -> None:
        self.send_up, self.query, self.sequence = send_up, query, 0

    async def send(self, data: bytes, *, end: bool = False) -> None:
        chunks = [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)] or [b""]
        for i, chunk in enumerate(chunks):
            if not chunk and not end and self.sequence > 0:
                continue  # the first frame goes out even empty: the client knows we answered
            msg = new_message(
                source=Module.EDGED,
                group=Group.RESOURCE,
                operation=Operation.RESPONSE,
                resource=self.query.route.resource,
                parent_id=self.query.header.id,
            )
            frame = msg.stream_frame
            frame.stream_id, frame.sequence, frame.data = self.query.header.id, self.sequence, chunk
            frame.end = end and i == len(chunks) - 1
            self.sequence += 1
            await self.send_up(msg)
