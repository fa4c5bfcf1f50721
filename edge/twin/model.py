"""Device twins in memory: the property type, KubeEdge's JSON shapes, and request validation.

A twin property has two sides: `expected` (desired, owned by the cloud) and `actual`
(reported, owned by the device), each with a value, a timestamp (ms) and a version
`{cloud, edge}` counting the writes made to that side by each party. On MQTT the shapes are
KubeEdge's (../shared/reference/kubeedge-facts.md); on the hub they are kubeedge.twin.v1.Twin.

Nothing here touches SQLite or the bus, so the rules are easy to test on their own:
- a mapper's write names `actual` values; naming `expected` is refused (409: desired belongs to
  the cloud); naming an `actual_version` older than the stored one is refused (409: stale);
  naming none is accepted (mappers send none);
- a twin key is at most 128 bytes and a value at most 512 bytes (400 otherwise);
- the delta lists the properties whose expected value differs from the actual one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from kubeedge.twin.v1 import twin_pb2

from common.errors import PermanentError

MAX_KEY_BYTES = 128
MAX_VALUE_BYTES = 512
MAX_PAYLOAD_BYTES = 64 * 1024
DEVICE_STATES = ("ok", "online", "offline", "unhealthy", "unknown")
ONLINE_STATES = ("ok", "online")

BAD_REQUEST, NOT_FOUND, CONFLICT, INTERNAL = 400, 404, 409, 500


class TwinError(PermanentError):
    """A twin request that is refused; `code` (400/404/409/500) and `reason` go to its result."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Version:
    """Writes made to one side of a property, by the cloud and by the edge."""

    cloud: int = 0
    edge: int = 0

    def older_than(self, other: Version) -> bool:
        return self.cloud < other.cloud or self.edge < other.edge

    def to_json(self) -> dict[str, int]:
        return {"cloud": self.cloud, "edge": self.edge}

    @staticmethod
    def from_json(data: Any) -> Version:
        if not isinstance(data, dict):
            return Version()
        return Version(int(data.get("cloud", 0)), int(data.get("edge", 0)))


@dataclass(frozen=True, slots=True)
class Value:
    value: str
    timestamp: int  # ms

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "metadata": {"timestamp": self.timestamp}}


@dataclass(frozen=True, slots=True)
class Twin:
    """One property of one device."""

    name: str
    expected: Value | None = None
    actual: Value | None = None
    expected_version: Version = field(default_factory=Version)
    actual_version: Version = field(default_factory=Version)
    optional: bool = False
    type: str = ""

    @property
    def in_delta(self) -> bool:
        """True when a desired value is set and the device does not report it."""
        return self.expected is not None and (
            self.actual is None or self.actual.value != self.expected.value
        )

    def with_expected(self, value: str | None, timestamp: int) -> Twin:
        """The cloud set (or cleared) the desired value: its cloud version counts up."""
        v = self.expected_version
        return replace(
            self,
            expected=None if value is None else Value(value, timestamp),
            expected_version=Version(v.cloud + 1, v.edge),
        )

    def to_json(self) -> dict[str, Any]:
        """KubeEdge's MQTT shape of a twin property."""
        out: dict[str, Any] = {}
        if self.expected is not None:
            out["expected"] = self.expected.to_json()
        if self.actual is not None:
            out["actual"] = self.actual.to_json()
        out["optional"] = self.optional
        out["metadata"] = {"type": self.type}
        out["expected_version"] = self.expected_version.to_json()
        out["actual_version"] = self.actual_version.to_json()
        return out

    def to_proto(self) -> twin_pb2.Twin:
        pb = twin_pb2.Twin(is_optional=self.optional, type=self.type)
        if self.expected is not None:
            pb.expected.value, pb.expected.timestamp_ms = (
                self.expected.value,
                self.expected.timestamp,
            )
        if self.actual is not None:
            pb.actual.value, pb.actual.timestamp_ms = self.actual.value, self.actual.timestamp
        pb.expected_version.cloud, pb.expected_version.edge = (
            self.expected_version.cloud,
            self.expected_version.edge,
        )
        pb.actual_version.cloud, pb.actual_version.edge = (
            self.actual_version.cloud,
            self.actual_version.edge,
        )
        return pb


def twins_json(twins: dict[str, Twin]) -> dict[str, Any]:
    return {name: t.to_json() for name, t in sorted(twins.items())}


def delta_of(twins: dict[str, Twin]) -> dict[str, str]:
    """property -> expected value, for each property whose expected differs from actual."""
    return {n: t.expected.value for n, t in sorted(twins.items()) if t.in_delta and t.expected}


# -- requests from mappers and apps ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """The common part of every request payload: event_id and timestamp, and the rest."""

    event_id: str
    timestamp: int
    body: dict[str, Any]


def parse_request(payload: bytes) -> Request:
    """A JSON object with optional `event_id` (string) and `timestamp` (ms); 400 otherwise."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise TwinError(
            BAD_REQUEST, f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    try:
        body = _loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TwinError(BAD_REQUEST, f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise TwinError(BAD_REQUEST, "payload must be a JSON object")
    event_id = body.get("event_id", "")
    if not isinstance(event_id, str):
        raise TwinError(BAD_REQUEST, "event_id must be a string")
    timestamp = body.get("timestamp", 0)
    if not _is_int64(timestamp):
        raise TwinError(BAD_REQUEST, "timestamp must be an integer (milliseconds)")
    return Request(event_id, timestamp, body)


def _loads(payload: bytes) -> Any:
    """JSON that SQLite and protobuf can hold: nesting deeper than the parser's recursion limit
    (RecursionError) and escaped lone surrogates (not encodable as UTF-8) are refused."""
    body = json.loads(payload)
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"it escapes an unpaired surrogate ({exc.reason})") from None
    return body


def _is_int64(value: Any) -> TypeGuard[int]:
    """An integer that fits SQLite's and protobuf's 64-bit fields (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def event_id_of(payload: bytes) -> str:
    """The event_id of a payload, when it can be read at all (for error results)."""
    try:
        body = _loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    event_id = body.get("event_id", "") if isinstance(body, dict) else ""
    return event_id if isinstance(event_id, str) else ""


@dataclass(frozen=True, slots=True)
class ActualWrite:
    """A mapper's write of one property's reported value."""

    name: str
    value: str
    timestamp: int
    version: Version | None  # the actual_version the writer names; None: not named
    type: str | None
    optional: bool | None


def _check_size(what: str, text: str, limit: int) -> None:
    size = len(text.encode())
    if size > limit:
        raise TwinError(BAD_REQUEST, f"{what} is {size} bytes, over the {limit}-byte limit")


def parse_twin_update(req: Request, now_ms: int) -> list[ActualWrite]:
    """The writes of a twin/update request, all checked before any is applied."""
    twin = req.body.get("twin")
    if not isinstance(twin, dict) or not twin:
        raise TwinError(BAD_REQUEST, "twin must be a non-empty object of properties")
    return [_parse_property(name, prop, req, now_ms) for name, prop in twin.items()]


def _parse_property(name: str, prop: Any, req: Request, now_ms: int) -> ActualWrite:
    _check_size(f"twin key {name[:40]!r}", name, MAX_KEY_BYTES)
    if not name:
        raise TwinError(BAD_REQUEST, "twin key must not be empty")
    if not isinstance(prop, dict):
        raise TwinError(BAD_REQUEST, f"twin {name!r} must be an object")
    if "expected" in prop or "expected_version" in prop:
        raise TwinError(CONFLICT, f"twin {name!r}: expected (desired) values belong to the cloud")
    actual = prop.get("actual")
    if not isinstance(actual, dict) or not isinstance(actual.get("value"), str):
        raise TwinError(BAD_REQUEST, f"twin {name!r}: actual.value must be a string")
    value: str = actual["value"]
    _check_size(f"twin {name!r} value", value, MAX_VALUE_BYTES)
    timestamp = _timestamp(actual.get("metadata"), req.timestamp or now_ms)
    version = None
    if "actual_version" in prop:
        version = _version(name, prop["actual_version"])
    type_ = None
    metadata = prop.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not isinstance(metadata.get("type", ""), str):
            raise TwinError(BAD_REQUEST, f"twin {name!r}: metadata.type must be a string")
        type_ = metadata.get("type") or None
    optional = prop.get("optional")
    if optional is not None and not isinstance(optional, bool):
        raise TwinError(BAD_REQUEST, f"twin {name!r}: optional must be true or false")
    return ActualWrite(name, value, timestamp, version, type_, optional)


def _timestamp(metadata: Any, default: int) -> int:
    if isinstance(metadata, dict):
        ts = metadata.get("timestamp")
        if _is_int64(ts) and ts > 0:
            return ts
    return default


def _version(name: str, data: Any) -> Version:
    # int64 on the wire, and the edge count goes up by one after this write.
    if not isinstance(data, dict) or not all(
        _is_int64(data.get(k, 0)) and data.get(k, 0) < 2**63 - 1 for k in ("cloud", "edge")
    ):
        raise TwinError(
            BAD_REQUEST, f"twin {name!r}: actual_version must be {{cloud, edge}} integers"
        )
    return Version(int(data.get("cloud", 0)), int(data.get("edge", 0)))


def apply_actual(current: Twin | None, write: ActualWrite) -> Twin:
    """The property after a mapper's write; 409 when the write names a stale version."""
    base = current or Twin(write.name)
    stored = base.actual_version
    if write.version is not None and write.version.older_than(stored):
        raise TwinError(
            CONFLICT,
            f"twin {write.name!r}: actual_version {write.version.to_json()} is older than "
            f"the stored {stored.to_json()}",
        )
    edge = max(stored.edge, write.version.edge if write.version else 0) + 1
    return replace(
        base,
        actual=Value(write.value, write.timestamp),
        actual_version=Version(stored.cloud, edge),
        type=write.type if write.type is not None else base.type,
        optional=write.optional if write.optional is not None else base.optional,
    )


def parse_state(req: Request) -> str:
    state = req.body.get("state")
    if not isinstance(state, str) or state not in DEVICE_STATES:
        raise TwinError(BAD_REQUEST, f"state must be one of {', '.join(DEVICE_STATES)}")
    return state


def split_device_id(device_id: str) -> tuple[str, str]:
    """`{namespace}/{name}` -> (namespace, name); 400 for any other shape."""
    namespace, sep, name = device_id.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise TwinError(BAD_REQUEST, f"device id {device_id!r} must be namespace/name")
    return namespace, name
