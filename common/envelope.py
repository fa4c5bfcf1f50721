"""Helpers to build, check and read the protobuf envelope (kubeedge.hub.v1.Message).

The envelope is the generated message itself, on the bus and on the wire; nothing here wraps it.
What this module adds: constructors that fill the header, the reply/ack/error shapes, the
resource string grammar (`{namespace}/{type}/{name}`, cloud-internal `node/{node}/...`), the
resourceVersion ordering rule used by both sides' queues, and the reading of the JSON a body
carries (a node's report: any bytes at all, refused as BadMessage when not the expected shape).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kubeedge.hub.v1 import message_pb2 as pb

from common.errors import BadMessage
from common.names import (
    CLUSTER_NAMESPACE,
    KNOWN_OPERATIONS,
    OBJECT_OPERATIONS,
    Group,
    Operation,
)

Message = pb.Message

NODE_PREFIX = "node/"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_message(
    *,
    source: str,
    group: str,
    operation: str,
    resource: str = "",
    destination: str = "",
    resource_version: str = "",
    sync: bool = False,
    parent_id: str = "",
) -> Message:
    """A message with a fresh id and timestamp; the caller sets the body."""
    msg = Message()
    h = msg.header
    h.id = str(uuid.uuid4())
    h.parent_id = parent_id
    h.timestamp_ms = now_ms()
    h.resource_version = resource_version
    h.sync = sync
    r = msg.route
    r.source, r.destination, r.group = source, destination, group
    r.operation, r.resource = operation, resource
    return msg


def reply_to(request: Message, *, source: str, operation: str = Operation.RESPONSE) -> Message:
    """An empty reply addressed back to the request's sender, parent id set."""
    return new_message(
        source=source,
        group=request.route.group,
        destination=request.route.source,
        operation=operation,
        resource=request.route.resource,
        parent_id=request.header.id,
    )


def make_ack(request: Message, *, source: str, resource_version: str = "") -> Message:
    """The acknowledgement of `request`: operation response, parent id = its id."""
    ack = reply_to(request, source=source)
    ack.ack.resource_version = resource_version or request.header.resource_version
    return ack


def make_error(request: Message, *, source: str, code: int, reason: str) -> Message:
    """An error reply to `request` with an HTTP-like code."""
    err = reply_to(request, source=source, operation=Operation.ERROR)
    err.error.code = code
    err.error.message = reason
    return err


def make_stream_cancel(*, source: str, resource: str, stream_id: str, reason: str) -> Message:
    """A StreamCancel for stream `stream_id` (group edged: the producer of log streams)."""
    cancel = new_message(
        source=source,
        group=Group.EDGED,
        operation=Operation.DELETE,
        resource=resource,
        parent_id=stream_id,
    )
    cancel.stream_cancel.stream_id = stream_id
    cancel.stream_cancel.reason = reason
    return cancel


def is_ack(msg: Message) -> bool:
    return msg.route.operation == Operation.RESPONSE and msg.WhichOneof("body") == "ack"


def validate(msg: Message) -> None:
    """Raise BadMessage when an envelope from a peer cannot be handled at all."""
    if not msg.header.id:
        raise BadMessage("message has no header.id")
    if msg.WhichOneof("body") is None:
        raise BadMessage(f"message {msg.header.id} has no body")
    if msg.route.operation not in KNOWN_OPERATIONS:
        raise BadMessage(f"message {msg.header.id}: unknown operation {msg.route.operation!r}")


@dataclass(frozen=True, slots=True)
class Resource:
    """A parsed resource string: `{namespace}/{type}/{name}` (name may contain '/')."""

    namespace: str
    type: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.type}/{self.name}"


def resource(namespace: str | None, type_: str, name: str) -> str:
    return f"{namespace or CLUSTER_NAMESPACE}/{type_}/{name}"


def parse_resource(value: str) -> Resource:
    parts = value.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise BadMessage(f"resource {value!r} is not namespace/type/name")
    return Resource(*parts)


def with_node(node: str, res: str) -> str:
    """The cloud-internal form of a resource string: node/{node}/{resource}."""
    return f"{NODE_PREFIX}{node}/{res}"


def split_node(res: str) -> tuple[str, str]:
    """Split a cloud-internal resource into (node, wire resource)."""
    if not res.startswith(NODE_PREFIX):
        raise BadMessage(f"resource {res!r} does not name a node")
    node, _, rest = res[len(NODE_PREFIX) :].partition("/")
    if not node or not rest:
        raise BadMessage(f"resource {res!r} does not name a node and a resource")
    return node, rest


def object_key(msg: Message) -> str | None:
    """The key under which queued updates of one object collapse, or None (never collapses).
    An object with a uid is keyed by it too: a delete of one pod and the create of the next
    pod of the same name are two objects, and both must arrive."""
    if msg.route.operation in OBJECT_OPERATIONS and msg.route.resource:
        if msg.WhichOneof("body") == "object" and msg.object.uid:
            return f"{msg.route.resource}#{msg.object.uid}"
        return msg.route.resource
    return None


def rv_older(candidate: str, current: str) -> bool:
    """True when resourceVersion `candidate` is strictly older than `current`.

    Kubernetes resourceVersions are opaque, but every server we talk to issues integers from
    one sequence; when either side is not an integer we cannot order them and say "not older".
    """
    if not candidate or not current:
        return False
    try:
        return int(candidate) < int(current)
    except ValueError:
        return False


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """The JSON object a body field carries (empty: {}); BadMessage if it is not JSON, nests
    deeper than the parser goes (RecursionError), or is not an object."""
    try:
        value = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadMessage(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def event_parts(raw: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A v1 Event a node reports, its involvedObject and its source (missing: {}), each a JSON
    object; BadMessage otherwise."""
    event = json_object(raw, "an event")
    about, source = event.get("involvedObject"), event.get("source") or {}
    if not isinstance(about, dict) or not isinstance(source, dict):
        raise BadMessage("an event must be a v1 Event with an involvedObject and source object")
    return event, about, source
