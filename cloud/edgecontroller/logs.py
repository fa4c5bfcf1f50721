"""pods/log through the hub: a log request answered by the node.

An HTTP pods/{name}/log handler calls `LogStreams.serve(request, pod)`. It checks the
request as Kubernetes does (container, numeric parameters), answers 503 when the pod's node
has no stream to this cloudcore, and otherwise sends a `log_query` (group edged, operation
query, resource `node/{node}/{ns}/log/{pod}`) through cloudhub, which relays the node's
answers back here: `stream_frame`s, copied to the HTTP response as they come until the frame
with end=true, or an `error`, turned into a Kubernetes Status. Without --follow, a node silent
for --log-timeout ends the stream; with it, the stream lasts until the node ends it, the node
disconnects (cloudhub reports that as an error) or the client goes away. A stream that ends
here before its last frame (client gone, node quiet, client reading too slowly) is cancelled:
a StreamCancel goes to the node, which stops producing it. At most MAX_PENDING frames wait
for a slow client; past that the stream ends after the frames already queued, with no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from kubeedge.hub.v1 import message_pb2

from cloud.edgecontroller.objects import key_of
from cloud.kube import Obj
from common.bus import Bus
from common.envelope import Message, make_stream_cancel, new_message, with_node
from common.names import Group, Module, Operation, ResourceType

log = logging.getLogger(__name__)

REASONS = {
    400: "BadRequest",
    404: "NotFound",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
    504: "Timeout",
}
CLIENT_CHECK = 1.0  # seconds between checks that a --follow client is still there
MAX_PENDING = 256  # frames (64 KiB at most each) waiting for a slow client, per stream


class InvalidRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def status_response(code: int, message: str) -> web.Response:
    """A Kubernetes Status as the API server sends it for a failed request."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "InternalError"),
        "code": code,
    }
    return web.json_response(body, status=code)


class LogStreams:
    def __init__(self, bus: Bus, connected: Callable[[str], bool], timeout: float) -> None:
        self.bus = bus
        self.connected = connected
        self.timeout = timeout
        self._open: dict[str, _Stream] = {}

    async def answers(self) -> None:
        """Hand each answer that comes to the LOGSTREAMS inbox to the stream waiting for it."""
        while True:
            msg = await self.bus.receive(Module.LOGSTREAMS)
            if not self.deliver(msg):
                log.warning("edgecontroller: %s is no log answer", msg.route.resource)

    def deliver(self, msg: Message) -> bool:
        """Hand a node's answer to the stream waiting for it; False if `msg` is no answer."""
        body = msg.WhichOneof("body")
        if body != "stream_frame" and not msg.header.parent_id:
            return False
        stream_id = msg.header.parent_id or msg.stream_frame.stream_id
        stream = self._open.get(stream_id)
        if stream is None:
            log.debug("edgecontroller: dropping %s for closed stream %s", body, stream_id)
        elif not stream.overflowed:
            try:
                stream.queue.put_nowait(msg)
            except asyncio.QueueFull:
                log.warning("edgecontroller: log stream %s: client reads too slowly", stream_id)
                stream.overflowed = True
                stream.why = "the client reads too slowly"
        return True

    async def serve(self, request: web.Request, pod: Obj) -> web.StreamResponse:
        namespace, name = key_of(pod)
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        try:
            query = _query(request.query, pod)
        except InvalidRequest as exc:
            return status_response(400, exc.message)
        if not node:
            return status_response(400, f"pod {name} does not have a host assigned")
        if not self.connected(node):
            return status_response(503, f"node {node} is not connected to cloudcore")
        msg = new_message(
            source=Module.LOGSTREAMS,  # the answers come back to this inbox (`answers`)
            group=Group.EDGED,
            operation=Operation.QUERY,
            resource=with_node(node, f"{namespace}/{ResourceType.LOG}/{name}"),
        )
        msg.log_query.CopyFrom(query)
        msg.log_query.namespace, msg.log_query.pod = namespace, name
        stream = _Stream(msg, msg.route.resource)
        self._open[msg.header.id] = stream
        try:
            await self.bus.send(Module.CLOUDHUB, msg)
            try:
                first = await asyncio.wait_for(stream.queue.get(), self.timeout)
            except TimeoutError:
                stream.why = "the node did not answer in time"
                return status_response(
                    504, f"node {node} did not answer the log request within {self.timeout}s"
                )
            if first.WhichOneof("body") != "stream_frame":
                stream.ended = True
                return _error_response(first)
            return await self._relay(request, stream, first, follow=query.follow)
        finally:
            del self._open[msg.header.id]
            if not stream.ended:
                await self._cancel(stream)

    async def _relay(
        self, request: web.Request, stream: _Stream, first: Message, *, follow: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        msg: Message | None = first
        while msg is not None:
            if msg.WhichOneof("body") != "stream_frame":
                log.info("edgecontroller: log stream ended early: %s", msg.error.message)
                stream.ended = True
                break
            if msg.stream_frame.data and not await _write(response, msg.stream_frame.data):
                return response  # the client went away; the stream is cancelled
            if msg.stream_frame.end:
                stream.ended = True
                break
            msg = await self._next(request, stream, follow=follow)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _next(self, request: web.Request, stream: _Stream, *, follow: bool) -> Message | None:
        """The next answer; None when the node went quiet (no follow), the client left, or
        the client fell too far behind (after the frames queued before that)."""
        waited = 0.0
        while True:
            if stream.overflowed and stream.queue.empty():
                return None
            step = CLIENT_CHECK if follow else min(CLIENT_CHECK, self.timeout - waited)
            try:
                return await asyncio.wait_for(stream.queue.get(), max(step, 0.01))
            except TimeoutError:
                waited += step
            if request.transport is None or request.transport.is_closing():
                return None
            if not follow and waited >= self.timeout:
                return None

    async def _cancel(self, stream: _Stream) -> None:
        """Tell the node (through cloudhub) to stop producing a stream nobody reads."""
        cancel = make_stream_cancel(
            source=Module.LOGSTREAMS,
            resource=stream.resource,
            stream_id=stream.query.header.id,
            reason=stream.why,
        )
        await self.bus.send(Module.CLOUDHUB, cancel)


class _Stream:
    """One open log stream: the query that opened it and the node's answers, bounded."""

    def __init__(self, query: Message, resource: str) -> None:
        self.query = query
        self.resource = resource  # node/{node}/...: where a cancel goes
        self.queue: asyncio.Queue[Message] = asyncio.Queue(MAX_PENDING)
        self.overflowed = False  # a frame was refused: the stream ends after what is queued
        self.ended = False  # its last frame or an error arrived: the node is done with it
        self.why = "the client went away"  # the reason a cancel gives, if one is sent


async def _write(response: web.StreamResponse, data: bytes) -> bool:
    """Write to the client; False when it has gone away."""
    try:
        await response.write(data)
    except ConnectionResetError:
        return False
    return True


def _error_response(msg: Message) -> web.Response:
    code = msg.error.code if msg.error.code in REASONS else 500
    return status_response(code, msg.error.message or "the node could not serve the log")


def _query(params: Any, pod: Obj) -> message_pb2.LogQuery:
    """The LogQuery for these request parameters, checked as Kubernetes checks them."""
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    others = [
        c.get("name")
        for field in ("initContainers", "ephemeralContainers")
        for c in spec.get(field) or []
    ]
    name = key_of(pod)[1]
    container = params.get("container", "")
    if not container:
        if len(names) != 1:
            choices = " ".join(str(n) for n in names)
            raise InvalidRequest(
                f"a container name must be specified for pod {name}, choose one of: [{choices}]"
            )
        container = names[0]
    elif container not in names + others:
        raise InvalidRequest(f"container {container} is not valid for pod {name}")
    query = message_pb2.LogQuery(container=str(container))
    query.follow = _bool(params.get("follow"))
    query.timestamps = _bool(params.get("timestamps"))
    query.tail_lines = _int(params.get("tailLines"), "tailLines")
    query.since_seconds = _int(params.get("sinceSeconds"), "sinceSeconds")
    return query


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _int(value: str | None, what: str) -> int:
    if value in (None, ""):
        return 0
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidRequest(f"{what} must be an integer, got {value!r}") from None
    if number < 0:
        raise InvalidRequest(f"{what} must be non-negative, got {number}")
    return number
